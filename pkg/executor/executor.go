// Package executor applies batches: it pulls them from JetStream, claims
// each in KV, runs its sub-batches through the target's sink (data change
// and ledger checkpoint in one transaction), adapts the sub-batch size to a
// time target, honours pause, cancel and throttling, retries and fails
// batches, and emits the batch events (DESIGN.md §7, §8).
//
// cmd/executor runs the stock executor. A team with its own Go kinds builds
// its own binary in a few lines (see examples/custom-executor):
//
//	ex, err := executor.New(executor.Config{Conn: nc, JetStream: js,
//		Targets: map[string]string{"main": dsn},
//		Kinds:   map[string]executor.Kind{"hash_emails": hashEmails{}}})
//	err = ex.Run(ctx) // until ctx ends; then finishes sub-batches and hands batches back
package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/targets"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/errorhandler"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Config configures an Executor. Conn, JetStream and Targets are required;
// every other field has the default written in its comment.
type Config struct {
	Conn      *nats.Conn
	JetStream jetstream.JetStream
	// Prefix is the NATS prefix. Default "batchflow".
	Prefix string
	// Targets maps target names to DSNs.
	Targets map[string]string
	// SinkOptions configure the sinks opened on targets.
	SinkOptions sink.Options
	// Kinds are custom kinds by name, next to the stock ones.
	Kinds map[string]Kind
	// Concurrency is how many batches this executor works on at once. Default 4.
	Concurrency int
	// ID names this executor in events and KV; workers are <ID>/<n>.
	// Default "executor/<host>/<pid>".
	ID string
	// Logger receives the executor's logs. Default: discard.
	Logger *slog.Logger
	// ErrorHandler receives every failed attempt. Default: errorhandler.Log(Logger).
	ErrorHandler errorhandler.Handler
	// TracerProvider gives the tracer of batch and sub-batch spans.
	// Default: the global provider.
	TracerProvider trace.TracerProvider
	// MeterProvider gives the meter of the executor's metrics (rows,
	// sub-batch and batch durations, sizes, batches in flight, throttled
	// time, failed attempts; docs/observability.md). Default: the global
	// provider (a no-op until a program sets one).
	MeterProvider metric.MeterProvider
	// HeartbeatInterval is the most time between two writes of a running
	// batch's checkpoint and heartbeat to KV. Default 2s.
	HeartbeatInterval time.Duration
	// InProgressInterval is how often a running batch's message is kept
	// alive (the batch consumer's ack wait is 30s). Default 10s.
	InProgressInterval time.Duration
	// ThrottleInterval is how often a throttled executor checks again, and
	// the least time between two throttle checks. Default 1s.
	ThrottleInterval time.Duration
	// RetryBackoff is the delay before attempt n+1 after attempt n failed.
	// Default 5s, 30s, 2m, 10m (the last repeats).
	RetryBackoff []time.Duration
	// TransientRetries is how many times a sub-batch is retried in place
	// after a transient error (deadlock, lock timeout, lost connection)
	// before the attempt fails. Default 3.
	TransientRetries int
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = bus.DefaultPrefix
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("executor/%s/%d", host, os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ErrorHandler == nil {
		c.ErrorHandler = errorhandler.Log(c.Logger)
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 2 * time.Second
	}
	if c.InProgressInterval <= 0 {
		c.InProgressInterval = 10 * time.Second
	}
	if c.ThrottleInterval <= 0 {
		c.ThrottleInterval = time.Second
	}
	if len(c.RetryBackoff) == 0 {
		c.RetryBackoff = []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute}
	}
	if c.TransientRetries <= 0 {
		c.TransientRetries = 3
	}
	return c
}

// Executor pulls batches and applies them. Create it with New, start it
// with Run.
type Executor struct {
	cfg     Config
	names   bus.Names
	log     *slog.Logger
	targets *targets.Set
	pub     *events.Publisher
	tracer  trace.Tracer
	metrics *metrics
	state   state

	res        *bus.Resources
	migrations migrationCache
	sizes      sizeMemory
}

// sizeMemory remembers the sub-batch size each migration adapted to, so
// the next batch starts where the last one ended instead of from the spec's
// starting size again.
type sizeMemory struct {
	mu sync.Mutex
	m  map[string]rememberedSize
}

type rememberedSize struct{ spec, size int }

// get returns the remembered size for migration, if it was reached from
// the same starting size (a `batchflow set` starts over).
func (s *sizeMemory) get(migration string, spec int) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[migration]
	return r.size, ok && r.spec == spec
}

func (s *sizeMemory) put(migration string, spec, size int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]rememberedSize{}
	}
	s.m[migration] = rememberedSize{spec: spec, size: size}
}

