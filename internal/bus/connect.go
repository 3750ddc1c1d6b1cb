package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// DefaultURL is where every batchflow command looks for NATS when --nats-url
// is not given.
const DefaultURL = "nats://127.0.0.1:4222"

// redacted replaces secrets in URLs and error messages; the same mark as
// net/url's URL.Redacted, so operators see one convention.
const redacted = "xxxxx"

// ConnectOptions mirrors the common --nats-* flags of DESIGN.md §5. At most
// one way to authenticate may be given: a creds file, an nkey seed file, or a
// user and password (as fields or inside the URL).
type ConnectOptions struct {
	// URL is one server URL or a comma-separated list of them, for example
	// "nats://a:4222,nats://b:4222". Default DefaultURL. A user and password
	// (or a token) inside the URL are used, and redacted from every message.
	URL string
	// CredsFile is a decorated JWT + nkey seed file (decentralised auth,
	// as written by nsc or Synadia Cloud).
	CredsFile string
	// NKeyFile is a file holding a user nkey seed ("SU…").
	NKeyFile string
	// User and Password authenticate with a user name and password. They
	// conflict with a user inside URL.
	User, Password string
	// TLSCA is a PEM file of the certificate authorities that sign the
	// server's certificate; empty trusts the system pool.
	TLSCA string
	// TLSCert and TLSKey are the PEM client certificate and its key, for
	// servers that verify clients. Both or neither.
	TLSCert, TLSKey string
	// Name identifies the connection in the server's monitoring
	// (connz, `nats server report connections`). Default "batchflow".
	Name string
	// Logger receives disconnects, reconnects and asynchronous errors
	// (slow consumers, permission violations). Nil discards them.
	Logger *slog.Logger
}

// reconnectWait is short because every batchflow process is useless while
// disconnected, and the client adds jitter so a cluster restart is not
// hammered in lockstep.
const reconnectWait = time.Second

// pingInterval bounds how long a silently dead connection (a dropped NAT
// entry, a frozen VM) goes unnoticed: about a minute (2 missed pings 20 s
// apart) instead of the client's default of several minutes, during which
// an executor's InProgress heartbeats would silently go nowhere.
const pingInterval = 20 * time.Second

// Connect opens a NATS connection that reconnects forever. It fails at once,
// without retrying, when the options conflict, a file cannot be read or no
// server of URL accepts the connection, so a command run by hand reports a
// wrong address instead of hanging; daemons are restarted by their
// supervisor. Passwords and tokens never appear in its errors.
func Connect(ctx context.Context, o ConnectOptions) (*nats.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	if o.URL == "" {
		o.URL = DefaultURL
	}
	if o.Name == "" {
		o.Name = "batchflow"
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	servers, secrets, err := parseServers(o.URL)
	if err != nil {
		return nil, err
	}
	auth, err := o.authOptions(len(secrets) > 0)
	if err != nil {
		return nil, err
	}
	if o.Password != "" {
		secrets = append(secrets, o.Password)
	}
	tlsOpts, err := o.tlsOptions()
	if err != nil {
		return nil, err
	}

	opts := nats.GetDefaultOptions()
	opts.Servers = servers
	all := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.PingInterval(pingInterval),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // our own Close: ClosedHandler reports it
			}
			log.Warn("nats: disconnected", "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats: reconnected", "url", RedactURL(nc.ConnectedUrl()), "server", nc.ConnectedServerName())
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Debug("nats: reconnect attempt failed", "error", err)
		}),
		nats.LameDuckModeHandler(func(nc *nats.Conn) {
			log.Warn("nats: server entering lame duck mode", "server", nc.ConnectedServerName())
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Debug("nats: connection closed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Error("nats: async error", "error", err, "subject", sub.Subject)
				return
			}
			log.Error("nats: async error", "error", err)
		}),
	}
	all = append(all, auth...)
	all = append(all, tlsOpts...)
	for _, opt := range all {
		if err := opt(&opts); err != nil {
			return nil, fmt.Errorf("nats options: %w", err)
		}
	}

	// nats.go has no context-aware connect: run it aside and stop waiting
	// when ctx ends. A connection that succeeds too late is closed.
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := opts.Connect()
		done <- result{nc, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		r.err = ctx.Err()
	}
	if r.err != nil {
		return nil, connectError(RedactURL(o.URL), r.err, secrets)
	}
	log.Info("nats: connected", "url", RedactURL(r.nc.ConnectedUrl()), "server", r.nc.ConnectedServerName())
	return r.nc, nil
}

// parseServers splits the URL list as nats.go does and checks each entry, so
// a malformed URL is reported here, redacted, and not by url.Parse, whose
// error quotes the URL with its password. It returns the secrets found.
func parseServers(list string) (servers, secrets []string, err error) {
	var withUser, withoutUser bool
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		raw := s
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw // nats.go's default scheme
		}
		u, err := url.Parse(raw)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, nil, fmt.Errorf("invalid NATS URL %s: %w", RedactURL(s), err)
		}
		if u.Host == "" {
			return nil, nil, fmt.Errorf("invalid NATS URL %s: no host", RedactURL(s))
		}
		if u.User != nil {
			withUser = true
			if p, ok := u.User.Password(); ok {
				secrets = append(secrets, p)
			} else {
				secrets = append(secrets, u.User.Username()) // a token
			}
		} else {
			withoutUser = true
		}
		servers = append(servers, s)
	}
	if len(servers) == 0 {
		return nil, nil, errors.New("invalid NATS URL: no server given")
	}
	// nats.go uses a URL's user info only for that server, so a partial
	// list authenticates on some servers and not others.
	if withUser && withoutUser {
		return nil, nil, fmt.Errorf("NATS URL %s: put the same user in every server URL, or use a separate user and password", RedactURL(list))
	}
	return servers, secrets, nil
}

