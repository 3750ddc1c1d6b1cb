// Package daemon builds batchflow's daemons as commands: the planner, the
// executor and the watchdog, each with the common flags of DESIGN.md §5
// and their BATCHFLOW_* twins, tracing and metrics from the OTEL_*
// variables, Sentry from SENTRY_DSN, /healthz and /metrics on --http-addr,
// and a graceful stop on SIGINT or SIGTERM. cmd/planner, cmd/executor and
// cmd/watchdog are one line each; a team with its own Go kinds builds an
// executor that behaves exactly like the stock one (examples/custom-executor):
//
//	func main() {
//		daemon.Main(daemon.Executor(map[string]executor.Kind{"normalize_email": normalizeEmail{}}))
//	}
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"

	"github.com/batchflow/batchflow/internal/config"
	"github.com/batchflow/batchflow/internal/process"
	"github.com/batchflow/batchflow/internal/telemetry"
	"github.com/batchflow/batchflow/pkg/errorhandler"
	"github.com/batchflow/batchflow/pkg/errorhandler/sentry"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/planner"
	"github.com/batchflow/batchflow/pkg/sink"
	_ "github.com/batchflow/batchflow/pkg/sink/all" // postgres://, mysql://, sqlite://
	"github.com/batchflow/batchflow/pkg/watchdog"
)

// shutdownTimeout bounds what a daemon does once its component has
// stopped: the HTTP server, the last metrics and traces, Sentry, and the
// NATS drain, all at once.
const shutdownTimeout = 4 * time.Second

// Main runs cmd with the process's arguments until SIGINT or SIGTERM, and
// exits with status 1, printing the error, when it fails.
func Main(cmd *cli.Command) {
	ctx, stop := process.SignalContext()
	err := cmd.Run(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", cmd.Name, err)
		os.Exit(1)
	}
}

// Planner returns the planner daemon's command: it takes enqueued
// migrations, splits each table's key range into batches on JetStream, and
// decides when a migration has succeeded or failed. One of several
// planners leads; the others stand by.
func Planner() *cli.Command {
	return &cli.Command{
		Name:  "planner",
		Usage: "split enqueued migrations into batches on JetStream and decide their outcome",
		Flags: append(config.CommonFlags(),
			&cli.IntFlag{Name: "max-running-per-target", Value: 2, Usage: "most migrations running at once on one target", Sources: cli.EnvVars("BATCHFLOW_MAX_RUNNING_PER_TARGET")},
			&cli.IntFlag{Name: "max-running-per-table", Value: 1, Usage: "most migrations running at once on one table", Sources: cli.EnvVars("BATCHFLOW_MAX_RUNNING_PER_TABLE")},
			&cli.StringSliceFlag{Name: "kind", Usage: "accept specs of custom kind `NAME`, provided by your executors (repeatable)", Sources: cli.EnvVars("BATCHFLOW_KINDS")},
			config.HTTPAddrFlag(),
		),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			return serve(ctx, cmd, "planner", func(ctx context.Context, env *process.Env, mp metric.MeterProvider) (*component, error) {
				if len(env.Config.Targets) == 0 {
					env.Logger.Warn("planner: no --target given: every spec will be rejected for an unknown target")
				}
				p, err := planner.New(planner.Config{
					Conn:                env.Conn,
					JetStream:           env.JetStream,
					Prefix:              env.Config.Prefix,
					Targets:             env.Config.Targets.DSNs(),
					Logger:              env.Logger,
					MaxRunningPerTarget: int(cmd.Int("max-running-per-target")),
					MaxRunningPerTable:  int(cmd.Int("max-running-per-table")),
					Kinds:               cmd.StringSlice("kind"),
					MeterProvider:       mp,
				})
				if err != nil {
					return nil, err
				}
				return &component{run: p.Run, health: func(h *healthReport) string {
					s := p.Status()
					h.Running, h.Leader = s.Running, &s.Leader
					if !s.Running {
						return "the planner is not running"
					}
					return ""
				}}, nil
			})
		},
	}
}

