package mysql_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/mysql"
	"github.com/batchflow/batchflow/pkg/sink/sinktest"
)

// tracedMigration is bound as a value in every ledger statement: it must
// not appear in any span.
const tracedMigration = "m-bound-7c1d"

// setupWire is setup with the sink's connections dialled through w.
func setupWire(t *testing.T, opts sink.Options, w *wire) *testBundle {
	t.Helper()
	db := testenv.MySQL(t)
	s, err := mysql.OpenWithDial(testCtx(t), db.DSN, opts, w.dial)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return &testBundle{db: db, s: s}
}

// tracedSubBatches runs, under one parent span of tp, a sub-batch of each
// kind ApplySubBatch has over items (ids 1..300): to the caller's upper
// key twice (on the transaction pool; the second with its statements
// prepared, whose wire commands it checks), with Limit (on the main pool),
// a custom Func that fails after its statement, and one that succeeds. It
// returns the parent.
func (b *testBundle) tracedSubBatches(t *testing.T, tp trace.TracerProvider, w *wire) trace.SpanContext {
	t.Helper()
	rel := b.items(t, 300)
	batch := sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(300)}
	ctx, parent := tp.Tracer("test").Start(testCtx(t), "batch")
	defer parent.End()

	cp, err := b.s.BeginBatch(ctx, tracedMigration, 1, rel.Key)
	require.NoError(t, err)
	sb := sink.SubBatch{Migration: tracedMigration, Seq: 1, Relation: rel, Batch: batch, From: cp.Key}
	for _, hi := range []int64{50, 100} {
		sb.Hi = batches.IntKey(hi)
		w.ClearCommands()
		res, err := b.s.ApplySubBatch(ctx, sb, setChange(rel, "n = n + 1"))
		require.NoError(t, err)
		require.EqualValues(t, 50, res.Rows)
		sb.From = res.Checkpoint
	}
	require.Equal(t, []byte{comStmtExecute, comStmtExecute, comQuery}, w.Commands(),
		"the same wire as untraced: two prepared statements, COMMIT")

	sb.Hi, sb.Limit = batches.Key{}, 100
	res, err := b.s.ApplySubBatch(ctx, sb, setChange(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(200), res.Checkpoint)

	custom := func(fail error) sink.Change {
		return sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
			ctx, span := tp.Tracer("test").Start(ctx, "custom")
			defer span.End()
			q := sink.NewBuilder(tx.Dialect())
			q.SQL("UPDATE items SET label = 'custom' WHERE ").Write(s.Rows)
			n, err := tx.Exec(ctx, q.String(), q.Args()...)
			return n, errors.Join(err, fail)
		}}
	}
	sb.From = res.Checkpoint
	boom := errors.New("boom")
	_, err = b.s.ApplySubBatch(ctx, sb, custom(boom))
	require.ErrorIs(t, err, boom)
	res, err = b.s.ApplySubBatch(ctx, sb, custom(nil))
	require.NoError(t, err)
	require.True(t, res.Done)
	require.EqualValues(t, 100, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE label = 'custom'"))
	return parent.SpanContext()
}

// TestTracing: with a TracerProvider, every statement of a sub-batch, on
// either pool, is a span under the caller's (or under a custom change's
// own span), with the database system and the statement's text, and no
// bound value.
func TestTracing(t *testing.T) {
	t.Parallel()
	tp, exp := sinktest.Tracing(t)
	var w wire
	b := setupWire(t, sink.Options{TracerProvider: tp}, &w)
	main, tx, err := b.s.DriverConnTypes(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, "*otelsql.otConn", main)
	require.Equal(t, "*otelsql.otConn", tx)
	require.NoError(t, b.s.EnsureLedger(testCtx(t)))
	require.Empty(t, exp.GetSpans(), "a statement outside a span starts no trace")

	parent := b.tracedSubBatches(t, tp, &w)
	wantSystem := "mysql"
	if b.s.Server().Flavour == mysql.FlavourMariaDB {
		wantSystem = "mariadb"
	}
	ss := sinktest.CheckSQLSpans(t, exp.GetSpans(), parent, wantSystem, tracedMigration)
	for _, s := range ss {
		if strings.HasPrefix(s.Text, "UPDATE items SET label = 'custom'") && s.Name == "sql.stmt.exec" {
			require.Equal(t, "custom", s.ParentName, "a statement nests under its caller's span")
		}
	}
	has := func(what string, match func(string) bool) { t.Helper(); ss.RequireStatement(t, what, match) }
	// BeginBatch, on the main pool.
	has("the ledger row's creation", func(q string) bool { return strings.HasPrefix(q, "INSERT INTO `batchflow_ledger`") })
	// To the caller's key, on the transaction pool's own prepared statements.
	has("the change", func(q string) bool {
		return strings.HasPrefix(q, "UPDATE `") && strings.Contains(q, ".`items` SET n = n + 1")
	})
	has("the checkpoint's compare-and-set", func(q string) bool { return strings.Contains(q, "AND BINARY checkpoint <=> BINARY ?") })
	has("the transaction pool's commit", func(q string) bool { return q == "COMMIT" })
	// With Limit or a custom change, in a database/sql transaction.
	has("the ledger row's lock and probe", func(q string) bool {
		return strings.HasPrefix(q, "SELECT bf_ledger.checkpoint, (SELECT") && strings.HasSuffix(q, "FOR UPDATE")
	})
	has("the custom change", func(q string) bool { return strings.HasPrefix(q, "UPDATE items SET label = 'custom'") })
	has("the checkpoint's update", func(q string) bool {
		return strings.HasPrefix(q, "UPDATE `batchflow_ledger` SET checkpoint") && !strings.Contains(q, "BINARY")
	})
	for _, name := range []string{"sql.conn.begin_tx", "sql.tx.commit", "sql.tx.rollback"} {
		require.Contains(t, ss.Names(), name)
	}
}

// TestTracingOff: without a TracerProvider both pools use the driver's
// own connections, and a sub-batch under a recording span adds no span.
func TestTracingOff(t *testing.T) {
	t.Parallel()
	tp, exp := sinktest.Tracing(t)
	var w wire
	b := setupWire(t, sink.Options{}, &w)
	main, tx, err := b.s.DriverConnTypes(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, "*mysql.mysqlConn", main)
	require.Equal(t, "*mysql.mysqlConn", tx)
	b.tracedSubBatches(t, tp, &w)
	spans := exp.GetSpans()
	require.Len(t, spans, 3, "the batch's and the custom changes'")
	for _, s := range spans {
		require.Equal(t, "test", s.InstrumentationScope.Name, s.Name)
	}
}
