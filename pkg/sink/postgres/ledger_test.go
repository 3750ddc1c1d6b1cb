package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

func setN(rel sink.Relation) sink.Change {
	return kinds.SQL(rel, batches.SQLArgs{Set: "n = n + 1"})
}

func TestApplySubBatchFoldedWalksTheBatch(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 25, 3) // ids 3, 6, …, 75

	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	batch := intRange(0, 75)
	var got []sink.Result
	from := batches.Key{}
	for {
		res, err := tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: batch, From: from, Limit: 10}, setN(rel))
		require.NoError(t, err)
		got = append(got, res)
		from = res.Checkpoint
		if res.Done {
			break
		}
	}
	require.Equal(t, []sink.Result{
		{Checkpoint: batches.IntKey(30), Rows: 10, Lo: batches.IntKey(0), Hi: batches.IntKey(30)},
		{Checkpoint: batches.IntKey(60), Rows: 10, Lo: batches.IntKey(30), Hi: batches.IntKey(60)},
		{Checkpoint: batches.IntKey(75), Rows: 5, Done: true, Lo: batches.IntKey(60), Hi: batches.IntKey(75)},
	}, got)
	require.EqualValues(t, 25, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n = 1"))
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n <> 1"))

	cp, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(75), cp.Key)
	require.EqualValues(t, 25, cp.RowsAffected)
	require.WithinDuration(t, time.Now().UTC(), cp.UpdatedAt, time.Minute, "updated_at is UTC wall time")
}

func TestApplySubBatchFoldedExactLimitEndsAtBatchHi(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 20, 1)
	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)

	// The tenth row is the batch's last: done without an empty sub-batch.
	res, err := tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel,
		Batch: sink.Range{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(10)}, Limit: 10}, setN(rel))
	require.NoError(t, err)
	require.Equal(t, sink.Result{Checkpoint: batches.IntKey(10), Rows: 10, Done: true, Lo: batches.IntKey(1), Hi: batches.IntKey(10)}, res)
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n = 1 AND id BETWEEN 1 AND 10"))
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n <> 0 AND id > 10"))
}

// TestApplySubBatchRefusesBadSubBatches: what sink.SubBatch.Check and
// the sink refuse changes nothing, on the folded and the transactional
// path: a batch without an upper key (its last checkpoint would be null
// and a redelivery would start it over), an upper key beyond the batch or
// below the sub-batch's start (the checkpoint would move back over rows
// already applied), keys of another type, and a Limit below 1.
func TestApplySubBatchRefusesBadSubBatches(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 30, 1)
	_, err := tb.sink.BeginBatch(ctx, "m", 1, rel.Key)
	require.NoError(t, err)
	first, err := tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 30), Hi: batches.IntKey(10)}, setN(rel))
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(10), first.Checkpoint)

	ok := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 30), From: first.Checkpoint, Hi: batches.IntKey(20)}
	bad := map[string]func(sb *sink.SubBatch){
		"no batch upper key":    func(sb *sink.SubBatch) { sb.Batch.Hi = batches.Key{} },
		"open batch, limit":     func(sb *sink.SubBatch) { sb.Batch.Hi, sb.Hi, sb.Limit = batches.Key{}, batches.Key{}, 10 },
		"hi beyond the batch":   func(sb *sink.SubBatch) { sb.Hi = batches.IntKey(31) },
		"hi below the start":    func(sb *sink.SubBatch) { sb.Hi = batches.IntKey(9) },
		"hi below the batch":    func(sb *sink.SubBatch) { sb.From, sb.Hi = batches.Key{}, batches.IntKey(-1) },
		"text hi for int keys":  func(sb *sink.SubBatch) { sb.Hi = batches.StringKey("20") },
		"text from for int key": func(sb *sink.SubBatch) { sb.From = batches.StringKey("10") },
		"no hi, no limit":       func(sb *sink.SubBatch) { sb.Hi = batches.Key{} },
	}
	changes := map[string]sink.Change{
		"folded":    setN(rel),
		"statement": kinds.SQL(rel, batches.SQLArgs{Statement: "UPDATE t SET n = n + 1 WHERE id > :lo AND id <= :hi"}),
	}
	for name, mutate := range bad {
		for kind, change := range changes {
			sb := ok
			mutate(&sb)
			_, err := tb.sink.ApplySubBatch(ctx, sb, change)
			require.Error(t, err, "%s, %s", name, kind)
			require.NotErrorIs(t, err, sink.ErrCheckpointMoved, "%s, %s", name, kind)
		}
	}
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT sum(n) FROM t WHERE id <= 10"))
	cp, err := tb.sink.BeginBatch(ctx, "m", 1, rel.Key)
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(10), cp.Key)
	require.EqualValues(t, 10, cp.RowsAffected)

	// An empty sub-batch at the checkpoint is no harm, and no progress.
	ok.Hi = ok.From
	res, err := tb.sink.ApplySubBatch(ctx, ok, setN(rel))
	require.NoError(t, err)
	require.Equal(t, sink.Result{Checkpoint: batches.IntKey(10), Lo: batches.IntKey(10), Hi: batches.IntKey(10)}, res)
}

