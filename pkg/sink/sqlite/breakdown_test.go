package sqlite

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/sink"
)

// BenchmarkLedgerBreakdown builds the ledger path up from the plain
// statement one step at a time, by hand on the write connection, next to
// ApplySubBatch itself. Every op runs each variant once on the same span of
// t, in a random order, and the benchmark reports each variant's median
// and its excess over plain's: where the ledger path's time goes.
//
//	go test -run '^$' -bench LedgerBreakdown -benchtime 4000x ./pkg/sink/sqlite/
func BenchmarkLedgerBreakdown(b *testing.B) {
	bt := newBenchTable(b)
	ctx := context.Background()
	w := bt.sink.w
	exec := func(ctx context.Context, query string, args ...any) int64 {
		st, err := w.stmt(ctx, query)
		if err != nil {
			b.Fatal(err)
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := res.RowsAffected()
		return n
	}
	const (
		change   = `UPDATE "main"."t" SET n = n + 1 WHERE "id" > ? AND "id" <= ?`
		changeRB = `UPDATE OR ROLLBACK "main"."t" SET n = n + 1 WHERE "id" > ? AND "id" <= ?`
		read     = `SELECT checkpoint FROM ` + sink.LedgerTable + ` WHERE migration = ? AND batch_seq = ?`
	)
	// Each hand-built ledger variant has a batch of its own.
	checkpoints := map[int64]any{}
	advance := func(seq int64, span [2]int64, n int64) {
		hi := strconv.FormatInt(span[1], 10)
		if exec(ctx, advanceCheckpoint, hi, n, time.Now().UTC(), "breakdown", seq, checkpoints[seq]) != 1 {
			b.Fatal("the checkpoint did not advance")
		}
		checkpoints[seq] = hi
	}
	readCheckpoint := func(seq int64) {
		st, err := w.stmt(ctx, read)
		if err != nil {
			b.Fatal(err)
		}
		var text *string
		if err := st.QueryRowContext(ctx, "breakdown", seq).Scan(&text); err != nil {
			b.Fatal(err)
		}
	}
	tx := func(f func(span [2]int64)) func(span [2]int64) {
		return func(span [2]int64) {
			exec(ctx, "BEGIN IMMEDIATE")
			f(span)
			exec(ctx, "COMMIT")
		}
	}
	explicit, limit := bt.ledgerLoop(b, true), bt.ledgerLoop(b, false)
	variants := []struct {
		name string
		run  func(span [2]int64)
	}{
		{"plain", func(span [2]int64) { exec(ctx, change, span[0], span[1]) }},
		// A transaction journals the pages of an UPDATE that might fail
		// halfway (n is NOT NULL), so that it can undo the statement alone.
		{"tx", tx(func(span [2]int64) { exec(ctx, change, span[0], span[1]) })},
		{"tx-or-rollback", tx(func(span [2]int64) { exec(ctx, changeRB, span[0], span[1]) })},
		// What ApplySubBatch runs with SubBatch.Hi.
		{"tx-or-rollback+cas", tx(func(span [2]int64) { advance(1, span, exec(ctx, changeRB, span[0], span[1])) })},
		// A ledger read first, as before the compare-and-set alone sufficed.
		{"tx-or-rollback+read+cas", tx(func(span [2]int64) {
			readCheckpoint(2)
			advance(2, span, exec(ctx, changeRB, span[0], span[1]))
		})},
		{"ApplySubBatch", func([2]int64) { explicit.apply(b) }},
		{"ApplySubBatch-limit", func([2]int64) { limit.apply(b) }},
	}
	for seq := int64(1); seq <= 2; seq++ {
		if _, err := bt.sink.BeginBatch(ctx, "breakdown", seq, sink.KeyInt); err != nil {
			b.Fatal(err)
		}
	}
	times := make([][]float64, len(variants))
	// A fresh order every op: a variant's after-effects (the deadline's
	// watcher goroutine, a WAL checkpoint) fall on a different next one.
	order := rand.New(rand.NewPCG(1, 2)).Perm(len(variants))
	shuffle := rand.New(rand.NewPCG(3, 4))
	for b.Loop() {
		explicit.prepare(b)
		limit.prepare(b)
		span := explicit.next()
		if explicit.span == 0 {
			// A new pass: the hand-built batches start over too.
			clear(checkpoints)
			exec(ctx, `UPDATE `+sink.LedgerTable+` SET checkpoint = NULL WHERE migration = 'breakdown'`)
		}
		shuffle.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, v := range order {
			start := time.Now()
			variants[v].run(span)
			times[v] = append(times[v], float64(time.Since(start)))
		}
	}
	base := median(times[0])
	b.ReportMetric(base/1e3, "plain-µs")
	for v := 1; v < len(variants); v++ {
		b.ReportMetric(100*(median(times[v])/base-1), variants[v].name+"-%")
	}
}

// BenchmarkStatementDeadline is the cost the watchdog saves: the change of
// a sub-batch in autocommit without and with a context deadline, which
// modernc.org/sqlite watches with a goroutine of its own per statement.
// Pairs on the same span of t_plain and t, in alternating order, as in
// BenchmarkLedgerOverheadInterleaved.
//
//	go test -run '^$' -bench StatementDeadline -benchtime 4000x ./pkg/sink/sqlite/
func BenchmarkStatementDeadline(b *testing.B) {
	bt := newBenchTable(b)
	prepare := func(table string) *sql.Stmt {
		st, err := bt.sink.w.conn.PrepareContext(context.Background(), `UPDATE `+table+` SET n = n + 1 WHERE id > ? AND id <= ?`)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = st.Close() })
		return st
	}
	background, deadline := prepare("t_plain"), prepare("t")
	run := func(st *sql.Stmt, withDeadline bool, span [2]int64) float64 {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		start := time.Now()
		if withDeadline {
			ctx, cancel = context.WithTimeout(ctx, time.Minute)
		}
		if _, err := st.ExecContext(ctx, span[0], span[1]); err != nil {
			b.Fatal(err)
		}
		cancel()
		return float64(time.Since(start))
	}
	var bg, dl []float64
	i := 0
	for b.Loop() {
		span := bt.spans[i%len(bt.spans)]
		if i%2 == 0 {
			bg = append(bg, run(background, false, span))
			dl = append(dl, run(deadline, true, span))
		} else {
			dl = append(dl, run(deadline, true, span))
			bg = append(bg, run(background, false, span))
		}
		i++
	}
	b.ReportMetric(median(bg)/1e3, "background-µs")
	b.ReportMetric(median(dl)/1e3, "deadline-µs")
	b.ReportMetric(100*(median(dl)/median(bg)-1), "deadline-%")
}

