package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/planner"
	_ "github.com/batchflow/batchflow/pkg/sink/all"
)

// testBundle is one test's JetStream, database, planner and client.
type testBundle struct {
	js     *testenv.JS
	db     *testenv.Database
	res    *bus.Resources
	client *client.Client
	events *testenv.EventLog
}

// ackWait is short in tests so a batch whose executor died is redelivered
// in seconds; executors keep batches alive well within it.
const ackWait = 3 * time.Second

func setup(t testing.TB, db *testenv.Database) *testBundle {
	t.Helper()
	b := newBundle(t, db)
	b.events = testenv.Events(t, b.js.JetStream)
	return b
}

// newBundle is setup without the event log, for benchmarks.
func newBundle(t testing.TB, db *testenv.Database) *testBundle {
	t.Helper()
	js := testenv.JetStream(t)
	res, err := bus.Bootstrap(context.Background(), js.JetStream, bus.MustNames(""), bus.Topology{BatchAckWait: ackWait})
	require.NoError(t, err)
	c, err := client.New(context.Background(), js.Conn, client.Options{})
	require.NoError(t, err)
	return &testBundle{js: js, db: db, res: res, client: c}
}

func (b *testBundle) startPlanner(t testing.TB) {
	t.Helper()
	nc := b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	p, err := planner.New(planner.Config{
		Conn: nc, JetStream: js, Targets: map[string]string{"main": b.db.DSN},
		Logger: testenv.Logger(t).With("component", "planner"), Tick: 20 * time.Millisecond,
		ProgressInterval: 500 * time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("planner: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// startExecutor runs an executor on its own NATS connection; stop ends it
// gracefully (as SIGTERM does) and waits for Run to return.
func (b *testBundle) startExecutor(t testing.TB, id string, tune func(*executor.Config)) (stop func(), nc *nats.Conn) {
	t.Helper()
	nc = b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	cfg := executor.Config{
		Conn: nc, JetStream: js, ID: id, Concurrency: 2,
		Targets:            map[string]string{"main": b.db.DSN},
		Logger:             testenv.Logger(t).With("component", id),
		InProgressInterval: ackWait / 3,
		HeartbeatInterval:  200 * time.Millisecond,
		ThrottleInterval:   100 * time.Millisecond,
		RetryBackoff:       []time.Duration{100 * time.Millisecond},
	}
	if tune != nil {
		tune(&cfg)
	}
	ex, err := executor.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ex.Run(ctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("executor %s: %v", id, err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop, nc
}

// createItems makes items(id, n, note) with n rows of gapped ids.
func createItems(t testing.TB, db *testenv.Database, n int) []int64 {
	t.Helper()
	db.Exec(t, "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 0, note VARCHAR(40))")
	ids := make([]int64, 0, n)
	id := int64(0)
	rows := make([]string, 0, 1000)
	for i := range n {
		switch {
		case i%500 == 0:
			id += 50_000
		case i%11 == 0:
			id += 17
		default:
			id++
		}
		ids = append(ids, id)
		rows = append(rows, fmt.Sprintf("(%d)", id))
		if len(rows) == cap(rows) || i == n-1 {
			db.Exec(t, "INSERT INTO items (id) VALUES "+strings.Join(rows, ", "))
			rows = rows[:0]
		}
	}
	return ids
}

func bump(name string, mod func(*batches.Spec)) batches.Spec {
	s := batches.Spec{Name: name, Target: "main", Kind: batches.KindSQL, Table: "items", Args: json.RawMessage(`{"set": "n = n + 1"}`)}
	if mod != nil {
		mod(&s)
	}
	return s
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func (b *testBundle) batchRecord(t testing.TB, migration string, seq int64) batches.Batch {
	t.Helper()
	entry, err := b.res.BatchesKV.Get(context.Background(), bus.BatchKey(migration, seq))
	require.NoError(t, err)
	var rec batches.Batch
	require.NoError(t, json.Unmarshal(entry.Value(), &rec))
	return rec
}

// TestExactlyOnceWithAnExecutorKilled runs n = n + 1 over 100k gapped rows
// with three executors and kills one mid-batch (its NATS connection gone,
// no ack, no goodbye): every row ends at 1 and the migration succeeds.
func TestExactlyOnceWithAnExecutorKilled(t *testing.T) {
	t.Parallel()
	testenv.ForEachDialect(t, func(t *testing.T, db *testenv.Database) {
		t.Parallel()
		b := setup(t, db)
		ids := createItems(t, db, 100_000)
		b.startPlanner(t)
		_, victim := b.startExecutor(t, "victim", func(c *executor.Config) { c.Concurrency = 1 })
		ctx := ctxFor(t, 3*time.Minute)

		_, err := b.client.Enqueue(ctx, bump("bump_all", func(s *batches.Spec) {
			s.BatchSize, s.SubBatchSize, s.Parallelism = 5000, 500, 4
			s.SubBatchTarget = new(batches.Duration) // fixed size, so the victim is mid-batch for a while
			s.SubBatchPause = batches.Duration(20 * time.Millisecond)
		}))
		require.NoError(t, err)

		// Once the victim has committed sub-batches of a batch, it dies.
		started := b.events.WaitFor(t, "bump_all", events.BatchProcessBatch, 3, 30*time.Second)
		require.NotEmpty(t, started)
		victim.Close()
		b.startExecutor(t, "survivor-1", nil)
		b.startExecutor(t, "survivor-2", nil)

		m, err := b.client.Wait(ctx, "bump_all")
		require.NoError(t, err)
		require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
		require.Equal(t, int64(len(ids)), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"), "every row changed")
		require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 1"), "no row changed twice")
		require.Equal(t, int64(len(ids)), m.Counters.RowsAffected)
		require.Equal(t, int64(len(ids)), db.QueryInt(t, "SELECT SUM(rows_affected) FROM batchflow_ledger WHERE migration = 'bump_all'"))
		var victimWork bool
		for _, ev := range b.events.Of("bump_all", events.BatchProcessBatch) {
			victimWork = victimWork || strings.HasPrefix(ev.Data.Executor, "victim/")
		}
		require.True(t, victimWork, "the victim did part of the work before it died")
	})
}

// TestTransientErrorRetried: a lock held on the rows makes sub-batches time
// out; the attempt fails, the batch is retried, and succeeds once the lock goes.
func TestTransientErrorRetried(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	b := setup(t, db)
	createItems(t, db, 300)
	b.startPlanner(t)

	holder, err := db.DB.BeginTx(context.Background(), nil)
	require.NoError(t, err)
	_, err = holder.Exec("UPDATE items SET note = 'held' WHERE id = (SELECT MIN(id) FROM items)")
	require.NoError(t, err)

	b.startExecutor(t, "ex", func(c *executor.Config) {
		c.SinkOptions.LockTimeout = 100 * time.Millisecond
		c.TransientRetries = 1
		c.RetryBackoff = []time.Duration{300 * time.Millisecond}
	})
	ctx := ctxFor(t, time.Minute)
	_, err = b.client.Enqueue(ctx, bump("locked", func(s *batches.Spec) { s.MaxAttempts = 10 }))
	require.NoError(t, err)
	retried := b.events.WaitFor(t, "locked", events.BatchRetried, 1, 30*time.Second)
	require.Equal(t, batches.ClassTransient, retried[0].Data.Error.Class)
	require.Contains(t, retried[0].Data.Error.Message, "lock")
	require.NoError(t, holder.Rollback())

	m, err := b.client.Wait(ctx, "locked")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
	require.Equal(t, int64(300), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	require.GreaterOrEqual(t, b.batchRecord(t, "locked", 0).Attempts, 1, "the failed attempt is on record")
}

// TestMaxAttempts: a batch that fails every attempt fails the migration,
// with the error in the events.
func TestMaxAttempts(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	createItems(t, db, 100)
	b.startPlanner(t)
	b.startExecutor(t, "ex", nil)
	ctx := ctxFor(t, time.Minute)
	_, err := b.client.Enqueue(ctx, batches.Spec{Name: "doomed", Target: "main", Kind: batches.KindSQL, Table: "items",
		Args: json.RawMessage(`{"set": "n = NULL"}`), MaxAttempts: 3})
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "doomed")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationFailed, m.Status)
	require.Contains(t, m.Reason, "NOT NULL")

	require.Len(t, b.events.WaitFor(t, "doomed", events.BatchRetried, 2, 30*time.Second), 2, "attempts 1 and 2 are retried")
	failed := b.events.WaitFor(t, "doomed", events.BatchFailed, 1, 30*time.Second)
	require.Equal(t, 3, failed[0].Data.Attempt)
	require.Equal(t, batches.ClassData, failed[0].Data.Error.Class)
	require.Contains(t, failed[0].Data.Error.Message, "NOT NULL")
	mf := b.events.WaitFor(t, "doomed", events.MigrationFailed, 1, 30*time.Second)
	require.Contains(t, mf[0].Data.Error.Message, "NOT NULL")
	rec := b.batchRecord(t, "doomed", 0)
	require.Equal(t, batches.BatchFailed, rec.Status)
	require.Equal(t, 3, rec.Attempts)
	require.Len(t, rec.Errors, 3)
	require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"), "nothing applied")
}

// TestPoisonRowsSkipped: with on_row_error skip, exactly the failing rows
// end up in failed_keys and every other row is applied.
func TestPoisonRowsSkipped(t *testing.T) {
	t.Parallel()
	testenv.ForEachDialect(t, func(t *testing.T, db *testenv.Database) {
		t.Parallel()
		b := setup(t, db)
		ids := createItems(t, db, 3000)
		poison := []int64{ids[0], ids[777], ids[778], ids[2999]}
		var list []string
		for _, id := range poison {
			list = append(list, fmt.Sprint(id))
		}
		b.startPlanner(t)
		b.startExecutor(t, "ex", nil)
		ctx := ctxFor(t, 2*time.Minute)
		set := fmt.Sprintf("n = CASE WHEN id IN (%s) THEN NULL ELSE n + 1 END", strings.Join(list, ", "))
		_, err := b.client.Enqueue(ctx, batches.Spec{Name: "poison", Target: "main", Kind: batches.KindSQL, Table: "items",
			Args: mustJSON(t, map[string]string{"set": set}), OnRowError: batches.RowErrorSkip, BatchSize: 1000, SubBatchSize: 200})
		require.NoError(t, err)
		m, err := b.client.Wait(ctx, "poison")
		require.NoError(t, err)
		require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
		require.Equal(t, int64(len(poison)), m.Counters.FailedKeys)

		var failed []int64
		bs, err := b.client.Batches(ctx, "poison")
		require.NoError(t, err)
		for _, bt := range bs {
			for _, k := range bt.FailedKeys {
				failed = append(failed, k.Int())
			}
		}
		require.ElementsMatch(t, poison, failed, "exactly the failing rows")
		require.Equal(t, int64(len(ids)-len(poison)), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
		require.Equal(t, int64(len(poison)), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 0"))
		var evKeys int
		for _, ev := range b.events.Of("poison", events.BatchCompleted) {
			evKeys += len(ev.Data.FailedKeys)
		}
		require.Equal(t, len(poison), evKeys, "the completed events carry the failed keys")
	})
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	data, err := json.Marshal(v)
	require.NoError(t, err)
	return data
}

// TestThrottle: while the throttle query says yes, batches report throttled
// and make no progress; when it says no, they continue.
func TestThrottle(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	createItems(t, db, 500)
	db.Exec(t, "CREATE TABLE busy (flag INT NOT NULL)")
	db.Exec(t, "INSERT INTO busy VALUES (1)")
	b.startPlanner(t)
	b.startExecutor(t, "ex", func(c *executor.Config) { c.Concurrency = 1 })
	ctx := ctxFor(t, time.Minute)
	_, err := b.client.Enqueue(ctx, bump("polite", func(s *batches.Spec) {
		s.Throttle = &batches.Throttle{Query: "SELECT COUNT(*) > 0 FROM busy WHERE flag = 1"}
		s.Parallelism = 1
	}))
	require.NoError(t, err)
	on := b.events.WaitFor(t, "polite", events.BatchThrottled, 1, 30*time.Second)
	require.True(t, *on[0].Data.Throttled)
	require.Contains(t, on[0].Data.Reason, "throttle query")
	time.Sleep(500 * time.Millisecond)
	require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"), "no progress while throttled")
	require.Empty(t, b.events.Of("polite", events.BatchProcessBatch))

	db.Exec(t, "UPDATE busy SET flag = 0")
	m, err := b.client.Wait(ctx, "polite")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status)
	throttled := b.events.Of("polite", events.BatchThrottled)
	require.GreaterOrEqual(t, len(throttled), 2)
	require.False(t, *throttled[len(throttled)-1].Data.Throttled, "the throttle lifting is reported")
	require.Equal(t, int64(500), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
}

// TestGracefulShutdownHandsBack: stopping an executor mid-batch (SIGTERM)
// hands the batch back without using an attempt; another finishes it.
func TestGracefulShutdownHandsBack(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	ids := createItems(t, db, 4000)
	b.startPlanner(t)
	stop, _ := b.startExecutor(t, "first", func(c *executor.Config) { c.Concurrency = 1 })
	ctx := ctxFor(t, time.Minute)
	_, err := b.client.Enqueue(ctx, bump("handed_back", func(s *batches.Spec) {
		s.BatchSize, s.SubBatchSize, s.Parallelism = 4000, 100, 1
		s.SubBatchTarget = new(batches.Duration)
		s.SubBatchPause = batches.Duration(30 * time.Millisecond)
	}))
	require.NoError(t, err)
	b.events.WaitFor(t, "handed_back", events.BatchProcessBatch, 3, 30*time.Second)
	stopped := time.Now()
	stop()
	require.Less(t, time.Since(stopped), 10*time.Second, "shutdown within 10 s plus a sub-batch")

	rec := b.batchRecord(t, "handed_back", 0)
	require.Equal(t, batches.BatchPending, rec.Status, "handed back")
	require.Zero(t, rec.Attempts, "no attempt used")
	require.Empty(t, rec.Owner)
	require.False(t, rec.Checkpoint.IsNull(), "the checkpoint reached is kept")
	done := db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1")
	require.Greater(t, done, int64(0))
	require.Less(t, done, int64(len(ids)))

	b.startExecutor(t, "second", nil)
	m, err := b.client.Wait(ctx, "handed_back")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status)
	require.Equal(t, int64(len(ids)), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	require.Zero(t, b.batchRecord(t, "handed_back", 0).Attempts)
}

// TestPauseAndResume: a paused migration's batches stop after their current
// sub-batch and are handed back; resumed, it finishes with every row once.
func TestPauseAndResume(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	ids := createItems(t, db, 3000)
	b.startPlanner(t)
	b.startExecutor(t, "ex", nil)
	ctx := ctxFor(t, time.Minute)
	_, err := b.client.Enqueue(ctx, bump("pausing", func(s *batches.Spec) {
		s.BatchSize, s.SubBatchSize, s.Parallelism = 1000, 50, 2
		s.SubBatchTarget = new(batches.Duration)
		s.SubBatchPause = batches.Duration(20 * time.Millisecond)
	}))
	require.NoError(t, err)
	b.events.WaitFor(t, "pausing", events.BatchProcessBatch, 2, 30*time.Second)
	_, err = b.client.Pause(ctx, "pausing", "")
	require.NoError(t, err)
	time.Sleep(500 * time.Millisecond)
	before := db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1")
	time.Sleep(700 * time.Millisecond)
	require.Equal(t, before, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"), "no progress while paused")
	require.Less(t, before, int64(len(ids)))

	_, err = b.client.Resume(ctx, "pausing", "")
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "pausing")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status)
	require.Equal(t, int64(len(ids)), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 1"))
}

// TestAdaptiveSize: with a time target, the sub-batch size moves toward it
// and each change is reported.
func TestAdaptiveSize(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	createItems(t, db, 20_000)
	b.startPlanner(t)
	b.startExecutor(t, "ex", func(c *executor.Config) { c.Concurrency = 1 })
	ctx := ctxFor(t, time.Minute)
	target := batches.Duration(50 * time.Millisecond)
	_, err := b.client.Enqueue(ctx, bump("adaptive", func(s *batches.Spec) {
		s.BatchSize, s.SubBatchSize, s.Parallelism, s.SubBatchTarget = 20_000, 10, 1, &target
	}))
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "adaptive")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status)
	resized := b.events.Of("adaptive", events.BatchSubBatchResized)
	require.NotEmpty(t, resized, "10-row sub-batches are far under a 50ms target: the size grows")
	for _, ev := range resized {
		require.LessOrEqual(t, ev.Data.SubBatchSize, ev.Data.PreviousSubBatchSize*3/2, "growth is at most 1.5x a step")
	}
	require.Greater(t, resized[len(resized)-1].Data.SubBatchSize, 100)
	require.Equal(t, int64(20_000), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
}
