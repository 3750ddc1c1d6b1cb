package executor

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/batchflow/batchflow/pkg/batches"
)

// Instrument names, as OpenTelemetry names them; Prometheus shows dots as
// underscores and adds the unit and _total (docs/observability.md).
const (
	MetricRowsApplied      = "batchflow.rows.applied"       // counter {row}: batchflow_rows_applied_total
	MetricSubBatchDuration = "batchflow.sub_batch.duration" // histogram s: batchflow_sub_batch_duration_seconds
	MetricSubBatchSize     = "batchflow.sub_batch.size"     // histogram {row}: batchflow_sub_batch_size
	MetricBatchDuration    = "batchflow.batch.duration"     // histogram s: batchflow_batch_duration_seconds
	MetricBatchesInFlight  = "batchflow.batches.in_flight"  // up-down counter {batch}: batchflow_batches_in_flight
	MetricThrottleTime     = "batchflow.throttle.time"      // counter s: batchflow_throttle_time_seconds_total
	MetricAttemptsFailed   = "batchflow.attempts.failed"    // counter {attempt}: batchflow_attempts_failed_total
)

// Metric attributes. migration is bounded by the number of migrations.
const (
	attrMigration = attribute.Key("migration")
	attrOutcome   = attribute.Key("outcome")
	attrClass     = attribute.Key("class")
)

// Outcomes of a sub-batch and of a batch attempt, the outcome attribute.
const (
	outcomeCommitted  = "committed"   // sub-batch
	outcomeFailed     = "failed"      // sub-batch rolled back; batch failed for good
	outcomeSucceeded  = "succeeded"   // batch
	outcomeRetried    = "retried"     // batch attempt failed, retried later
	outcomeHandedBack = "handed_back" // shutdown, pause or cancel
	outcomeSuperseded = "superseded"  // the watchdog gave the batch to another executor
	outcomeError      = "error"       // the batch record could not be written
)

// metrics are the executor's instruments, created once in New.
type metrics struct {
	rows             metric.Int64Counter
	subBatchDuration metric.Float64Histogram
	subBatchSize     metric.Int64Histogram
	batchDuration    metric.Float64Histogram
	inFlight         metric.Int64UpDownCounter
	throttleTime     metric.Float64Counter
	attemptsFailed   metric.Int64Counter
}

