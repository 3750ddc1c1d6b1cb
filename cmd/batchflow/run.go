package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"
	"go.opentelemetry.io/otel"

	"github.com/batchflow/batchflow/internal/allinone"
	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/config"
	"github.com/batchflow/batchflow/internal/embeddednats"
	"github.com/batchflow/batchflow/internal/telemetry"
	"github.com/batchflow/batchflow/pkg/errorhandler"
	"github.com/batchflow/batchflow/pkg/errorhandler/sentry"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Defaults of `batchflow run`.
const (
	defaultDataDir = "./batchflow-data"
	defaultListen  = "127.0.0.1:4222"
)

func runCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a planner, executors and a watchdog in one process (NATS embedded unless --nats-url is given)",
		ArgsUsage: " ",
		Description: "Without --nats-url (or BATCHFLOW_NATS_URL) it embeds a NATS JetStream server that keeps\n" +
			"its streams in --data-dir and listens on --listen, so the other commands reach it with their\n" +
			"default --nats-url; started again on the same --data-dir it resumes the migrations in flight.\n" +
			"With --nats-url it joins that server instead, like the three daemons. SIGINT or SIGTERM stops it\n" +
			"gracefully: the executors finish their sub-batch and hand their batches back.",
		Flags: []cli.Flag{
			config.TargetFlag(),
			&cli.IntFlag{Name: "executors", Value: 4, Sources: cli.EnvVars("BATCHFLOW_EXECUTORS"),
				Usage: "`N` batches applied at once (executor workers)"},
			&cli.StringFlag{Name: "data-dir", Value: defaultDataDir, Sources: cli.EnvVars("BATCHFLOW_DATA_DIR"), TakesFile: true,
				Usage: "`DIR` where the embedded NATS server keeps its streams and buckets"},
			&cli.StringFlag{Name: "listen", Value: defaultListen, Sources: cli.EnvVars("BATCHFLOW_LISTEN"),
				Usage: "`ADDR` (host:port) the embedded NATS server accepts clients on"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() > 0 {
				return usageError(cmd, fmt.Errorf("unexpected argument %q", cmd.Args().First()))
			}
			cfg, err := config.FromCommand(cmd)
			if err != nil {
				return withCode(exitRefused, err)
			}
			if len(cfg.Targets) == 0 {
				return usageError(cmd, errors.New("no target: give --target NAME=DSN (or BATCHFLOW_TARGETS) for each database migrations may run on"))
			}
			executors := cmd.Int("executors")
			if executors < 1 {
				return usageError(cmd, fmt.Errorf("--executors %d: use at least 1", executors))
			}
			log, err := config.NewLogger(cmd.Root().ErrWriter, cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return withCode(exitRefused, err)
			}
			r := &allInOne{cfg: cfg, log: log.With("component", "run"), rootLog: log, executors: executors}
			if !cfg.NATSURLExplicit {
				r.dataDir, r.listen = cmd.String("data-dir"), cmd.String("listen")
			} else if cmd.IsSet("data-dir") || cmd.IsSet("listen") {
				r.log.Warn("run: --nats-url given: --data-dir and --listen, which configure the embedded server, are ignored")
			}
			return r.run(ctx)
		},
	}
}

// allInOne is a `batchflow run`.
type allInOne struct {
	cfg       config.Common
	log       *slog.Logger
	rootLog   *slog.Logger
	executors int
	// dataDir and listen are set when the NATS server is embedded.
	dataDir, listen string
}

