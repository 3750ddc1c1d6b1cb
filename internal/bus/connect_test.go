package bus_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/embeddednats"
)

// startListening starts a TCP-listening server on a random 127.0.0.1 port.
func startListening(t *testing.T, cfg embeddednats.Config) *embeddednats.Server {
	t.Helper()
	cfg.StoreDir = t.TempDir()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	srv, err := embeddednats.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	return srv
}

// closedPortAddr is a 127.0.0.1 address nothing listens on.
func closedPortAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func requireWorks(t *testing.T, nc *nats.Conn) {
	t.Helper()
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync("ping")
	require.NoError(t, err)
	require.NoError(t, nc.Publish("ping", []byte("pong")))
	m, err := sub.NextMsg(2 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "pong", string(m.Data))
}

func TestConnectUserPassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := startListening(t, embeddednats.Config{User: "alice", Password: "s3cret-pw"})

	nc, err := bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), User: "alice", Password: "s3cret-pw"})
	require.NoError(t, err)
	requireWorks(t, nc)

	// The same user inside the URL.
	u, err := url.Parse(srv.ClientURL())
	require.NoError(t, err)
	u.User = url.UserPassword("alice", "s3cret-pw")
	nc, err = bus.Connect(ctx, bus.ConnectOptions{URL: u.String()})
	require.NoError(t, err)
	requireWorks(t, nc)
}

func TestConnectWrongPassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := startListening(t, embeddednats.Config{User: "alice", Password: "s3cret-pw"})

	_, err := bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), User: "alice", Password: "wrong-pw"})
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.ErrorContains(t, err, "rejected the credentials")
	require.NotContains(t, err.Error(), "wrong-pw")

	u, err := url.Parse(srv.ClientURL())
	require.NoError(t, err)
	u.User = url.UserPassword("alice", "wrong-pw")
	_, err = bus.Connect(ctx, bus.ConnectOptions{URL: u.String()})
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.ErrorContains(t, err, "nats://alice:xxxxx@127.0.0.1:")
	require.NotContains(t, err.Error(), "wrong-pw")

	// No credentials at all is refused too: the server really checks.
	_, err = bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL()})
	require.ErrorIs(t, err, nats.ErrAuthorization)
}

func TestConnectNKeySeedFile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := user.Seed()
	require.NoError(t, err)
	pub, err := user.PublicKey()
	require.NoError(t, err)
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))

	srv := startListening(t, embeddednats.Config{Customize: func(o *server.Options) {
		o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	}})

	nc, err := bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), NKeyFile: seedFile})
	require.NoError(t, err)
	requireWorks(t, nc)

	other, err := nkeys.CreateUser()
	require.NoError(t, err)
	otherSeed, err := other.Seed()
	require.NoError(t, err)
	otherFile := filepath.Join(t.TempDir(), "other.nk")
	require.NoError(t, os.WriteFile(otherFile, otherSeed, 0o600))
	_, err = bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), NKeyFile: otherFile})
	require.ErrorIs(t, err, nats.ErrAuthorization)

	garbage := filepath.Join(t.TempDir(), "garbage.nk")
	require.NoError(t, os.WriteFile(garbage, []byte("not a seed"), 0o600))
	_, err = bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), NKeyFile: garbage})
	require.ErrorContains(t, err, "nats nkey seed file "+garbage)
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	pool                        *x509.CertPool
	server                      tls.Certificate
	caFile, certFile, keyFile   string
	otherCertFile, otherKeyFile string // signed by another CA
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return path
	}
	newKey := func() (*ecdsa.PrivateKey, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		der, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		return key, der
	}
	serial := int64(0)
	template := func(cn string) *x509.Certificate {
		serial++
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
		}
	}
	newCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, _ := newKey()
		tmpl := template(cn)
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		require.NoError(t, err)
		cert, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return cert, key
	}
	issue := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (der []byte, key *ecdsa.PrivateKey, keyDER []byte) {
		key, keyDER = newKey()
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		return der, key, keyDER
	}

	ca, caKey := newCA("batchflow test CA")
	p := testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.caFile = write("ca.pem", "CERTIFICATE", ca.Raw)

	st := template("nats server")
	st.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	st.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	serverDER, serverKey, _ := issue(ca, caKey, st)
	p.server = tls.Certificate{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}

	ct := template("batchflow executor")
	ct.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	clientDER, _, clientKeyDER := issue(ca, caKey, ct)
	p.certFile = write("client.pem", "CERTIFICATE", clientDER)
	p.keyFile = write("client-key.pem", "PRIVATE KEY", clientKeyDER)

	rogue, rogueKey := newCA("rogue CA")
	ot := template("intruder")
	ot.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	otherDER, _, otherKeyDER := issue(rogue, rogueKey, ot)
	p.otherCertFile = write("other.pem", "CERTIFICATE", otherDER)
	p.otherKeyFile = write("other-key.pem", "PRIVATE KEY", otherKeyDER)
	return p
}

