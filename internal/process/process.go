// Package process is what the four batchflow binaries do before their real
// work: read the common flags, build the logger, connect to NATS and make
// sure every stream, consumer and bucket exists (so any start order works),
// and stop cleanly on SIGINT or SIGTERM.
package process

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/config"
	"github.com/batchflow/batchflow/internal/telemetry"
)

// Env is a started process: its configuration, logger and NATS handles.
type Env struct {
	Config    config.Common
	Logger    *slog.Logger
	Names     bus.Names
	Conn      *nats.Conn
	JetStream jetstream.JetStream
	Resources *bus.Resources

	shutdownTracing func(context.Context) error
}

// Start reads the common flags of cmd, connects to NATS as component and
// bootstraps the topology. Close releases what it opened.
func Start(ctx context.Context, cmd *cli.Command, component string) (*Env, error) {
	cfg, err := config.FromCommand(cmd)
	if err != nil {
		return nil, err
	}
	logger, err := config.NewLogger(logWriter(cmd), cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	logger = logger.With("component", component)
	shutdownTracing, err := telemetry.Setup(ctx, "batchflow-"+component)
	if err != nil {
		return nil, err
	}
	names, err := bus.NewNames(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	nc, err := bus.Connect(ctx, bus.ConnectOptions{
		URL:       cfg.NATSURL,
		CredsFile: cfg.NATSCreds,
		NKeyFile:  cfg.NATSNKey,
		User:      cfg.NATSUser,
		Password:  cfg.NATSPassword,
		TLSCA:     cfg.NATSTLSCA,
		TLSCert:   cfg.NATSTLSCert,
		TLSKey:    cfg.NATSTLSKey,
		Name:      "batchflow-" + component,
		Logger:    logger,
	})
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	res, err := bus.Bootstrap(ctx, js, names, bus.Topology{Replicas: cfg.NATSReplicas})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("prepare NATS streams and buckets: %w", err)
	}
	logger.Debug("process: started", "config", cfg)
	return &Env{Config: cfg, Logger: logger, Names: names, Conn: nc, JetStream: js, Resources: res, shutdownTracing: shutdownTracing}, nil
}

// logWriter is where the process logs: the root command's ErrWriter
// (standard error unless a program running the command in-process, such
// as a test, says otherwise).
func logWriter(cmd *cli.Command) io.Writer {
	if w := cmd.Root().ErrWriter; w != nil {
		return w
	}
	return os.Stderr
}

// Close drains the NATS connection and flushes the traces, waiting five
// seconds at most, so what the process published last is not lost.
func (e *Env) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.Shutdown(ctx)
}

// Shutdown is Close within ctx's deadline: it flushes the traces and
// drains the NATS connection at the same time, and closes the connection
// outright when ctx ends first.
func (e *Env) Shutdown(ctx context.Context) {
	traced := make(chan struct{})
	go func() {
		defer close(traced)
		if err := e.shutdownTracing(ctx); err != nil {
			e.Logger.Warn("process: flush traces", "err", err)
		}
	}()
	defer func() { <-traced }()
	closed := make(chan struct{})
	e.Conn.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := e.Conn.Drain(); err != nil {
		e.Conn.Close()
		return
	}
	select {
	case <-closed:
	case <-ctx.Done():
		e.Conn.Close()
	}
}

// SignalContext returns a context cancelled on SIGINT or SIGTERM: the
// daemons' graceful shutdown starts there.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