// Executor returns the executor daemon's command: it pulls batches from
// JetStream and applies them to the target databases, exactly once, with
// the stock kinds and the given Go kinds, by the name specs give in
// "kind" (nil for the stock executor). The planner must be told their
// names (--kind). Change the command's Name and Usage to taste.
func Executor(kinds map[string]executor.Kind) *cli.Command {
	usage := "apply batches to the target databases, exactly once"
	if len(kinds) > 0 {
		names := make([]string, 0, len(kinds))
		for name := range kinds {
			names = append(names, name)
		}
		slices.Sort(names)
		usage += ", with the stock kinds and " + strings.Join(names, ", ")
	}
	return &cli.Command{
		Name:  "executor",
		Usage: usage,
		Flags: append(config.CommonFlags(),
			&cli.IntFlag{Name: "concurrency", Value: 4, Usage: "batches worked on at once", Sources: cli.EnvVars("BATCHFLOW_CONCURRENCY")},
			&cli.DurationFlag{Name: "idle-in-transaction-timeout", Value: 30 * time.Second,
				Usage:   "end a database session idle inside a transaction this long (a frozen executor), so its locks go; keep it below the specs' health_check.timeout",
				Sources: cli.EnvVars("BATCHFLOW_IDLE_IN_TRANSACTION_TIMEOUT")},
			&cli.DurationFlag{Name: "lock-timeout", Value: 5 * time.Second, Usage: "give up waiting for a row lock after this long (a transient error, retried)", Sources: cli.EnvVars("BATCHFLOW_LOCK_TIMEOUT")},
			config.HTTPAddrFlag(),
		),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			return serve(ctx, cmd, "executor", func(ctx context.Context, env *process.Env, mp metric.MeterProvider) (*component, error) {
				c := &component{}
				handler := errorhandler.Log(env.Logger)
				if sh, ok, err := sentry.FromEnv(); err != nil { // SENTRY_DSN
					return nil, err
				} else if ok {
					c.close = func(ctx context.Context) {
						flushWithin(ctx, sh.Flush)
						sh.Close()
					}
					handler = errorhandler.Multi(handler, sh)
					env.Logger.Info("executor: reporting errors to Sentry")
				}
				sinkOptions := sinkOptions(cmd, env)
				ex, err := executor.New(executor.Config{
					Conn:          env.Conn,
					JetStream:     env.JetStream,
					Prefix:        env.Config.Prefix,
					Targets:       env.Config.Targets.DSNs(),
					Kinds:         kinds,
					Concurrency:   int(cmd.Int("concurrency")),
					SinkOptions:   sinkOptions,
					Logger:        env.Logger,
					ErrorHandler:  handler,
					MeterProvider: mp,
				})
				if err != nil {
					if c.close != nil {
						c.close(ctx)
					}
					return nil, err
				}
				c.run = ex.Run
				c.health = func(h *healthReport) string {
					s := ex.Status()
					h.Running, h.Workers, h.Batches = s.Running, &s.Workers, &s.Batches
					switch {
					case !s.Running:
						return "the executor is not running"
					case s.Workers == 0:
						return "no executor worker is running"
					}
					return ""
				}
				return c, nil
			})
		},
	}
}

// Watchdog returns the watchdog daemon's command: it republishes batches
// that stopped making progress, fails batches their executors keep dying
// on, and republishes batches whose messages were lost. Several may run.
func Watchdog() *cli.Command {
	return &cli.Command{
		Name:  "watchdog",
		Usage: "republish batches that stopped making progress",
		Flags: append(config.CommonFlagsWithoutTargets(), config.HTTPAddrFlag()),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			return serve(ctx, cmd, "watchdog", func(ctx context.Context, env *process.Env, mp metric.MeterProvider) (*component, error) {
				w, err := watchdog.New(watchdog.Config{JetStream: env.JetStream, Prefix: env.Config.Prefix, Logger: env.Logger, MeterProvider: mp})
				if err != nil {
					return nil, err
				}
				return &component{run: w.Run, health: func(h *healthReport) string {
					h.Running = w.Status().Running
					if !h.Running {
						return "the watchdog is not running"
					}
					return ""
				}}, nil
			})
		},
	}
}

