package mysql_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/mysql"
)

const (
	benchRows     = 100_000
	benchSubBatch = 1000
)

// plainUpdate is the hand-written keyset loop's statement.
const plainUpdate = "UPDATE t SET n = n + 1 WHERE id > ? AND id <= ?"

// benchTable creates t(id, n) with benchRows rows, ids 3, 6, 9, …, and
// returns the ids.
func benchTable(b *testing.B, db *testenv.Database) []int64 {
	b.Helper()
	db.Exec(b, "CREATE TABLE t (id BIGINT PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	ids := make([]int64, benchRows)
	for i := range ids {
		ids[i] = int64(i+1) * 3
	}
	for start := 0; start < len(ids); start += 5000 {
		values := make([]string, 0, 5000)
		for _, id := range ids[start:min(start+5000, len(ids))] {
			values = append(values, fmt.Sprintf("(%d)", id))
		}
		db.Exec(b, "INSERT INTO t (id) VALUES "+strings.Join(values, ","))
	}
	return ids
}

// span is one sub-batch's keys, (lo, hi].
type span struct{ lo, hi int64 }

// benchSpans cuts ids into sub-batches of size rows, the first from 0.
func benchSpans(ids []int64, size int) []span {
	var spans []span
	for k := 0; k*size < len(ids); k++ {
		lo := int64(0)
		if k > 0 {
			lo = ids[k*size-1]
		}
		spans = append(spans, span{lo, ids[min((k+1)*size, len(ids))-1]})
	}
	return spans
}

// ledgerLoop applies the sub-batches of spans one per call, passing
// through the table again and again, each pass a new batch whose ledger
// row begin creates. With explicitHi the sub-batch's upper key is the
// span's, the same rows the plain loop's statement takes; without, the
// sink counts size rows with its probe, which finds the same key.
type ledgerLoop struct {
	s          *mysql.Sink
	migration  string
	rel        sink.Relation
	change     sink.Change
	batch      sink.Range
	spans      []span
	size       int
	explicitHi bool

	i    int
	seq  int64
	from batches.Key
}

func newLedgerLoop(b *testing.B, s *mysql.Sink, migration string, ids []int64, size int, explicitHi bool) *ledgerLoop {
	b.Helper()
	tbl, err := s.Table(context.Background(), "t")
	require.NoError(b, err)
	col, err := tbl.BatchColumn("")
	require.NoError(b, err)
	rel := sink.Relation{Table: tbl, Column: col.Name, Key: col.Key}
	return &ledgerLoop{
		s: s, migration: migration, rel: rel, size: size, explicitHi: explicitHi,
		change: kinds.SQL(rel, batches.SQLArgs{Set: "n = n + 1"}),
		batch:  sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(ids[len(ids)-1])},
		spans:  benchSpans(ids, size),
	}
}

// begin creates the ledger rows of the batches the next n calls use,
// outside the timer.
func (l *ledgerLoop) begin(b *testing.B, n int) {
	b.Helper()
	passes := int64((l.i+n)/len(l.spans)) + 1
	for seq := l.seq; seq <= l.seq+passes; seq++ {
		_, err := l.s.BeginBatch(context.Background(), l.migration, seq, sink.KeyInt)
		require.NoError(b, err)
	}
}

// next applies the next sub-batch and returns the rows it changed.
func (l *ledgerLoop) next(b *testing.B) int64 {
	sp := l.spans[l.i%len(l.spans)]
	sb := sink.SubBatch{Migration: l.migration, Seq: l.seq, Relation: l.rel, Batch: l.batch, From: l.from, Limit: l.size}
	if l.explicitHi {
		sb.Hi = batches.IntKey(sp.hi)
	}
	res, err := l.s.ApplySubBatch(context.Background(), sb, l.change)
	require.NoError(b, err)
	if !res.Checkpoint.Equal(batches.IntKey(sp.hi)) {
		b.Fatalf("sub-batch %d ended at %s, the plain loop's at %d", l.i, res.Checkpoint, sp.hi)
	}
	l.i++
	if res.Done {
		l.seq, l.from = l.seq+1, batches.Key{}
	} else {
		l.from = res.Checkpoint
	}
	return res.Rows
}

