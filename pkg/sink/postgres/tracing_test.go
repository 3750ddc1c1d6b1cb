package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/sinktest"
)

// tracedMigration is bound as a value in every ledger statement: it must
// not appear in any span.
const tracedMigration = "m-bound-7c1d"

// tracedSubBatches runs, under one parent span of tp, a sub-batch of each
// kind ApplySubBatch has over items (ids 1..300): folded to the caller's
// upper key, folded with the probe for Limit rows, and a custom Func in a
// transaction. It returns the parent.
func (tb *testBundle) tracedSubBatches(t *testing.T, tp trace.TracerProvider) trace.SpanContext {
	t.Helper()
	rel := tb.counterTable(t, "items", 300, 1)
	batch := intRange(0, 300)
	ctx, parent := tp.Tracer("test").Start(t.Context(), "batch")
	defer parent.End()

	_, err := tb.sink.BeginBatch(ctx, tracedMigration, 1, sink.KeyInt)
	require.NoError(t, err)
	sb := sink.SubBatch{Migration: tracedMigration, Seq: 1, Relation: rel, Batch: batch, Hi: batches.IntKey(100)}
	res, err := tb.sink.ApplySubBatch(ctx, sb, setN(rel))
	require.NoError(t, err)
	require.EqualValues(t, 100, res.Rows)

	sb.From, sb.Hi, sb.Limit = res.Checkpoint, batches.Key{}, 100
	res, err = tb.sink.ApplySubBatch(ctx, sb, setN(rel))
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(200), res.Checkpoint)

	sb.From = res.Checkpoint
	res, err = tb.sink.ApplySubBatch(ctx, sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		q := sink.NewBuilder(tx.Dialect())
		q.SQL("UPDATE items SET s = 'custom' WHERE ").Write(s.Rows)
		return tx.Exec(ctx, q.String(), q.Args()...)
	}})
	require.NoError(t, err)
	require.True(t, res.Done)
	require.EqualValues(t, 100, tb.db.QueryInt(t, "SELECT count(*) FROM items WHERE s = 'custom'"))
	return parent.SpanContext()
}

// TestTracing: with a TracerProvider, every statement of a sub-batch is a
// span under the caller's, with the database system and the statement's
// text, and no bound value.
func TestTracing(t *testing.T) {
	t.Parallel()
	tp, exp := sinktest.Tracing(t)
	tb := setup(t, func(o *sink.Options) { o.TracerProvider = tp })
	require.NoError(t, tb.sink.EnsureLedger(t.Context()))
	require.Empty(t, exp.GetSpans(), "a statement outside a span starts no trace")

	parent := tb.tracedSubBatches(t, tp)
	ss := sinktest.CheckSQLSpans(t, exp.GetSpans(), parent, "postgresql", tracedMigration)
	has := func(what string, match func(string) bool) { t.Helper(); ss.RequireStatement(t, what, match) }
	has("the ledger row's creation", func(q string) bool { return strings.Contains(q, "INSERT INTO batchflow_ledger") })
	has("the folded sub-batch to the caller's key", func(q string) bool {
		return strings.HasPrefix(q, "WITH claim") && !strings.Contains(q, "probe")
	})
	has("the folded sub-batch with the probe", func(q string) bool {
		return strings.HasPrefix(q, "WITH claim") && strings.Contains(q, "probe AS")
	})
	has("the transaction's start", func(q string) bool { return strings.EqualFold(q, "begin") })
	has("the ledger row's lock", func(q string) bool { return strings.Contains(q, "FOR UPDATE") })
	has("the custom change", func(q string) bool { return strings.HasPrefix(q, "UPDATE items SET s = 'custom'") })
	has("the checkpoint's update", func(q string) bool { return strings.HasPrefix(q, `UPDATE "batchflow_ledger" SET checkpoint`) })
	has("the commit", func(q string) bool { return strings.EqualFold(q, "commit") })
}

// TestTracingOff: without a TracerProvider the pool has no tracer at all,
// and a sub-batch under a recording span adds no span to it.
func TestTracingOff(t *testing.T) {
	t.Parallel()
	tp, exp := sinktest.Tracing(t)
	tb := setup(t)
	require.Nil(t, tb.sink.pool.Config().ConnConfig.Tracer)
	parent := tb.tracedSubBatches(t, tp)
	spans := exp.GetSpans()
	require.Len(t, spans, 1, "only the batch's")
	require.Equal(t, parent.SpanID(), spans[0].SpanContext.SpanID())
}