// component is what a daemon runs: a planner, an executor or a watchdog.
type component struct {
	// run works until ctx ends, then stops gracefully.
	run func(ctx context.Context) error
	// health fills in the component's part of /healthz and says why it is
	// not healthy, or "".
	health func(*healthReport) string
	// close, when set, releases what the component holds beyond run (Sentry).
	close func(ctx context.Context)
}

// builder makes a daemon's component once NATS is connected.
type builder func(ctx context.Context, env *process.Env, mp metric.MeterProvider) (*component, error)

// serve is the life of every daemon: connect, build the component with
// its meter provider, serve /healthz and /metrics when asked, run until
// ctx ends, then stop everything within shutdownTimeout.
func serve(ctx context.Context, cmd *cli.Command, name string, build builder) error {
	addr, err := config.HTTPAddr(cmd)
	if err != nil {
		return err
	}
	env, err := process.Start(ctx, cmd, name)
	if err != nil {
		return err
	}
	// What is opened below is closed at once, after the component stops.
	var closers []func(context.Context)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for _, c := range closers {
			wg.Go(func() { c(sctx) })
		}
		wg.Go(func() { env.Shutdown(sctx) })
		wg.Wait()
	}()

	metrics, err := telemetry.SetupMetrics(ctx, "batchflow-"+name, addr != "")
	if err != nil {
		return err
	}
	c, err := build(ctx, env, metrics.Provider)
	if err != nil {
		_ = metrics.Shutdown(ctx)
		return err
	}
	if c.close != nil {
		closers = append(closers, c.close)
	}
	var srv *http.Server
	if addr != "" {
		h := &healthHandler{component: name, conn: env.Conn, stopping: func() bool { return ctx.Err() != nil }, check: c.health}
		if srv, err = listen(ctx, addr, h, metrics.Handler, env); err != nil {
			_ = metrics.Shutdown(ctx)
			return err
		}
	}
	// The HTTP server goes first, so no scrape meets a shut-down provider.
	closers = append(closers, func(ctx context.Context) {
		if srv != nil {
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
			}
		}
		if err := metrics.Shutdown(ctx); err != nil {
			env.Logger.Warn(name+": flush metrics", "err", err)
		}
	})
	return c.run(ctx)
}

// listen starts serving /healthz and /metrics on addr.
func listen(ctx context.Context, addr string, health http.Handler, metrics http.Handler, env *process.Env) (*http.Server, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /metrics", metrics)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			env.Logger.Error("http: serve", "addr", ln.Addr().String(), "err", err)
		}
	}()
	env.Logger.Info("http: serving /healthz and /metrics", "addr", ln.Addr().String())
	if notify, ok := ctx.Value(listeningKey{}).(func(net.Addr)); ok {
		notify(ln.Addr())
	}
	return srv, nil
}

// listeningKey carries, in a test's context, a function told the address
// the HTTP server listens on (--http-addr with port 0).
type listeningKey struct{}

// sinkOptions are the executor's database settings, with SQL spans when
// traces are exported.
func sinkOptions(cmd *cli.Command, env *process.Env) sink.Options {
	o := sink.Options{
		Logger:                   env.Logger,
		IdleInTransactionTimeout: cmd.Duration("idle-in-transaction-timeout"),
		LockTimeout:              cmd.Duration("lock-timeout"),
	}
	if telemetry.Enabled() {
		o.TracerProvider = otel.GetTracerProvider() // SQL spans too
	}
	return o
}

// flushWithin calls flush with what is left of ctx, at most two seconds.
func flushWithin(ctx context.Context, flush func(time.Duration) bool) {
	d := 2 * time.Second
	if deadline, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(deadline))
	}
	if d > 0 {
		flush(d)
	}
}
