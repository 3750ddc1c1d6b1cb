// Package planner is batchflow's brain for a migration's life (DESIGN.md
// §7, §8): it takes enqueued specs, validates them statically and against
// the target's live schema, starts migrations when their predecessors have
// succeeded and their target has room, cuts the key range into batches
// lazily (at most `parallelism` in flight), decides success and failure,
// emits the migration events and answers control requests.
//
// Several planners may run: one leads through a lease in the leases
// bucket; the others wait and take over within LeaseTTL plus a poll when
// the leader dies. Everything a leader knows is in JetStream, so a new
// leader continues where the old one stopped.
//
// cmd/planner runs a Planner; `batchflow run` embeds one:
//
//	p, err := planner.New(planner.Config{Conn: nc, JetStream: js, Targets: map[string]string{"main": dsn}})
//	err = p.Run(ctx) // until ctx ends
package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/targets"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Config configures a Planner. Conn, JetStream and Targets are required;
// every other field has the default written in its comment.
type Config struct {
	// Conn is the NATS connection control requests are answered on.
	Conn *nats.Conn
	// JetStream is the JetStream context on Conn.
	JetStream jetstream.JetStream
	// Prefix is the NATS prefix. Default "batchflow".
	Prefix string
	// Targets maps target names to DSNs; specs name a target.
	Targets map[string]string
	// SinkOptions configure the sinks opened on targets.
	SinkOptions sink.Options
	// Kinds names custom kinds the executors provide, accepted in specs
	// with any arguments. A kind registered in this process with
	// batches.RegisterKind (an executor built in, with its argument check)
	// needs no entry here.
	Kinds []string
	// Logger receives the planner's logs. Default: discard.
	Logger *slog.Logger
	// ID names this planner in its lease and logs. Default "<host>/<pid>".
	ID string
	// MaxRunningPerTarget bounds migrations running at once on one
	// target. Default 2.
	MaxRunningPerTarget int
	// MaxRunningPerTable bounds migrations running at once on one table.
	// Default 1.
	MaxRunningPerTable int
	// LeaseTTL is how long a leader's lease lasts without renewal: a
	// standby takes over after about this long. Default 10s.
	LeaseTTL time.Duration
	// ProgressInterval is the least time between two progress events of
	// a migration. Default 5s.
	ProgressInterval time.Duration
	// Tick is how often the planner reconsiders every migration when
	// nothing else wakes it. Default 200ms.
	Tick time.Duration
	// TracerProvider gives the tracer of batch publish spans. Default: the
	// global provider (a no-op until a program sets one).
	TracerProvider trace.TracerProvider
	// MeterProvider gives the meter of the planner's metrics (migrations
	// by status, batches planned, leadership; docs/observability.md).
	// Default: the global provider (a no-op until a program sets one).
	MeterProvider metric.MeterProvider
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = bus.DefaultPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	if c.MaxRunningPerTarget <= 0 {
		c.MaxRunningPerTarget = 2
	}
	if c.MaxRunningPerTable <= 0 {
		c.MaxRunningPerTable = 1
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = 5 * time.Second
	}
	if c.Tick <= 0 {
		c.Tick = 200 * time.Millisecond
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	return c
}

// Planner plans and supervises migrations. Create it with New and start it
// with Run.
type Planner struct {
	cfg     Config
	names   bus.Names
	log     *slog.Logger
	targets *targets.Set
	pub     *events.Publisher
	tracer  trace.Tracer
	hooks   hooks
	metrics *metrics
	runState
}

// hooks are crash points for tests; no-ops otherwise. A hook's error ends
// the leadership term on the spot, as a crash would.
type hooks struct {
	afterRecord, afterCursor func(migration string, seq int64) error
}

func noHook(string, int64) error { return nil }

// New checks cfg and returns a planner.
func New(cfg Config) (*Planner, error) {
	cfg = cfg.withDefaults()
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("planner: Config.Conn is required")
	case cfg.JetStream == nil:
		return nil, errors.New("planner: Config.JetStream is required")
	}
	names, err := bus.NewNames(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("planner: %w", err)
	}
	for _, kind := range cfg.Kinds {
		if err := batches.AcceptKind(kind); err != nil {
			return nil, fmt.Errorf("planner: %w", err)
		}
	}
	m, err := newMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("planner: metrics: %w", err)
	}
	return &Planner{
		metrics: m,
		cfg:     cfg,
		names:   names,
		log:     cfg.Logger,
		targets: targets.New(cfg.Targets, cfg.SinkOptions),
		pub:     events.NewPublisher(cfg.JetStream, cfg.Prefix, "planner"),
		tracer:  cfg.TracerProvider.Tracer("github.com/batchflow/batchflow/pkg/planner"),
		hooks:   hooks{afterRecord: noHook, afterCursor: noHook},
	}, nil
}

// Run campaigns for leadership and leads while it holds the lease, until
// ctx ends. It returns nil on a clean shutdown.
func (p *Planner) Run(ctx context.Context) error {
	defer p.targets.Close()
	res, err := bus.Ensure(ctx, p.cfg.JetStream, p.names)
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	stopObserving, err := p.metrics.observe()
	if err != nil {
		return fmt.Errorf("planner: metrics: %w", err)
	}
	defer stopObserving()
	p.running.Store(true)
	stopRunning := context.AfterFunc(ctx, func() { p.running.Store(false) })
	defer func() {
		stopRunning()
		p.running.Store(false)
	}()
	p.setLeader(ctx, false)
	lease := newLease(res.LeasesKV, "planner", p.cfg.ID, p.cfg.LeaseTTL, p.log)
	for {
		p.log.Info("planner: waiting for leadership", "id", p.cfg.ID)
		leadCtx, err := lease.acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("planner: lease: %w", err)
		}
		p.log.Info("planner: leading", "id", p.cfg.ID)
		p.setLeader(ctx, true)
		err = p.lead(leadCtx, res)
		lease.release()
		p.setLeader(context.WithoutCancel(ctx), false)
		p.metrics.setCounts(nil)
		switch {
		case ctx.Err() != nil:
			p.log.Info("planner: stopped")
			return nil
		case err != nil:
			p.log.Error("planner: stepped down", "err", err)
			// A moment before campaigning again, so a persistent fault
			// (the store unreachable) does not spin.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		default:
			p.log.Warn("planner: lost leadership")
		}
	}
}