// authOptions checks that a single way to authenticate is chosen (nats.go
// silently ignores an nkey when the URL carries a user) and that its files
// are readable now rather than at the first reconnect.
func (o ConnectOptions) authOptions(urlUser bool) ([]nats.Option, error) {
	ways := 0
	for _, set := range []bool{o.CredsFile != "", o.NKeyFile != "", o.User != "" || o.Password != "", urlUser} {
		if set {
			ways++
		}
	}
	switch {
	case o.CredsFile != "" && o.NKeyFile != "":
		return nil, errors.New("nats auth: give either a creds file or an nkey seed file, not both")
	case urlUser && (o.User != "" || o.Password != ""):
		return nil, errors.New("nats auth: the URL already holds a user: drop it from the URL or drop the separate user and password")
	case ways > 1:
		return nil, errors.New("nats auth: choose one of creds file, nkey seed file, or user and password")
	case o.Password != "" && o.User == "":
		return nil, errors.New("nats auth: a password needs a user")
	}

	switch {
	case o.CredsFile != "":
		contents, err := os.ReadFile(o.CredsFile)
		if err != nil {
			return nil, fmt.Errorf("nats creds file: %w", err)
		}
		_, err = nkeys.ParseDecoratedUserNKey(contents)
		clear(contents) // the seed is a private key
		if err != nil {
			return nil, fmt.Errorf("nats creds file %s: %w", o.CredsFile, err)
		}
		// nats.go rereads the file at every (re)connect: rotated creds apply.
		return []nats.Option{nats.UserCredentials(o.CredsFile)}, nil
	case o.NKeyFile != "":
		seed, err := os.ReadFile(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed file: %w", err)
		}
		clear(seed)
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed file %s: %w", o.NKeyFile, err)
		}
		return []nats.Option{opt}, nil
	case o.User != "":
		return []nats.Option{nats.UserInfo(o.User, o.Password)}, nil
	}
	return nil, nil
}

// tlsOptions loads the TLS files once to report a bad one by name; nats.go
// loads them again at every (re)connect, which picks up rotated certificates.
func (o ConnectOptions) tlsOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if o.TLSCA != "" {
		pem, err := os.ReadFile(o.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("nats TLS CA file: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats TLS CA file %s: no PEM certificate in it", o.TLSCA)
		}
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	switch {
	case o.TLSCert != "" && o.TLSKey == "":
		return nil, fmt.Errorf("nats TLS client certificate %s: the key file is missing", o.TLSCert)
	case o.TLSKey != "" && o.TLSCert == "":
		return nil, fmt.Errorf("nats TLS client key %s: the certificate file is missing", o.TLSKey)
	case o.TLSCert != "":
		certPEM, err := os.ReadFile(o.TLSCert)
		if err != nil {
			return nil, fmt.Errorf("nats TLS client certificate: %w", err)
		}
		keyPEM, err := os.ReadFile(o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("nats TLS client key: %w", err)
		}
		_, err = tls.X509KeyPair(certPEM, keyPEM)
		clear(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("nats TLS client certificate %s with key %s: %w", o.TLSCert, o.TLSKey, err)
		}
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts, nil
}

// connectError words a failed connection as advice, naming the redacted
// URL. The cause keeps errors.Is working; its text is scrubbed of every
// secret in case a lower layer ever quotes one.
func connectError(redactedURL string, cause error, secrets []string) error {
	var msg string
	switch {
	case errors.Is(cause, nats.ErrAuthorization), errors.Is(cause, nats.ErrAuthExpired), errors.Is(cause, nats.ErrAuthRevoked):
		msg = "NATS at " + redactedURL + " rejected the credentials: "
	case errors.Is(cause, context.Canceled), errors.Is(cause, context.DeadlineExceeded):
		msg = "gave up connecting to NATS at " + redactedURL + ": "
	default:
		msg = "cannot reach NATS at " + redactedURL + ": "
	}
	text := cause.Error()
	for _, s := range secrets {
		if s != "" {
			text = strings.ReplaceAll(text, s, redacted)
		}
	}
	return &redactedError{msg: msg + text, cause: cause}
}

type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// RedactURL hides the password, or the token, of every URL in a
// comma-separated list: "nats://u:pw@h:4222" becomes "nats://u:xxxxx@h:4222"
// and "nats://tok@h" becomes "nats://xxxxx@h". It works on text that does not
// parse as a URL, which is exactly when an error would quote one.
func RedactURL(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

func redactOne(s string) string {
	start := 0
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + len("://")
	}
	// NATS URLs have no path, so the last '@' ends the user info even when
	// an unescaped password holds '/', '?' or '#'.
	at := strings.LastIndex(s[start:], "@")
	if at < 0 {
		return s
	}
	userinfo := s[start : start+at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		userinfo = userinfo[:i+1] + redacted
	} else {
		userinfo = redacted // a lone name is a token to nats.go
	}
	return s[:start] + userinfo + s[start+at:]
}
