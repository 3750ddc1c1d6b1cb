package sinktest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

func testApplyExactlyOnce(t *testing.T, b *bundle) {
	ids := gappedIDs(2000)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "", "")
	change := setChange(rel, "n = n + 1")

	var total int64
	for i, r := range b.plan(t, rel, 300) {
		total += runBatch(t, b.sink, "bump", int64(i), rel, r, change, 37)
	}
	require.Equal(t, int64(len(ids)), total, "rows reported")
	require.Equal(t, int64(len(ids)), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"), "every row changed exactly once")
	require.Equal(t, int64(len(ids)), b.db.QueryInt(t, "SELECT SUM(rows_affected) FROM batchflow_ledger WHERE migration = 'bump'"), "the ledger counts the rows")
}

func testApplyRespectsFilter(t *testing.T, b *bundle) {
	ids := gappedIDs(900)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "id", "grp = 2")
	for i, r := range b.plan(t, rel, 50) {
		runBatch(t, b.sink, "grp2", int64(i), rel, r, setChange(rel, "n = n + 1"), 16)
	}
	require.Equal(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE grp = 2"), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE grp <> 2 AND n <> 0"), "rows outside the filter untouched")
}

// holdLedger starts a transaction on a separate connection that holds the
// ledger row of (migration, seq) locked, the way a slow executor would, and
// returns the function that releases it.
func (b *bundle) holdLedger(t *testing.T, migration string, seq int64) (release func()) {
	t.Helper()
	conn, err := b.db.DB.Conn(ctx(t))
	require.NoError(t, err)
	if b.dialect == "sqlite" {
		_, err = conn.ExecContext(ctx(t), "BEGIN IMMEDIATE")
	} else {
		_, err = conn.ExecContext(ctx(t), "BEGIN")
		require.NoError(t, err)
		var cp any
		err = conn.QueryRowContext(ctx(t), "SELECT checkpoint FROM batchflow_ledger WHERE migration = "+b.db.Placeholder(1)+" AND batch_seq = "+b.db.Placeholder(2)+" FOR UPDATE", migration, seq).Scan(&cp)
	}
	require.NoError(t, err)
	var once sync.Once
	release = func() {
		once.Do(func() {
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
			_ = conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// testConcurrentSameSubBatch makes two executors apply the same sub-batch
// at the same moment: both wait on a third transaction holding the ledger
// row, which then lets go. Exactly one commits; the other is told the
// checkpoint moved and changes nothing.
func testConcurrentSameSubBatch(t *testing.T, b *bundle) {
	ids := gappedIDs(300)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "", "")
	r := b.plan(t, rel, 300)[0]
	second := b.open(t, b.db.DSN, sink.Options{})
	cp, err := b.sink.BeginBatch(ctx(t), "race", 0, rel.Key)
	require.NoError(t, err)

	release := b.holdLedger(t, "race", 0)
	change := setChange(rel, "n = n + 1")
	sb := sink.SubBatch{Migration: "race", Seq: 0, Relation: rel, Batch: r, From: cp.Key, Limit: 100}
	type outcome struct {
		res sink.Result
		err error
	}
	results := make(chan outcome, 2)
	for _, s := range []sink.Sink{b.sink, second} {
		go func() {
			res, err := s.ApplySubBatch(ctx(t), sb, change)
			results <- outcome{res, err}
		}()
	}
	time.Sleep(500 * time.Millisecond) // both are now waiting on the lock
	release()

	var won, moved int
	for range 2 {
		o := <-results
		switch {
		case o.err == nil:
			won++
			require.Equal(t, int64(100), o.res.Rows)
		case errors.Is(o.err, sink.ErrCheckpointMoved):
			moved++
			require.Equal(t, batches.ClassCheckpointMoved, b.sink.Classify(o.err))
		default:
			t.Fatalf("unexpected error: %v", o.err)
		}
	}
	require.Equal(t, 1, won, "exactly one executor commits")
	require.Equal(t, 1, moved, "the other is told the checkpoint moved")
	require.Equal(t, int64(100), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n > 1"), "no row changed twice")
}

// testConcurrentExecutors runs three executors over the same batches at
// once, each resuming from the ledger whenever another moved the checkpoint
// under it: every row still ends changed exactly once.
func testConcurrentExecutors(t *testing.T, b *bundle) {
	ids := gappedIDs(1500)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "", "")
	ranges := b.plan(t, rel, 500)
	change := setChange(rel, "n = n + 1")
	sinks := []sink.Sink{b.sink, b.open(t, b.db.DSN, sink.Options{}), b.open(t, b.db.DSN, sink.Options{})}

	var moved atomic.Int64
	var wg sync.WaitGroup
	for _, s := range sinks {
		wg.Go(func() {
			for seq, r := range ranges {
				cp, err := s.BeginBatch(ctx(t), "stress", int64(seq), rel.Key)
				if !assertNoError(t, err) {
					return
				}
				from := cp.Key
				for {
					res, err := s.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "stress", Seq: int64(seq), Relation: rel, Batch: r, From: from, Limit: 25}, change)
					if errors.Is(err, sink.ErrCheckpointMoved) {
						moved.Add(1)
						if cp, err = s.BeginBatch(ctx(t), "stress", int64(seq), rel.Key); !assertNoError(t, err) {
							return
						}
						from = cp.Key
						continue
					}
					// Transient errors (SQLite's busy writer) are retried, as the executor does.
					if err != nil && s.Classify(err) == batches.ClassTransient {
						continue
					}
					if !assertNoError(t, err) {
						return
					}
					if res.Done {
						break
					}
					from = res.Checkpoint
				}
			}
		})
	}
	wg.Wait()
	t.Logf("checkpoint moved under an executor %d times", moved.Load())
	require.Equal(t, int64(len(ids)), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"), "every row changed exactly once")
	require.Equal(t, int64(len(ids)), b.db.QueryInt(t, "SELECT SUM(rows_affected) FROM batchflow_ledger WHERE migration = 'stress'"))
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

// testCrashAndResume stops an executor mid-batch (its sink closed, its
// memory gone), then lets another take over from the ledger, as the
// watchdog's republish does, while the first one's stale view is refused.
func testCrashAndResume(t *testing.T, b *bundle) {
	ids := gappedIDs(700)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "", "")
	r := b.plan(t, rel, 700)[0]
	change := setChange(rel, "n = n + 1")

	first := b.open(t, b.db.DSN, sink.Options{})
	cp, err := first.BeginBatch(ctx(t), "crash", 0, rel.Key)
	require.NoError(t, err)
	require.True(t, cp.Key.IsNull(), "a new batch starts before its first key")
	from := cp.Key
	var before sink.Result
	for range 3 {
		res, err := first.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "crash", Seq: 0, Relation: rel, Batch: r, From: from, Limit: 100}, change)
		require.NoError(t, err)
		before, from = res, res.Checkpoint
	}
	staleFrom := batches.IntKey(ids[199]) // the checkpoint before the last sub-batch
	require.NoError(t, first.Close())

	// The batch is redelivered to another executor.
	next := b.open(t, b.db.DSN, sink.Options{})
	cp, err = next.BeginBatch(ctx(t), "crash", 0, rel.Key)
	require.NoError(t, err)
	require.Equal(t, before.Checkpoint, cp.Key, "the ledger remembers where the batch got to")
	require.Equal(t, int64(300), cp.RowsAffected)

	// A stale executor retrying an applied sub-batch changes nothing.
	_, err = next.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "crash", Seq: 0, Relation: rel, Batch: r, From: staleFrom, Limit: 100}, change)
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)
	require.Equal(t, int64(300), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))

	require.Equal(t, int64(400), runBatch(t, next, "crash", 0, rel, r, change, 100))
	require.Equal(t, int64(700), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))

	// Delivered once more after it finished: nothing left to do.
	require.Zero(t, runBatch(t, next, "crash", 0, rel, r, change, 100))
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 1"), "no row changed twice")
}

