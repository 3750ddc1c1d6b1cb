package watchdog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/planner"
	_ "github.com/batchflow/batchflow/pkg/sink/all"
	"github.com/batchflow/batchflow/pkg/watchdog"
)

// The health check of these tests: look every second, call a batch stalled
// after four seconds without a committed sub-batch.
var healthCheck = batches.HealthCheck{Frequency: batches.Duration(time.Second), Timeout: batches.Duration(4 * time.Second)}

type testBundle struct {
	js     *testenv.JS
	db     *testenv.Database
	res    *bus.Resources
	client *client.Client
	events *testenv.EventLog
}

func setup(t *testing.T, db *testenv.Database, topo bus.Topology) *testBundle {
	t.Helper()
	js := testenv.JetStreamListening(t)
	res, err := bus.Bootstrap(context.Background(), js.JetStream, bus.MustNames(""), topo)
	require.NoError(t, err)
	c, err := client.New(context.Background(), js.Conn, client.Options{})
	require.NoError(t, err)
	b := &testBundle{js: js, db: db, res: res, client: c, events: testenv.Events(t, js.JetStream)}
	return b
}

// run starts a component's Run on its own connection until the test ends.
func (b *testBundle) run(t *testing.T, name string, start func(js jetstream.JetStream, nc any) (func(context.Context) error, error)) {
	t.Helper()
	nc := b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	runFn, err := start(js, nc)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := runFn(ctx); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func (b *testBundle) startPlanner(t *testing.T) {
	nc := b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	p, err := planner.New(planner.Config{Conn: nc, JetStream: js, Targets: map[string]string{"main": b.db.DSN},
		Tick: 20 * time.Millisecond, Logger: testenv.Logger(t).With("component", "planner")})
	require.NoError(t, err)
	b.run(t, "planner", func(jetstream.JetStream, any) (func(context.Context) error, error) { return p.Run, nil })
}

func (b *testBundle) startWatchdog(t *testing.T, id string, tune ...func(*watchdog.Config)) {
	b.run(t, id, func(js jetstream.JetStream, _ any) (func(context.Context) error, error) {
		cfg := watchdog.Config{JetStream: js, ID: id, Tick: 100 * time.Millisecond, Logger: testenv.Logger(t).With("component", id)}
		for _, f := range tune {
			f(&cfg)
		}
		w, err := watchdog.New(cfg)
		if err != nil {
			return nil, err
		}
		return w.Run, nil
	})
}

func (b *testBundle) startExecutor(t *testing.T, id string) {
	nc := b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ex, err := executor.New(executor.Config{Conn: nc, JetStream: js, ID: id, Concurrency: 2,
		Targets:          map[string]string{"main": b.db.DSN},
		Logger:           testenv.Logger(t).With("component", id),
		RetryBackoff:     []time.Duration{200 * time.Millisecond},
		ThrottleInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	b.run(t, id, func(jetstream.JetStream, any) (func(context.Context) error, error) { return ex.Run, nil })
}

func createItems(t *testing.T, db *testenv.Database, n int) {
	t.Helper()
	db.Exec(t, "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	var rows []string
	for i := 1; i <= n; i++ {
		rows = append(rows, fmt.Sprintf("(%d)", i*3))
		if len(rows) == 1000 || i == n {
			db.Exec(t, "INSERT INTO items (id) VALUES "+strings.Join(rows, ", "))
			rows = rows[:0]
		}
	}
}

func bump(name string, mod func(*batches.Spec)) batches.Spec {
	s := batches.Spec{Name: name, Target: "main", Kind: batches.KindSQL, Table: "items",
		Args: json.RawMessage(`{"set": "n = n + 1"}`), HealthCheck: healthCheck}
	if mod != nil {
		mod(&s)
	}
	return s
}

// TestFrozenExecutor freezes a real executor process (SIGSTOP) in the
// middle of a batch, perhaps inside an open transaction. The watchdog
// republishes the batch after the health-check timeout, another executor
// finishes the migration, and when the frozen one wakes (SIGCONT) it
// changes nothing: every row ends at n = 1.
func TestFrozenExecutor(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "./cmd/executor")
	for _, dialect := range []string{testenv.DialectPostgres, testenv.DialectMySQL} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			db := testenv.Open(t, dialect)
			b := setup(t, db, bus.Topology{})
			createItems(t, db, 10_000)
			b.startPlanner(t)
			b.startWatchdog(t, "watchdog-a")
			b.startWatchdog(t, "watchdog-b") // two at once: each stall is handled once

			frozen := testenv.Start(t, "frozen-executor", bin, []string{
				"--nats-url", b.js.URL, "--target", "main=" + db.DSN, "--concurrency", "1",
				"--idle-in-transaction-timeout", "3s", "--lock-timeout", "2s", "--log-level", "debug",
			})
			childID := fmt.Sprintf("/%d/", frozen.Cmd.Process.Pid)
			ctx := testenv.ContextFor(t, 3*time.Minute)
			_, err := b.client.Enqueue(ctx, bump("frozen", func(s *batches.Spec) {
				s.BatchSize, s.SubBatchSize, s.Parallelism = 2500, 100, 1
				s.SubBatchTarget = new(batches.Duration)
				s.SubBatchPause = batches.Duration(30 * time.Millisecond)
			}))
			require.NoError(t, err)

			// Freeze the child once it is well into a batch.
			var last events.Event
			require.Eventually(t, func() bool {
				n := 0
				for _, ev := range b.events.Of("frozen", events.BatchProcessBatch) {
					if strings.Contains(ev.Data.Executor, childID) {
						n, last = n+1, ev
					}
				}
				return n >= 5
			}, time.Minute, 5*time.Millisecond)
			frozen.Signal(t, syscall.SIGSTOP)
			frozenAt := time.Now()
			b.startExecutor(t, "rescuer")

			stalled := b.events.WaitFor(t, "frozen", events.BatchStalled, 1, time.Minute)
			require.Equal(t, last.Data.Batch.Seq, stalled[0].Data.Batch.Seq, "the frozen executor's batch is the one republished")
			require.True(t, strings.Contains(stalled[0].Data.PreviousOwner, childID), "the stall names the frozen owner: %s", stalled[0].Data.PreviousOwner)
			latency := stalled[0].Time.Sub(last.Time)
			t.Logf("detection: last progress %s before the republish (frozen %s after it); bound timeout+frequency = %s",
				latency.Round(time.Millisecond), frozenAt.Sub(last.Time).Round(time.Millisecond), healthCheck.Timeout.D()+healthCheck.Frequency.D())
			require.LessOrEqual(t, latency, healthCheck.Timeout.D()+healthCheck.Frequency.D()+500*time.Millisecond)

			m, err := b.client.Wait(ctx, "frozen")
			require.NoError(t, err)
			require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)

			// Wake the frozen executor and let it try to go on.
			frozen.Signal(t, syscall.SIGCONT)
			time.Sleep(3 * time.Second)
			require.Equal(t, int64(10_000), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
			require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 1"), "no row changed twice")
			require.Len(t, b.events.Of("frozen", events.BatchStalled), 1, "two watchdogs, one republish")
			for _, ev := range b.events.Of("frozen", events.BatchCompleted) {
				if ev.Data.Batch.Seq == last.Data.Batch.Seq {
					require.False(t, strings.Contains(ev.Data.Executor, childID), "the old owner did not complete the republished batch")
				}
			}
			frozen.Signal(t, syscall.SIGTERM)
			require.Equal(t, 0, frozen.Wait(t, 20*time.Second), "the woken executor shuts down cleanly")
		})
	}
}