// TestApplySubBatchExplicitHi walks a batch with the caller's upper keys,
// by key span as the executor picks them, through each path: the sub-batch
// is exactly (From, Hi] ([Lo, Hi] first, for an inclusive batch), the
// checkpoint is Hi whatever rows it holds, and the batch is done at its Hi.
func TestApplySubBatchExplicitHi(t *testing.T) {
	t.Parallel()
	changes := map[string]func(rel sink.Relation) sink.Change{
		"folded": setN,
		"statement": func(rel sink.Relation) sink.Change {
			return kinds.SQL(rel, batches.SQLArgs{Statement: "UPDATE t SET n = n + 1 WHERE id > :lo AND id <= :hi AND id <> 30"})
		},
		"func": func(sink.Relation) sink.Change {
			return sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
				b := sink.NewBuilder(tx.Dialect())
				b.SQL("UPDATE t SET n = n + 1 WHERE ").Write(s.Rows)
				return tx.Exec(ctx, b.String(), b.Args()...)
			}}
		},
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tb := setup(t)
			ctx := t.Context()
			rel := tb.counterTable(t, "t", 25, 3) // ids 3, 6, …, 75
			rel.Where = "id <> 30"
			_, err := tb.sink.BeginBatch(ctx, "m", 1, rel.Key)
			require.NoError(t, err)
			batch := sink.Range{Lo: batches.IntKey(3), LoInclusive: true, Hi: batches.IntKey(75)}
			var got []sink.Result
			from := batches.Key{}
			for _, hi := range []int64{3, 30, 31, 32, 60, 75} {
				res, err := tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: batch, From: from, Hi: batches.IntKey(hi)}, change(rel))
				require.NoError(t, err)
				got = append(got, res)
				from = res.Checkpoint
			}
			require.Equal(t, []sink.Result{
				{Checkpoint: batches.IntKey(3), Rows: 1, Lo: batches.IntKey(3), Hi: batches.IntKey(3)},
				{Checkpoint: batches.IntKey(30), Rows: 8, Lo: batches.IntKey(3), Hi: batches.IntKey(30)},
				{Checkpoint: batches.IntKey(31), Rows: 0, Lo: batches.IntKey(30), Hi: batches.IntKey(31)},
				{Checkpoint: batches.IntKey(32), Rows: 0, Lo: batches.IntKey(31), Hi: batches.IntKey(32)},
				{Checkpoint: batches.IntKey(60), Rows: 10, Lo: batches.IntKey(32), Hi: batches.IntKey(60)},
				{Checkpoint: batches.IntKey(75), Rows: 5, Done: true, Lo: batches.IntKey(60), Hi: batches.IntKey(75)},
			}, got)
			require.EqualValues(t, 24, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n = 1"))
			require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT n FROM t WHERE id = 30"), "the where holds")
			cp, err := tb.sink.BeginBatch(ctx, "m", 1, rel.Key)
			require.NoError(t, err)
			require.Equal(t, batches.IntKey(75), cp.Key)
			require.EqualValues(t, 24, cp.RowsAffected)

			// A replay of the first sub-batch finds the checkpoint moved.
			_, err = tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: batch, Hi: batches.IntKey(30)}, change(rel))
			require.ErrorIs(t, err, sink.ErrCheckpointMoved)
			require.ErrorContains(t, err, "is at 75, not null")
			require.EqualValues(t, 24, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
		})
	}
}

