package sinktest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// TestScope is the instrumentation scope of the spans a tracing test makes
// itself ("batch", a custom change's own span); CheckSQLSpans skips them.
const TestScope = "test"

// Tracing is an SDK tracer provider recording into an in-memory exporter,
// shut down at cleanup. Read the spans before: Shutdown forgets them.
func Tracing(t testing.TB) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// SQLSpan is a span a sink's SQL instrumentation made.
type SQLSpan struct {
	Name string
	// Text is its db.query.text, or "" (a connection or transaction span).
	Text string
	// ParentName is the name of the span it is under.
	ParentName string
}

// SQLSpans are a sink's spans, in the order they ended.
type SQLSpans []SQLSpan

// CheckSQLSpans checks every span a sink made among spans (all but
// TestScope's): it is in parent's trace and under parent, however deep; a
// client span of database system; and no attribute holds secret, a value
// bound in the statements, never to be shown. It returns them.
func CheckSQLSpans(t testing.TB, spans tracetest.SpanStubs, parent trace.SpanContext, system, secret string) SQLSpans {
	t.Helper()
	byID := make(map[trace.SpanID]tracetest.SpanStub, len(spans))
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	var out SQLSpans
	for _, s := range spans {
		if s.InstrumentationScope.Name == TestScope {
			continue
		}
		require.Equal(t, parent.TraceID(), s.SpanContext.TraceID(), s.Name)
		require.True(t, descends(byID, s, parent.SpanID()), "%s is not under the caller's span", s.Name)
		require.Equal(t, trace.SpanKindClient, s.SpanKind, s.Name)
		attrs := attribute.NewSet(s.Attributes...)
		got, _ := attrs.Value(semconv.DBSystemNameKey)
		require.Equal(t, system, got.AsString(), s.Name)
		for _, a := range s.Attributes {
			require.NotContains(t, a.Value.Emit(), secret, "%s: %s holds a bound value", s.Name, a.Key)
		}
		out = append(out, SQLSpan{Name: s.Name, Text: QueryText(s), ParentName: byID[s.Parent.SpanID()].Name})
	}
	return out
}

// RequireStatement fails the test unless a span's statement matches; what
// names the statement in the failure.
func (ss SQLSpans) RequireStatement(t testing.TB, what string, match func(text string) bool) {
	t.Helper()
	var texts []string
	for _, s := range ss {
		if s.Text == "" {
			continue
		}
		if match(s.Text) {
			return
		}
		texts = append(texts, s.Text)
	}
	require.Failf(t, "no span for "+what, "statements: %q", texts)
}

// Names are the spans' names.
func (ss SQLSpans) Names() []string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	return names
}

// QueryText is a span's db.query.text, or "".
func QueryText(s tracetest.SpanStub) string {
	attrs := attribute.NewSet(s.Attributes...)
	v, _ := attrs.Value(semconv.DBQueryTextKey)
	return v.AsString()
}

// descends reports whether s has ancestor among the spans of byID.
func descends(byID map[trace.SpanID]tracetest.SpanStub, s tracetest.SpanStub, ancestor trace.SpanID) bool {
	for range len(byID) {
		p := s.Parent.SpanID()
		if p == ancestor {
			return true
		}
		next, ok := byID[p]
		if !ok {
			return false
		}
		s = next
	}
	return false
}
