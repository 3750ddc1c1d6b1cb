package postgres

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

// benchRows is the table size of BenchmarkLedgerOverhead.
const benchRows = 200_000

// BenchmarkLedgerOverhead compares a sub-batch through the ledger with the
// plain keyset UPDATE it wraps, over the same 1000-row key ranges of the
// same kind of table, (id BIGINT PRIMARY KEY, n INT) with ids i*3:
//
//   - plain runs UPDATE t SET n = n + 1 WHERE id > lo AND id <= hi in
//     autocommit over precomputed ranges;
//   - ledger runs ApplySubBatch with the sql kind's set "n = n + 1" over
//     the same ranges, passing each range's upper key as SubBatch.Hi, as
//     the executor does for integer keys: the same rows per statement;
//   - ledger-limit runs it with Limit 1000 and no Hi, so the statement
//     also probes for the key 1000 rows on (text keys, isolating rows);
//   - interleaved and interleaved-limit run one plain and one ledger (or
//     ledger-limit) sub-batch per op, on two identical tables, alternating
//     which goes first, and report the ratio of their median times: on a
//     shared machine whose load drifts, the paired figure is the one to
//     trust.
//
// Each ledger variant starts a new batch per pass through the table. One
// op is one sub-batch of 1000 rows (two for the interleaved ones); rows/s
// is the figure to compare. Each run starts from a fresh table, so give
// all the same -benchtime in iterations (2000x: ten passes) and repeat the
// paired runs, e.g.
//
//	go test -c -o /tmp/pg.test ./pkg/sink/postgres/ && cd pkg/sink/postgres &&
//	for i in 1 2 3 4 5; do for s in interleaved interleaved-limit; do
//	  /tmp/pg.test -test.run '^$' -test.bench "LedgerOverhead/$s\$" -test.benchtime 2000x
//	done; done
func BenchmarkLedgerOverhead(b *testing.B) {
	db := testenv.Postgres(b)
	ctx := context.Background()
	s, err := Open(ctx, db.DSN, sink.Options{MaxConns: 2})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.EnsureLedger(ctx); err != nil {
		b.Fatal(err)
	}
	var seq int64 // ledger batches, unique across runs

	// fresh gives each run the same start: new, vacuumed and analyzed
	// tables (an updated one drifts: dead rows, free space for HOT
	// updates, growth) and a checkpoint, so both sides pay the same
	// full-page writes.
	fresh := func(b *testing.B, names ...string) []*benchTable {
		var out []*benchTable
		for _, name := range names {
			db.Exec(b, "DROP TABLE IF EXISTS "+name)
			db.Exec(b, "CREATE TABLE "+name+" (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0)")
			db.Exec(b, "INSERT INTO "+name+" (id) SELECT g * 3 FROM generate_series(1, $1) g", benchRows)
			db.Exec(b, "VACUUM ANALYZE "+name)
			out = append(out, newBenchTable(b, s, name, &seq))
		}
		db.Exec(b, "CHECKPOINT")
		return out
	}

	b.Run("plain", func(b *testing.B) {
		t := fresh(b, "t_plain")[0]
		var total int64
		b.ResetTimer()
		for i := range b.N {
			total += t.plain(b, i)
		}
		b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "rows/s")
	})

	for _, limit := range []bool{false, true} {
		name := map[bool]string{false: "ledger", true: "ledger-limit"}[limit]
		b.Run(name, func(b *testing.B) {
			t := fresh(b, "t_ledger")[0]
			t.beginBatches(b, b.N)
			var total int64
			b.ResetTimer()
			for range b.N {
				total += t.ledger(b, limit)
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "rows/s")
		})
	}

	for _, limit := range []bool{false, true} {
		name := map[bool]string{false: "interleaved", true: "interleaved-limit"}[limit]
		b.Run(name, func(b *testing.B) {
			tables := fresh(b, "t_plain", "t_ledger")
			p, l := tables[0], tables[1]
			l.beginBatches(b, b.N)
			plainTimes := make([]time.Duration, 0, b.N)
			ledgerTimes := make([]time.Duration, 0, b.N)
			step := func(i int, ledger bool) {
				start := time.Now()
				if ledger {
					l.ledger(b, limit)
					ledgerTimes = append(ledgerTimes, time.Since(start))
					return
				}
				p.plain(b, i)
				plainTimes = append(plainTimes, time.Since(start))
			}
			b.ResetTimer()
			for i := range b.N {
				step(i, i%2 == 0) // alternate which goes first
				step(i, i%2 != 0)
			}
			pm, lm := median(plainTimes), median(ledgerTimes)
			b.ReportMetric(1000/pm.Seconds(), "plain-rows/s")
			b.ReportMetric(1000/lm.Seconds(), "ledger-rows/s")
			b.ReportMetric(100*(lm.Seconds()/pm.Seconds()-1), "overhead-%")
		})
	}
}

