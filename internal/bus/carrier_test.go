package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/internal/bus"
)

func startSpan(t *testing.T) (context.Context, trace.Span) {
	t.Helper()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("bus_test").Start(t.Context(), "send batchflow.batches.m1", trace.WithSpanKind(trace.SpanKindProducer))
	t.Cleanup(func() { span.End() })
	return ctx, span
}

func TestInjectTraceWritesLowercaseTraceparent(t *testing.T) {
	t.Parallel()
	ctx, span := startSpan(t)

	h := nats.Header{}
	bus.InjectTrace(ctx, h)

	require.Len(t, h, 1, "no baggage, so only the trace parent: %v", h)
	require.Contains(t, h, "traceparent")
	sc := span.SpanContext()
	require.Equal(t, "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01", h.Get("traceparent"))
}

func TestInjectTraceReplacesOtherSpellings(t *testing.T) {
	t.Parallel()
	ctx, span := startSpan(t)

	h := nats.Header{"Traceparent": {"00-11111111111111111111111111111111-2222222222222222-01"}}
	bus.InjectTrace(ctx, h)

	require.NotContains(t, h, "Traceparent")
	require.Equal(t, span.SpanContext().TraceID(), trace.SpanContextFromContext(bus.ExtractTrace(context.Background(), h)).TraceID())
}

func TestExtractTraceIgnoresCase(t *testing.T) {
	t.Parallel()
	h := nats.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}

	sc := trace.SpanContextFromContext(bus.ExtractTrace(context.Background(), h))

	require.True(t, sc.IsValid())
	require.True(t, sc.IsRemote())
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", sc.TraceID().String())
	require.Equal(t, "00f067aa0ba902b7", sc.SpanID().String())
}

func TestExtractTraceWithoutHeader(t *testing.T) {
	t.Parallel()
	ctx := bus.ExtractTrace(context.Background(), nil)
	require.False(t, trace.SpanContextFromContext(ctx).IsValid())

	// A nil header cannot take a trace and must not panic.
	ctx, _ = startSpan(t)
	bus.InjectTrace(ctx, nil)
}

// The trace (and baggage) survive a trip through a bootstrapped JetStream
// stream, as a batch does from planner to executor.
func TestTraceRoundTripThroughJetStream(t *testing.T) {
	t.Parallel()
	ctx, span := startSpan(t)
	member, err := baggage.NewMember("migration", "m1")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	ctx = baggage.ContextWithBaggage(ctx, bag)

	js := startInProcess(t)
	names := bus.MustNames("")
	res, err := bus.Bootstrap(ctx, js, names, bus.Topology{})
	require.NoError(t, err)

	msg := nats.NewMsg(names.BatchSubject("m1"))
	bus.InjectTrace(ctx, msg.Header)
	_, err = js.PublishMsg(ctx, msg)
	require.NoError(t, err)

	msgs, err := res.ExecutorsConsumer.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	received := 0
	for m := range msgs.Messages() {
		received++
		require.Contains(t, m.Headers(), "traceparent")
		got := bus.ExtractTrace(context.Background(), m.Headers())
		require.Equal(t, span.SpanContext().TraceID(), trace.SpanContextFromContext(got).TraceID())
		require.Equal(t, span.SpanContext().SpanID(), trace.SpanContextFromContext(got).SpanID())
		require.Equal(t, "m1", baggage.FromContext(got).Member("migration").Value())
		require.NoError(t, m.Ack())
	}
	require.NoError(t, msgs.Error())
	require.Equal(t, 1, received)
}

func TestHeaderCarrierValuesAcrossSpellings(t *testing.T) {
	t.Parallel()
	c := bus.HeaderCarrier{"Baggage": {"a=1"}, "baggage": {"b=2"}}
	require.ElementsMatch(t, []string{"a=1", "b=2"}, c.Values("BAGGAGE"))
	require.ElementsMatch(t, []string{"Baggage", "baggage"}, c.Keys())
	require.Empty(t, c.Get("tracestate"))
}