func TestConnectMutualTLS(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pki := newTestPKI(t)
	srv := startListening(t, embeddednats.Config{Customize: func(o *server.Options) {
		o.TLS, o.TLSVerify, o.TLSTimeout = true, true, 2
		o.TLSConfig = &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{pki.server},
			ClientCAs:    pki.pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
		}
	}})

	nc, err := bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), TLSCA: pki.caFile, TLSCert: pki.certFile, TLSKey: pki.keyFile})
	require.NoError(t, err)
	state, err := nc.TLSConnectionState()
	require.NoError(t, err)
	require.NotEmpty(t, state.VerifiedChains, "server certificate verified against the CA file")
	requireWorks(t, nc)

	// The server insists on a client certificate from its CA.
	_, err = bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), TLSCA: pki.caFile})
	require.Error(t, err)
	_, err = bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), TLSCA: pki.caFile, TLSCert: pki.otherCertFile, TLSKey: pki.otherKeyFile})
	require.Error(t, err)
	// And the client insists on a server certificate from its CA.
	_, err = bus.Connect(ctx, bus.ConnectOptions{URL: srv.ClientURL(), TLSCert: pki.certFile, TLSKey: pki.keyFile})
	require.ErrorContains(t, err, "certificate")
}

func TestConnectRejectsBadOptions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.creds")
	notPEM := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	noSeed := filepath.Join(dir, "bad.creds")
	require.NoError(t, os.WriteFile(noSeed, []byte("-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n"), 0o600))

	for _, tc := range []struct {
		name string
		o    bus.ConnectOptions
		want []string
	}{
		{"missing creds file", bus.ConnectOptions{CredsFile: missing}, []string{"nats creds file", missing, "no such file"}},
		{"creds without seed", bus.ConnectOptions{CredsFile: noSeed}, []string{"nats creds file " + noSeed}},
		{"missing nkey file", bus.ConnectOptions{NKeyFile: missing}, []string{"nats nkey seed file", missing}},
		{"creds and nkey", bus.ConnectOptions{CredsFile: "a.creds", NKeyFile: "b.nk"}, []string{"either a creds file or an nkey seed file"}},
		{"creds and user", bus.ConnectOptions{CredsFile: "a.creds", User: "u", Password: "p"}, []string{"choose one"}},
		{"nkey and URL user", bus.ConnectOptions{URL: "nats://u:p@127.0.0.1:4222", NKeyFile: "b.nk"}, []string{"choose one"}},
		{"user in URL and fields", bus.ConnectOptions{URL: "nats://u:p@127.0.0.1:4222", User: "v", Password: "q"}, []string{"URL already holds a user"}},
		{"password without user", bus.ConnectOptions{Password: "p"}, []string{"needs a user"}},
		{"user in some URLs only", bus.ConnectOptions{URL: "nats://u:pw1@a:4222,nats://b:4222"}, []string{"nats://u:xxxxx@a:4222", "same user"}},
		{"cert without key", bus.ConnectOptions{TLSCert: "c.pem"}, []string{"c.pem", "key file is missing"}},
		{"key without cert", bus.ConnectOptions{TLSKey: "k.pem"}, []string{"k.pem", "certificate file is missing"}},
		{"missing CA file", bus.ConnectOptions{TLSCA: missing}, []string{"nats TLS CA file", missing}},
		{"CA file without PEM", bus.ConnectOptions{TLSCA: notPEM}, []string{notPEM, "no PEM certificate"}},
		{"missing cert file", bus.ConnectOptions{TLSCert: missing, TLSKey: missing}, []string{"client certificate", missing}},
		{"malformed URL", bus.ConnectOptions{URL: "nats://u:pw1@127.0.0.1:port"}, []string{"invalid NATS URL nats://u:xxxxx@127.0.0.1:port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bus.Connect(t.Context(), tc.o)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			require.NotContains(t, err.Error(), "pw1")
		})
	}
}

func TestConnectUnreachableRedactsPassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := closedPortAddr(t), closedPortAddr(t)

	list := "nats://bob:hunter2@" + a + ", nats://bob:hunter2@" + b
	_, err := bus.Connect(ctx, bus.ConnectOptions{URL: list})
	require.Error(t, err)
	require.ErrorContains(t, err, "cannot reach NATS at nats://bob:xxxxx@"+a+", nats://bob:xxxxx@"+b+": ")
	require.NotContains(t, err.Error(), "hunter2")
	// nats.go turns "connection refused" into ErrNoServers; the cause is kept.
	require.ErrorIs(t, err, nats.ErrNoServers)

	_, err = bus.Connect(ctx, bus.ConnectOptions{URL: "nats://" + a, User: "bob", Password: "hunter2"})
	require.ErrorContains(t, err, "cannot reach NATS at nats://"+a+": ")
	require.NotContains(t, err.Error(), "hunter2")
}

func TestConnectRespectsContext(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := bus.Connect(canceled, bus.ConnectOptions{URL: "nats://" + closedPortAddr(t)})
	require.ErrorIs(t, err, context.Canceled)

	// A server that accepts and never speaks would hold nats.go for its
	// whole connect timeout (2 s); ctx ends the wait first.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = bus.Connect(ctx, bus.ConnectOptions{URL: "nats://u:sesame@" + l.Addr().String()})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 1500*time.Millisecond)
	require.ErrorContains(t, err, "nats://u:xxxxx@"+l.Addr().String())
}

// syncBuffer is a bytes.Buffer safe for the client's callback goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestConnectReconnectsAndLogs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cfg := embeddednats.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", User: "alice", Password: "s3cret-pw"}
	srv, err := embeddednats.Start(cfg)
	require.NoError(t, err)
	u, err := url.Parse(srv.ClientURL())
	require.NoError(t, err)
	u.User = url.UserPassword("alice", "s3cret-pw")

	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	nc, err := bus.Connect(ctx, bus.ConnectOptions{URL: u.String(), Logger: logger})
	require.NoError(t, err)
	t.Cleanup(nc.Close)

	srv.Shutdown()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"nats: disconnected"`) }, 5*time.Second, 20*time.Millisecond)

	// Same port again: the client comes back on its own.
	cfg.Listen = u.Host
	srv, err = embeddednats.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"nats: reconnected"`) }, 10*time.Second, 20*time.Millisecond)
	requireWorks(t, nc)

	require.Contains(t, logs.String(), `"url":"nats://alice:xxxxx@`+u.Host)
	require.NotContains(t, logs.String(), "s3cret-pw")
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                  "nats://127.0.0.1:4222",
		"nats://user:pw@host:4222":               "nats://user:xxxxx@host:4222",
		"tls://user:p@ss/w?rd#@host:4222":        "tls://user:xxxxx@host:4222",
		"nats://s3cr3t-token@host":               "nats://xxxxx@host",
		"user:pw@host:4222":                      "user:xxxxx@host:4222",
		"nats://a:1@h1:4222, nats://b:2@h2:4222": "nats://a:xxxxx@h1:4222, nats://b:xxxxx@h2:4222",
		"nats://h1:4222,nats://u:%40pw@h2:4222":  "nats://h1:4222,nats://u:xxxxx@h2:4222",
		"":                                       "",
	} {
		require.Equal(t, want, bus.RedactURL(in), in)
	}
}