// TestLostMessagesRepublished purges the batch stream mid-run: the audit
// finds the pending batches with no message and republishes them.
func TestLostMessagesRepublished(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db, bus.Topology{})
	createItems(t, db, 6000)
	b.startPlanner(t)
	metrics := testenv.NewMetrics(t)
	b.startWatchdog(t, "watchdog", func(c *watchdog.Config) { c.MeterProvider = metrics.Provider })
	ctx := testenv.ContextFor(t, 2*time.Minute)
	_, err := b.client.Enqueue(ctx, bump("purged", func(s *batches.Spec) { s.BatchSize, s.Parallelism = 1000, 3 }))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := b.res.BatchStream.Info(ctx)
		return err == nil && info.State.Msgs == 3
	}, 10*time.Second, 10*time.Millisecond, "three batches queued")
	require.NoError(t, b.res.BatchStream.Purge(ctx))
	purgedAt := time.Now()

	republished := b.events.WaitFor(t, "purged", events.BatchStalled, 3, 30*time.Second)
	t.Logf("lost batches republished %s after the purge", time.Since(purgedAt).Round(time.Millisecond))
	for _, ev := range republished {
		require.Contains(t, ev.Data.Reason, "message was lost")
		require.Equal(t, int64(2), ev.Data.Epoch, "republished under a new epoch")
	}
	require.Equal(t, float64(3), metrics.Value(t, watchdog.MetricBatchesRepublished, attribute.String("migration", "purged"), attribute.String("reason", "lost")))
	require.Zero(t, metrics.Value(t, watchdog.MetricBatchesRepublished, attribute.String("reason", "stalled")))
	b.startExecutor(t, "ex")
	m, err := b.client.Wait(ctx, "purged")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
	require.Equal(t, int64(6000), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
}