// TestResetLedger deletes one migration's ledger rows; a database without
// a ledger has nothing to reset, and gets no ledger from it.
func TestResetLedger(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	require.NoError(t, tb.sink.ResetLedger(ctx, "m"))
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT count(*) FROM pg_class WHERE relname = 'batchflow_ledger'"))

	rel := tb.counterTable(t, "t", 20, 1)
	for _, m := range []string{"m", "other"} {
		for seq := range int64(3) {
			_, err := tb.sink.BeginBatch(ctx, m, seq, rel.Key)
			require.NoError(t, err)
		}
	}
	_, err := tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 0, Relation: rel, Batch: intRange(0, 20), Hi: batches.IntKey(20)}, setN(rel))
	require.NoError(t, err)
	require.NoError(t, tb.sink.ResetLedger(ctx, "m"))
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger WHERE migration = 'm'"))
	require.EqualValues(t, 3, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger WHERE migration = 'other'"))
	cp, err := tb.sink.BeginBatch(ctx, "m", 0, rel.Key)
	require.NoError(t, err)
	require.True(t, cp.Key.IsNull(), "the reused name starts over")
	require.Zero(t, cp.RowsAffected)
	require.NoError(t, tb.sink.ResetLedger(ctx, "never_ran"))
}

func TestApplySubBatchFoldedHonoursWhereAndFilter(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	rel := tb.counterTable(t, "t", 100, 1)
	rel.Where = "id % 2 = 0"
	rel.Filter = func(b *sink.Builder) { b.SQL("id <> ").Arg(int64(50)) }

	// Limits count the relation's rows: 49 of them, in sub-batches of 7.
	rows := tb.runBatch(t, "m", 1, rel, intRange(0, 100), 7, setN(rel))
	require.EqualValues(t, 49, rows)
	require.EqualValues(t, 49, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n = 1"))
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n = 1 AND (id % 2 = 1 OR id = 50)"))
}

func TestApplySubBatchStringAndUUIDKeys(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"text", "varchar(40)", "uuid"} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			tb := setup(t)
			tb.db.Exec(t, "CREATE TABLE k (id "+typ+" PRIMARY KEY, n int NOT NULL DEFAULT 0, m int NOT NULL DEFAULT 0)")
			tb.db.Exec(t, "INSERT INTO k (id) SELECT gen_random_uuid()::text::"+typ+" FROM generate_series(1, 53)")
			rel := tb.relation(t, "k", "id")
			require.Equal(t, sink.KeyString, rel.Key)
			lo, hi, ok, err := tb.sink.Bounds(t.Context(), rel, sink.Range{})
			require.NoError(t, err)
			require.True(t, ok)
			require.True(t, lo.IsString())

			rows := tb.runBatch(t, "m", 1, rel, sink.Range{Lo: lo, LoInclusive: true, Hi: hi}, 10, setN(rel))
			require.EqualValues(t, 53, rows)
			require.EqualValues(t, 53, tb.db.QueryInt(t, "SELECT count(*) FROM k WHERE n = 1"))

			// The statement form, on (lo, hi]: every row but the first.
			stmt := kinds.SQL(rel, batches.SQLArgs{Statement: "UPDATE k SET m = m + 1 WHERE id > :lo AND id <= :hi"})
			rows = tb.runBatch(t, "m", 2, rel, sink.Range{Lo: lo, Hi: hi}, 10, stmt)
			require.EqualValues(t, 52, rows)
			require.EqualValues(t, 52, tb.db.QueryInt(t, "SELECT count(*) FROM k WHERE m = 1"))
			require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT m FROM k WHERE id = $1", lo.Text()))

			// The caller's upper key, then Limit for the rest.
			mid, ok, err := tb.sink.NextKey(t.Context(), rel, sink.Range{Lo: lo, LoInclusive: true, Hi: hi}, 20)
			require.NoError(t, err)
			require.True(t, ok)
			_, err = tb.sink.BeginBatch(t.Context(), "m", 3, rel.Key)
			require.NoError(t, err)
			batch := sink.Range{Lo: lo, LoInclusive: true, Hi: hi}
			res, err := tb.sink.ApplySubBatch(t.Context(), sink.SubBatch{Migration: "m", Seq: 3, Relation: rel, Batch: batch, Hi: mid}, setN(rel))
			require.NoError(t, err)
			require.Equal(t, sink.Result{Checkpoint: mid, Rows: 20, Lo: lo, Hi: mid}, res)
			require.EqualValues(t, 33, tb.runBatch(t, "m", 3, rel, batch, 10, setN(rel)))
			require.EqualValues(t, 53, tb.db.QueryInt(t, "SELECT count(*) FROM k WHERE n = 2"))
		})
	}
}

