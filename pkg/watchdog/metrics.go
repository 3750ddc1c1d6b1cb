package watchdog

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Instrument names, as OpenTelemetry names them; Prometheus shows dots as
// underscores and adds _total to counters (docs/observability.md).
const (
	MetricBatchesRepublished = "batchflow.batches.republished" // counter {batch} by reason: batchflow_batches_republished_total
	MetricDeadLetters        = "batchflow.dead_letters"        // counter {message} by reason: batchflow_dead_letters_total
)

const (
	attrMigration = attribute.Key("migration")
	attrReason    = attribute.Key("reason")
)

// Reasons of the republished and dead-letter counters.
const (
	reasonStalled       = "stalled"        // no sub-batch committed within health_check.timeout
	reasonLost          = "lost"           // pending, but its message is not in the batch stream
	reasonMaxDeliveries = "max_deliveries" // delivered as often as the consumer allows
	reasonTerminated    = "terminated"     // an executor terminated the message: the batch failed
)

// metrics are the watchdog's instruments, created once in New.
type metrics struct {
	republished metric.Int64Counter
	deadLetters metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	meter := mp.Meter("github.com/batchflow/batchflow/pkg/watchdog")
	m := &metrics{}
	var err, e error
	m.republished, e = meter.Int64Counter(MetricBatchesRepublished, metric.WithUnit("{batch}"),
		metric.WithDescription("Batches republished under a new epoch, by reason (stalled or lost)."))
	err = errors.Join(err, e)
	m.deadLetters, e = meter.Int64Counter(MetricDeadLetters, metric.WithUnit("{message}"),
		metric.WithDescription("Dead batch messages handled, by reason (max_deliveries or terminated)."))
	err = errors.Join(err, e)
	return m, err
}

func (m *metrics) batchRepublished(ctx context.Context, migration, reason string) {
	m.republished.Add(ctx, 1, metric.WithAttributes(attrMigration.String(migration), attrReason.String(reason)))
}

// deadLetter counts a dead message; migration is empty when the message
// named none.
func (m *metrics) deadLetter(ctx context.Context, migration, reason string) {
	m.deadLetters.Add(ctx, 1, metric.WithAttributes(attrMigration.String(migration), attrReason.String(reason)))
}

// Status is what a watchdog is doing, for health checks.
type Status struct {
	// Running is true from the moment Run watches until its context ends.
	Running bool
}

// Status reports what the watchdog is doing. It is safe to call at any
// time, from any goroutine.
func (w *Watchdog) Status() Status {
	return Status{Running: w.running.Load()}
}