// BenchmarkLedgerAlone is the ledger's own cost, without a change: an
// empty write transaction, one with the checkpoint's compare-and-set
// rolled back (the statement), and one committed (the statement and the
// ledger page's WAL frame).
//
//	go test -run '^$' -bench LedgerAlone -benchtime 20000x -count 3 ./pkg/sink/sqlite/
func BenchmarkLedgerAlone(b *testing.B) {
	db := testenv.SQLite(b)
	ctx := context.Background()
	s, err := Open(ctx, db.DSN, sink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	if _, err := s.BeginBatch(ctx, "alone", 1, sink.KeyInt); err != nil {
		b.Fatal(err)
	}
	exec := func(query string, args ...any) int64 {
		st, err := s.w.stmt(ctx, query)
		if err != nil {
			b.Fatal(err)
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := res.RowsAffected()
		return n
	}
	var checkpoint any
	key := int64(0)
	for _, end := range []string{"", "ROLLBACK", "COMMIT"} {
		name := map[string]string{"": "begin-commit", "ROLLBACK": "cas-rollback", "COMMIT": "cas-commit"}[end]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				exec("BEGIN IMMEDIATE")
				if end == "" {
					exec("COMMIT")
					continue
				}
				key++
				hi := strconv.FormatInt(key, 10)
				if exec(advanceCheckpoint, hi, int64(benchSubSize), time.Now().UTC(), "alone", int64(1), checkpoint) != 1 {
					b.Fatal("the checkpoint did not advance")
				}
				exec(end)
				if end == "COMMIT" {
					checkpoint = hi
				}
			}
		})
	}
}