func TestApplySubBatchMovedCheckpointChangesNothing(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 30, 1)
	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	sb := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 30), Limit: 10}
	_, err = tb.sink.ApplySubBatch(ctx, sb, setN(rel))
	require.NoError(t, err)

	for name, change := range map[string]sink.Change{
		"folded":    setN(rel),
		"statement": kinds.SQL(rel, batches.SQLArgs{Statement: "UPDATE t SET n = n + 1 WHERE id > :lo AND id <= :hi"}),
	} {
		// sb.From is still null: a second executor replaying sub-batch one.
		_, err = tb.sink.ApplySubBatch(ctx, sb, change)
		require.ErrorIs(t, err, sink.ErrCheckpointMoved, name)
		require.Equal(t, batches.ClassCheckpointMoved, tb.sink.Classify(err))
		require.ErrorContains(t, err, "is at 10, not null", name)
	}
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT rows_affected FROM batchflow_ledger"))

	// A batch without a ledger row is not ours to apply either.
	sb.Seq = 2
	_, err = tb.sink.ApplySubBatch(ctx, sb, setN(rel))
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)
	require.ErrorContains(t, err, "no ledger row")
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
}

// TestApplySubBatchWaitsOnLedgerRowThenSeesMovedCheckpoint checks the
// behaviour the folded statement rests on: a claim that waits for the
// ledger row's lock re-reads the row once the holder commits, although
// its statement's snapshot is older, and finds the checkpoint moved.
func TestApplySubBatchWaitsOnLedgerRowThenSeesMovedCheckpoint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ outcome, bound string }{{"commit", "limit"}, {"rollback", "limit"}, {"commit", "hi"}, {"rollback", "hi"}} {
		outcome := tc.outcome
		t.Run(tc.outcome+"/"+tc.bound, func(t *testing.T) {
			t.Parallel()
			tb := setup(t)
			ctx := t.Context()
			rel := tb.counterTable(t, "t", 30, 1)
			_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
			require.NoError(t, err)

			// Another executor, inside its sub-batch (0, 10]: it holds the
			// ledger row and has changed the rows.
			holder, err := tb.db.DB.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer holder.Rollback()
			_, err = holder.ExecContext(ctx, "SELECT 1 FROM batchflow_ledger WHERE migration = 'm' AND batch_seq = 1 FOR UPDATE")
			require.NoError(t, err)
			_, err = holder.ExecContext(ctx, "UPDATE t SET n = n + 1 WHERE id > 0 AND id <= 10")
			require.NoError(t, err)
			_, err = holder.ExecContext(ctx, "UPDATE batchflow_ledger SET checkpoint = '10', rows_affected = 10 WHERE migration = 'm' AND batch_seq = 1")
			require.NoError(t, err)

			type result struct {
				res sink.Result
				err error
			}
			done := make(chan result, 1)
			sb := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 30), Limit: 10}
			if tc.bound == "hi" {
				sb.Hi = batches.IntKey(10)
			}
			go func() {
				res, err := tb.sink.ApplySubBatch(ctx, sb, setN(rel))
				done <- result{res, err}
			}()
			waitForLockWait(t, tb.db)
			select {
			case o := <-done:
				t.Fatalf("ApplySubBatch returned while the ledger row was locked: %+v", o)
			default:
			}

			if outcome == "commit" {
				require.NoError(t, holder.Commit())
				o := <-done
				require.ErrorIs(t, o.err, sink.ErrCheckpointMoved)
				require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n = 1"))
				require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT sum(n) FROM t"), "no row changed twice")
				require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT rows_affected FROM batchflow_ledger"))
				return
			}
			require.NoError(t, holder.Rollback())
			o := <-done
			require.NoError(t, o.err)
			require.Equal(t, batches.IntKey(10), o.res.Checkpoint)
			require.EqualValues(t, 10, o.res.Rows)
			require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT sum(n) FROM t WHERE id <= 10"))
			require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT sum(n) FROM t WHERE id > 10"))
		})
	}
}

