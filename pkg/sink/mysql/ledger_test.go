package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/mysql"
)

// protocolRun is one batch applied to the end by one sink: every result,
// then the data and the ledger as they ended.
type protocolRun struct {
	results []sink.Result
	err     error
	data    string
	ledger  string
}

// TestFoldedMatchesGeneric applies the same batches with the sink's own
// protocols and with sink.ApplyInTx, on identical databases, and requires
// identical results, data and ledgers: they are optimisations, not a
// different contract. Cases with an upper key chosen by the caller (span
// for integer keys, his for text keys) run changeThenAdvance or
// lockThenApply without the probe; the others lockThenApply with it.
func TestFoldedMatchesGeneric(t *testing.T) {
	t.Parallel()
	textKeys := make([]string, 40)
	for i := range textKeys {
		textKeys[i] = fmt.Sprintf("k%03d", (i*17)%40)
	}
	textHis := []string{"k005", "k011", "k017", "k023", "k029", "k035", "k039"}
	statement := func(stmt string) func(rel sink.Relation) sink.Change {
		return func(rel sink.Relation) sink.Change { return kinds.SQL(rel, batches.SQLArgs{Statement: stmt}) }
	}
	custom := func(rel sink.Relation) sink.Change {
		return sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
			q := sink.NewBuilder(tx.Dialect())
			q.SQL("UPDATE items SET n = n + 2 WHERE ").Write(s.Rows)
			return tx.Exec(ctx, q.String(), q.Args()...)
		}}
	}
	for _, tc := range []struct {
		name  string
		table string
		where string
		batch sink.Range
		limit int
		// span > 0: the caller picks Hi = From + span (Batch.Lo - 1 + span first).
		span int64
		// his: the caller picks the first of these above From.
		his    []string
		change func(rel sink.Relation) sink.Change
	}{
		{"set with filter", "items", "id % 3 <> 0", sink.Range{Lo: batches.IntKey(2), LoInclusive: true, Hi: batches.IntKey(90)}, 7, 0, nil,
			func(rel sink.Relation) sink.Change { return setChange(rel, "n = n + id") }},
		{"set with filter, hi", "items", "id % 3 <> 0", sink.Range{Lo: batches.IntKey(2), LoInclusive: true, Hi: batches.IntKey(90)}, 0, 11, nil,
			func(rel sink.Relation) sink.Change { return setChange(rel, "n = n + id") }},
		{"set exclusive lo", "items", "", sink.Range{Lo: batches.IntKey(10), Hi: batches.IntKey(40)}, 10, 0, nil,
			func(rel sink.Relation) sink.Change { return setChange(rel, "n = n + 1") }},
		{"set exclusive lo, hi", "items", "", sink.Range{Lo: batches.IntKey(10), Hi: batches.IntKey(40)}, 0, 7, nil,
			func(rel sink.Relation) sink.Change { return setChange(rel, "n = n + 1") }},
		{"statement int keys", "items", "", sink.Range{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(50)}, 9, 0, nil,
			statement("UPDATE items SET n = n + 1 WHERE id > :lo AND id <= :hi")},
		{"statement int keys, hi", "items", "", sink.Range{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(50)}, 0, 9, nil,
			statement("UPDATE items SET n = n + 1 WHERE id > :lo AND id <= :hi")},
		{"text keys", "docs", "", sink.Range{Lo: batches.StringKey("k000"), LoInclusive: true, Hi: batches.StringKey("k039")}, 6, 0, nil,
			func(rel sink.Relation) sink.Change { return setChange(rel, "n = n + 1") }},
		{"text keys, hi", "docs", "", sink.Range{Lo: batches.StringKey("k000"), LoInclusive: true, Hi: batches.StringKey("k039")}, 0, 0, textHis,
			func(rel sink.Relation) sink.Change { return setChange(rel, "n = n + 1") }},
		{"statement text keys mid-table", "docs", "", sink.Range{Lo: batches.StringKey("k010"), LoInclusive: true, Hi: batches.StringKey("k030")}, 4, 0, nil,
			statement("UPDATE docs SET n = n + 1 WHERE k > :lo AND k <= :hi")},
		{"statement text keys mid-table, hi", "docs", "", sink.Range{Lo: batches.StringKey("k010"), LoInclusive: true, Hi: batches.StringKey("k030")}, 0, 0, textHis,
			statement("UPDATE docs SET n = n + 1 WHERE k > :lo AND k <= :hi")},
		{"statement text keys from the first", "docs", "", sink.Range{Lo: batches.StringKey("k000"), LoInclusive: true, Hi: batches.StringKey("k030")}, 4, 0, nil,
			statement("UPDATE docs SET n = n + 1 WHERE k > :lo AND k <= :hi")},
		{"statement text keys from the first, hi", "docs", "", sink.Range{Lo: batches.StringKey("k000"), LoInclusive: true, Hi: batches.StringKey("k030")}, 0, 0, textHis,
			statement("UPDATE docs SET n = n + 1 WHERE k > :lo AND k <= :hi")},
		{"custom func", "items", "", sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(100)}, 25, 0, nil, custom},
		{"custom func, hi", "items", "", sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(100)}, 0, 30, nil, custom},
		{"empty batch", "items", "", sink.Range{Lo: batches.IntKey(1000), Hi: batches.IntKey(2000)}, 5, 0, nil,
			func(rel sink.Relation) sink.Change { return setChange(rel, "n = n + 1") }},
		{"empty batch, hi", "items", "", sink.Range{Lo: batches.IntKey(1000), Hi: batches.IntKey(2000)}, 0, 400, nil,
			func(rel sink.Relation) sink.Change { return setChange(rel, "n = n + 1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			next := func(from batches.Key) batches.Key { return batches.Key{} }
			switch {
			case tc.span > 0:
				next = func(from batches.Key) batches.Key {
					start := tc.batch.Lo.Int()
					if tc.batch.LoInclusive {
						start--
					}
					if !from.IsNull() {
						start = from.Int()
					}
					return batches.IntKey(min(start+tc.span, tc.batch.Hi.Int()))
				}
			case tc.his != nil:
				next = func(from batches.Key) batches.Key {
					for _, k := range tc.his {
						if (from.IsNull() || k > from.Text()) && k <= tc.batch.Hi.Text() {
							return batches.StringKey(k)
						}
					}
					return tc.batch.Hi
				}
			}
			var runs [2]protocolRun
			for i, generic := range []bool{false, true} {
				db := testenv.MySQL(t)
				db.Exec(t, "CREATE TABLE items (id BIGINT PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
				var ids []string
				for id := 1; id <= 100; id++ {
					if id%4 != 0 {
						ids = append(ids, fmt.Sprintf("(%d)", id))
					}
				}
				db.Exec(t, "INSERT INTO items (id) VALUES "+strings.Join(ids, ", "))
				db.Exec(t, "CREATE TABLE docs (k VARCHAR(10) PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
				db.Exec(t, "INSERT INTO docs (k) VALUES ('"+strings.Join(textKeys, "'), ('")+"')")
				s := openSink(t, db.DSN, sink.Options{})
				if generic {
					s.UseGenericProtocol()
				}
				b := &testBundle{db: db, s: s}
				rel := b.relation(t, tc.table)
				rel.Where = tc.where
				runs[i] = runToEnd(t, b, rel, tc.batch, tc.limit, next, tc.change(rel))
			}
			require.True(t, len(runs[0].results) > 0 || runs[0].err != nil, "a sub-batch ran, or failed")
			require.Equal(t, runs[1], runs[0], "the sink's protocol (left) and sink.ApplyInTx (right) agree")
		})
	}
}

// runToEnd applies a batch from its checkpoint until done or an error,
// each sub-batch up to next(from) when that is not null, else limit rows.
func runToEnd(t *testing.T, b *testBundle, rel sink.Relation, batch sink.Range, limit int, next func(from batches.Key) batches.Key, change sink.Change) protocolRun {
	t.Helper()
	var run protocolRun
	cp, err := b.s.BeginBatch(testCtx(t), "m", 1, rel.Key)
	require.NoError(t, err)
	from := cp.Key
	for range 100 {
		res, err := b.s.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: batch, From: from, Hi: next(from), Limit: limit}, change)
		if err != nil {
			run.err = errors.Unwrap(err)
			if errors.Is(err, sink.ErrNoExclusiveLo) {
				run.err = sink.ErrNoExclusiveLo
			}
			break
		}
		run.results = append(run.results, res)
		if res.Done {
			break
		}
		from = res.Checkpoint
	}
	table := rel.Table.Name
	var parts []string
	rows, err := b.db.DB.Query("SELECT CONCAT(" + rel.Column + ", ':', n) FROM " + table + " WHERE n <> 0 ORDER BY " + rel.Column)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		parts = append(parts, s)
	}
	require.NoError(t, rows.Err())
	run.data = strings.Join(parts, " ")
	var checkpoint *string
	var affected int64
	require.NoError(t, b.db.DB.QueryRow("SELECT checkpoint, rows_affected FROM batchflow_ledger WHERE migration = 'm' AND batch_seq = 1").Scan(&checkpoint, &affected))
	run.ledger = fmt.Sprintf("%v/%d", ptrString(checkpoint), affected)
	return run
}