// benchTable is one table of BenchmarkLedgerOverhead, walked by plain
// sub-batches over precomputed ranges or by ApplySubBatch.
type benchTable struct {
	s      *Sink
	name   string
	rel    sink.Relation
	batch  sink.Range
	his    []int64 // the key of every 1000th row: the plain ranges
	change sink.Change

	seq        *int64
	cur        int64       // the ledger batch being walked
	from       batches.Key // its checkpoint
	next       int         // the index in his of its next sub-batch's upper key
	plainQuery string
}

func newBenchTable(b *testing.B, s *Sink, name string, seq *int64) *benchTable {
	ctx := context.Background()
	tab, err := s.Table(ctx, name)
	if err != nil {
		b.Fatal(err)
	}
	rows, err := s.pool.Query(ctx, "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS r FROM "+name+") x WHERE r % 1000 = 0 OR r = $1 ORDER BY id", benchRows)
	if err != nil {
		b.Fatal(err)
	}
	his, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		b.Fatal(err)
	}
	rel := sink.Relation{Table: tab, Column: "id", Key: sink.KeyInt}
	return &benchTable{
		s: s, name: name, rel: rel, his: his, seq: seq,
		batch:      sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(his[len(his)-1])},
		change:     kinds.SQL(rel, batches.SQLArgs{Set: "n = n + 1"}),
		plainQuery: "UPDATE " + name + " SET n = n + 1 WHERE id > $1 AND id <= $2",
	}
}

// plain runs the i-th plain sub-batch and returns the rows it changed.
func (t *benchTable) plain(b *testing.B, i int) int64 {
	j := i % len(t.his)
	lo := t.batch.Lo.Int()
	if j > 0 {
		lo = t.his[j-1]
	}
	tag, err := t.s.pool.Exec(context.Background(), t.plainQuery, lo, t.his[j])
	if err != nil {
		b.Fatal(err)
	}
	return tag.RowsAffected()
}

// beginBatches makes the ledger rows of the batches n sub-batches need,
// ahead of the timer: one batch per pass through the table.
func (t *benchTable) beginBatches(b *testing.B, n int) {
	t.cur = *t.seq + 1
	for range n/len(t.his) + 1 {
		*t.seq++
		if _, err := t.s.BeginBatch(context.Background(), "bench", *t.seq, sink.KeyInt); err != nil {
			b.Fatal(err)
		}
	}
}

// ledger runs the next sub-batch through ApplySubBatch, up to the plain
// ranges' next upper key or, with limit, 1000 rows on, and returns the
// rows it changed.
func (t *benchTable) ledger(b *testing.B, limit bool) int64 {
	sb := sink.SubBatch{Migration: "bench", Seq: t.cur, Relation: t.rel, Batch: t.batch, From: t.from, Limit: 1000}
	if !limit {
		sb.Hi = batches.IntKey(t.his[t.next])
	}
	res, err := t.s.ApplySubBatch(context.Background(), sb, t.change)
	if err != nil {
		b.Fatal(err)
	}
	if res.Rows != 1000 {
		b.Fatalf("sub-batch after %s changed %d rows, want 1000", t.from, res.Rows)
	}
	t.from, t.next = res.Checkpoint, t.next+1
	if res.Done {
		t.cur, t.from, t.next = t.cur+1, batches.Key{}, 0
	}
	return res.Rows
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