// TestTwoFoldedStatementsRace runs the same sub-batch from two sinks at
// once, with a trigger slowing the data change so the second statement
// starts while the first holds the ledger row: one applies it, the other
// gets ErrCheckpointMoved.
func TestTwoFoldedStatementsRace(t *testing.T) {
	t.Parallel()
	for _, bound := range []string{"limit", "hi"} {
		t.Run(bound, func(t *testing.T) {
			t.Parallel()
			testTwoFoldedStatementsRace(t, bound == "hi")
		})
	}
}

func testTwoFoldedStatementsRace(t *testing.T, explicit bool) {
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 30, 1)
	tb.db.Exec(t, `CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$`)
	tb.db.Exec(t, `CREATE TRIGGER slow AFTER UPDATE ON t FOR EACH STATEMENT EXECUTE FUNCTION slow()`)
	other := openSink(t, tb.db.DSN, sink.Options{MaxConns: 2})
	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)

	sb := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 30), Limit: 10}
	if explicit {
		sb.Hi = batches.IntKey(10)
	}
	var (
		wg       sync.WaitGroup
		errs     = make([]error, 2)
		took     = make([]time.Duration, 2)
		start    = make(chan struct{})
		executor = []*Sink{tb.sink, other}
	)
	for i := range executor {
		wg.Go(func() {
			<-start
			if i == 1 {
				time.Sleep(50 * time.Millisecond) // inside the first one's trigger
			}
			began := time.Now()
			_, errs[i] = executor[i].ApplySubBatch(ctx, sb, setN(rel))
			took[i] = time.Since(began)
		})
	}
	close(start)
	wg.Wait()
	winner, loser := 0, 1
	if errs[0] != nil {
		winner, loser = 1, 0
	}
	require.NoError(t, errs[winner])
	require.ErrorIs(t, errs[loser], sink.ErrCheckpointMoved)
	require.Greater(t, took[loser], 100*time.Millisecond, "the loser waited on the ledger row")
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n = 1"))
}

// TestExactlyOnceUnderConcurrentExecutors runs a non-idempotent change with
// many executors holding the same batch at once, each resuming from the
// ledger when it finds the checkpoint moved, as redelivered and republished
// batches do: every row ends changed exactly once.
func TestExactlyOnceUnderConcurrentExecutors(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"set", "set-hi", "statement", "statement-hi", "func"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			tb := setup(t, func(o *sink.Options) { o.MaxConns = 8 })
			ctx := t.Context()
			const rows = 2000
			rel := tb.counterTable(t, "t", rows, 2)
			var change sink.Change
			switch kind {
			case "set", "set-hi":
				change = setN(rel)
			case "statement", "statement-hi":
				change = kinds.SQL(rel, batches.SQLArgs{Statement: "UPDATE t SET n = n + 1 WHERE id > :lo AND id <= :hi"})
			case "func":
				change = sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
					b := sink.NewBuilder(tx.Dialect())
					b.SQL("UPDATE t SET n = n + 1 WHERE ").Write(s.Rows)
					return tx.Exec(ctx, b.String(), b.Args()...)
				}}
			}
			batch := intRange(0, 2*rows)
			var applied atomic.Int64
			var moved atomic.Int64
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					limit := 37 + w*11 // executors disagree on the sub-batch size
					for {
						cp, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
						if !assertNoError(t, err) {
							return
						}
						if cp.Key.Equal(batch.Hi) {
							return
						}
						sb := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: batch, From: cp.Key, Limit: limit}
						if strings.HasSuffix(kind, "-hi") {
							// Upper keys by key span, as the executor picks them.
							start := batch.Lo.Int()
							if !cp.Key.IsNull() {
								start = cp.Key.Int()
							}
							sb.Hi = batches.IntKey(min(start+int64(2*limit), batch.Hi.Int()))
						}
						res, err := tb.sink.ApplySubBatch(ctx, sb, change)
						switch {
						case errors.Is(err, sink.ErrCheckpointMoved):
							moved.Add(1)
							continue
						case !assertNoError(t, err):
							return
						}
						applied.Add(res.Rows)
						if res.Done {
							return
						}
					}
				})
			}
			wg.Wait()
			require.EqualValues(t, rows, applied.Load())
			require.EqualValues(t, rows, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n = 1"))
			require.EqualValues(t, rows, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
			require.EqualValues(t, rows, tb.db.QueryInt(t, "SELECT rows_affected FROM batchflow_ledger"))
			t.Logf("%d sub-batches lost the compare-and-set", moved.Load())
		})
	}
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

