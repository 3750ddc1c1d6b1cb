package sqlite

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

const (
	benchRows    = 200_000
	benchSubSize = 1000
)

// benchTable is a table t of benchRows rows with ids 3, 6, 9, … (gapped,
// as after deletes), the sink on it, and the (lo, hi] spans of
// benchSubSize rows the ledger path cuts, for the plain loop to walk the
// same ranges of t_plain, a copy of t: each loop finds its span's pages as
// cold as the other's (the pages of both tables are several times SQLite's
// page cache), whichever runs first.
type benchTable struct {
	sink   *Sink
	rel    sink.Relation
	batch  sink.Range
	spans  [][2]int64
	change sink.Change
	seq    int64
}

func newBenchTable(b *testing.B) *benchTable {
	b.Helper()
	ctx := context.Background()
	db := testenv.SQLite(b)
	for _, table := range []string{"t", "t_plain"} {
		db.Exec(b, `CREATE TABLE `+table+` (id BIGINT PRIMARY KEY, n INT NOT NULL DEFAULT 0)`)
		db.Exec(b, `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?)
			INSERT INTO `+table+` (id) SELECT i * 3 FROM c`, benchRows)
	}
	s, err := Open(ctx, db.DSN, sink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	tbl, err := s.Table(ctx, "t")
	if err != nil {
		b.Fatal(err)
	}
	rel := sink.Relation{Table: tbl, Column: "id", Key: sink.KeyInt}
	bt := &benchTable{
		sink:   s,
		rel:    rel,
		batch:  sink.Range{Lo: batches.IntKey(3), LoInclusive: true, Hi: batches.IntKey(3 * benchRows)},
		change: kinds.SQL(rel, batches.SQLArgs{Set: "n = n + 1"}),
	}
	for lo := int64(0); lo < 3*benchRows; lo += 3 * benchSubSize {
		bt.spans = append(bt.spans, [2]int64{lo, lo + 3*benchSubSize})
	}
	// The ledger exists before either loop starts, and the write
	// connection is open: plain runs on it, with its own prepared
	// statement, as the ledger path's statements are prepared.
	if err := s.EnsureLedger(ctx); err != nil {
		b.Fatal(err)
	}
	return bt
}

// plain is the hand-written keyset loop's statement, in autocommit.
func (bt *benchTable) plain(b *testing.B) func(span [2]int64) int64 {
	b.Helper()
	st, err := bt.sink.w.conn.PrepareContext(context.Background(), `UPDATE t_plain SET n = n + 1 WHERE id > ? AND id <= ?`)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	return func(span [2]int64) int64 {
		res, err := st.ExecContext(context.Background(), span[0], span[1])
		if err != nil {
			b.Fatal(err)
		}
		n, _ := res.RowsAffected()
		return n
	}
}

// newBatch starts a new pass through the table: a batch with a fresh seq.
func (bt *benchTable) newBatch(b *testing.B) sink.SubBatch {
	b.Helper()
	bt.seq++
	cp, err := bt.sink.BeginBatch(context.Background(), "bench", bt.seq, sink.KeyInt)
	if err != nil {
		b.Fatal(err)
	}
	return sink.SubBatch{Migration: "bench", Seq: bt.seq, Relation: bt.rel, Batch: bt.batch, From: cp.Key, Limit: benchSubSize}
}

// ledgerLoop walks batches of the whole table through ApplySubBatch, one
// sub-batch per call. With explicit, every sub-batch passes SubBatch.Hi =
// the upper key of the plain loop's span of the same index, so both change
// the same rows per statement; without, the sink probes for where
// benchSubSize rows end (the same keys, found by the sink).
type ledgerLoop struct {
	// ctx can be canceled, as an executor's is: the sink watches it.
	ctx      context.Context
	bt       *benchTable
	explicit bool
	sb       sink.SubBatch
	span     int
	done     bool
}

func (bt *benchTable) ledgerLoop(b *testing.B, explicit bool) *ledgerLoop {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	return &ledgerLoop{ctx: ctx, bt: bt, explicit: explicit, sb: bt.newBatch(b)}
}

// next is the span the next sub-batch covers; call prepare first.
func (l *ledgerLoop) next() [2]int64 { return l.bt.spans[l.span] }

// apply runs the next sub-batch and returns the rows it changed.
func (l *ledgerLoop) apply(b *testing.B) int64 {
	sb := l.sb
	if l.explicit {
		sb.Hi = batches.IntKey(l.bt.spans[l.span][1])
	}
	res, err := l.bt.sink.ApplySubBatch(l.ctx, sb, l.bt.change)
	if err != nil {
		b.Fatal(err)
	}
	if res.Rows != benchSubSize || res.Hi.Int() != l.bt.spans[l.span][1] {
		b.Fatalf("sub-batch %d: %d rows up to %s, want %d up to %d", l.span, res.Rows, res.Hi, benchSubSize, l.bt.spans[l.span][1])
	}
	l.sb.From = res.Checkpoint
	l.span++
	l.done = res.Done
	return res.Rows
}

// prepare starts a new batch, off the clock, once the last one is done.
func (l *ledgerLoop) prepare(b *testing.B) {
	if l.done {
		b.StopTimer()
		l.sb, l.span, l.done = l.bt.newBatch(b), 0, false
		b.StartTimer()
	}
}

// BenchmarkLedgerOverhead compares the exactly-once ledger path with a
// bare keyset loop over the same table, the same 1000-row ranges and the
// same connection. One op is one 1000-row sub-batch. "ledger" passes the
// plain loop's upper keys as SubBatch.Hi; "ledger-limit" passes Limit and
// lets the sink probe for them.
//
//	for i in 1 2 3 4 5 6; do go test -run '^$' -bench 'LedgerOverhead$' -count 1 ./pkg/sink/sqlite/; done > bench.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /.name bench.txt
func BenchmarkLedgerOverhead(b *testing.B) {
	bt := newBenchTable(b)

	b.Run("plain", func(b *testing.B) {
		plain := bt.plain(b)
		var done int64
		i := 0
		for b.Loop() {
			done += plain(bt.spans[i%len(bt.spans)])
			i++
		}
		b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "rows/s")
	})
	for _, v := range []struct {
		name     string
		explicit bool
	}{{"ledger", true}, {"ledger-limit", false}} {
		b.Run(v.name, func(b *testing.B) {
			l := bt.ledgerLoop(b, v.explicit)
			var done int64
			for b.Loop() {
				l.prepare(b)
				done += l.apply(b)
			}
			b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkLedgerOverheadInterleaved runs the plain statement and the
// ledger path on the same span (of their own copies of the table) one
// after the other in every op, which of the two goes first alternating,
// and reports the medians: on a busy shared machine, where another
// process's burst can double one sample, medians of paired samples are a
// steadier measure of the overhead than the ratio of two sub-benchmarks
// run seconds apart. overhead-% is the median of the per-op ratios,
// medians-% the ratio of the two medians; ledger-first-% and
// plain-first-% split the former by order, and stay close to each other
// while neither loop warms the other's pages.
//
//	go test -run '^$' -bench 'LedgerOverheadInterleaved' -benchtime 20000x -count 5 ./pkg/sink/sqlite/
func BenchmarkLedgerOverheadInterleaved(b *testing.B) {
	for _, v := range []struct {
		name     string
		explicit bool
	}{{"ledger", true}, {"ledger-limit", false}} {
		b.Run(v.name, func(b *testing.B) {
			bt := newBenchTable(b)
			plain := bt.plain(b)
			l := bt.ledgerLoop(b, v.explicit)
			var plainT, ledgerT, ratios []float64
			i := 0
			for b.Loop() {
				l.prepare(b)
				span := l.next()
				var p, d time.Duration
				if i%2 == 0 {
					start := time.Now()
					plain(span)
					mid := time.Now()
					l.apply(b)
					p, d = mid.Sub(start), time.Since(mid)
				} else {
					start := time.Now()
					l.apply(b)
					mid := time.Now()
					plain(span)
					d, p = mid.Sub(start), time.Since(mid)
				}
				i++
				plainT, ledgerT, ratios = append(plainT, float64(p)), append(ledgerT, float64(d)), append(ratios, float64(d)/float64(p))
			}
			b.ReportMetric(median(plainT)/1e3, "plain-µs/op")
			b.ReportMetric(median(ledgerT)/1e3, "ledger-µs/op")
			b.ReportMetric(100*(median(ratios)-1), "overhead-%")
			b.ReportMetric(100*(median(ledgerT)/median(plainT)-1), "medians-%")
			// Means keep what medians leave out: the WAL checkpoint some
			// commit runs every hundred ops or so, garbage collection, and
			// other processes' bursts.
			b.ReportMetric(100*(mean(ledgerT)/mean(plainT)-1), "means-%")
			var first, second []float64
			for i, r := range ratios {
				if i%2 == 0 {
					second = append(second, r)
				} else {
					first = append(first, r)
				}
			}
			b.ReportMetric(100*(median(first)-1), "ledger-first-%")
			b.ReportMetric(100*(median(second)-1), "plain-first-%")
		})
	}
}

func mean(xs []float64) float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