func ptrString(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

// TestRoundTripsPerSubBatch pins the wire cost of a sub-batch once its
// statements are prepared: three round trips with the caller's upper key
// (change, compare-and-set, COMMIT: autocommit is off, so no START
// TRANSACTION), five without (START TRANSACTION, lock and probe, change,
// ledger update, COMMIT), against ten for sink.ApplyInTx run with
// unprepared statements.
func TestRoundTripsPerSubBatch(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	db.Exec(t, "CREATE TABLE items (id BIGINT PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	var ids []string
	for id := 1; id <= 1000; id++ {
		ids = append(ids, fmt.Sprintf("(%d)", id))
	}
	db.Exec(t, "INSERT INTO items (id) VALUES "+strings.Join(ids, ", "))

	for _, tc := range []struct {
		name       string
		generic    bool
		explicitHi bool
		trips      int64
		statements int
	}{
		{"caller's hi", false, true, 3, 0}, // change, compare-and-set
		{"limit", false, false, 5, 3},      // lock and probe, change, ledger update
		{"sink.ApplyInTx", true, false, 10, 0},
	} {
		var w wire
		s, err := mysql.OpenWithDial(testCtx(t), db.DSN, sink.Options{}, w.dial)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		if tc.generic {
			s.UseGenericProtocol()
		}
		b := &testBundle{db: db, s: s}
		rel := b.relation(t, "items")
		migration := "trips_" + tc.name
		batch := sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(1000)}
		cp, err := s.BeginBatch(testCtx(t), migration, 0, rel.Key)
		require.NoError(t, err)
		from := cp.Key
		for i := range 10 {
			sb := sink.SubBatch{Migration: migration, Relation: rel, Batch: batch, From: from, Limit: 50}
			if tc.explicitHi {
				sb.Hi = batches.IntKey(int64(i+1) * 50)
			}
			before := w.Trips()
			w.ClearCommands()
			res, err := s.ApplySubBatch(testCtx(t), sb, setChange(rel, "n = n + 1"))
			require.NoError(t, err)
			require.Equal(t, int64(50), res.Rows)
			from = res.Checkpoint
			if i > 0 { // the first prepares its statements
				require.Equal(t, tc.trips, w.Trips()-before, "round trips of sub-batch %d (%s)", i, tc.name)
				if tc.explicitHi {
					require.Equal(t, []byte{comStmtExecute, comStmtExecute, comQuery}, w.Commands(),
						"two prepared statements with bound values, COMMIT")
				}
			}
		}
		require.Equal(t, tc.statements, s.CachedStatements(), tc.name)
	}
	require.Equal(t, int64(500), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE id <= 500 AND n = 3"), "each sink changed rows 1..500 once")
	require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE id > 500 AND n <> 0"))
}

// TestNumericTextCheckpoints: a text key that looks like an integer stays
// a text key, leading zeros and all, through BeginBatch, ApplySubBatch
// and SkipKey, since BeginBatch is told the key type.
func TestNumericTextCheckpoints(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, "CREATE TABLE codes (code VARCHAR(10) PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	var rows []string
	for i := 10; i < 40; i++ {
		rows = append(rows, fmt.Sprintf("('%d')", i))
	}
	rows = append(rows, "('007')")
	b.db.Exec(t, "INSERT INTO codes (code) VALUES "+strings.Join(rows, ", "))
	rel := b.relation(t, "codes")
	require.Equal(t, sink.KeyString, rel.Key)
	batch := sink.Range{Lo: batches.StringKey("007"), LoInclusive: true, Hi: batches.StringKey("39")}

	cp, err := b.s.BeginBatch(testCtx(t), "codes", 0, rel.Key)
	require.NoError(t, err)
	res, err := b.s.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "codes", Relation: rel, Batch: batch, From: cp.Key, Limit: 1}, setChange(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, batches.StringKey("007"), res.Checkpoint, "leading zeros kept")

	cp, err = b.s.BeginBatch(testCtx(t), "codes", 0, rel.Key)
	require.NoError(t, err)
	require.Equal(t, batches.StringKey("007"), cp.Key)
	res, err = b.s.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "codes", Relation: rel, Batch: batch, From: cp.Key, Hi: batches.StringKey("13")}, setChange(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(4), res.Rows, "10, 11, 12, 13")

	cp, err = b.s.BeginBatch(testCtx(t), "codes", 0, rel.Key)
	require.NoError(t, err)
	require.Equal(t, batches.StringKey("13"), cp.Key, "the text key, not the integer 13")
	_, err = b.s.SkipKey(testCtx(t), sink.SubBatch{Migration: "codes", Relation: rel, Batch: batch, From: cp.Key, Limit: 1}, batches.StringKey("14"))
	require.NoError(t, err)
	cp, err = b.s.BeginBatch(testCtx(t), "codes", 0, rel.Key)
	require.NoError(t, err)
	require.Equal(t, []batches.Key{batches.StringKey("14")}, cp.FailedKeys)
	for {
		res, err := b.s.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "codes", Relation: rel, Batch: batch, From: cp.Key, Limit: 7}, setChange(rel, "n = n + 1"))
		require.NoError(t, err)
		if res.Done {
			break
		}
		cp, err = b.s.BeginBatch(testCtx(t), "codes", 0, rel.Key) // resume every time, as a redelivered batch does
		require.NoError(t, err)
	}
	require.Equal(t, int64(30), b.db.QueryInt(t, "SELECT COUNT(*) FROM codes WHERE n = 1"), "every row but the skipped one, once")
	require.Equal(t, int64(0), b.db.QueryInt(t, "SELECT n FROM codes WHERE code = '14'"))
}

