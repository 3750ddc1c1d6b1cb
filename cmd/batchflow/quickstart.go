package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/internal/allinone"
	"github.com/batchflow/batchflow/internal/config"
	"github.com/batchflow/batchflow/internal/embeddednats"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
	"github.com/batchflow/batchflow/pkg/events"
)

// The demo: a users table whose new column plan is backfilled with 'free'.
const (
	demoTarget    = "demo"
	demoTable     = "users"
	demoMigration = "backfill_users_plan"
	// demoBatches is about how many batches the demo cuts the table into,
	// so that a small table still shows several batches in flight.
	demoBatches = 20
	// demoExecutors is the executor workers of the demo: enough to keep
	// SQLite's one writer busy while the others read their next batch.
	demoExecutors = 4
)

func quickstartCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "quickstart",
		Usage:     "run a backfill end to end on a demo SQLite table: nothing to install, nothing left behind",
		ArgsUsage: " ",
		Description: "Starts an embedded NATS JetStream server and creates a SQLite demo table, both in a\n" +
			"temporary directory removed at the end, runs a planner, executors and a watchdog in this\n" +
			"process, enqueues a backfill_column migration and shows it run: a progress bar (plain lines\n" +
			"when the output is not a terminal), the lifecycle events, then a summary and next steps.\n" +
			"Exit status: 0 the backfill succeeded and was checked in SQL, 1 it did not.",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "rows", Value: 1_000_000, Usage: "`N` rows in the demo table"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			rows := cmd.Int64("rows")
			if rows < 1 || rows > 1_000_000_000 {
				return usageError(cmd, fmt.Errorf("--rows %d: use 1 to 1,000,000,000", rows))
			}
			level := "warn" // the components' info lines would drown the demo
			if cmd.IsSet("log-level") {
				level = cmd.String("log-level")
			}
			log, err := config.NewLogger(cmd.Root().ErrWriter, cmd.String("log-format"), level)
			if err != nil {
				return withCode(exitRefused, err)
			}
			q := &quickstart{rows: rows, out: stdout, log: log, animate: isTerminal(stdout)}
			if err := q.run(ctx); err != nil && ctx.Err() != nil {
				return withCode(exitSignal, errors.New("interrupted; the demo's scratch space is removed"))
			} else if err != nil {
				return err
			}
			return nil
		},
	}
}

type quickstart struct {
	rows    int64
	out     io.Writer
	log     *slog.Logger
	animate bool
}

func (q *quickstart) say(format string, args ...any) { fmt.Fprintf(q.out, format+"\n", args...) }

func (q *quickstart) run(ctx context.Context) error {
	began := time.Now()
	dir, err := os.MkdirTemp("", "batchflow-quickstart-")
	if err != nil {
		return fmt.Errorf("scratch directory: %w", err)
	}
	defer os.RemoveAll(dir)

	q.say("batchflow quickstart: backfill a new column on a %s-row table, end to end, on this machine.", count(q.rows))
	q.say("Everything runs in this process: NATS JetStream (embedded), a SQLite demo database, the planner,")
	q.say("%d executor workers and the watchdog. Scratch space: %s (removed at the end).", demoExecutors, dir)
	q.say("")

	dbPath := filepath.Join(dir, "demo.db")
	t0 := time.Now()
	if err := createDemoTable(ctx, dbPath, q.rows); err != nil {
		return err
	}
	fillTime := time.Since(t0)
	q.say("1. Created %s(id, email, signed_up_at, plan) with %s rows in %s; plan is NULL everywhere.",
		demoTable, count(q.rows), roundDuration(fillTime))

	srv, err := embeddednats.Start(embeddednats.Config{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	connect := func(name string) (*nats.Conn, error) { return srv.Connect(nats.Name(name)) }

	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() {
		ran <- allinone.Run(runCtx, allinone.Config{
			Connect:   connect,
			Targets:   map[string]string{demoTarget: "sqlite://" + dbPath},
			Executors: demoExecutors,
			Logger:    q.log,
			// The demo lasts seconds: a progress event every 2s shows it advance.
			ProgressInterval: 2 * time.Second,
		})
	}()
	var runErr error
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopRun()
			runErr = <-ran
		}
	}
	defer stop()

	nc, err := connect("batchflow-quickstart")
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := client.New(ctx, nc, client.Options{})
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	q.say("2. Started NATS JetStream, the planner, %d executor workers and the watchdog.", demoExecutors)

	spec := demoSpec(q.rows)
	specJSON, _ := json.MarshalIndent(struct {
		Name      string          `json:"name"`
		Target    string          `json:"target"`
		Kind      string          `json:"kind"`
		Table     string          `json:"table"`
		Args      json.RawMessage `json:"args"`
		BatchSize int             `json:"batch_size"`
	}{spec.Name, spec.Target, spec.Kind, spec.Table, spec.Args, spec.BatchSize}, "     ", "  ")
	q.say("3. Enqueueing this migration spec (the rest of the fields keep their defaults, see docs/spec.md):")
	q.say("     %s", specJSON)
	q.say("")
	q.say("Lifecycle events as they happen (what `batchflow events --follow` prints), and progress:")

	view := newQuickstartView(q.out, q.animate, q.rows)
	sub, err := events.Subscribe(ctx, js, events.SubscribeOptions{Migration: demoMigration, FromStart: true}, view.event)
	if err != nil {
		return err
	}
	defer sub.Stop()

	enqueueCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := c.Enqueue(enqueueCtx, spec); err != nil {
		view.stop()
		var rejected *client.RejectedError
		if errors.As(err, &rejected) {
			return withCode(exitFailed, rejectionError(rejected))
		}
		return withCode(exitFailed, err)
	}
	m, err := c.Wait(ctx, demoMigration)
	if err != nil {
		view.stop()
		return err
	}
	view.settle(m.Counters.RowsAffected, 5*time.Second)
	view.stop()
	stop()
	if runErr != nil {
		q.log.Warn("quickstart: components stopped with an error", "err", runErr)
	}
	q.say("")
	if m.Status != batches.MigrationSucceeded {
		q.say("%s", outcomeLine(m))
		if m.LastError != nil {
			q.say("  last error: %s", errorLine(m.LastError))
		}
		return outcome(exitFailed)
	}

	left, err := rowsNotBackfilled(ctx, dbPath)
	if err != nil {
		return err
	}
	if left != 0 {
		return withCode(exitFailed, fmt.Errorf("the migration succeeded but %s rows still have no plan: please report this", count(left)))
	}
	q.summary(m, view.tally(), fillTime, time.Since(began))
	q.nextSteps()
	return nil
}

