package sentry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	sentrygo "github.com/getsentry/sentry-go"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/errorhandler"
	"github.com/batchflow/batchflow/pkg/errorhandler/sentry"
)

// testDSN is well formed; the mock transport means nothing is ever sent.
const testDSN = "https://public@sentry.example.com/42"

type testBundle struct {
	handler   *sentry.Handler
	transport *sentrygo.MockTransport
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	transport := &sentrygo.MockTransport{}
	h, err := sentry.New(sentry.Options{
		DSN:         testDSN,
		Environment: "test",
		Release:     "batchflow@test",
		Transport:   transport,
	})
	require.NoError(t, err)
	require.True(t, h.Enabled())
	t.Cleanup(func() {
		h.Flush(time.Second)
		h.Close()
	})
	return &testBundle{handler: h, transport: transport}
}

var errDeadlock = errors.New("deadlock detected")

func report() errorhandler.Report {
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

func TestReportBecomesOneEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "process batch")
	defer span.End()
	traceID := span.SpanContext().TraceID().String()

	b.handler.HandleError(ctx, report())

	events := b.transport.Events()
	require.Len(t, events, 1)
	ev := events[0]
	require.Equal(t, sentrygo.LevelWarning, ev.Level, "a retried transient error is a warning")
	require.Equal(t, "test", ev.Environment)
	require.Equal(t, "batchflow@test", ev.Release)
	require.Equal(t, map[string]string{
		"migration": "backfill-orders",
		"batch":     "7",
		"attempt":   "2",
		"class":     "transient",
		"component": "executor",
		"executor":  "exec-1",
		"trace_id":  traceID,
		"final":     "false",
	}, ev.Tags)
	require.Equal(t, sentrygo.Context{
		"migration": "backfill-orders",
		"seq":       int64(7),
		"attempt":   2,
		"lo":        int64(10),
		"hi":        int64(20),
		"range":     "(10, 20]",
	}, ev.Contexts["batch"])

	// The OTel integration links the event to the batch's trace.
	require.Equal(t, traceID, ev.Contexts["trace"]["trace_id"])
	require.Equal(t, span.SpanContext().SpanID().String(), ev.Contexts["trace"]["span_id"])

	// The whole chain, innermost first; the outermost titles the issue.
	require.Len(t, ev.Exception, 2)
	require.Equal(t, "deadlock detected", ev.Exception[0].Value)
	require.Equal(t, "apply batch 7: deadlock detected", ev.Exception[1].Value)
	require.Equal(t, "*errors.errorString", ev.Exception[1].Type, "the title names the cause, not *fmt.wrapError")

	require.Equal(t, []string{"batchflow", "backfill-orders", "transient", "*errors.errorString"}, ev.Fingerprint)
}

func TestLevelError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	final := report()
	final.Final = true
	fatal := report()
	fatal.Class = batches.ClassFatal
	b.handler.HandleError(context.Background(), final)
	b.handler.HandleError(context.Background(), fatal)

	events := b.transport.Events()
	require.Len(t, events, 2)
	for _, ev := range events {
		require.Equal(t, sentrygo.LevelError, ev.Level)
	}
	require.Equal(t, "true", events[0].Tags["final"])
}

func TestMigrationReportHasNoBatchFields(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.handler.HandleError(context.Background(), errorhandler.Report{
		Err:       errors.New("permission denied for table orders"),
		Class:     batches.ClassFatal,
		Component: "planner",
		Migration: "backfill-orders",
		Seq:       -1,
		Final:     true,
	})
	events := b.transport.Events()
	require.Len(t, events, 1)
	ev := events[0]
	require.NotContains(t, ev.Tags, "batch")
	require.NotContains(t, ev.Tags, "trace_id", "no span, no trace id tag")
	require.NotContains(t, ev.Tags, "executor", "empty tags are left out")
	require.Equal(t, sentrygo.Context{"migration": "backfill-orders", "seq": int64(-1)}, ev.Contexts["batch"])
}