func TestApplySubBatchStatementKind(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 25, 1)
	change := kinds.SQL(rel, batches.SQLArgs{Statement: "UPDATE t SET n = n + 10 WHERE id > :lo AND id <= :hi"})
	require.False(t, change.Foldable)

	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	// An inclusive first key: :lo binds the integer below it.
	batch := sink.Range{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(25)}
	res, err := tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: batch, Limit: 10}, change)
	require.NoError(t, err)
	require.Equal(t, sink.Result{Checkpoint: batches.IntKey(10), Rows: 10, Lo: batches.IntKey(1), Hi: batches.IntKey(10)}, res)
	require.EqualValues(t, 100, tb.db.QueryInt(t, "SELECT sum(n) FROM t WHERE id <= 10"))
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT sum(n) FROM t WHERE id > 10"))
}

func TestApplySubBatchFuncRunsInTheLedgerTransaction(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 25, 1)
	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	sb := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 25), Limit: 10}

	// A failing change rolls back what it did, and the checkpoint stays.
	boom := errors.New("boom")
	_, err = tb.sink.ApplySubBatch(ctx, sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		b := sink.NewBuilder(tx.Dialect())
		b.SQL("UPDATE t SET n = 99 WHERE ").Write(s.Rows)
		if _, err := tx.Exec(ctx, b.String(), b.Args()...); err != nil {
			return 0, err
		}
		return 0, boom
	}})
	require.ErrorIs(t, err, boom)
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
	require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger WHERE checkpoint IS NULL"))

	// The pgx transaction is reachable for what only pgx does.
	res, err := tb.sink.ApplySubBatch(ctx, sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		ptx, ok := PgxTx(tx)
		if !ok {
			return 0, errors.New("no pgx transaction")
		}
		require.Equal(t, intRange(0, 10), s.Range)
		n, err := ptx.CopyFrom(ctx, pgx.Identifier{"audit"}, []string{"id"}, pgx.CopyFromRows([][]any{{s.Range.Hi.Value()}}))
		if err != nil {
			return 0, err
		}
		rows, err := tx.Query(ctx, "SELECT count(*) FROM audit")
		if err != nil {
			return 0, err
		}
		defer rows.Close()
		require.True(t, rows.Next())
		var c int64
		require.NoError(t, rows.Scan(&c))
		return n + c, rows.Err()
	}})
	require.ErrorContains(t, err, `relation "audit" does not exist`)
	require.Equal(t, batches.ClassFatal, tb.sink.Classify(err))
	tb.db.Exec(t, "CREATE TABLE audit (id bigint)")
	res, err = tb.sink.ApplySubBatch(ctx, sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		ptx, _ := PgxTx(tx)
		return ptx.CopyFrom(ctx, pgx.Identifier{"audit"}, []string{"id"}, pgx.CopyFromRows([][]any{{s.Range.Hi.Value()}}))
	}})
	require.NoError(t, err)
	require.Equal(t, sink.Result{Checkpoint: batches.IntKey(10), Rows: 1, Lo: batches.IntKey(0), Hi: batches.IntKey(10)}, res)
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT id FROM audit"))
	_, ok := PgxTx(nil)
	require.False(t, ok)
}

