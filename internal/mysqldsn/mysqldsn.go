// Package mysqldsn reads batchflow's mysql:// target URLs into the
// go-sql-driver configuration. It stands apart from the MySQL sink so the
// test harness can open databases without depending on the sink.
package mysqldsn

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/batchflow/batchflow/internal/config"
)

// ErrInvalidURL is wrapped by every ParseURL error, so a caller that reads
// DSNs from flags can tell a typo in the target from a server that is down.
var ErrInvalidURL = errors.New("invalid mysql url")

// DefaultDialTimeout bounds connecting when the URL sets no timeout: the
// driver's own default is the operating system's, minutes for a host that
// drops packets, and an executor should report an unreachable target sooner.
const DefaultDialTimeout = 10 * time.Second

// ParseURL converts batchflow's URL form of a MySQL/MariaDB target,
//
//	mysql://user:password@host:port/database?param=value&...
//	mysql://user:password@unix(/path/to/mysqld.sock)/database?...
//	mysql://user@localhost/database?socket=/path/to/mysqld.sock
//
// into a go-sql-driver configuration, to be opened with mysql.NewConnector.
// URLs, not the driver's own "user:pass@tcp(host)/db" form, because every
// batchflow target is a URL whose scheme chooses the sink.
//
// The user name and password are percent-decoded, so a password may hold any
// character written as %XX ('@' is %40, '/' is %2F, '#' is %23). The port
// defaults to 3306 and the host to 127.0.0.1; the database may be empty for
// administrative connections.
//
// Query parameters use the driver's names and meanings (tls, timeout,
// readTimeout, writeTimeout, charset, collation, loc, parseTime, ...); a
// parameter the driver does not know becomes a session system variable set
// at connect, as in the driver (time_zone, sql_mode, ...). batchflow's
// defaults differ from the driver's in two places, both overridable:
// parseTime is true, so DATETIME columns scan into time.Time, and the dial
// timeout is DefaultDialTimeout. interpolateParams and multiStatements stay
// off: values travel as bound parameters.
//
// Errors wrap ErrInvalidURL and never contain the password.
func ParseURL(dsn string) (*mysql.Config, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", ErrInvalidURL, config.RedactDSN(dsn), fmt.Sprintf(format, args...))
	}

	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok || !strings.EqualFold(scheme, "mysql") {
		// Not echoed: a string that is not our URL form may be a driver DSN
		// with its password in a place redact does not know about.
		return nil, fmt.Errorf("%w: want mysql://user:password@host:port/database", ErrInvalidURL)
	}

	// net/url cannot parse "unix(/path)" as a host, since the socket path
	// holds slashes: lift it out and put a placeholder host in its place.
	var socket string
	if at, found := socketStart(rest); found {
		end := strings.IndexByte(rest[at+len("unix("):], ')')
		if end < 0 {
			return nil, invalid("unix( socket path is not closed with ')'")
		}
		socket = rest[at+len("unix(") : at+len("unix(")+end]
		if socket == "" {
			return nil, invalid("empty unix socket path")
		}
		after := rest[at+len("unix(")+end+1:]
		if after != "" && after[0] != '/' && after[0] != '?' {
			return nil, invalid("unexpected %q after the unix socket path", firstRune(after))
		}
		rest = rest[:at] + "localhost" + after
	}

	// A password with an unencoded '/', '?' or '#' ends the authority early
	// and spills into the port, path or query, where url.Parse would accept
	// it and an error message would quote it. Any '@' past the authority
	// gives that away.
	if end := strings.IndexAny(rest, "/?#"); end >= 0 && strings.Contains(rest[end:], "@") {
		return nil, invalid("'@' after the host (percent-encode '@', '/', '?' and '#' in the user name and password)")
	}

	u, err := url.Parse("mysql://" + rest)
	if err != nil {
		if config.RedactDSN(dsn) != dsn {
			// url.Parse errors quote pieces of the authority, which may be
			// pieces of the password.
			return nil, invalid("malformed url (percent-encode '@', '/', '?', '#', '[', ']' and '%%' in the user name and password)")
		}
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return nil, invalid("%v", err)
	}
	if u.Fragment != "" || strings.Contains(rest, "#") {
		return nil, invalid("unexpected '#' (percent-encode it as %%23 in a password)")
	}

	db := strings.TrimPrefix(u.Path, "/")
	if strings.Contains(db, "/") {
		return nil, invalid("database name contains '/'")
	}

	driverQuery, querySocket, err := splitQuery(u.RawQuery)
	if err != nil {
		return nil, invalid("%v", err)
	}
	if querySocket != "" {
		if socket != "" {
			return nil, invalid("both unix(...) and the socket parameter name a socket")
		}
		socket = querySocket
	}

	var addr string
	switch {
	case socket != "":
		if u.Port() != "" {
			return nil, invalid("a port makes no sense with a unix socket")
		}
		if strings.ContainsAny(socket, "()") {
			return nil, invalid("unix socket path contains '(' or ')'")
		}
		addr = "unix(" + socket + ")"
	default:
		host := u.Hostname()
		if host == "" {
			host = "127.0.0.1"
		}
		port := u.Port()
		if port == "" {
			port = "3306"
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, invalid("port %q out of range", port)
		}
		addr = "tcp(" + net.JoinHostPort(host, port) + ")"
	}

	// The credentials never reach the driver's parser: its error messages
	// are not ours to redact, and it splits a password at '@' and '/'.
	driverDSN := addr + "/" + url.PathEscape(db)
	if driverQuery != "" {
		driverDSN += "?" + driverQuery
	}
	cfg, err := parseDriverDSN(driverDSN)
	if err != nil {
		return nil, invalid("%v", err)
	}

	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
	}
	if cfg.Passwd != "" && cfg.User == "" {
		return nil, invalid("password without a user name")
	}

	query, _ := url.ParseQuery(u.RawQuery) // splitQuery has validated it.
	if !query.Has("parseTime") {
		cfg.ParseTime = true
	}
	if !query.Has("timeout") {
		cfg.Timeout = DefaultDialTimeout
	}
	return cfg, nil
}