func TestConcurrentReportsAllArrive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := report()
			r.Seq = int64(i)
			r.Executor = fmt.Sprintf("exec-%d", i)
			b.handler.HandleError(context.Background(), r)
		})
	}
	wg.Wait()

	events := b.transport.Events()
	require.Len(t, events, n)
	seen := make(map[string]bool, n)
	for _, ev := range events {
		// Each event carries its own report's tags: scopes are not shared.
		require.Equal(t, "exec-"+ev.Tags["batch"], ev.Tags["executor"])
		seen[ev.Tags["batch"]] = true
	}
	require.Len(t, seen, n)
}

func TestFingerprintGroupsAMigrationsErrors(t *testing.T) {
	t.Parallel()
	a, b := report(), report()
	b.Seq, b.Err = 8, fmt.Errorf("apply batch 8: %w", errors.New("deadlock detected on row 42"))
	require.Equal(t, sentry.Fingerprint(a), sentry.Fingerprint(b), "same migration, class and cause type: one issue")

	other := report()
	other.Migration = "backfill-users"
	require.NotEqual(t, sentry.Fingerprint(a), sentry.Fingerprint(other))

	data := report()
	data.Class = batches.ClassData
	require.NotEqual(t, sentry.Fingerprint(a), sentry.Fingerprint(data))

	panicked := report()
	panicked.Err = &errorhandler.HandlerPanicError{Handler: "*log.Handler", Value: errDeadlock, Report: a.Err}
	require.Equal(t, []string{"batchflow", "errorhandler-panic", "*log.Handler"}, sentry.Fingerprint(panicked),
		"a handler bug is its own issue, not the migration's")

	pg := report()
	pg.Err = fmt.Errorf("apply batch 7: %w", &pgconn.PgError{Code: "40P01", Message: "deadlock detected"})
	require.Equal(t, []string{"batchflow", "backfill-orders", "transient", "*pgconn.PgError", "40P01"}, sentry.Fingerprint(pg))
}

func TestEmptyDSNIsDisabled(t *testing.T) {
	// Not parallel: sets SENTRY_DSN to prove New does not fall back to it
	// the way the SDK's NewClient does.
	t.Setenv("SENTRY_DSN", testDSN)
	transport := &sentrygo.MockTransport{}
	h, err := sentry.New(sentry.Options{Transport: transport})
	require.NoError(t, err)
	require.False(t, h.Enabled())

	h.HandleError(context.Background(), report())
	require.Empty(t, transport.Events())
	require.True(t, h.Flush(time.Second), "nothing to flush")
	h.Close()
}

func TestFromEnv(t *testing.T) {
	t.Run("without SENTRY_DSN", func(t *testing.T) {
		t.Setenv("SENTRY_DSN", "")
		h, ok, err := sentry.FromEnv()
		require.NoError(t, err)
		require.False(t, ok)
		require.False(t, h.Enabled())
		require.NotPanics(t, func() { h.HandleError(context.Background(), report()) })
	})
	t.Run("with SENTRY_DSN", func(t *testing.T) {
		t.Setenv("SENTRY_DSN", testDSN)
		h, ok, err := sentry.FromEnv()
		require.NoError(t, err)
		require.True(t, ok)
		require.True(t, h.Enabled())
		h.Close()
	})
	t.Run("bad SENTRY_DSN", func(t *testing.T) {
		t.Setenv("SENTRY_DSN", "not a dsn")
		_, _, err := sentry.FromEnv()
		require.ErrorContains(t, err, "SENTRY_DSN")
	})
}

func TestBadSampleRate(t *testing.T) {
	t.Parallel()
	_, err := sentry.New(sentry.Options{DSN: testDSN, SampleRate: 1.5, Transport: &sentrygo.MockTransport{}})
	require.Error(t, err)
}
