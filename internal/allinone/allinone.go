// Package allinone runs a planner, an executor and a watchdog together in
// one process, for `batchflow run` and `batchflow quickstart`: the same
// components the three daemons run, each on its own NATS connection, started
// together and stopped together.
package allinone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchflow/batchflow/pkg/errorhandler"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/planner"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/watchdog"
)

// Config configures the components. Connect and Targets are required;
// every other field has the default written in its comment.
type Config struct {
	// Connect opens a NATS connection for one component; name identifies
	// it in the server's monitoring. Each component gets its own, so a slow
	// consumer on one does not hold up the others.
	Connect func(name string) (*nats.Conn, error)
	// Prefix is the NATS prefix. Default "batchflow".
	Prefix string
	// Targets maps target names to DSNs.
	Targets map[string]string
	// Executors is how many batches are applied at once: the workers of
	// the one executor, which share one sink per target (SQLite has a
	// single writer anyway). Default 4.
	Executors int
	// SinkOptions configure the sinks the planner and executor open.
	SinkOptions sink.Options
	// ErrorHandler receives every failed batch attempt. Default: logged.
	ErrorHandler errorhandler.Handler
	// Logger receives the components' logs. Default: discard.
	Logger *slog.Logger
	// ID names the components in their lease, events and batch records.
	// Default "<host>/<pid>".
	ID string
	// ProgressInterval is the least time between two progress events of a
	// migration. Default 5s (the planner's).
	ProgressInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.Executors <= 0 {
		c.Executors = 4
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ErrorHandler == nil {
		c.ErrorHandler = errorhandler.Log(c.Logger)
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	return c
}

// component is one of the three, built on its own connection.
type component struct {
	name string
	nc   *nats.Conn
	run  func(ctx context.Context) error
}

// Run starts the planner, the executor and the watchdog and runs them until
// ctx ends; then the executor finishes its current sub-batches and hands
// its batches back, and Run returns once all three have stopped and their
// connections are drained. If one component fails, the others are stopped
// and its error is returned.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if cfg.Connect == nil {
		return errors.New("allinone: Config.Connect is required")
	}
	var comps []component
	defer func() {
		for _, c := range comps {
			drain(c.nc)
		}
	}()
	open := func(name string) (*nats.Conn, jetstream.JetStream, error) {
		nc, err := cfg.Connect("batchflow-" + name)
		if err != nil {
			return nil, nil, err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return nil, nil, fmt.Errorf("%s: jetstream: %w", name, err)
		}
		return nc, js, nil
	}

	nc, js, err := open("planner")
	if err != nil {
		return err
	}
	p, err := planner.New(planner.Config{
		Conn: nc, JetStream: js, Prefix: cfg.Prefix, Targets: cfg.Targets,
		SinkOptions: cfg.SinkOptions, Logger: cfg.Logger.With("component", "planner"),
		ID: cfg.ID, ProgressInterval: cfg.ProgressInterval,
	})
	if err != nil {
		nc.Close()
		return err
	}
	comps = append(comps, component{"planner", nc, p.Run})

	if nc, js, err = open("executor"); err != nil {
		return err
	}
	ex, err := executor.New(executor.Config{
		Conn: nc, JetStream: js, Prefix: cfg.Prefix, Targets: cfg.Targets,
		SinkOptions: cfg.SinkOptions, Concurrency: cfg.Executors,
		ID: "executor/" + cfg.ID, Logger: cfg.Logger.With("component", "executor"),
		ErrorHandler: cfg.ErrorHandler,
	})
	if err != nil {
		nc.Close()
		return err
	}
	comps = append(comps, component{"executor", nc, ex.Run})

	if nc, js, err = open("watchdog"); err != nil {
		return err
	}
	w, err := watchdog.New(watchdog.Config{
		JetStream: js, Prefix: cfg.Prefix, ID: "watchdog/" + cfg.ID,
		Logger: cfg.Logger.With("component", "watchdog"),
	})
	if err != nil {
		nc.Close()
		return err
	}
	comps = append(comps, component{"watchdog", nc, w.Run})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, c := range comps {
		wg.Go(func() {
			err := c.run(ctx)
			if err == nil && ctx.Err() == nil {
				err = errors.New("stopped on its own")
			}
			if err != nil && ctx.Err() == nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", c.name, err)
				}
				mu.Unlock()
				cancel() // one down: stop the others rather than limp on
			}
		})
	}
	wg.Wait()
	return first
}

// drain flushes what a component published last (events, hand-backs)
// before closing its connection, waiting a few seconds at most.
func drain(nc *nats.Conn) {
	if nc.IsClosed() {
		return
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		nc.Close()
	}
}