// demoSpec is the demo migration: the spec a user would write, with a
// batch size that cuts any table size into about demoBatches batches.
func demoSpec(rows int64) batches.Spec {
	batchSize := int(min(max(rows/demoBatches, 1000), int64(batches.MaxBatchSize)))
	return batches.Spec{
		Name:      demoMigration,
		Target:    demoTarget,
		Kind:      batches.KindBackfillColumn,
		Table:     demoTable,
		Args:      json.RawMessage(`{"updates": {"plan": "free"}}`),
		BatchSize: batchSize,
	}
}

// createDemoTable fills the demo table in one transaction with one
// INSERT … SELECT over a recursive CTE: no row crosses from Go to SQLite.
func createDemoTable(ctx context.Context, path string, rows int64) error {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return fmt.Errorf("demo database: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, stmt := range []string{
		// Scratch data: durability would only cost time.
		"PRAGMA journal_mode = WAL",
		"PRAGMA synchronous = OFF",
		`CREATE TABLE users (
			id           INTEGER PRIMARY KEY,
			email        TEXT NOT NULL,
			signed_up_at TEXT NOT NULL,
			plan         TEXT
		)`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("demo database: %w", err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("demo database: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `
		WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?)
		INSERT INTO users (id, email, signed_up_at)
		SELECT n, 'user' || n || '@example.com', date('2020-01-01', '+' || (n % 2000) || ' days') FROM seq`, rows); err != nil {
		return fmt.Errorf("fill the demo table: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("fill the demo table: %w", err)
	}
	// The planner's row estimate reads SQLite's statistics.
	if _, err := db.ExecContext(ctx, "ANALYZE"); err != nil {
		return fmt.Errorf("demo database: %w", err)
	}
	return nil
}

// rowsNotBackfilled checks the outcome in SQL, as a user would.
func rowsNotBackfilled(ctx context.Context, path string) (int64, error) {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int64
	err = db.QueryRowContext(ctx, "SELECT count(*) FROM users WHERE plan IS NOT 'free'").Scan(&n)
	return n, err
}

func (q *quickstart) summary(m *batches.Migration, t quickstartTally, fillTime, total time.Duration) {
	took := elapsed(m, time.Now())
	q.say("Summary")
	q.say("  rows         %s backfilled (plan = 'free'), checked in SQL: none left behind", count(m.Counters.RowsAffected))
	q.say("  time         %s for the migration; %s in all, %s of it creating the table", roundDuration(took), roundDuration(total), roundDuration(fillTime))
	if s := took.Seconds(); s > 0 {
		q.say("  throughput   %s", perSecond(float64(m.Counters.RowsAffected)/s))
	}
	q.say("  batches      %s of up to %s rows, %d in flight at once; %s retries",
		count(m.Counters.BatchesSucceeded), count(int64(m.Spec.BatchSize)), m.Spec.Parallelism, count(m.Counters.Retries))
	sub := fmt.Sprintf("  sub-batches  %s transactions, each committing its rows and the batch's ledger checkpoint together", count(t.subBatches))
	q.say("%s", sub)
	if t.largestSubBatch > int64(m.Spec.SubBatchSize) {
		q.say("               size adapted from %s to %s rows, toward %s per transaction",
			count(int64(m.Spec.SubBatchSize)), count(t.largestSubBatch), m.Spec.SubBatchTargetOrDefault())
	}
	q.say("")
}

func (q *quickstart) nextSteps() {
	q.say(`Next steps (from a clone, batchflow is "go run ./cmd/batchflow", or bin/batchflow after "go build -o bin/ ./cmd/...")
  1. Run batchflow against your own database: planner, executors and watchdog in one process,
     NATS embedded and kept in ./batchflow-data, listening on 127.0.0.1:4222:
       batchflow run --target main=postgres://user:password@localhost:5432/app
       batchflow run --target main=mysql://user:password@localhost:3306/app
     (or run cmd/planner, cmd/executor and cmd/watchdog against your own NATS: see README.md)
  2. In another terminal, write a spec and enqueue it:
       echo '{"name": "backfill_users_plan", "target": "main", "kind": "backfill_column",
              "table": "users", "args": {"updates": {"plan": "free"}}}' > backfill.json
       batchflow enqueue --file backfill.json
  3. Watch it and wait for it:
       batchflow status --watch
       batchflow events --follow
       batchflow wait backfill_users_plan      # exit 0 once it has succeeded: for deploy scripts
  Every command and flag: docs/cli.md. Every spec field: docs/spec.md.`)
}