func (r *allInOne) run(ctx context.Context) error {
	shutdownTracing, err := telemetry.Setup(ctx, "batchflow-run")
	if err != nil {
		return withCode(exitRefused, err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(sctx); err != nil {
			r.log.Warn("run: flush traces", "err", err)
		}
	}()

	connect, natsURL, shutdown, err := r.nats()
	if err != nil {
		return err
	}
	defer shutdown()
	if err := r.bootstrap(ctx, connect); err != nil {
		return err
	}

	handler := errorhandler.Log(r.rootLog.With("component", "executor"))
	if sh, ok, err := sentry.FromEnv(); err != nil {
		return withCode(exitRefused, err)
	} else if ok {
		defer func() {
			sh.Flush(2 * time.Second)
			sh.Close()
		}()
		handler = errorhandler.Multi(handler, sh)
		r.log.Info("run: reporting errors to Sentry")
	}
	sinkOptions := sink.Options{Logger: r.rootLog}
	if telemetry.Enabled() {
		sinkOptions.TracerProvider = otel.GetTracerProvider()
	}

	r.log.Info("run: starting the planner, the executors and the watchdog; enqueue with `batchflow enqueue --file SPEC.json`",
		"nats_url", natsURL, "targets", r.cfg.Targets, "executors", r.executors)
	err = allinone.Run(ctx, allinone.Config{
		Connect:      connect,
		Prefix:       r.cfg.Prefix,
		Targets:      r.cfg.Targets.DSNs(),
		Executors:    r.executors,
		SinkOptions:  sinkOptions,
		ErrorHandler: handler,
		Logger:       r.rootLog,
	})
	if err != nil {
		return err
	}
	if r.dataDir != "" {
		r.log.Info("run: stopped; migrations in flight resume at the next start with the same --data-dir", "data_dir", r.dataDir)
	} else {
		r.log.Info("run: stopped")
	}
	return nil
}

// nats returns how components connect: to the embedded server, started
// here, or to --nats-url.
func (r *allInOne) nats() (connect func(string) (*nats.Conn, error), url string, shutdown func(), err error) {
	if r.dataDir == "" {
		connect = func(name string) (*nats.Conn, error) {
			nc, err := bus.Connect(context.Background(), connectOptions(r.cfg, name, r.rootLog.With("component", name)))
			if err != nil {
				return nil, withCode(exitRefused, connectAdvice(r.cfg.NATSURL, err))
			}
			return nc, nil
		}
		return connect, bus.RedactURL(r.cfg.NATSURL), func() {}, nil
	}

	dir, err := filepath.Abs(r.dataDir)
	if err != nil {
		return nil, "", nil, withCode(exitRefused, fmt.Errorf("--data-dir %s: %w", r.dataDir, err))
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, "", nil, withCode(exitRefused, fmt.Errorf("--data-dir: %w", err))
	}
	// Checked first: the server would only say it was not ready in time.
	ln, err := net.Listen("tcp", r.listen)
	if err != nil {
		return nil, "", nil, refused("cannot listen on %s (%v): is another `batchflow run` or a NATS server using it? "+
			"Pass --listen to use another address, or --nats-url to use that server", r.listen, unwrapOp(err))
	}
	_ = ln.Close()
	if host, _, err := net.SplitHostPort(r.listen); err == nil && !isLoopback(host) {
		r.log.Warn("run: the embedded NATS server accepts anyone who reaches it, and specs carry trusted SQL: "+
			"keep --listen on 127.0.0.1, or run nats-server with permissions (deployments/README.md)", "listen", r.listen)
	}
	srv, err := embeddednats.Start(embeddednats.Config{
		StoreDir: dir, Listen: r.listen, ServerName: "batchflow-run",
		Logger: r.rootLog.With("component", "nats-server"),
	})
	if err != nil {
		return nil, "", nil, withCode(exitRefused, err)
	}
	r.log.Info("run: NATS JetStream embedded", "url", srv.ClientURL(), "data_dir", dir)
	ns := srv.NATSServer()
	connect = func(name string) (*nats.Conn, error) {
		// In-process: the components need no socket to reach their own server.
		return nats.Connect("", nats.InProcessServer(ns), nats.Name(name), nats.MaxReconnects(-1))
	}
	return connect, srv.ClientURL(), srv.Shutdown, nil
}

// bootstrap creates or updates the streams, consumers and buckets with the
// configured replicas, as every daemon does at start.
func (r *allInOne) bootstrap(ctx context.Context, connect func(string) (*nats.Conn, error)) error {
	nc, err := connect("batchflow-run")
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := checkServerVersion(nc, r.cfg.NATSURL); err != nil {
		return withCode(exitRefused, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	names, err := bus.NewNames(r.cfg.Prefix)
	if err != nil {
		return withCode(exitRefused, err)
	}
	if r.dataDir != "" {
		if err := r.requeueOrphans(ctx, js, names); err != nil {
			return err
		}
	}
	if _, err := bus.Bootstrap(ctx, js, names, bus.Topology{Replicas: r.cfg.NATSReplicas}); err != nil {
		return withCode(exitRefused, jetStreamAdvice(bus.RedactURL(r.cfg.NATSURL), err))
	}
	return nil
}

// requeueOrphans makes the batches the last run's executors held
// deliverable at once. The embedded server has just started, so whoever
// held them is gone; but the server restores them as still out (a
// hand-back at shutdown is a nak it may not have applied, a killed process
// never acked) and would hold each for the batch ack wait, 30s. In a
// work-queue stream the messages left are exactly the unacknowledged
// ones, so a new executors consumer (Bootstrap creates it next) delivers
// every one of them; the executors drop those whose batch moved on, and
// the watchdog republishes a batch whose dead owner still holds it.
func (r *allInOne) requeueOrphans(ctx context.Context, js jetstream.JetStream, names bus.Names) error {
	c, err := js.Consumer(ctx, names.BatchStream, bus.ExecutorsConsumer)
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil // a fresh --data-dir
	}
	if err != nil {
		return fmt.Errorf("read the executors' consumer: %w", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return fmt.Errorf("read the executors' consumer: %w", err)
	}
	if info.NumAckPending == 0 {
		return nil
	}
	if err := js.DeleteConsumer(ctx, names.BatchStream, bus.ExecutorsConsumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("requeue the batches of the last run: %w", err)
	}
	r.log.Info("run: queued again the batches the last run's executors held", "batches", info.NumAckPending)
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// unwrapOp drops the "listen tcp 127.0.0.1:4222:" prefix the address is
// already named in.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}