// testFailedChangeRollsBack runs a custom change that writes and then fails:
// its writes and the checkpoint move are rolled back together.
func testFailedChangeRollsBack(t *testing.T, b *bundle) {
	b.createItems(t, gappedIDs(200))
	rel := b.relation(t, "items", "", "")
	r := b.plan(t, rel, 200)[0]
	cp, err := b.sink.BeginBatch(ctx(t), "custom", 0, rel.Key)
	require.NoError(t, err)

	boom := errors.New("the custom kind gave up")
	failing := sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		q := sink.NewBuilder(tx.Dialect())
		q.SQL("UPDATE ").Ident(rel.Table.QualifiedName()).SQL(" SET n = n + 1 WHERE ").Write(s.Rows)
		n, err := tx.Exec(ctx, q.String(), q.Args()...)
		require.NoError(t, err)
		require.Equal(t, int64(50), n, "the custom kind sees exactly its sub-batch's rows")
		return 0, boom
	}}
	sb := sink.SubBatch{Migration: "custom", Seq: 0, Relation: rel, Batch: r, From: cp.Key, Limit: 50}
	_, err = b.sink.ApplySubBatch(ctx(t), sb, failing)
	require.ErrorIs(t, err, boom)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"), "the writes were rolled back")
	again, err := b.sink.BeginBatch(ctx(t), "custom", 0, rel.Key)
	require.NoError(t, err)
	require.True(t, again.Key.IsNull(), "the checkpoint did not move")

	// The same sub-batch with a working custom change commits both.
	working := sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		q := sink.NewBuilder(tx.Dialect())
		q.SQL("UPDATE ").Ident(rel.Table.QualifiedName()).SQL(" SET n = n + 1 WHERE ").Write(s.Rows)
		return tx.Exec(ctx, q.String(), q.Args()...)
	}}
	res, err := b.sink.ApplySubBatch(ctx(t), sb, working)
	require.NoError(t, err)
	require.Equal(t, int64(50), res.Rows)
	require.Equal(t, int64(50), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
}