// parseDriverDSN runs the driver's parser, which panics on the long-removed
// "strict" parameter instead of returning an error.
func parseDriverDSN(dsn string) (cfg *mysql.Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, fmt.Errorf("%v", r)
		}
	}()
	return mysql.ParseDSN(dsn)
}

// socketStart finds "unix(" where a host may start: right after "mysql://"
// or after the user information.
func socketStart(rest string) (int, bool) {
	if strings.HasPrefix(rest, "unix(") {
		return 0, true
	}
	if i := strings.Index(rest, "@unix("); i >= 0 {
		return i + 1, true
	}
	return 0, false
}

// splitQuery takes batchflow's own "socket" parameter out of a raw query and
// returns the rest in the driver's encoding, which is a URL query's except
// that the driver finds the database name at the DSN's last '/', so a '/' in a
// value (loc=Europe/Paris) must stay escaped.
func splitQuery(raw string) (driverQuery, socket string, err error) {
	if _, err := url.ParseQuery(raw); err != nil {
		return "", "", fmt.Errorf("query: %w", err)
	}
	var kept []string
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(part, "=")
		key, _ := url.QueryUnescape(rawKey)
		value, _ := url.QueryUnescape(rawValue)
		switch key {
		case "socket":
			socket = value
			continue
		case "strict":
			return "", "", errors.New(`parameter "strict" was removed from the driver; use sql_mode`)
		}
		kept = append(kept, strings.ReplaceAll(part, "/", "%2F"))
	}
	return strings.Join(kept, "&"), socket, nil
}

func firstRune(s string) string {
	for _, r := range s {
		return string(r)
	}
	return ""
}
