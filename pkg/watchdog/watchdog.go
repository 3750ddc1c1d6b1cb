// Package watchdog judges progress, not liveness (DESIGN.md §8). A healthy
// executor keeps its batch's message alive, but a hung one (stuck on a
// lock, frozen, cut off from its database) can keep a batch forever. The
// watchdog:
//
//   - republishes, under a new epoch, every running batch that committed no
//     sub-batch for its migration's health_check.timeout; the batch resumes
//     from its ledger checkpoint on another executor, and the old owner can
//     neither apply more (ledger compare-and-set) nor write over the new one
//     (epoch check);
//   - turns the batch stream's max-deliveries and terminated advisories,
//     captured in a stream of their own, into failed batches;
//   - audits every round that each planned batch is succeeded, queued, or
//     running with a fresh heartbeat, and republishes any whose message was lost.
//
// Every change it makes is a compare-and-set on the batch record, so several
// watchdogs may run at once: one wins each change, the others see it done.
package watchdog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
)

// Config configures a Watchdog. JetStream is required.
type Config struct {
	JetStream jetstream.JetStream
	// Prefix is the NATS prefix. Default "batchflow".
	Prefix string
	// Logger receives the watchdog's logs. Default: discard.
	Logger *slog.Logger
	// Tick is how often the watchdog wakes; each migration is looked at
	// every health_check.frequency of its spec. Default 500ms.
	Tick time.Duration
	// TracerProvider gives the tracer of republish spans. Default: global.
	TracerProvider trace.TracerProvider
	// MeterProvider gives the meter of the watchdog's metrics (batches
	// republished, dead letters; docs/observability.md). Default: global.
	MeterProvider metric.MeterProvider
	// ID names this watchdog in logs and events. Default "watchdog/<host>/<pid>".
	ID string
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = bus.DefaultPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Tick <= 0 {
		c.Tick = 500 * time.Millisecond
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("watchdog/%s/%d", host, os.Getpid())
	}
	return c
}

// AdvisoryConsumer is the durable consumer the watchdogs read captured
// advisories with.
const AdvisoryConsumer = "watchdog"

// Watchdog finds stalled and lost batches. Create it with New, start it with Run.
type Watchdog struct {
	cfg     Config
	names   bus.Names
	log     *slog.Logger
	pub     *events.Publisher
	tracer  trace.Tracer
	res     *bus.Resources
	metrics *metrics
	running atomic.Bool

	mu         sync.Mutex
	migrations map[string]*watched
}

// watched is what the watchdog follows of one migration.
type watched struct {
	rec       batches.Migration
	batches   map[int64]watchedBatch
	synced    bool
	stop      context.CancelFunc
	lastCheck time.Time
}

type watchedBatch struct {
	rec batches.Batch
	rev uint64
}

// New checks cfg and returns a watchdog.
func New(cfg Config) (*Watchdog, error) {
	cfg = cfg.withDefaults()
	if cfg.JetStream == nil {
		return nil, errors.New("watchdog: Config.JetStream is required")
	}
	names, err := bus.NewNames(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	m, err := newMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("watchdog: metrics: %w", err)
	}
	return &Watchdog{
		metrics:    m,
		cfg:        cfg,
		names:      names,
		log:        cfg.Logger,
		pub:        events.NewPublisher(cfg.JetStream, cfg.Prefix, "watchdog"),
		tracer:     cfg.TracerProvider.Tracer("github.com/batchflow/batchflow/pkg/watchdog"),
		migrations: map[string]*watched{},
	}, nil
}

