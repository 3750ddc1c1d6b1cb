package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/config"
	"github.com/batchflow/batchflow/pkg/client"
)

// session is a client command's connection to batchflow: it reads the
// common flags, connects to NATS and makes a pkg/client. Unlike the
// daemons it never rewrites the streams' settings (bus.Ensure, not
// Bootstrap): a `batchflow status` from a laptop must not undo the
// replicas a deployment configured.
type session struct {
	cfg    config.Common
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	names  bus.Names
	client *client.Client
}

// dial opens a session. Its errors are advice, with exit status 2.
func dial(ctx context.Context, cmd *cli.Command, stderr io.Writer) (*session, error) {
	cfg, err := config.FromCommand(cmd)
	if err != nil {
		return nil, withCode(exitRefused, err)
	}
	// Quiet by default: "connected" lines are noise in a command's output.
	level := "warn"
	if cmd.IsSet("log-level") {
		level = cfg.LogLevel
	}
	log, err := config.NewLogger(stderr, cfg.LogFormat, level)
	if err != nil {
		return nil, withCode(exitRefused, err)
	}
	names, err := bus.NewNames(cfg.Prefix)
	if err != nil {
		return nil, withCode(exitRefused, err)
	}
	nc, err := bus.Connect(ctx, connectOptions(cfg, "batchflow-cli", log))
	if err != nil {
		return nil, withCode(exitRefused, connectAdvice(cfg.NATSURL, err))
	}
	if err := checkServerVersion(nc, cfg.NATSURL); err != nil {
		nc.Close()
		return nil, withCode(exitRefused, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, withCode(exitRefused, err)
	}
	c, err := client.New(ctx, nc, client.Options{Prefix: cfg.Prefix})
	if err != nil {
		nc.Close()
		return nil, withCode(exitRefused, jetStreamAdvice(cfg.NATSURL, err))
	}
	return &session{cfg: cfg, log: log, nc: nc, js: js, names: names, client: c}, nil
}

// connectOptions are the common NATS flags as bus.Connect takes them.
func connectOptions(cfg config.Common, name string, log *slog.Logger) bus.ConnectOptions {
	return bus.ConnectOptions{
		URL: cfg.NATSURL, CredsFile: cfg.NATSCreds, NKeyFile: cfg.NATSNKey,
		User: cfg.NATSUser, Password: cfg.NATSPassword,
		TLSCA: cfg.NATSTLSCA, TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey,
		Name: name, Logger: log,
	}
}

// Close flushes and closes the connection.
func (s *session) Close() {
	done := make(chan struct{})
	s.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
	if err := s.nc.Drain(); err != nil {
		s.nc.Close()
		return
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.nc.Close()
	}
}

// connectAdvice turns "no server answered" into what to do about it; other
// connection errors (credentials, TLS) already say what is wrong.
func connectAdvice(url string, err error) error {
	if errors.Is(err, nats.ErrNoServers) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("cannot reach NATS at %s: start `batchflow run` or pass --nats-url (BATCHFLOW_NATS_URL)", bus.RedactURL(url))
	}
	return err
}

// jetStreamAdvice explains the usual reason the streams cannot be reached
// on a server that answered.
func jetStreamAdvice(url string, err error) error {
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("NATS at %s has no JetStream: start nats-server with -js (or use `batchflow run`, which embeds one)", bus.RedactURL(url))
	}
	return fmt.Errorf("NATS at %s: %w", bus.RedactURL(url), err)
}

// checkServerVersion refuses servers older than JetStream 2.10, which
// lack what batchflow's streams and consumers need (several filter
// subjects per consumer, among others), before anything is created there.
func checkServerVersion(nc *nats.Conn, url string) error {
	v := nc.ConnectedServerVersion()
	var major, minor int
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
		return nil // unknown: let the server answer for itself
	}
	if major < 2 || major == 2 && minor < 10 {
		return fmt.Errorf("NATS at %s is nats-server %s: batchflow needs 2.10 or later (or `batchflow run`, which embeds one)", bus.RedactURL(url), v)
	}
	return nil
}

// noPlannerAdvice is the one wording of "nobody answered a control request".
const noPlannerAdvice = "no planner answered: start `batchflow run` or cmd/planner"
