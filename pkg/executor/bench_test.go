package executor_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/executor"
)

// BenchmarkThroughput measures the whole pipeline — planner, one executor
// worker, JetStream, the Postgres sink and its ledger — against a
// hand-written keyset loop running the same 1000-row UPDATE statements on
// the same table, in one process, alternating so the machine's load falls
// on all three alike:
//
//	loop      UPDATE items SET n = n + 1 WHERE id > $1 AND id <= $2, 1000 rows
//	          each, over ranges computed before the clock starts
//	keyset    the loop as one writes it by hand: each iteration first finds
//	          its upper key (SELECT id … ORDER BY id LIMIT 1 OFFSET 999)
//	fixed     a migration with sub_batch_size 1000 and sub_batch_target 0s
//	adaptive  the same with the default 250ms target
//
// Each of the b.N rounds is one pass over the table per variant. It
// reports the median rows per second of each and the ratios to the loop
// (the strict comparison: its key ranges cost it nothing):
//
//	go test ./pkg/executor -run '^$' -bench Throughput -benchtime 3x -timeout 30m
//
// BATCHFLOW_BENCH_ROWS sets the table size (default 1,000,000) and
// BATCHFLOW_BENCH_BATCH_SIZE the migrations' batch_size (default 20,000).
func BenchmarkThroughput(b *testing.B) {
	rows := envInt("BATCHFLOW_BENCH_ROWS", 1_000_000)
	batchSize := envInt("BATCHFLOW_BENCH_BATCH_SIZE", batches.DefaultBatchSize)
	db := testenv.Postgres(b)
	db.Exec(b, "CREATE TABLE items (id BIGINT PRIMARY KEY, n INT NOT NULL DEFAULT 0, note TEXT)")
	// Gapped keys: every 7th id missing, as in a table with deletes.
	db.Exec(b, fmt.Sprintf("INSERT INTO items (id) SELECT i FROM generate_series(1, %d) AS i WHERE i %% 7 <> 0", rows*7/6))
	db.Exec(b, "VACUUM ANALYZE items")
	total := db.QueryInt(b, "SELECT COUNT(*) FROM items")
	bounds := loopBounds(b, db)

	bundle := newBundle(b, db)
	bundle.startPlanner(b)
	bundle.startExecutor(b, "bench", func(c *executor.Config) { c.Concurrency = 1 })
	ctx := context.Background()

	loop := func() {
		stmt, err := db.DB.PrepareContext(ctx, "UPDATE items SET n = n + 1 WHERE id > $1 AND id <= $2")
		if err != nil {
			b.Fatal(err)
		}
		defer stmt.Close()
		for i := 1; i < len(bounds); i++ {
			if _, err := stmt.ExecContext(ctx, bounds[i-1], bounds[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	keyset := func() {
		find, err := db.DB.PrepareContext(ctx, "SELECT id FROM items WHERE id > $1 ORDER BY id LIMIT 1 OFFSET 999")
		if err != nil {
			b.Fatal(err)
		}
		defer find.Close()
		update, err := db.DB.PrepareContext(ctx, "UPDATE items SET n = n + 1 WHERE id > $1 AND id <= $2")
		if err != nil {
			b.Fatal(err)
		}
		defer update.Close()
		lo, last := bounds[0], bounds[len(bounds)-1]
		for lo < last {
			hi := last
			if err := find.QueryRowContext(ctx, lo).Scan(&hi); err != nil && !errors.Is(err, sql.ErrNoRows) {
				b.Fatal(err)
			}
			if _, err := update.ExecContext(ctx, lo, hi); err != nil {
				b.Fatal(err)
			}
			lo = hi
		}
	}
	migrate := func(name string, target *batches.Duration) {
		_, err := bundle.client.Enqueue(ctx, bump(name, func(s *batches.Spec) {
			s.BatchSize, s.SubBatchSize, s.SubBatchTarget = batchSize, 1000, target
		}))
		if err != nil {
			b.Fatal(err)
		}
		m, err := bundle.client.Wait(ctx, name)
		if err != nil || m.Status != batches.MigrationSucceeded || m.Counters.RowsAffected != total {
			b.Fatalf("migration %s: %v %+v", name, err, m)
		}
	}
	fixed := new(batches.Duration)

	rates := map[string][]float64{}
	run := func(name string, f func()) {
		start := time.Now()
		f()
		rates[name] = append(rates[name], float64(total)/time.Since(start).Seconds())
	}
	b.ResetTimer()
	for i := range b.N {
		order := []string{"loop", "keyset", "fixed", "adaptive"}
		for range i % 4 { // rotate, so no variant always runs first
			order = append(order[1:], order[0])
		}
		for _, v := range order {
			switch v {
			case "loop":
				run(v, loop)
			case "keyset":
				run(v, keyset)
			case "fixed":
				run(v, func() { migrate(fmt.Sprintf("fixed_%d", i), fixed) })
			case "adaptive":
				run(v, func() { migrate(fmt.Sprintf("adaptive_%d", i), nil) })
			}
		}
	}
	b.StopTimer()
	loopRate := median(rates["loop"])
	b.ReportMetric(loopRate, "loop-rows/s")
	b.ReportMetric(median(rates["keyset"]), "keyset-rows/s")
	b.ReportMetric(median(rates["fixed"]), "fixed-rows/s")
	b.ReportMetric(median(rates["adaptive"]), "adaptive-rows/s")
	b.ReportMetric(median(rates["fixed"])/loopRate, "fixed/loop")
	b.ReportMetric(median(rates["adaptive"])/loopRate, "adaptive/loop")
	b.ReportMetric(median(rates["fixed"])/median(rates["keyset"]), "fixed/keyset")
	b.Logf("rows %d, batch_size %d; rows/s per round: loop %.0f, keyset %.0f, fixed %.0f, adaptive %.0f",
		total, batchSize, rates["loop"], rates["keyset"], rates["fixed"], rates["adaptive"])
}

// loopBounds returns the keys that cut the table into 1000-row ranges
// (lo, hi], the first lo just below the first key.
func loopBounds(b *testing.B, db *testenv.Database) []int64 {
	b.Helper()
	rs, err := db.DB.Query("SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS r FROM items) s WHERE r % 1000 = 0 ORDER BY id")
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	bounds := []int64{db.QueryInt(b, "SELECT MIN(id) FROM items") - 1}
	for rs.Next() {
		var id int64
		if err := rs.Scan(&id); err != nil {
			b.Fatal(err)
		}
		bounds = append(bounds, id)
	}
	if last := db.QueryInt(b, "SELECT MAX(id) FROM items"); bounds[len(bounds)-1] != last {
		bounds = append(bounds, last)
	}
	return bounds
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func envInt(name string, def int) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil || v <= 0 {
		return def
	}
	return v
}