// BenchmarkLedgerOverhead compares a hand-written keyset loop with the
// ledger's sub-batches over the same 1000-row key ranges of a 100,000-row
// table (ids 3, 6, 9, …), one op being one sub-batch:
//
//   - plain: UPDATE t SET n = n + 1 WHERE id > ? AND id <= ? in autocommit,
//     as db.ExecContext sends it (prepare, execute: two round trips);
//   - plain_prepared: the same through a prepared statement (one round trip),
//     the strictest baseline;
//   - ledger: ApplySubBatch with the sql kind's SET n = n + 1 and
//     SubBatch.Hi set to the plain loop's upper keys, as the executor runs
//     integer keys; a new batch per pass through the table, ledger rows
//     created outside the timer;
//   - ledger-limit: the same with SubBatch.Limit = 1000 and no Hi, the sink
//     finding each upper key with its probe (text keys, isolating rows);
//   - ledger_applyintx: ledger with sink.ApplyInTx, the generic protocol.
//
// The sub-benchmarks run one after the other, so on a shared machine load
// drifts between them; BenchmarkLedgerOverheadPaired interleaves.
//
// Run: go test -run '^$' -bench 'LedgerOverhead$' -count 6 ./pkg/sink/mysql/
// and compare rows/s with benchstat.
func BenchmarkLedgerOverhead(b *testing.B) {
	db := testenv.MySQL(b)
	ctx := context.Background()
	ids := benchTable(b, db)
	spans := benchSpans(ids, benchSubBatch)

	var plainWire wire
	plainDB := openCounted(b, db.DSN, &plainWire)
	b.Run("plain", func(b *testing.B) {
		trips := plainWire.Trips()
		var rows int64
		b.ResetTimer()
		for i := range b.N {
			sp := spans[i%len(spans)]
			res, err := plainDB.ExecContext(ctx, plainUpdate, sp.lo, sp.hi)
			require.NoError(b, err)
			n, _ := res.RowsAffected()
			rows += n
		}
		report(b, rows, plainWire.Trips()-trips)
	})
	b.Run("plain_prepared", func(b *testing.B) {
		stmt, err := plainDB.PrepareContext(ctx, plainUpdate)
		require.NoError(b, err)
		defer stmt.Close()
		trips := plainWire.Trips()
		var rows int64
		b.ResetTimer()
		for i := range b.N {
			sp := spans[i%len(spans)]
			res, err := stmt.ExecContext(ctx, sp.lo, sp.hi)
			require.NoError(b, err)
			n, _ := res.RowsAffected()
			rows += n
		}
		report(b, rows, plainWire.Trips()-trips)
	})

	for _, v := range []struct {
		name       string
		explicitHi bool
		generic    bool
	}{{"ledger", true, false}, {"ledger-limit", false, false}, {"ledger_applyintx", true, true}} {
		var w wire
		s, err := mysql.OpenWithDial(ctx, db.DSN, sink.Options{}, w.dial)
		require.NoError(b, err)
		b.Cleanup(func() { s.Close() })
		if v.generic {
			s.UseGenericProtocol()
		}
		loop := newLedgerLoop(b, s, v.name, ids, benchSubBatch, v.explicitHi)
		b.Run(v.name, func(b *testing.B) {
			loop.begin(b, b.N)
			trips := w.Trips()
			var rows int64
			b.ResetTimer()
			for range b.N {
				rows += loop.next(b)
			}
			report(b, rows, w.Trips()-trips)
		})
	}
}

func report(b *testing.B, rows, trips int64) {
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(trips)/float64(b.N), "roundtrips/op")
}