// Run watches until ctx ends.
func (w *Watchdog) Run(ctx context.Context) error {
	res, err := bus.Ensure(ctx, w.cfg.JetStream, w.names)
	if err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	w.res = res
	advisories, err := w.cfg.JetStream.CreateOrUpdateConsumer(ctx, w.names.AdvisoryStream, jetstream.ConsumerConfig{
		Durable:       AdvisoryConsumer,
		Description:   "batchflow watchdogs: dead letters of the batch stream",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("watchdog: advisory consumer: %w", err)
	}
	cc, err := advisories.Consume(func(msg jetstream.Msg) { w.handleAdvisory(ctx, msg) })
	if err != nil {
		return fmt.Errorf("watchdog: consume advisories: %w", err)
	}
	defer cc.Stop()

	mw, err := res.MigrationsKV.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watchdog: watch migrations: %w", err)
	}
	// Stopping a watch deletes its consumer, which waits out the request
	// timeout when NATS is unreachable: the shutdown does not wait for it.
	defer func() { go func() { _ = mw.Stop() }() }()
	w.log.Info("watchdog: started", "id", w.cfg.ID)
	w.running.Store(true)
	stopRunning := context.AfterFunc(ctx, func() { w.running.Store(false) })
	defer func() {
		stopRunning()
		w.running.Store(false)
	}()

	updates := mw.Updates()
	ticker := time.NewTicker(w.cfg.Tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			w.stopAll()
			w.log.Info("watchdog: stopped", "id", w.cfg.ID)
			return nil
		case entry, ok := <-updates:
			if !ok && ctx.Err() != nil {
				updates = nil // the watch ends with ctx: stop through the case above
				continue
			}
			if !ok {
				return errors.New("watchdog: migrations watch ended")
			}
			if entry != nil {
				w.follow(ctx, entry)
			}
		case <-ticker.C:
			w.round(ctx)
		}
	}
}

// follow starts or stops following a migration's batches as its status changes.
func (w *Watchdog) follow(ctx context.Context, entry jetstream.KeyValueEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	name := entry.Key()
	m := w.migrations[name]
	var rec batches.Migration
	if entry.Operation() != jetstream.KeyValuePut || json.Unmarshal(entry.Value(), &rec) != nil {
		if m != nil {
			m.stop()
			delete(w.migrations, name)
		}
		return
	}
	active := rec.Status == batches.MigrationRunning || rec.Status == batches.MigrationPaused
	switch {
	case active && m == nil:
		m = &watched{rec: rec, batches: map[int64]watchedBatch{}}
		w.migrations[name] = m
		w.watchBatches(ctx, name, m)
	case active:
		m.rec = rec
	case m != nil:
		m.stop()
		delete(w.migrations, name)
	}
}

// watchBatches keeps m.batches current.
func (w *Watchdog) watchBatches(ctx context.Context, name string, m *watched) {
	wctx, cancel := context.WithCancel(ctx)
	m.stop = cancel
	kw, err := w.res.BatchesKV.Watch(wctx, name+".*")
	if err != nil {
		w.log.Error("watchdog: watch batches", "migration", name, "err", err)
		return
	}
	go func() {
		defer func() { _ = kw.Stop() }()
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-kw.Updates():
				if !ok {
					return
				}
				w.mu.Lock()
				if e == nil {
					m.synced = true
				} else if e.Operation() != jetstream.KeyValuePut {
					delete(m.batches, seqOf(e.Key()))
				} else {
					var b batches.Batch
					if json.Unmarshal(e.Value(), &b) == nil {
						m.batches[b.Seq] = watchedBatch{rec: b, rev: e.Revision()}
					}
				}
				w.mu.Unlock()
			}
		}
	}()
}

func (w *Watchdog) stopAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.migrations {
		m.stop()
	}
}

// round looks at each migration whose health-check frequency has come round.
func (w *Watchdog) round(ctx context.Context) {
	now := time.Now()
	type due struct {
		name string
		rec  batches.Migration
		bs   []watchedBatch
	}
	var work []due
	w.mu.Lock()
	for name, m := range w.migrations {
		if !m.synced || now.Sub(m.lastCheck) < m.rec.Spec.HealthCheck.Frequency.D() {
			continue
		}
		m.lastCheck = now
		d := due{name: name, rec: m.rec}
		for _, b := range m.batches {
			d.bs = append(d.bs, b)
		}
		work = append(work, d)
	}
	w.mu.Unlock()
	for _, d := range work {
		w.check(ctx, d.rec, d.bs, now)
	}
}

