package planner

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/batchflow/batchflow/pkg/batches"
)

// Instrument names, as OpenTelemetry names them; Prometheus shows dots as
// underscores and adds _total to counters (docs/observability.md).
const (
	MetricMigrations     = "batchflow.migrations"      // observable gauge {migration} by status: batchflow_migrations
	MetricBatchesPlanned = "batchflow.batches.planned" // counter {batch}: batchflow_batches_planned_total
	MetricLeader         = "batchflow.planner.leader"  // gauge, 1 while this planner leads: batchflow_planner_leader
)

const (
	attrMigration = attribute.Key("migration")
	attrStatus    = attribute.Key("status")
)

// migrationStatuses are the statuses batchflow.migrations reports, zeros
// included, so an alert on failed migrations has a series to look at.
var migrationStatuses = []batches.MigrationStatus{
	batches.MigrationEnqueued, batches.MigrationRunning, batches.MigrationPaused,
	batches.MigrationSucceeded, batches.MigrationFailed, batches.MigrationCancelled,
}

// metrics are the planner's instruments, created once in New, and the
// counts the leader last published for the observable gauge.
type metrics struct {
	meter      metric.Meter
	migrations metric.Int64ObservableGauge
	planned    metric.Int64Counter
	leader     metric.Int64Gauge

	mu     sync.Mutex
	counts map[batches.MigrationStatus]int64 // nil: not leading, nothing to report
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := &metrics{meter: mp.Meter("github.com/batchflow/batchflow/pkg/planner")}
	var err, e error
	m.migrations, e = m.meter.Int64ObservableGauge(MetricMigrations, metric.WithUnit("{migration}"),
		metric.WithDescription("Migrations by status, as the leading planner knows them; standby planners report none."))
	err = errors.Join(err, e)
	m.planned, e = m.meter.Int64Counter(MetricBatchesPlanned, metric.WithUnit("{batch}"),
		metric.WithDescription("Batches planned: key ranges recorded and published."))
	err = errors.Join(err, e)
	m.leader, e = m.meter.Int64Gauge(MetricLeader,
		metric.WithDescription("1 while this planner leads, 0 while it stands by."))
	err = errors.Join(err, e)
	return m, err
}

// observe registers the migrations gauge's callback for as long as a
// planner runs; the returned func unregisters it.
func (m *metrics) observe() (stop func(), err error) {
	reg, err := m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for status, n := range m.counts {
			o.ObserveInt64(m.migrations, n, metric.WithAttributes(attrStatus.String(string(status))))
		}
		return nil
	}, m.migrations)
	if err != nil {
		return nil, err
	}
	return func() { _ = reg.Unregister() }, nil
}

// setCounts publishes the leader's view for the gauge; nil clears it.
func (m *metrics) setCounts(counts map[batches.MigrationStatus]int64) {
	m.mu.Lock()
	m.counts = counts
	m.mu.Unlock()
}

// publishCounts counts the leader's migrations by status for the gauge.
func (l *leader) publishCounts() {
	counts := make(map[batches.MigrationStatus]int64, len(migrationStatuses))
	for _, s := range migrationStatuses {
		counts[s] = 0
	}
	for _, m := range l.migrations {
		counts[m.rec.Status]++
	}
	l.p.metrics.setCounts(counts)
}

func (m *metrics) batchPlanned(ctx context.Context, migration string) {
	m.planned.Add(ctx, 1, metric.WithAttributes(attrMigration.String(migration)))
}

// setLeader records leadership for the gauge and for Status.
func (p *Planner) setLeader(ctx context.Context, leading bool) {
	p.leading.Store(leading)
	var v int64
	if leading {
		v = 1
	}
	p.metrics.leader.Record(ctx, v)
}

// Status is what a planner is doing, for health checks.
type Status struct {
	// Running is true from the moment Run has its streams and buckets
	// until Run's context ends.
	Running bool
	// Leader is true while this planner holds the lease and plans;
	// a standby (false) is healthy too.
	Leader bool
}

// Status reports what the planner is doing. It is safe to call at any
// time, from any goroutine.
func (p *Planner) Status() Status {
	return Status{Running: p.running.Load(), Leader: p.leading.Load()}
}

// runState is what Status reports.
type runState struct {
	running, leading atomic.Bool
}