// BenchmarkLedgerOverheadPaired runs a plain sub-batch and a ledger
// sub-batch over the same key range in each op, over the table of
// BenchmarkLedgerOverhead, and reports the ledger's overhead in percent of
// the plain statement: overhead_% from the total times, median_overhead_%
// as the median of the op's own ratios, which one slow moment of a shared
// machine does not move. Pairing cancels the drift of the machine's load,
// which separate sub-benchmarks a second apart cannot; the pair's order
// alternates, so neither side always finds the rows just written.
//
//   - ledger/…: SubBatch.Hi is the plain statement's upper key;
//   - ledger-limit/…: SubBatch.Limit rows, found by the sink's probe;
//   - …/vs_plain: against db.ExecContext (prepare, execute), as in
//     BenchmarkLedgerOverhead's plain; …/vs_plain_prepared against a
//     statement prepared once; …/vs_plain_10000_rows with 10,000-row
//     sub-batches.
//
// Run: go test -run '^$' -bench 'LedgerOverheadPaired' -count 6 ./pkg/sink/mysql/
func BenchmarkLedgerOverheadPaired(b *testing.B) {
	for _, tc := range []struct {
		name       string
		explicitHi bool
		prepared   bool
		size       int
	}{
		{"ledger/vs_plain", true, false, benchSubBatch},
		{"ledger/vs_plain_prepared", true, true, benchSubBatch},
		{"ledger/vs_plain_10000_rows", true, false, 10 * benchSubBatch},
		{"ledger-limit/vs_plain", false, false, benchSubBatch},
		{"ledger-limit/vs_plain_prepared", false, true, benchSubBatch},
	} {
		b.Run(tc.name, func(b *testing.B) {
			benchPaired(b, tc.explicitHi, tc.prepared, tc.size)
		})
	}
}

func benchPaired(b *testing.B, explicitHi, prepared bool, size int) {
	db := testenv.MySQL(b)
	ctx := context.Background()
	ids := benchTable(b, db)
	spans := benchSpans(ids, size)
	var w wire
	plainDB := openCounted(b, db.DSN, &w)
	exec := func(sp span) error {
		_, err := plainDB.ExecContext(ctx, plainUpdate, sp.lo, sp.hi)
		return err
	}
	if prepared {
		stmt, err := plainDB.PrepareContext(ctx, plainUpdate)
		require.NoError(b, err)
		defer stmt.Close()
		exec = func(sp span) error {
			_, err := stmt.ExecContext(ctx, sp.lo, sp.hi)
			return err
		}
	}
	s, err := mysql.Open(ctx, db.DSN, sink.Options{})
	require.NoError(b, err)
	defer s.Close()
	loop := newLedgerLoop(b, s, "paired", ids, size, explicitHi)
	loop.begin(b, b.N)

	var plainTime, ledgerTime time.Duration
	ratios := make([]float64, 0, b.N)
	plainTimes := make([]time.Duration, 0, b.N)
	ledgerTimes := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		sp := spans[i%len(spans)]
		var plain, ledger time.Duration
		if i%2 == 0 {
			start := time.Now()
			require.NoError(b, exec(sp))
			plain = time.Since(start)
			start = time.Now()
			loop.next(b)
			ledger = time.Since(start)
		} else {
			start := time.Now()
			loop.next(b)
			ledger = time.Since(start)
			start = time.Now()
			require.NoError(b, exec(sp))
			plain = time.Since(start)
		}
		plainTime += plain
		ledgerTime += ledger
		plainTimes = append(plainTimes, plain)
		ledgerTimes = append(ledgerTimes, ledger)
		ratios = append(ratios, float64(ledger)/float64(plain))
	}
	b.StopTimer()
	b.ReportMetric(float64(median(plainTimes).Microseconds()), "plain_µs/op")
	b.ReportMetric(float64(median(ledgerTimes).Microseconds()), "ledger_µs/op")
	b.ReportMetric(100*(float64(ledgerTime)/float64(plainTime)-1), "overhead_%")
	slices.Sort(ratios)
	b.ReportMetric(100*(ratios[len(ratios)/2]-1), "median_overhead_%")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