func TestSkipKey(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 25, 1)
	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	sb := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 25), Limit: 10}

	cp, err := tb.sink.SkipKey(ctx, sb, batches.IntKey(1))
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(1), cp.Key)
	require.Equal(t, []batches.Key{batches.IntKey(1)}, cp.FailedKeys)

	sb.From = cp.Key
	res, err := tb.sink.ApplySubBatch(ctx, sb, setN(rel))
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(11), res.Checkpoint)
	sb.From = res.Checkpoint
	cp, err = tb.sink.SkipKey(ctx, sb, batches.IntKey(12))
	require.NoError(t, err)
	require.Equal(t, []batches.Key{batches.IntKey(1), batches.IntKey(12)}, cp.FailedKeys)
	require.EqualValues(t, 10, cp.RowsAffected)

	// A stale From is a lost compare-and-set, with nothing recorded.
	_, err = tb.sink.SkipKey(ctx, sb, batches.IntKey(13))
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)
	// A key at or before the checkpoint would move it back: refused.
	sb.From = cp.Key
	for _, k := range []int64{12, 5} {
		_, err = tb.sink.SkipKey(ctx, sb, batches.IntKey(k))
		require.ErrorContains(t, err, "not after the checkpoint")
	}

	read, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(12), read.Key)
	require.Equal(t, []batches.Key{batches.IntKey(1), batches.IntKey(12)}, read.FailedKeys)
	var failed string
	require.NoError(t, tb.db.DB.QueryRowContext(ctx, "SELECT failed_keys FROM batchflow_ledger").Scan(&failed))
	require.Equal(t, "[1,12]", failed)
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE id IN (1, 12) AND n <> 0"))
}

func TestBeginBatchCreatesTheLedgerOnFirstUse(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT count(*) FROM pg_class WHERE relname = 'batchflow_ledger'"))

	cp, err := tb.sink.BeginBatch(ctx, "m", 7, sink.KeyInt)
	require.NoError(t, err)
	require.Equal(t, sink.Checkpoint{Migration: "m", Seq: 7, UpdatedAt: cp.UpdatedAt}, cp)
	require.False(t, cp.UpdatedAt.IsZero())

	tb.db.Exec(t, "UPDATE batchflow_ledger SET checkpoint = '42', rows_affected = 5")
	cp, err = tb.sink.BeginBatch(ctx, "m", 7, sink.KeyInt)
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(42), cp.Key)
	require.EqualValues(t, 5, cp.RowsAffected)
	require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger"))

	cp, err = tb.sink.BeginBatch(ctx, "m", 7, sink.KeyString)
	require.NoError(t, err)
	require.Equal(t, batches.StringKey("42"), cp.Key, "read back as the key type asked for")

	tb.db.Exec(t, "UPDATE batchflow_ledger SET checkpoint = 'k-0042'")
	cp, err = tb.sink.BeginBatch(ctx, "m", 7, sink.KeyString)
	require.NoError(t, err)
	require.Equal(t, batches.StringKey("k-0042"), cp.Key)
	_, err = tb.sink.BeginBatch(ctx, "m", 7, sink.KeyInt)
	require.ErrorContains(t, err, "not an integer key")
}

func TestBeginBatchConcurrentFirstUse(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(o *sink.Options) { o.MaxConns = 8 })
	ctx := t.Context()
	// Several sinks: each creates the ledger on its first call, at once.
	sinks := []*Sink{tb.sink}
	for range 5 {
		sinks = append(sinks, openSink(t, tb.db.DSN, sink.Options{MaxConns: 2}))
	}
	var wg sync.WaitGroup
	for _, s := range sinks {
		for range 2 {
			wg.Go(func() {
				_, err := s.BeginBatch(ctx, "m", 1, sink.KeyInt)
				assertNoError(t, err)
			})
		}
	}
	wg.Wait()
	require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger"))
}

// TestEnsureLedgerRetriesAfterFailure: a failed creation is not
// remembered, so the sink recovers once the cause is fixed.
func TestEnsureLedgerRetriesAfterFailure(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	role := createRole(t, tb)
	tb.db.Exec(t, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
	limited := openSink(t, roleDSN(t, tb.db.DSN, role), sink.Options{MaxConns: 2})

	_, err := limited.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.Error(t, err)
	require.Equal(t, batches.ClassFatal, limited.Classify(err))
	require.ErrorContains(t, err, "permission denied")

	tb.db.Exec(t, "GRANT CREATE ON SCHEMA public TO "+role)
	_, err = limited.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger"))
}

// countingTracer counts the statements a pool sends.
type countingTracer struct{ n atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func TestFoldedSubBatchIsOneStatement(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 100, 1)
	cfg, err := poolConfig(tb.db.DSN, sink.Options{MaxConns: 1}.WithDefaults())
	require.NoError(t, err)
	tracer := &countingTracer{}
	cfg.ConnConfig.Tracer = tracer
	s := &Sink{log: tb.sink.log}
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })

	_, err = s.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	from := batches.Key{}
	for i := range 5 {
		before := tracer.n.Load()
		sb := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 100), From: from, Limit: 20}
		if i%2 == 1 {
			sb.Hi = batches.IntKey(from.Int() + 20)
		}
		res, err := s.ApplySubBatch(ctx, sb, setN(rel))
		require.NoError(t, err)
		require.EqualValues(t, 1, tracer.n.Load()-before, "sub-batch %d", i)
		require.EqualValues(t, 20, res.Rows)
		from = res.Checkpoint
	}
	require.EqualValues(t, 100, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
}