// check republishes the stalled batches of one migration and audits that
// none is lost.
func (w *Watchdog) check(ctx context.Context, m batches.Migration, bs []watchedBatch, now time.Time) {
	timeout := m.Spec.HealthCheck.Timeout.D()
	var queued map[int64]int64 // batch seq → epoch of the queued message
	for _, b := range bs {
		rec := b.rec
		switch {
		case rec.Status == batches.BatchRunning:
			last := lastProgress(rec)
			if now.Sub(last) <= timeout {
				continue
			}
			w.republish(ctx, b, reasonStalled, events.Data{
				PreviousOwner: rec.Owner, StalledForMS: now.Sub(last).Milliseconds(), Checkpoint: &rec.Checkpoint,
				Reason: fmt.Sprintf("no sub-batch committed for %s (health_check.timeout %s)", now.Sub(last).Round(time.Millisecond), timeout),
			})
		case rec.Status == batches.BatchPending && !rec.Released && m.Status == batches.MigrationRunning &&
			rec.Seq < m.Cursor.NextSeq && now.Sub(rec.UpdatedAt) > timeout:
			// Pending for a while: its message should be in the queue.
			if queued == nil {
				var err error
				if queued, err = w.queued(ctx, m.Spec.Name); err != nil {
					w.log.Warn("watchdog: list queued batches", "migration", m.Spec.Name, "err", err)
					return
				}
			}
			if epoch, ok := queued[rec.Seq]; ok && epoch == rec.Epoch {
				continue
			}
			w.republish(ctx, b, reasonLost, events.Data{Checkpoint: &rec.Checkpoint, Reason: "its message was lost from the batch stream"})
		}
	}
}

// lastProgress is when a running batch last showed progress: its heartbeat,
// or when it was claimed.
func lastProgress(b batches.Batch) time.Time {
	switch {
	case b.Heartbeat != nil:
		return *b.Heartbeat
	case b.StartedAt != nil:
		return *b.StartedAt
	}
	return b.UpdatedAt
}

// queued lists the batches of migration whose messages wait in the batch
// stream, by reading them directly (a work-queue stream admits no second
// consumer beside the executors').
func (w *Watchdog) queued(ctx context.Context, migration string) (map[int64]int64, error) {
	subject := w.names.BatchSubject(migration)
	out := map[int64]int64{}
	seq := uint64(1)
	for {
		msg, err := w.res.BatchStream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		var b batches.Batch
		if json.Unmarshal(msg.Data, &b) == nil {
			out[b.Seq] = max(out[b.Seq], b.Epoch)
		}
		seq = msg.Sequence + 1
	}
}

// republish gives the batch a new epoch and publishes it again, if no one
// changed its record meanwhile. why is the metric's reason: stalled or lost.
func (w *Watchdog) republish(ctx context.Context, b watchedBatch, why string, d events.Data) {
	rec := b.rec
	rec.Status, rec.Owner, rec.Released = batches.BatchPending, "", false
	rec.Epoch++
	rec.UpdatedAt = time.Now().UTC()
	data, err := json.Marshal(rec)
	if err != nil {
		return
	}
	key := bus.BatchKey(rec.Migration, rec.Seq)
	if _, err := w.res.BatchesKV.Update(ctx, key, data, b.rev); err != nil {
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			w.log.Warn("watchdog: republish batch", "batch", key, "err", err)
		}
		return // changed meanwhile: progress, or another watchdog acted
	}
	msg := nats.NewMsg(w.names.BatchSubject(rec.Migration))
	msg.Data = data
	id := bus.BatchMsgID(rec.Migration, rec.Seq, rec.Epoch)
	pctx, span := bus.StartPublishSpan(ctx, w.tracer, msg, id,
		attribute.String("batchflow.migration", rec.Migration), attribute.Int64("batchflow.batch.seq", rec.Seq))
	_, err = w.cfg.JetStream.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
	span.End()
	if err != nil {
		// The record says pending with no message: the next audit retries.
		w.log.Error("watchdog: publish republished batch", "batch", key, "err", err)
		return
	}
	w.metrics.batchRepublished(ctx, rec.Migration, why)
	w.log.Warn("watchdog: batch republished", "migration", rec.Migration, "batch", rec.Seq, "epoch", rec.Epoch,
		"previous_owner", d.PreviousOwner, "reason", d.Reason)
	d.Migration, d.Epoch = rec.Migration, rec.Epoch
	d.Batch = &events.BatchRef{Seq: rec.Seq, Lo: rec.Lo, LoInclusive: rec.LoInclusive, Hi: rec.Hi}
	if _, err := w.pub.Publish(ctx, events.BatchStalled, d); err != nil {
		w.log.Warn("watchdog: publish stalled event", "batch", key, "err", err)
	}
}

func seqOf(key string) int64 {
	var seq int64
	for i := len(key) - 1; i >= 0; i-- {
		if key[i] == '.' {
			_, _ = fmt.Sscan(key[i+1:], &seq)
			break
		}
	}
	return seq
}
