// Package embeddednats runs a JetStream-enabled NATS server inside the
// process: for `batchflow run` and `batchflow quickstart`, and for tests.
// It is the only package that imports nats-server, so the daemons stay small.
package embeddednats

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config configures an embedded server. The zero value (plus StoreDir) is an
// in-process-only server: no TCP listener, reachable through Connect.
type Config struct {
	// StoreDir is where JetStream keeps streams and buckets. Required.
	StoreDir string
	// Listen is "host:port" to accept TCP clients on, for other processes
	// (batchflow run listens on 127.0.0.1:4222). Empty: in-process only.
	// Port 0 picks a free port; see Server.ClientURL.
	Listen string
	// ServerName names the server in logs and cluster routes. Default: a generated name.
	ServerName string
	// User and Password, when set, are required from every client.
	User, Password string
	// Logger receives the server's own log lines at debug level for notices
	// and warn/error for problems. Nil: the server logs nothing.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the server to accept connections. Default 10s.
	ReadyTimeout time.Duration
	// Customize, when set, may adjust the server options before the server
	// starts: cluster routes, accounts, limits. Used by tests.
	Customize func(*server.Options)
}

// Server is a running embedded server.
type Server struct {
	ns     *server.Server
	listen bool
	cfg    Config
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: StoreDir is required")
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
		Username:   cfg.User,
		Password:   cfg.Password,
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, portText, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: listen address %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("embedded nats: listen address %q: bad port", cfg.Listen)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
	}
	if cfg.Customize != nil {
		cfg.Customize(opts)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(slogAdapter{cfg.Logger}, false, false, false)
	}
	ns.Start()
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after %s (is %s already in use?)", cfg.ReadyTimeout, cfg.Listen)
	}
	return &Server{ns: ns, listen: cfg.Listen != "", cfg: cfg}, nil
}

// Connect opens a client connection: in-process when the server does not
// listen, over TCP otherwise. opts add to the defaults (name, credentials).
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	all := []nats.Option{nats.MaxReconnects(-1)}
	if s.cfg.User != "" {
		all = append(all, nats.UserInfo(s.cfg.User, s.cfg.Password))
	}
	all = append(all, opts...)
	if !s.listen {
		all = append(all, nats.InProcessServer(s.ns))
		return nats.Connect("", all...)
	}
	return nats.Connect(s.ClientURL(), all...)
}

// ClientURL is the URL other processes connect to; empty for an in-process-only server.
func (s *Server) ClientURL() string {
	if !s.listen {
		return ""
	}
	return s.ns.ClientURL()
}

// NATSServer exposes the underlying server for tests that need cluster details.
func (s *Server) NATSServer() *server.Server { return s.ns }

// Shutdown stops the server and waits until it has released its store.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// slogAdapter routes the server's logger interface to slog. The server's
// notices are chatty (one per start step), so they go to debug.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) {
	a.l.Debug("nats-server", "line", fmt.Sprintf(format, v...))
}
func (a slogAdapter) Warnf(format string, v ...any) {
	a.l.Warn("nats-server", "line", fmt.Sprintf(format, v...))
}
func (a slogAdapter) Fatalf(format string, v ...any) {
	a.l.Error("nats-server", "line", fmt.Sprintf(format, v...))
}
func (a slogAdapter) Errorf(format string, v ...any) {
	a.l.Error("nats-server", "line", fmt.Sprintf(format, v...))
}
func (a slogAdapter) Debugf(format string, v ...any) {
	a.l.Debug("nats-server", "line", fmt.Sprintf(format, v...))
}
func (a slogAdapter) Tracef(format string, v ...any) {
	a.l.Debug("nats-server", "line", fmt.Sprintf(format, v...))
}