// TestFoldedStatementText pins the statement's shapes: the claim inside
// the data change's upper bound, whatever the kind writes around s.Rows;
// with the caller's Hi, no probe.
func TestFoldedStatementText(t *testing.T) {
	t.Parallel()
	tab := &sink.Table{Schema: "public", Name: "t"}
	rel := sink.Relation{Table: tab, Column: "id", Key: sink.KeyInt, Where: "x > 0"}
	claim := `WITH claim AS MATERIALIZED (SELECT 1 FROM "batchflow_ledger" WHERE migration = $1 AND batch_seq = $2 AND checkpoint IS NOT DISTINCT FROM $3::text FOR NO KEY UPDATE)`

	b := foldedStatement(sink.SubBatch{Migration: "m", Seq: 3, Relation: rel, Batch: intRange(0, 100), From: batches.IntKey(40), Hi: batches.IntKey(60)}, setN(rel))
	want := claim +
		`, data AS (UPDATE "public"."t" SET n = n + 1 WHERE "id" > $4 AND "id" <= $5 AND "id" <= (SELECT $5 FROM claim) AND (x > 0) RETURNING 1)` +
		`, changed AS MATERIALIZED (SELECT count(*) AS n FROM data)` +
		` UPDATE "batchflow_ledger" SET checkpoint = $6::text, rows_affected = rows_affected + (SELECT n FROM changed), updated_at = now() AT TIME ZONE 'UTC'` +
		` WHERE migration = $7 AND batch_seq = $8 AND EXISTS (SELECT 1 FROM claim) RETURNING (SELECT n FROM changed)`
	require.Equal(t, want, b.String())
	require.Equal(t, []any{"m", int64(3), "40", int64(40), int64(60), "60", "m", int64(3)}, b.Args())

	b = foldedStatement(sink.SubBatch{Migration: "m", Seq: 3, Relation: rel, Batch: intRange(0, 100), From: batches.IntKey(40), Limit: 20}, setN(rel))
	want = claim +
		`, probe AS MATERIALIZED (SELECT "id" AS k FROM "public"."t" WHERE "id" > $4 AND "id" <= $5 AND (x > 0) AND "id" IS NOT NULL ORDER BY "id" LIMIT 1 OFFSET $6)` +
		`, bounds AS MATERIALIZED (SELECT p.k AS probe, coalesce(p.k, $7) AS hi FROM claim LEFT JOIN probe AS p ON true)` +
		`, data AS (UPDATE "public"."t" SET n = n + 1 WHERE "id" > $8 AND "id" <= (SELECT hi FROM bounds) AND (x > 0) RETURNING 1)` +
		`, changed AS MATERIALIZED (SELECT count(*) AS n FROM data)` +
		` UPDATE "batchflow_ledger" SET checkpoint = coalesce((SELECT probe FROM bounds)::text, $9::text), rows_affected = rows_affected + (SELECT n FROM changed), updated_at = now() AT TIME ZONE 'UTC'` +
		` WHERE migration = $10 AND batch_seq = $11 AND EXISTS (SELECT 1 FROM claim) RETURNING (SELECT n FROM changed), checkpoint, (SELECT probe IS NULL FROM bounds)`
	require.Equal(t, want, b.String())
	require.Equal(t, []any{"m", int64(3), "40", int64(40), int64(100), int64(19), int64(100), int64(40), "100", "m", int64(3)}, b.Args())
}
