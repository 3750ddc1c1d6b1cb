package watchdog_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/watchdog"
)

// TestStalledBatchCounted: a batch claimed by an executor that then makes
// no progress is republished once, and counted as stalled.
func TestStalledBatchCounted(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db, bus.Topology{})
	createItems(t, db, 100)
	b.startPlanner(t)
	metrics := testenv.NewMetrics(t)
	b.startWatchdog(t, "watchdog", func(c *watchdog.Config) { c.MeterProvider = metrics.Provider })
	ctx := testenv.ContextFor(t, time.Minute)
	_, err := b.client.Enqueue(ctx, bump("stuck", nil))
	require.NoError(t, err)

	// An executor that claims the batch and is never heard of again.
	batch, err := b.res.ExecutorsConsumer.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	require.NoError(t, err)
	var claimed bool
	for msg := range batch.Messages() {
		var hint batches.Batch
		require.NoError(t, json.Unmarshal(msg.Data(), &hint))
		key := bus.BatchKey(hint.Migration, hint.Seq)
		entry, err := b.res.BatchesKV.Get(ctx, key)
		require.NoError(t, err)
		var rec batches.Batch
		require.NoError(t, json.Unmarshal(entry.Value(), &rec))
		now := time.Now().UTC()
		rec.Status, rec.Owner, rec.Heartbeat, rec.StartedAt = batches.BatchRunning, "ghost/0", &now, &now
		data, err := json.Marshal(rec)
		require.NoError(t, err)
		_, err = b.res.BatchesKV.Update(ctx, key, data, entry.Revision())
		require.NoError(t, err)
		claimed = true
	}
	require.True(t, claimed)

	stalled := b.events.WaitFor(t, "stuck", events.BatchStalled, 1, 30*time.Second)
	require.Equal(t, "ghost/0", stalled[0].Data.PreviousOwner)
	require.Equal(t, float64(1), metrics.Value(t, watchdog.MetricBatchesRepublished, attribute.String("migration", "stuck"), attribute.String("reason", "stalled")))
	require.Zero(t, metrics.Value(t, watchdog.MetricBatchesRepublished, attribute.String("reason", "lost")))
	require.Zero(t, metrics.Value(t, watchdog.MetricDeadLetters))
}