// holdLedgerRow locks a batch's ledger row from another connection, as a
// slow executor's transaction would, until the returned function is called.
func holdLedgerRow(t *testing.T, db *testenv.Database, migration string, seq int64) (release func()) {
	t.Helper()
	conn, err := db.DB.Conn(testCtx(t))
	require.NoError(t, err)
	_, err = conn.ExecContext(testCtx(t), "BEGIN")
	require.NoError(t, err)
	var cp any
	require.NoError(t, conn.QueryRowContext(testCtx(t), "SELECT checkpoint FROM batchflow_ledger WHERE migration = ? AND batch_seq = ? FOR UPDATE", migration, seq).Scan(&cp))
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

// TestChangeFirstLoserRollsBack: with the caller's upper key the change
// runs before the compare-and-set, so of two executors applying the same
// sub-batch the loser's change runs too, after the winner's commit, and is
// rolled back with ErrCheckpointMoved: no row changed twice, and the
// ledger counts the winner's rows only.
func TestChangeFirstLoserRollsBack(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 300)
	second := openSink(t, b.db.DSN, sink.Options{})
	cp, err := b.s.BeginBatch(testCtx(t), "race", 0, rel.Key)
	require.NoError(t, err)
	sb := sink.SubBatch{Migration: "race", Relation: rel, Batch: sink.Range{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(300)},
		From: cp.Key, Hi: batches.IntKey(100)}
	change := setChange(rel, "n = n + 1")

	release := holdLedgerRow(t, b.db, "race", 0)
	type outcome struct {
		res sink.Result
		err error
	}
	results := make(chan outcome, 2)
	for _, s := range []*mysql.Sink{b.s, second} {
		go func() {
			res, err := s.ApplySubBatch(testCtx(t), sb, change)
			results <- outcome{res, err}
		}()
	}
	time.Sleep(500 * time.Millisecond) // one waits on the ledger row, the other on its rows
	release()
	var won, moved int
	for range 2 {
		o := <-results
		switch {
		case o.err == nil:
			won++
			require.Equal(t, int64(100), o.res.Rows)
			require.True(t, o.res.Checkpoint.Equal(batches.IntKey(100)))
		case errors.Is(o.err, sink.ErrCheckpointMoved):
			moved++
			require.Contains(t, o.err.Error(), "is at 100, not")
		default:
			t.Fatalf("unexpected error: %v", o.err)
		}
	}
	require.Equal(t, [2]int{1, 1}, [2]int{won, moved})
	require.Equal(t, int64(100), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n > 1"), "no row changed twice")
	require.Equal(t, int64(100), b.db.QueryInt(t, "SELECT rows_affected FROM batchflow_ledger WHERE migration = 'race'"))

	// A stale executor retrying the applied sub-batch changes nothing.
	_, err = second.ApplySubBatch(testCtx(t), sb, change)
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n > 1"))
	require.Equal(t, int64(100), b.db.QueryInt(t, "SELECT rows_affected FROM batchflow_ledger WHERE migration = 'race'"))

	// Without a ledger row, the change is rolled back too.
	_, err = second.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "no_begin", Relation: rel, Batch: sb.Batch, Hi: batches.IntKey(50)}, change)
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)
	require.Contains(t, err.Error(), "no ledger row")
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n > 1"))
}

