package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	msqlite "modernc.org/sqlite"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/sinktest"
)

// tracedMigration is bound as a value in every ledger statement: it must
// not appear in any span.
const tracedMigration = "m-bound-7c1d"

// tracedSubBatches runs, under one parent span of tp, a sub-batch of each
// kind ApplySubBatch has over items (ids 1..300): folded to the caller's
// upper key, folded with the probe for Limit rows, a custom Func whose
// statement runs under a span of its own, and a custom Func that fails
// after its statement. It returns the parent.
func (b *testBundle) tracedSubBatches(t *testing.T, tp trace.TracerProvider) trace.SpanContext {
	t.Helper()
	rel := b.items(t, 300)
	ctx, parent := tp.Tracer("test").Start(ctx(t), "batch")
	defer parent.End()

	cp, err := b.sink.BeginBatch(ctx, tracedMigration, 1, rel.Key)
	require.NoError(t, err)
	batch := sink.Range{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(300)}
	sb := sink.SubBatch{Migration: tracedMigration, Seq: 1, Relation: rel, Batch: batch, From: cp.Key, Hi: batches.IntKey(100)}
	res, err := b.sink.ApplySubBatch(ctx, sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.EqualValues(t, 100, res.Rows)

	sb.From, sb.Hi, sb.Limit = res.Checkpoint, batches.Key{}, 100
	res, err = b.sink.ApplySubBatch(ctx, sb, set(rel, "n = n + 1"))
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
	_, err = b.sink.ApplySubBatch(ctx, sb, custom(boom))
	require.ErrorIs(t, err, boom)
	res, err = b.sink.ApplySubBatch(ctx, sb, custom(nil))
	require.NoError(t, err)
	require.True(t, res.Done)
	require.EqualValues(t, 100, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE label = 'custom'"))
	return parent.SpanContext()
}

// TestTracing: with a TracerProvider, every statement of a sub-batch is a
// span under the caller's (or under a custom change's own span), with the
// database system and the statement's text, and no bound value.
func TestTracing(t *testing.T) {
	t.Parallel()
	tp, exp := sinktest.Tracing(t)
	b := setup(t, sink.Options{TracerProvider: tp})
	require.NoError(t, b.sink.EnsureLedger(ctx(t)))
	require.Empty(t, exp.GetSpans(), "a statement outside a span starts no trace")

	parent := b.tracedSubBatches(t, tp)
	ss := sinktest.CheckSQLSpans(t, exp.GetSpans(), parent, "sqlite", tracedMigration)
	for _, s := range ss {
		if strings.HasPrefix(s.Text, "UPDATE items SET label = 'custom'") && s.Name == "sql.stmt.exec" {
			require.Equal(t, "custom", s.ParentName, "a statement nests under its caller's span")
		}
	}
	has := func(what string, match func(string) bool) { t.Helper(); ss.RequireStatement(t, what, match) }
	has("the transaction's start", func(q string) bool { return q == "BEGIN IMMEDIATE" })
	has("the ledger row's creation", func(q string) bool { return strings.Contains(q, "INSERT") && strings.Contains(q, "batchflow_ledger") })
	has("the folded change", func(q string) bool { return strings.HasPrefix(q, `UPDATE OR ROLLBACK "main"."items" SET n = n + 1`) })
	has("the checkpoint's compare-and-set", func(q string) bool { return q == advanceCheckpoint })
	has("the ledger read with the probe", func(q string) bool { return strings.HasPrefix(q, "SELECT l.checkpoint, (SELECT") })
	has("the custom change", func(q string) bool { return strings.HasPrefix(q, "UPDATE items SET label = 'custom'") })
	has("the ledger row's read in ApplyInTx", func(q string) bool {
		return strings.HasPrefix(q, "SELECT checkpoint") && strings.Contains(q, "batchflow_ledger")
	})
	has("the checkpoint's update in ApplyInTx", func(q string) bool { return strings.HasPrefix(q, `UPDATE "batchflow_ledger" SET checkpoint`) })
	has("the commit", func(q string) bool { return q == "COMMIT" })
	has("the failed change's rollback", func(q string) bool { return q == "ROLLBACK" })
}

// TestTracingOff: without a TracerProvider both pools use the driver
// itself, and a sub-batch under a recording span adds no span to it.
func TestTracingOff(t *testing.T) {
	t.Parallel()
	tp, exp := sinktest.Tracing(t)
	b := setup(t, sink.Options{})
	for _, db := range []*sql.DB{b.sink.write, b.sink.read} {
		require.IsType(t, &msqlite.Driver{}, db.Driver())
	}
	b.tracedSubBatches(t, tp)
	spans := exp.GetSpans()
	require.Len(t, spans, 3, "the batch's and the custom changes'")
	for _, s := range spans {
		require.Equal(t, "test", s.InstrumentationScope.Name, s.Name)
	}
}

// TestTracingKeepsTheWatchdog: under otelsql's connection the watchdog
// still reaches the driver's interrupt and stops a statement at its
// timeout, and its span says so; without the interrupt (the fallback, a
// deadline per statement) the statement stops all the same.
func TestTracingKeepsTheWatchdog(t *testing.T) {
	t.Parallel()
	tp, exp := sinktest.Tracing(t)
	b := setup(t, sink.Options{StatementTimeout: 200 * time.Millisecond, TracerProvider: tp})
	rel := b.items(t, 100)
	sb := b.explicitSubBatch(t, rel, "watched", 10)
	require.NotNil(t, b.sink.w.watch.interrupt, "the watchdog cannot see through otelsql's connection: see unwrapConn")

	for _, fallback := range []bool{false, true} {
		if fallback {
			b.sink.w.watch.interrupt = nil
		}
		c, span := tp.Tracer("test").Start(ctx(t), "sub-batch")
		started := time.Now()
		_, err := b.sink.ApplySubBatch(c, sb, set(rel, "n = "+endless))
		span.End()
		require.ErrorIs(t, err, context.DeadlineExceeded, "fallback %v", fallback)
		require.Less(t, time.Since(started), 3*time.Second, "fallback %v", fallback)

		var failed bool
		for _, s := range exp.GetSpans() {
			if s.Parent.SpanID() == span.SpanContext().SpanID() && s.Status.Code == codes.Error &&
				strings.Contains(sinktest.QueryText(s), endless) {
				failed = true
			}
		}
		require.True(t, failed, "fallback %v: no failed span for the interrupted statement", fallback)
	}
	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.EqualValues(t, 10, res.Rows)
}

// TestUnwrapConn: the watchdog looks through wrappers embedding a
// driver.Conn, and nothing else.
func TestUnwrapConn(t *testing.T) {
	t.Parallel()
	raw := &stubConn{}
	require.Same(t, raw, unwrapConn(&wrappedConn{&wrappedConn{raw}}))
	require.Same(t, raw, unwrapConn(raw), "not a wrapper: as it is")
	empty := &wrappedConn{}
	require.Same(t, empty, unwrapConn(empty), "nothing inside: as it is")
	other := &struct{ Conn any }{raw}
	require.Same(t, other, unwrapConn(other), "a field that is not an embedded driver.Conn: as it is")
}

type wrappedConn struct{ driver.Conn }

type stubConn struct{}

func (*stubConn) Prepare(string) (driver.Stmt, error) { return nil, driver.ErrSkip }
func (*stubConn) Close() error                        { return nil }
func (*stubConn) Begin() (driver.Tx, error)           { return nil, driver.ErrSkip }