// TestMaxDeliveries: a batch whose message is delivered as often as the
// consumer allows without finishing (executors keep dying on it) ends
// failed with the reason, and its stuck message is deleted.
func TestMaxDeliveries(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db, bus.Topology{BatchMaxDeliver: 3, BatchAckWait: time.Second})
	createItems(t, db, 100)
	b.startPlanner(t)
	metrics := testenv.NewMetrics(t)
	b.startWatchdog(t, "watchdog", func(c *watchdog.Config) { c.MeterProvider = metrics.Provider })
	ctx := testenv.ContextFor(t, time.Minute)
	_, err := b.client.Enqueue(ctx, bump("cursed", nil))
	require.NoError(t, err)

	// An executor that dies on the batch every time: it takes the message
	// and never acknowledges it.
	for range 3 {
		batch, err := b.res.ExecutorsConsumer.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		require.NoError(t, err)
		for msg := range batch.Messages() {
			md, err := msg.Metadata()
			require.NoError(t, err)
			t.Logf("delivery %d", md.NumDelivered)
		}
	}
	// Executors keep pulling: the server notices the limit when it would
	// deliver the message a fourth time, and says so in an advisory.
	batch, err := b.res.ExecutorsConsumer.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
	require.NoError(t, err)
	for range batch.Messages() {
		t.Fatal("delivered beyond max deliveries")
	}
	m, err := b.client.Wait(ctx, "cursed")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationFailed, m.Status)
	require.Contains(t, m.Reason, "max deliveries")
	failed := b.events.WaitFor(t, "cursed", events.BatchFailed, 1, 10*time.Second)
	require.Contains(t, failed[0].Data.Error.Message, "delivered 3 times")
	require.Eventually(t, func() bool {
		info, err := b.res.BatchStream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 10*time.Second, 20*time.Millisecond, "the stuck message is deleted")
	require.Eventually(t, func() bool { // counted once the advisory is handled, just after the batch failed
		return metrics.Value(t, watchdog.MetricDeadLetters, attribute.String("migration", "cursed"), attribute.String("reason", "max_deliveries")) == 1
	}, 10*time.Second, 20*time.Millisecond)
}

// TestTerminatedBatchFailed: a batch whose message an executor terminated
// while its record still says pending (the executor died between the two)
// is failed from the advisory.
func TestTerminatedBatchFailed(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db, bus.Topology{})
	createItems(t, db, 100)
	b.startPlanner(t)
	metrics := testenv.NewMetrics(t)
	b.startWatchdog(t, "watchdog", func(c *watchdog.Config) { c.MeterProvider = metrics.Provider })
	ctx := testenv.ContextFor(t, time.Minute)
	_, err := b.client.Enqueue(ctx, bump("terminated", nil))
	require.NoError(t, err)
	batch, err := b.res.ExecutorsConsumer.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	require.NoError(t, err)
	for msg := range batch.Messages() {
		var rec batches.Batch
		require.NoError(t, json.Unmarshal(msg.Data(), &rec))
		require.NoError(t, msg.TermWithReason(bus.TermReason(rec.Migration, rec.Seq, rec.Epoch, "failed after 5 attempt(s): disk on fire")))
	}
	m, err := b.client.Wait(ctx, "terminated")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationFailed, m.Status)
	require.Contains(t, m.Reason, "disk on fire")
	require.Eventually(t, func() bool { // counted once the advisory is handled, just after the batch failed
		return metrics.Value(t, watchdog.MetricDeadLetters, attribute.String("migration", "terminated"), attribute.String("reason", "terminated")) == 1
	}, 10*time.Second, 20*time.Millisecond)
}
