package planner_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/planner"
)

// TestMetrics: the leader reports itself, the batches it planned and the
// migrations by status; a standby reports that it stands by and no
// migrations, so a sum over planners counts each migration once. When
// the leader stops, the standby takes over the reporting.
func TestMetrics(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	createItems(t, db, 500)
	b.exec.start(t)
	ctx := ctxFor(t, time.Minute)
	leaderMetrics, standbyMetrics := testenv.NewMetrics(t), testenv.NewMetrics(t)
	leader, stopLeader, _ := b.startPlanner(t, "leader", func(c *planner.Config) { c.MeterProvider = leaderMetrics.Provider })
	require.Eventually(t, func() bool { return leaseHolder(t, b) == "leader" }, 10*time.Second, 20*time.Millisecond)
	standby, _, _ := b.startPlanner(t, "standby", func(c *planner.Config) { c.MeterProvider = standbyMetrics.Provider })

	_, err := b.client.Enqueue(ctx, spec("counted", func(s *batches.Spec) { s.BatchSize = 100 }))
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "counted")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)

	status := func(s batches.MigrationStatus) attribute.KeyValue { return attribute.String("status", string(s)) }
	require.Equal(t, planner.Status{Running: true, Leader: true}, leader.Status())
	require.Equal(t, planner.Status{Running: true, Leader: false}, standby.Status())
	require.Equal(t, float64(1), leaderMetrics.Value(t, planner.MetricLeader))
	require.Equal(t, float64(0), standbyMetrics.Value(t, planner.MetricLeader))
	require.Equal(t, float64(m.Counters.BatchesPlanned), leaderMetrics.Value(t, planner.MetricBatchesPlanned, attribute.String("migration", "counted")))
	require.Equal(t, int64(5), m.Counters.BatchesPlanned)
	require.Eventually(t, func() bool {
		return leaderMetrics.Value(t, planner.MetricMigrations, status(batches.MigrationSucceeded)) == 1
	}, 5*time.Second, 20*time.Millisecond, "the gauge follows within a tick")
	require.Equal(t, float64(1), leaderMetrics.Value(t, planner.MetricMigrations), "one migration in all")
	require.Len(t, leaderMetrics.Points(t, planner.MetricMigrations), 6, "every status, zeros included")
	require.Empty(t, standbyMetrics.Points(t, planner.MetricMigrations), "a standby reports no migrations")

	stopLeader()
	require.Equal(t, planner.Status{}, leader.Status())
	require.Equal(t, float64(0), leaderMetrics.Value(t, planner.MetricLeader))
	require.Empty(t, leaderMetrics.Points(t, planner.MetricMigrations), "a stopped planner reports no migrations")
	require.Eventually(t, func() bool {
		return standby.Status().Leader && standbyMetrics.Value(t, planner.MetricMigrations, status(batches.MigrationSucceeded)) == 1
	}, 10*time.Second, 20*time.Millisecond, "the new leader reports")
	require.Equal(t, float64(1), standbyMetrics.Value(t, planner.MetricLeader))
}
