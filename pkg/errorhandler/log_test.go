package errorhandler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/errorhandler"
)

var errDeadlock = errors.New("deadlock detected")

func batchReport() errorhandler.Report {
	return errorhandler.Report{
		Err:       fmt.Errorf("apply batch 7: %w", errDeadlock),
		Class:     batches.ClassTransient,
		Component: "executor",
		Migration: "backfill-orders",
		Seq:       7,
		Attempt:   2,
		Lo:        batches.IntKey(10),
		Hi:        batches.IntKey(20),
		Executor:  "exec-1",
	}
}

// logLine runs the Log handler on r and decodes the JSON line it wrote.
func logLine(t *testing.T, ctx context.Context, r errorhandler.Report) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	errorhandler.Log(logger).HandleError(ctx, r)
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	require.Len(t, lines, 1, "one report, one line: %s", buf.String())
	var line map[string]any
	require.NoError(t, json.Unmarshal(lines[0], &line))
	return line
}

func TestLogWritesBatchAttributes(t *testing.T) {
	t.Parallel()
	line := logLine(t, context.Background(), batchReport())

	require.Equal(t, "WARN", line["level"], "a transient, retried error is a warning")
	require.Equal(t, "executor: batch attempt failed, will retry", line["msg"])
	require.Equal(t, "backfill-orders", line["migration"])
	require.EqualValues(t, 7, line["batch"])
	require.EqualValues(t, 2, line["attempt"])
	require.Equal(t, "transient", line["class"])
	require.EqualValues(t, 10, line["lo"])
	require.EqualValues(t, 20, line["hi"])
	require.Equal(t, "(10, 20]", line["range"])
	require.Equal(t, "exec-1", line["executor"])
	require.Equal(t, false, line["final"])
	require.Equal(t, "apply batch 7: deadlock detected", line["err"])
	require.NotContains(t, line, "trace_id", "no span in ctx, no trace id")
}

func TestLogLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		class batches.ErrorClass
		final bool
		want  string
	}{
		{"transient retried", batches.ClassTransient, false, "WARN"},
		{"data retried", batches.ClassData, false, "WARN"},
		{"fatal", batches.ClassFatal, false, "ERROR"},
		{"final", batches.ClassTransient, true, "ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := batchReport()
			r.Class, r.Final = tt.class, tt.final
			require.Equal(t, tt.want, logLine(t, context.Background(), r)["level"])
		})
	}
}

func TestLogMigrationReportHasNoBatchAttributes(t *testing.T) {
	t.Parallel()
	line := logLine(t, context.Background(), errorhandler.Report{
		Err:       errors.New("permission denied for table orders"),
		Class:     batches.ClassFatal,
		Component: "planner",
		Migration: "backfill-orders",
		Seq:       -1,
		Final:     true,
	})
	require.Equal(t, "ERROR", line["level"])
	require.Equal(t, "planner: migration failed", line["msg"])
	for _, k := range []string{"batch", "attempt", "lo", "hi", "range", "executor"} {
		require.NotContains(t, line, k)
	}
}

func TestLogTraceIDFromSpan(t *testing.T) {
	t.Parallel()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "process batch")
	defer span.End()

	want := span.SpanContext().TraceID().String()
	require.Equal(t, want, errorhandler.TraceID(ctx))
	require.Equal(t, want, logLine(t, ctx, batchReport())["trace_id"])
}

func TestTraceIDWithoutSpan(t *testing.T) {
	t.Parallel()
	require.Empty(t, errorhandler.TraceID(context.Background()))
	//nolint:staticcheck // a nil ctx must not panic either
	require.Empty(t, errorhandler.TraceID(nil))
}

func TestReportRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		lo, hi    batches.Key
		inclusive bool
		want      string
	}{
		{batches.IntKey(10), batches.IntKey(20), false, "(10, 20]"},
		{batches.IntKey(1), batches.IntKey(20), true, "[1, 20]"},
		{batches.StringKey("a"), batches.StringKey("k"), false, `("a", "k"]`},
		{batches.Key{}, batches.IntKey(20), true, "(-inf, 20]"},
		{batches.IntKey(10), batches.Key{}, false, "(10, +inf)"},
	}
	for _, tt := range tests {
		r := errorhandler.Report{Lo: tt.lo, Hi: tt.hi, LoInclusive: tt.inclusive}
		require.Equal(t, tt.want, r.Range())
	}
}
