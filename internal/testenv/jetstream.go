package testenv

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchflow/batchflow/internal/embeddednats"
)

// drainTimeout bounds the wait for a connection to flush and close at
// cleanup; a connection still open after it is closed outright.
const drainTimeout = 10 * time.Second

// JS is one test's own JetStream server and a client connected to it.
type JS struct {
	Server    *embeddednats.Server
	Conn      *nats.Conn
	JetStream jetstream.JetStream
	// URL is where another process connects ("nats://127.0.0.1:<port>");
	// empty for the in-process server of JetStream.
	URL string
}

// JetStream starts a JetStream server inside the test process, storing in
// t.TempDir(), and connects to it without TCP: no port to collide on, so
// parallel tests each get their own server. Cleanup drains the connection and
// shuts the server down.
func JetStream(t testing.TB) *JS {
	t.Helper()
	return startJetStream(t, "")
}

// JetStreamListening is JetStream with a TCP listener on 127.0.0.1 and a
// free port, for tests that start batchflow binaries as separate processes
// and hand them JS.URL.
func JetStreamListening(t testing.TB) *JS {
	t.Helper()
	return startJetStream(t, "127.0.0.1:0")
}

func startJetStream(t testing.TB, listen string) *JS {
	t.Helper()
	srv, err := embeddednats.Start(embeddednats.Config{StoreDir: t.TempDir(), Listen: listen})
	if err != nil {
		t.Fatalf("testenv: start embedded JetStream: %v", err)
	}
	// Registered before any connection's cleanup, so it runs after all of them.
	t.Cleanup(srv.Shutdown)

	js := &JS{Server: srv, URL: srv.ClientURL()}
	js.Conn = js.Connect(t)
	js.JetStream, err = jetstream.New(js.Conn)
	if err != nil {
		t.Fatalf("testenv: jetstream context: %v", err)
	}
	return js
}

// Connect opens another client connection to the server, drained at cleanup:
// for tests where components must not share a connection (a planner and an
// executor that should see each other's messages over the wire).
func (js *JS) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := js.Server.Connect(append([]nats.Option{nats.Name(t.Name())}, opts...)...)
	if err != nil {
		t.Fatalf("testenv: connect to embedded JetStream: %v", err)
	}
	t.Cleanup(func() { drain(nc) })
	return nc
}

// drain flushes what the test published and waits for the close, so the
// server shutdown that follows does not race in-flight acks.
func drain(nc *nats.Conn) {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	deadline := time.Now().Add(drainTimeout)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	nc.Close()
}
