package executor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/executor"
)

// TestMetrics: a throttled migration and a failing one, as the executor's
// instruments tell them: rows by migration, sub-batch and batch durations
// by outcome, sub-batch sizes, throttled time, failed attempts by class,
// and nothing left in flight.
func TestMetrics(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	createItems(t, db, 500)
	db.Exec(t, "CREATE TABLE busy (flag INT NOT NULL)")
	db.Exec(t, "INSERT INTO busy VALUES (1)")
	b.startPlanner(t)
	metrics := testenv.NewMetrics(t)
	ex := b.startExecutorStatus(t, func(c *executor.Config) { c.MeterProvider = metrics.Provider })
	ctx := ctxFor(t, time.Minute)
	migration := func(name string) attribute.KeyValue { return attribute.String("migration", name) }
	outcome := func(o string) attribute.KeyValue { return attribute.String("outcome", o) }

	_, err := b.client.Enqueue(ctx, bump("metered", func(s *batches.Spec) {
		s.Throttle = &batches.Throttle{Query: "SELECT COUNT(*) > 0 FROM busy WHERE flag = 1"}
		s.BatchSize, s.SubBatchSize, s.Parallelism = 200, 50, 1
	}))
	require.NoError(t, err)
	b.events.WaitFor(t, "metered", events.BatchThrottled, 1, 30*time.Second)
	require.Equal(t, float64(1), metrics.Value(t, executor.MetricBatchesInFlight, migration("metered")), "the throttled batch is in flight")
	require.Equal(t, 1, ex().Batches)
	time.Sleep(500 * time.Millisecond)
	db.Exec(t, "UPDATE busy SET flag = 0")
	m, err := b.client.Wait(ctx, "metered")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)

	require.Equal(t, float64(500), metrics.Value(t, executor.MetricRowsApplied, migration("metered")))
	// A batch is over for the metrics once its worker is done with it,
	// just after its record says succeeded, which is what Wait sees.
	settled := func(name string, batches uint64, outcomes ...string) bool {
		var n uint64
		for _, o := range outcomes {
			n += metrics.Count(t, executor.MetricBatchDuration, migration(name), outcome(o))
		}
		return n == batches && metrics.Value(t, executor.MetricBatchesInFlight, migration(name)) == 0
	}
	require.Eventually(t, func() bool { return settled("metered", uint64(m.Counters.BatchesPlanned), "succeeded") }, 10*time.Second, 10*time.Millisecond)
	subBatches := uint64(len(b.events.Of("metered", events.BatchProcessBatch)))
	require.Equal(t, subBatches, metrics.Count(t, executor.MetricSubBatchDuration, migration("metered"), outcome("committed")))
	require.Equal(t, subBatches, metrics.Count(t, executor.MetricSubBatchSize, migration("metered")))
	throttled := metrics.Value(t, executor.MetricThrottleTime, migration("metered"))
	require.Greater(t, throttled, 0.4, "at least the half second the test held the throttle")
	require.Less(t, throttled, 30.0)
	require.Zero(t, metrics.Value(t, executor.MetricAttemptsFailed))

	_, err = b.client.Enqueue(ctx, batches.Spec{Name: "doomed", Target: "main", Kind: batches.KindSQL, Table: "items",
		Args: json.RawMessage(`{"set": "n = NULL"}`), MaxAttempts: 2})
	require.NoError(t, err)
	m, err = b.client.Wait(ctx, "doomed")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationFailed, m.Status)
	require.Eventually(t, func() bool { return settled("doomed", 2, "retried", "failed") }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, float64(2), metrics.Value(t, executor.MetricAttemptsFailed, migration("doomed"), attribute.String("class", "data")))
	require.Equal(t, uint64(1), metrics.Count(t, executor.MetricBatchDuration, migration("doomed"), outcome("retried")))
	require.Equal(t, uint64(1), metrics.Count(t, executor.MetricBatchDuration, migration("doomed"), outcome("failed")))
	require.Positive(t, metrics.Count(t, executor.MetricSubBatchDuration, migration("doomed"), outcome("failed")))
	require.Zero(t, metrics.Value(t, executor.MetricRowsApplied, migration("doomed")))
	require.Zero(t, metrics.Value(t, executor.MetricBatchesInFlight))
	require.Equal(t, executor.Status{Running: true, Workers: 1, Batches: 0}, ex())
}

// startExecutorStatus starts an executor with one worker, as startExecutor
// does, and returns its Status.
func (b *testBundle) startExecutorStatus(t *testing.T, tune func(*executor.Config)) func() executor.Status {
	t.Helper()
	nc := b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	cfg := executor.Config{
		Conn: nc, JetStream: js, ID: "ex", Concurrency: 1,
		Targets:            map[string]string{"main": b.db.DSN},
		Logger:             testenv.Logger(t).With("component", "ex"),
		InProgressInterval: ackWait / 3,
		HeartbeatInterval:  200 * time.Millisecond,
		ThrottleInterval:   100 * time.Millisecond,
		RetryBackoff:       []time.Duration{100 * time.Millisecond},
	}
	tune(&cfg)
	ex, err := executor.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ex.Run(ctx); err != nil {
			t.Errorf("executor: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return ex.Status().Running }, 10*time.Second, 10*time.Millisecond)
	return ex.Status
}
