package executor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	sentrygo "github.com/getsentry/sentry-go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/errorhandler"
	"github.com/batchflow/batchflow/pkg/errorhandler/sentry"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/planner"
)

// TestOneTracePerBatch: the planner's publish (PRODUCER), the executor's
// processing (CONSUMER, parented on the message's traceparent), each
// sub-batch and each SQL statement form one trace per batch.
func TestOneTracePerBatch(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	b := setup(t, db)
	createItems(t, db, 300)
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	nc := b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	p, err := planner.New(planner.Config{Conn: nc, JetStream: js, Targets: map[string]string{"main": db.DSN},
		Tick: 20 * time.Millisecond, TracerProvider: tp, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	b.startExecutor(t, "traced", func(c *executor.Config) {
		c.TracerProvider = tp
		c.SinkOptions.TracerProvider = tp
	})

	wctx := ctxFor(t, time.Minute)
	_, err = b.client.Enqueue(wctx, bump("traced", func(s *batches.Spec) { s.BatchSize, s.SubBatchSize = 100, 40 }))
	require.NoError(t, err)
	m, err := b.client.Wait(wctx, "traced")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status)
	b.events.WaitFor(t, "traced", "batchflow.batch.completed", 3, 30*time.Second)

	spans := exporter.GetSpans() // before Shutdown, which forgets them
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	var producers, consumers int
	for _, s := range spans {
		if s.SpanKind == trace.SpanKindProducer && s.Name == "send batchflow.batches.traced" {
			producers++
		}
		if s.SpanKind != trace.SpanKindConsumer || s.Name != "process batchflow.batches.traced" {
			continue
		}
		consumers++
		parent, ok := byID[s.Parent.SpanID()]
		require.True(t, ok, "the consumer span's parent is exported")
		require.Equal(t, trace.SpanKindProducer, parent.SpanKind, "parented on the planner's publish")
		require.Equal(t, parent.SpanContext.TraceID(), s.SpanContext.TraceID())
		require.Contains(t, attrs(s), "messaging.system=nats")

		// Sub-batch spans under the consumer, SQL spans under the sub-batches.
		var subBatches, statements int
		for _, c := range spans {
			if c.SpanContext.TraceID() != s.SpanContext.TraceID() {
				continue
			}
			if c.Name == "sub-batch" && c.Parent.SpanID() == s.SpanContext.SpanID() {
				subBatches++
				for _, q := range spans {
					if q.Parent.SpanID() == c.SpanContext.SpanID() && q.SpanKind == trace.SpanKindClient {
						statements++
					}
				}
			}
		}
		require.GreaterOrEqual(t, subBatches, 2, "100-row batches in sub-batches of about 40")
		require.GreaterOrEqual(t, statements, subBatches, "each sub-batch's SQL is traced")
	}
	require.Equal(t, 3, producers, "one publish per batch")
	require.Equal(t, 3, consumers, "one trace per batch")
}

func attrs(s tracetest.SpanStub) []string {
	var out []string
	for _, a := range s.Attributes {
		out = append(out, string(a.Key)+"="+a.Value.Emit())
	}
	return out
}

// TestSentryReport: a failing batch reaches Sentry with the batch's context.
func TestSentryReport(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	createItems(t, db, 50)
	b.startPlanner(t)
	transport := &sentrygo.MockTransport{}
	handler, err := sentry.New(sentry.Options{DSN: "https://public@sentry.example.com/1", Transport: transport})
	require.NoError(t, err)
	t.Cleanup(handler.Close)
	b.startExecutor(t, "reported", func(c *executor.Config) {
		c.ErrorHandler = errorhandler.Multi(errorhandler.Log(c.Logger), handler)
	})
	ctx := ctxFor(t, time.Minute)
	_, err = b.client.Enqueue(ctx, batches.Spec{Name: "reported", Target: "main", Kind: batches.KindSQL, Table: "items",
		Args: json.RawMessage(`{"set": "n = NULL"}`), MaxAttempts: 2})
	require.NoError(t, err)
	_, err = b.client.Wait(ctx, "reported")
	require.NoError(t, err)
	require.True(t, handler.Flush(5*time.Second))

	evs := transport.Events()
	require.Len(t, evs, 2, "one report per failed attempt")
	last := evs[len(evs)-1]
	require.Equal(t, "reported", last.Tags["migration"])
	require.Equal(t, "0", last.Tags["batch"])
	require.Equal(t, "2", last.Tags["attempt"])
	require.Equal(t, "data", last.Tags["class"])
	require.Equal(t, "true", last.Tags["final"])
	require.Equal(t, sentrygo.LevelError, last.Level)
	batch := last.Contexts["batch"]
	require.Equal(t, "reported", batch["migration"])
	require.Contains(t, batch["range"], "]", "the key range is in the report")
	require.NotEmpty(t, last.Exception)
	require.Contains(t, last.Exception[len(last.Exception)-1].Value, "NOT NULL")
	require.Equal(t, sentrygo.LevelWarning, evs[0].Level, "a retried attempt is a warning")
}