// TestMixedProtocolsExactlyOnce runs three executors over the same batches
// at once, one counting rows (lockThenApply: the ledger row locked first)
// and two choosing upper keys (changeThenAdvance: the ledger row locked
// last). Their opposite lock orders can deadlock; the server breaks the
// deadlock, the victim retries as the executor does a transient error, and
// every row is still changed exactly once. Any other error fails the test.
func TestMixedProtocolsExactlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 3000)
	change := setChange(rel, "n = n + 1")
	ranges := []sink.Range{
		{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(1000)},
		{Lo: batches.IntKey(1000), Hi: batches.IntKey(2000)},
		{Lo: batches.IntKey(2000), Hi: batches.IntKey(3000)},
	}
	sinks := []*mysql.Sink{b.s, openSink(t, b.db.DSN, sink.Options{}), openSink(t, b.db.DSN, sink.Options{})}
	var moved, deadlocks atomic.Int64
	var wg sync.WaitGroup
	for i, s := range sinks {
		wg.Go(func() {
			for seq, r := range ranges {
				cp, err := s.BeginBatch(testCtx(t), "mixed", int64(seq), rel.Key)
				if !assertNoError(t, err) {
					return
				}
				from := cp.Key
				for {
					sb := sink.SubBatch{Migration: "mixed", Seq: int64(seq), Relation: rel, Batch: r, From: from, Limit: 40}
					if i > 0 {
						start := r.Lo.Int() - 1
						if !from.IsNull() {
							start = from.Int()
						}
						sb.Hi = batches.IntKey(min(start+int64(23*i), r.Hi.Int()))
					}
					res, err := s.ApplySubBatch(testCtx(t), sb, change)
					if errors.Is(err, sink.ErrCheckpointMoved) {
						moved.Add(1)
						if cp, err = s.BeginBatch(testCtx(t), "mixed", int64(seq), rel.Key); !assertNoError(t, err) {
							return
						}
						from = cp.Key
						continue
					}
					var me *gomysql.MySQLError
					if errors.As(err, &me) && me.Number == 1213 { // ER_LOCK_DEADLOCK: transient, retried
						deadlocks.Add(1)
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
	t.Logf("checkpoint moved %d times, deadlocks %d", moved.Load(), deadlocks.Load())
	require.Equal(t, int64(3000), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"), "every row changed exactly once")
	require.Equal(t, int64(3000), b.db.QueryInt(t, "SELECT SUM(rows_affected) FROM batchflow_ledger WHERE migration = 'mixed'"))
}

// TestRefusedSubBatches: what sb.Check refuses, and an upper key below
// the checkpoint (which would move it back), are refused before anything
// runs.
func TestRefusedSubBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 100)
	change := setChange(rel, "n = n + 1")
	batch := sink.Range{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(100)}
	_, err := b.s.BeginBatch(testCtx(t), "refused", 0, rel.Key)
	require.NoError(t, err)
	for name, sb := range map[string]sink.SubBatch{
		"hi beyond the batch":     {Hi: batches.IntKey(101)},
		"no batch hi":             {Batch: sink.Range{Lo: batches.IntKey(1)}, Hi: batches.IntKey(50)},
		"no limit and no hi":      {},
		"hi below the checkpoint": {From: batches.IntKey(50), Hi: batches.IntKey(40)},
	} {
		sb.Migration, sb.Relation = "refused", rel
		if sb.Batch.Lo.IsNull() {
			sb.Batch = batch
		}
		_, err := b.s.ApplySubBatch(testCtx(t), sb, change)
		require.Error(t, err, name)
		require.NotErrorIs(t, err, sink.ErrCheckpointMoved, name)
	}
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"))
}

// TestEmptySubBatchAtTheCheckpoint: Hi equal to From is an empty sub-batch,
// what an executor resuming a finished batch sends: done, nothing changed,
// and still a compare-and-set.
func TestEmptySubBatchAtTheCheckpoint(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 100)
	change := setChange(rel, "n = n + 1")
	batch := sink.Range{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(100)}
	cp, err := b.s.BeginBatch(testCtx(t), "resumed", 0, rel.Key)
	require.NoError(t, err)
	sb := sink.SubBatch{Migration: "resumed", Relation: rel, Batch: batch, From: cp.Key, Hi: batches.IntKey(60)}
	res, err := b.s.ApplySubBatch(testCtx(t), sb, change)
	require.NoError(t, err)
	require.False(t, res.Done)

	sb.From = res.Checkpoint // 60, mid-batch
	res, err = b.s.ApplySubBatch(testCtx(t), sb, change)
	require.NoError(t, err)
	require.Equal(t, sink.Result{Checkpoint: batches.IntKey(60), Lo: batches.IntKey(60), Hi: batches.IntKey(60)}, res)

	sb.Hi = batch.Hi
	res, err = b.s.ApplySubBatch(testCtx(t), sb, change)
	require.NoError(t, err)
	require.True(t, res.Done)
	sb.From = batch.Hi // finished, then delivered again
	res, err = b.s.ApplySubBatch(testCtx(t), sb, change)
	require.NoError(t, err)
	require.Equal(t, sink.Result{Checkpoint: batch.Hi, Done: true, Lo: batch.Hi, Hi: batch.Hi}, res)

	sb.From = batches.IntKey(60) // a stale executor's empty sub-batch
	sb.Hi = batches.IntKey(60)
	_, err = b.s.ApplySubBatch(testCtx(t), sb, change)
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)
	require.Equal(t, int64(100), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	require.Equal(t, int64(100), b.db.QueryInt(t, "SELECT rows_affected FROM batchflow_ledger WHERE migration = 'resumed'"))
}

// TestResetLedgerWithoutLedger: resetting before any ledger exists is
// fine, and does not create one.
func TestResetLedgerWithoutLedger(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	require.NoError(t, b.s.ResetLedger(testCtx(t), "never_ran"))
	_, err := b.db.DB.ExecContext(testCtx(t), "SELECT 1 FROM batchflow_ledger LIMIT 0")
	var me *gomysql.MySQLError
	require.ErrorAs(t, err, &me)
	require.Equal(t, uint16(1146), me.Number, "no ledger table: %v", err)
}

// TestCheckStatementOnlyPrepares watches the wire: CheckStatement sends a
// COM_STMT_PREPARE and a COM_STMT_CLOSE and nothing else, even when the DSN
// asks for client-side interpolation, and does not wait for row locks.
func TestCheckStatementOnlyPrepares(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.items(t, 10)
	var w wire
	s, err := mysql.OpenWithDial(testCtx(t), dsnWith(t, b.db.DSN, url.Values{"interpolateParams": {"true"}}), sink.Options{}, w.dial)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })

	holder, err := b.db.DB.BeginTx(testCtx(t), nil)
	require.NoError(t, err)
	defer holder.Rollback() //nolint:errcheck
	_, err = holder.ExecContext(testCtx(t), "UPDATE items SET n = 5")
	require.NoError(t, err)

	w.ClearCommands()
	started := time.Now()
	require.NoError(t, s.CheckStatement(testCtx(t), "UPDATE items SET n = n + 1 WHERE id > 0"))
	require.Less(t, time.Since(started), time.Second, "no wait for the rows another transaction holds")
	require.Equal(t, []byte{comStmtPrepare, comStmtClose}, w.Commands())

	w.ClearCommands()
	require.Error(t, s.CheckStatement(testCtx(t), "UPDATE items SET no_such_column = 1"))
	require.Equal(t, []byte{comStmtPrepare}, w.Commands(), "nothing to close after a failed prepare")
	require.NoError(t, holder.Rollback())
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"))
}

// TestStatementCacheBounded: many relations (each its own statements) do
// not grow the prepared statements without bound, in the pool-wide cache
// (sub-batches counting rows) or in a connection's own (sub-batches with
// the caller's upper key).
func TestStatementCacheBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 20)
	for i := range 150 {
		r := rel
		r.Where = fmt.Sprintf("id <> %d", i)
		_, err := b.s.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "many", Seq: int64(i), Relation: r,
			Batch: sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(20)}, Limit: 20}, setChange(r, "n = n + 1"))
		require.ErrorIs(t, err, sink.ErrCheckpointMoved, "no BeginBatch: refused, after preparing")
	}
	require.LessOrEqual(t, b.s.CachedStatements(), 64)
	require.Greater(t, b.s.CachedStatements(), 50)
	require.NoError(t, b.s.Close())
	require.Zero(t, b.s.CachedStatements(), "closed with the sink")

	var w wire
	s, err := mysql.OpenWithDial(testCtx(t), b.db.DSN, sink.Options{MaxConns: 1}, w.dial)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	for i := range 150 {
		_, err := s.BeginBatch(testCtx(t), "many_hi", int64(i), rel.Key)
		require.NoError(t, err)
	}
	w.ClearCommands()
	for i := range 150 {
		r := rel
		r.Where = fmt.Sprintf("id <> %d", i)
		res, err := s.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "many_hi", Seq: int64(i), Relation: r,
			Batch: sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(20)}, Hi: batches.IntKey(20)}, setChange(r, "n = n + 1"))
		require.NoError(t, err)
		require.True(t, res.Done)
	}
	count := func(command byte) (n int) {
		for _, c := range w.Commands() {
			if c == command {
				n++
			}
		}
		return n
	}
	require.Equal(t, 151, count(comStmtPrepare), "each change once, the compare-and-set once")
	require.Equal(t, 151-64, count(comStmtClose), "the least recently used closed beyond 64")
	require.Equal(t, int64(20*149), b.db.QueryInt(t, "SELECT SUM(n) FROM items"), "each statement ran once, on all rows but its own")
}