// New checks cfg, registers its custom kinds with the spec validator of
// this process, and returns an executor.
func New(cfg Config) (*Executor, error) {
	cfg = cfg.withDefaults()
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("executor: Config.Conn is required")
	case cfg.JetStream == nil:
		return nil, errors.New("executor: Config.JetStream is required")
	}
	names, err := bus.NewNames(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("executor: %w", err)
	}
	for name, kind := range cfg.Kinds {
		if batches.KnownKind(name) && isStock(name) {
			return nil, fmt.Errorf("executor: kind %q is a stock kind", name)
		}
		var check batches.ArgsCheck
		if c, ok := kind.(ArgsChecker); ok {
			check = c.CheckArgs
		}
		batches.RegisterKind(name, check)
	}
	m, err := newMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("executor: metrics: %w", err)
	}
	pub := events.NewPublisher(cfg.JetStream, cfg.Prefix, "executor")
	pub.OnAsyncError = func(ev events.Event, err error) {
		cfg.Logger.Warn("executor: event not stored", "type", string(ev.Type), "migration", ev.Data.Migration, "err", err)
	}
	return &Executor{
		cfg:        cfg,
		names:      names,
		log:        cfg.Logger,
		targets:    targets.New(cfg.Targets, cfg.SinkOptions),
		pub:        pub,
		tracer:     cfg.TracerProvider.Tracer("github.com/batchflow/batchflow/pkg/executor"),
		metrics:    m,
		migrations: migrationCache{m: map[string]*batches.Migration{}},
	}, nil
}

// The shutdown budget once the sub-batches in flight have ended: each
// batch is handed back within handBackTimeout (a KV write and a nak), then
// the events still in flight get flushTimeout. With the daemon's own
// few seconds, an executor exits within 10s of its last sub-batch even
// with NATS unreachable.
const (
	handBackTimeout = 3 * time.Second
	flushTimeout    = 2 * time.Second
)

func isStock(name string) bool {
	for _, k := range batches.StockKinds() {
		if k == name {
			return true
		}
	}
	return false
}

// Run works on batches until ctx ends. Then it stops pulling, lets each
// running batch finish its current sub-batch, hands the batches back
// without using an attempt, and returns.
func (e *Executor) Run(ctx context.Context) error {
	defer e.targets.Close()
	res, err := bus.Ensure(ctx, e.cfg.JetStream, e.names)
	if err != nil {
		return fmt.Errorf("executor: %w", err)
	}
	e.res = res
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	if err := e.migrations.follow(watchCtx, res.MigrationsKV, e.log); err != nil {
		return fmt.Errorf("executor: follow migrations: %w", err)
	}

	e.log.Info("executor: started", "id", e.cfg.ID, "concurrency", e.cfg.Concurrency)
	e.state.running.Store(true)
	stopRunning := context.AfterFunc(ctx, func() { e.state.running.Store(false) })
	defer func() {
		stopRunning()
		e.state.running.Store(false)
	}()
	var wg sync.WaitGroup
	errs := make(chan error, e.cfg.Concurrency)
	for i := range e.cfg.Concurrency {
		worker := fmt.Sprintf("%s/%d", e.cfg.ID, i)
		e.state.workers.Add(1)
		wg.Go(func() {
			defer e.state.workers.Add(-1)
			if err := e.work(ctx, worker); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	flushCtx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	if err := e.pub.Flush(flushCtx); err != nil {
		e.log.Warn("executor: events not flushed", "err", err)
	}
	e.log.Info("executor: stopped", "id", e.cfg.ID)
	return <-errs
}

// work is one worker: it pulls one batch at a time and applies it.
func (e *Executor) work(ctx context.Context, worker string) error {
	it, err := e.res.ExecutorsConsumer.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		return fmt.Errorf("executor: consume batches: %w", err)
	}
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		it.Stop()
	}()
	defer close(stopped)
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			e.log.Warn("executor: fetch batch", "worker", worker, "err", err)
			continue
		}
		e.handle(ctx, worker, msg)
	}
}

// migrationCache follows the migrations bucket, so checking for a pause
// before each sub-batch costs no round trip.
type migrationCache struct {
	mu sync.RWMutex
	m  map[string]*batches.Migration
}

// follow loads every migration record and keeps them current until ctx ends.
func (c *migrationCache) follow(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		loaded := false
		for {
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				if entry == nil {
					if !loaded {
						loaded = true
						close(ready)
					}
					continue
				}
				c.apply(entry, log)
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *migrationCache) apply(entry jetstream.KeyValueEntry, log *slog.Logger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if entry.Operation() != jetstream.KeyValuePut {
		delete(c.m, entry.Key())
		return
	}
	var m batches.Migration
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		log.Error("executor: unreadable migration record", "migration", entry.Key(), "err", err)
		return
	}
	c.m[entry.Key()] = &m
}

// get returns a copy of the migration's current record.
func (c *migrationCache) get(name string) (batches.Migration, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.m[name]
	if !ok {
		return batches.Migration{}, false
	}
	return *m, true
}