// state is what Status reports, kept apart from the instruments so it
// works with any MeterProvider.
type state struct {
	running          atomic.Bool
	workers, batches atomic.Int64
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	meter := mp.Meter("github.com/batchflow/batchflow/pkg/executor")
	m := &metrics{}
	var err, e error
	m.rows, e = meter.Int64Counter(MetricRowsApplied, metric.WithUnit("{row}"),
		metric.WithDescription("Rows changed by committed sub-batches."))
	err = errors.Join(err, e)
	m.subBatchDuration, e = meter.Float64Histogram(MetricSubBatchDuration, metric.WithUnit("s"),
		metric.WithDescription("Time of one sub-batch transaction, data change and ledger checkpoint, by outcome (committed or failed)."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
	err = errors.Join(err, e)
	m.subBatchSize, e = meter.Int64Histogram(MetricSubBatchSize, metric.WithUnit("{row}"),
		metric.WithDescription("Rows a committed sub-batch was sized for, as the adaptive sizing chose."),
		metric.WithExplicitBucketBoundaries(10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000))
	err = errors.Join(err, e)
	m.batchDuration, e = meter.Float64Histogram(MetricBatchDuration, metric.WithUnit("s"),
		metric.WithDescription("Time of one attempt at a batch, from claim to settlement, by outcome."),
		metric.WithExplicitBucketBoundaries(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))
	err = errors.Join(err, e)
	m.inFlight, e = meter.Int64UpDownCounter(MetricBatchesInFlight, metric.WithUnit("{batch}"),
		metric.WithDescription("Batches this executor is working on."))
	err = errors.Join(err, e)
	m.throttleTime, e = meter.Float64Counter(MetricThrottleTime, metric.WithUnit("s"),
		metric.WithDescription("Time batches spent waiting for the database's throttle to lift."))
	err = errors.Join(err, e)
	m.attemptsFailed, e = meter.Int64Counter(MetricAttemptsFailed, metric.WithUnit("{attempt}"),
		metric.WithDescription("Failed attempts at batches, by error class (transient, data, fatal)."))
	err = errors.Join(err, e)
	return m, err
}

// runAttrs are a batch's measurement options, made once when it is
// claimed, so the sub-batch loop records without building attribute sets.
type runAttrs struct {
	migration, committed, failed metric.MeasurementOption
}

func newRunAttrs(migration string) runAttrs {
	m := attrMigration.String(migration)
	return runAttrs{
		migration: metric.WithAttributes(m),
		committed: metric.WithAttributes(m, attrOutcome.String(outcomeCommitted)),
		failed:    metric.WithAttributes(m, attrOutcome.String(outcomeFailed)),
	}
}

// subBatch records one sub-batch: its time by outcome, and for a committed
// one its size and rows.
func (m *metrics) subBatch(ctx context.Context, a runAttrs, took time.Duration, size int, rows int64, failed bool) {
	if failed {
		m.subBatchDuration.Record(ctx, took.Seconds(), a.failed)
		return
	}
	m.subBatchDuration.Record(ctx, took.Seconds(), a.committed)
	m.subBatchSize.Record(ctx, int64(size), a.migration)
	m.rows.Add(ctx, rows, a.migration)
}

// batchStarted counts a claimed batch in flight.
func (e *Executor) batchStarted(r *run) {
	r.attrs = newRunAttrs(r.rec.Migration)
	e.state.batches.Add(1)
	e.metrics.inFlight.Add(r.ctx, 1, r.attrs.migration)
}

// batchEnded records the attempt that batchStarted counted: its time and
// outcome, from what the run did or the error it ended with.
func (e *Executor) batchEnded(r *run, err error) {
	if r.started.IsZero() {
		return // never claimed
	}
	outcome := r.outcome
	switch {
	case outcome != "":
	case errors.Is(err, errSuperseded):
		outcome = outcomeSuperseded
	default:
		outcome = outcomeError
	}
	r.countThrottled(time.Now()) // a batch may end while throttled
	e.state.batches.Add(-1)
	e.metrics.inFlight.Add(r.ctx, -1, r.attrs.migration)
	e.metrics.batchDuration.Record(r.ctx, time.Since(r.started).Seconds(),
		metric.WithAttributes(attrMigration.String(r.rec.Migration), attrOutcome.String(outcome)))
}

// countThrottled adds the time since the last count to the throttled
// time, while the batch is throttled.
func (r *run) countThrottled(now time.Time) {
	if !r.throttled {
		return
	}
	if d := now.Sub(r.throttleMark); d > 0 {
		r.e.metrics.throttleTime.Add(r.ctx, d.Seconds(), r.attrs.migration)
	}
	r.throttleMark = now
}

func (m *metrics) attemptFailed(ctx context.Context, migration string, class batches.ErrorClass) {
	m.attemptsFailed.Add(ctx, 1, metric.WithAttributes(attrMigration.String(migration), attrClass.String(string(class))))
}

// Status is what an executor is doing, for health checks.
type Status struct {
	// Running is true from the moment Run has its workers pulling until
	// Run's context ends.
	Running bool
	// Workers is how many workers are pulling or working on a batch:
	// Config.Concurrency while all is well.
	Workers int
	// Batches is how many batches the workers hold right now.
	Batches int
}

// Status reports what the executor is doing. It is safe to call at any
// time, from any goroutine.
func (e *Executor) Status() Status {
	return Status{
		Running: e.state.running.Load(),
		Workers: int(e.state.workers.Load()),
		Batches: int(e.state.batches.Load()),
	}
}