func testSkipKey(t *testing.T, b *bundle) {
	ids := gappedIDs(100)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "", "")
	r := b.plan(t, rel, 100)[0]
	cp, err := b.sink.BeginBatch(ctx(t), "skip", 0, rel.Key)
	require.NoError(t, err)

	poison := batches.IntKey(ids[0])
	sb := sink.SubBatch{Migration: "skip", Seq: 0, Relation: rel, Batch: r, From: cp.Key, Limit: 1}
	after, err := b.sink.SkipKey(ctx(t), sb, poison)
	require.NoError(t, err)
	require.Equal(t, poison, after.Key)
	require.Equal(t, []batches.Key{poison}, after.FailedKeys)

	// Skipping again from the old checkpoint is refused.
	_, err = b.sink.SkipKey(ctx(t), sb, poison)
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)

	second := batches.IntKey(ids[5])
	sb.From = poison
	_, err = b.sink.SkipKey(ctx(t), sb, second)
	require.NoError(t, err)

	got, err := b.sink.BeginBatch(ctx(t), "skip", 0, rel.Key)
	require.NoError(t, err)
	require.Equal(t, second, got.Key)
	require.Equal(t, []batches.Key{poison, second}, got.FailedKeys, "failed keys are recorded once each, in order")
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"), "skipping applies nothing")

	// The rest of the batch applies after the skipped keys.
	require.Equal(t, int64(len(ids)-6), runBatch(t, b.sink, "skip", 0, rel, r, setChange(rel, "n = n + 1"), 40))
}

func testLedgerCreatedOnFirstUse(t *testing.T, b *bundle) {
	countLedger := func() int64 {
		switch b.dialect {
		case "postgres":
			return b.db.QueryInt(t, "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'batchflow_ledger' AND table_schema = current_schema()")
		case "mysql":
			return b.db.QueryInt(t, "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'batchflow_ledger' AND table_schema = DATABASE()")
		}
		return b.db.QueryInt(t, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'batchflow_ledger'")
	}
	require.Zero(t, countLedger())

	// Two executors starting at once both find the ledger ready.
	other := b.open(t, b.db.DSN, sink.Options{})
	var wg sync.WaitGroup
	for i, s := range []sink.Sink{b.sink, other} {
		wg.Go(func() {
			_, err := s.BeginBatch(ctx(t), "first_use", int64(i), sink.KeyInt)
			assertNoError(t, err)
		})
	}
	wg.Wait()
	require.Equal(t, int64(1), countLedger())
	require.NoError(t, b.sink.EnsureLedger(ctx(t)), "idempotent")
	require.Equal(t, int64(2), b.db.QueryInt(t, "SELECT COUNT(*) FROM batchflow_ledger WHERE migration = 'first_use' AND checkpoint IS NULL"))

	// BeginBatch on an existing row returns it unchanged.
	cp, err := b.sink.BeginBatch(ctx(t), "first_use", 0, sink.KeyInt)
	require.NoError(t, err)
	require.True(t, cp.Key.IsNull())
	require.Zero(t, cp.RowsAffected)
}

// testStatementForm runs the sql kind's statement form, with :lo and :hi
// bound to each sub-batch's bounds.
func testStatementForm(t *testing.T, b *bundle) {
	ids := gappedIDs(600)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "", "")
	change := kindsStatement(rel, "UPDATE items SET n = n + 1 WHERE id > :lo AND id <= :hi")
	var total int64
	for i, r := range b.plan(t, rel, 250) {
		total += runBatch(t, b.sink, "stmt", int64(i), rel, r, change, 40)
	}
	require.Equal(t, int64(len(ids)), total, "rows reported from the statement")
	require.Equal(t, int64(len(ids)), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"), "the first row included, none twice")

	// With text keys, the very first key has nothing below it to bind :lo to:
	// a clear error, not a silently skipped row.
	b.createDocs(t, textKeys(20))
	docs := b.relation(t, "docs", "", "")
	r := b.plan(t, docs, 20)[0]
	cp, err := b.sink.BeginBatch(ctx(t), "stmt_docs", 0, docs.Key)
	require.NoError(t, err)
	_, err = b.sink.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "stmt_docs", Seq: 0, Relation: docs, Batch: r, From: cp.Key, Limit: 5},
		kindsStatement(docs, "UPDATE docs SET n = n + 1 WHERE k > :lo AND k <= :hi"))
	require.ErrorIs(t, err, sink.ErrNoExclusiveLo)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM docs WHERE n <> 0"))
}
