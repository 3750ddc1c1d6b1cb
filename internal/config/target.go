package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
)

// DSN schemes, as normalised in Target.Scheme; the sink registry keys on them.
const (
	SchemePostgres = "postgres"
	SchemeMySQL    = "mysql"
	SchemeSQLite   = "sqlite"
)

// redacted replaces every secret in what batchflow prints.
const redacted = "xxxxx"

// targetNamePattern is the rule for target names: specs refer to targets by
// name, so names stay short, lowercase and free of '=' and ';'.
var targetNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// schemePattern is RFC 3986's scheme syntax; anything else before "://" is
// not a scheme, and may be a piece of a password.
var schemePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

// Target is a named database that migrations run on (DESIGN.md §1). Specs
// name the target, never the DSN, so credentials stay on the hosts that run
// the planner and executors.
//
// Every printed form of a Target (String, GoString, Format, LogValue,
// MarshalJSON) carries the redacted DSN; only DSN returns the secret, for
// the driver.
type Target struct {
	// Name is what specs refer to: ^[a-z0-9][a-z0-9_-]{0,63}$.
	Name string
	// Scheme picks the sink: SchemePostgres, SchemeMySQL or SchemeSQLite.
	// "postgresql://" DSNs have Scheme SchemePostgres.
	Scheme string

	dsn string
}

// ParseTarget parses "NAME=DSN", as given to --target.
//
// Accepted DSNs:
//
//	postgres://user:pass@host:5432/db?sslmode=disable   (also postgresql://; host may be empty, as for ?host=/socket/dir)
//	mysql://user:pass@host:3306/db?parseTime=true       (host and database required)
//	sqlite:///abs/path.db                               (absolute path /abs/path.db)
//	sqlite://relative.db                                (relative to the working directory)
//
// Special characters in user names and passwords must be percent-encoded
// ("@" as %40, "/" as %2F, "#" as %23, ";" as %3B). In-memory SQLite
// (sqlite::memory:, sqlite://:memory:, mode=memory) is rejected: each
// connection, and so the planner and every executor, would see its own
// empty database.
//
// Errors never contain the password.
func ParseTarget(s string) (Target, error) {
	s = strings.TrimSpace(s)
	name, dsn, ok := splitTarget(s)
	if !ok {
		return Target{}, fmt.Errorf("target wants NAME=DSN, got %q", redactForError(s))
	}
	return newTarget(name, dsn)
}

// splitTarget splits "NAME=DSN" at the first '='. A "name" holding "://"
// means the name was forgotten and the '=' belongs to the DSN's query
// ("--target postgres://u:p@h/db?sslmode=disable").
func splitTarget(s string) (name, dsn string, ok bool) {
	name, dsn, ok = strings.Cut(s, "=")
	if !ok || name == "" || dsn == "" || strings.Contains(name, "://") {
		return "", "", false
	}
	return name, dsn, true
}

func newTarget(name, dsn string) (Target, error) {
	if !targetNamePattern.MatchString(name) {
		return Target{}, fmt.Errorf("invalid target name %q: use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit", redactForError(name))
	}
	scheme, err := checkDSN(dsn)
	if err != nil {
		return Target{}, fmt.Errorf("target %q: %w", name, err)
	}
	return Target{Name: name, Scheme: scheme, dsn: dsn}, nil
}

// checkDSN validates dsn and returns its normalised scheme. Its errors
// show the DSN only in redacted form, and never the text of url.Parse's
// errors: those quote the raw URL, or the piece of a password that made
// it invalid.
func checkDSN(dsn string) (string, error) {
	rawScheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		if strings.HasPrefix(dsn, "sqlite:") {
			if strings.Contains(dsn, ":memory:") {
				return "", errInMemorySQLite
			}
			return "", errors.New("sqlite DSN needs \"//\": use sqlite:///abs/path.db or sqlite://relative.db")
		}
		// Not echoed: a DSN without a scheme may be libpq's "password=…"
		// keyword form or go-sql-driver's "user:pass@tcp(…)" form.
		return "", errors.New("DSN has no scheme: use postgres://, mysql://user:pass@host:port/db or sqlite://")
	}
	if !schemePattern.MatchString(rawScheme) {
		return "", errors.New("DSN has no valid scheme: use postgres://, mysql:// or sqlite://")
	}
	// Case-sensitive, as pgx is: it reads "POSTGRES://" as a keyword/value DSN.
	switch rawScheme {
	case "postgres", "postgresql":
		if _, err := parseNetworkDSN(dsn, rest); err != nil {
			return "", err
		}
		return SchemePostgres, nil
	case SchemeMySQL:
		u, err := parseNetworkDSN(dsn, rest)
		if err != nil {
			return "", err
		}
		if u.Host == "" {
			return "", errors.New("mysql DSN has no host: use mysql://user:pass@host:port/db")
		}
		if db := strings.TrimPrefix(u.Path, "/"); db == "" || strings.Contains(db, "/") {
			return "", errors.New("mysql DSN needs one database name: use mysql://user:pass@host:port/db")
		}
		return SchemeMySQL, nil
	case SchemeSQLite:
		path, query, _ := strings.Cut(rest, "?")
		if path == ":memory:" || strings.HasPrefix(path, "file::memory:") || strings.Contains(strings.ToLower(query), "mode=memory") {
			return "", errInMemorySQLite
		}
		if path == "" {
			return "", errors.New("sqlite DSN has no file path: use sqlite:///abs/path.db or sqlite://relative.db")
		}
		return SchemeSQLite, nil
	default:
		return "", fmt.Errorf("unknown DSN scheme %q: use postgres://, mysql:// or sqlite://", rawScheme)
	}
}

var errInMemorySQLite = errors.New("in-memory SQLite is not shared between connections, so the planner and executors would each see an empty database: use a file, e.g. sqlite:///tmp/batchflow.db")

// parseNetworkDSN parses a postgres or mysql URL and rejects the shapes that
// url.Parse accepts but that mean an unencoded character in the password
// moved the host: "u:12/x@h/db" parses as host "u:12".
func parseNetworkDSN(dsn, rest string) (*url.URL, error) {
	bad := func(why string) error {
		return fmt.Errorf("malformed DSN %q: %s (percent-encode special characters in the user name and password: @ as %%40, / as %%2F, # as %%23, ? as %%3F)", redactForError(dsn), why)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, bad("not a valid URL")
	}
	if u.Fragment != "" || strings.HasSuffix(dsn, "#") {
		return nil, bad("it has a '#' fragment")
	}
	if strings.Contains(u.Path, "@") || (u.User == nil && strings.Contains(rest, "@")) {
		return nil, bad("it has an '@' after the host")
	}
	return u, nil
}

// DSN returns the DSN exactly as configured, password included: for the
// driver only, never for printing.
func (t Target) DSN() string { return t.dsn }

// RedactedDSN is the DSN with its secrets replaced by "xxxxx".
func (t Target) RedactedDSN() string { return RedactDSN(t.dsn) }

// SQLiteFile splits a sqlite target's DSN into the file path and the query
// (without '?', for driver options such as _pragma=busy_timeout(5000)):
// sqlite:///abs/path.db is "/abs/path.db", sqlite://data/x.db is
// "data/x.db" relative to the working directory. The path is taken
// literally, not percent-decoded. Both are empty for other schemes.
func (t Target) SQLiteFile() (path, query string) {
	if t.Scheme != SchemeSQLite {
		return "", ""
	}
	_, rest, _ := strings.Cut(t.dsn, "://")
	path, query, _ = strings.Cut(rest, "?")
	return path, query
}

// String is "NAME=DSN" with the DSN redacted: the --target syntax.
func (t Target) String() string { return t.Name + "=" + t.RedactedDSN() }

// GoString makes %#v print the redacted DSN too.
func (t Target) GoString() string {
	return fmt.Sprintf("config.Target{Name:%q, Scheme:%q, DSN:%q}", t.Name, t.Scheme, t.RedactedDSN())
}

// Format routes every verb through String or GoString: without it, verbs
// such as %d would print the struct's fields, the raw DSN among them.
func (t Target) Format(f fmt.State, verb rune) { format(f, verb, t.String(), t.GoString()) }

// LogValue logs the target as a group of name, scheme and redacted DSN.
func (t Target) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", t.Name),
		slog.String("scheme", t.Scheme),
		slog.String("dsn", t.RedactedDSN()),
	)
}

// targetJSON is the printed JSON form. There is no UnmarshalJSON on
// purpose: DSNs are configured on each host, never sent around.
type targetJSON struct {
	Name   string `json:"name"`
	Scheme string `json:"scheme"`
	DSN    string `json:"dsn"`
}

// MarshalJSON encodes the target with its DSN redacted.
func (t Target) MarshalJSON() ([]byte, error) {
	return json.Marshal(targetJSON{Name: t.Name, Scheme: t.Scheme, DSN: t.RedactedDSN()})
}

// Targets are the configured targets in the order they were given.
type Targets []Target

// ParseTargets parses the --target flags, or, when no flag was given, the
// BATCHFLOW_TARGETS value env ("NAME=DSN" pairs separated by ';'; empty
// entries, such as after a trailing ';', are ignored). Flags replace the
// environment entirely rather than merging with it, so a command line says
// exactly which databases a process may touch. A name given twice is an
// error. Errors name the source ("--target …" or "BATCHFLOW_TARGETS …") and
// never contain a password. A ';' inside a DSN in BATCHFLOW_TARGETS must
// be percent-encoded as %3B.
func ParseTargets(flags []string, env string) (Targets, error) {
	source, entries := "--target", flags
	if len(flags) == 0 {
		source, entries = envTargets, nil
		for e := range strings.SplitSeq(env, ";") {
			if strings.TrimSpace(e) != "" {
				entries = append(entries, e)
			}
		}
	}
	var targets Targets
	for i, e := range entries {
		e = strings.TrimSpace(e)
		name, dsn, ok := splitTarget(e)
		switch {
		case !ok && source == envTargets:
			// Not echoed: with an unencoded ';' in a password, the entry
			// is a piece of that password.
			return nil, fmt.Errorf("%s entry %d wants NAME=DSN (entries are separated by ';': percent-encode a ';' inside a DSN as %%3B)", envTargets, i+1)
		case !ok:
			return nil, fmt.Errorf("--target wants NAME=DSN, got %q", redactForError(e))
		}
		t, err := newTarget(name, dsn)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if _, dup := targets.Get(t.Name); dup {
			return nil, fmt.Errorf("%s: target %q given twice", source, t.Name)
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// Get returns the target called name.
func (ts Targets) Get(name string) (Target, bool) {
	for _, t := range ts {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// DSNs returns name → raw DSN, for the components that open the targets.
// Keep the map out of logs: it holds the passwords.
func (ts Targets) DSNs() map[string]string {
	m := make(map[string]string, len(ts))
	for _, t := range ts {
		m[t.Name] = t.DSN()
	}
	return m
}

// Names returns the target names in configuration order.
func (ts Targets) Names() []string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	return names
}

// String is "[main=postgres://u:xxxxx@h/db analytics=…]".
func (ts Targets) String() string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// GoString makes %#v print redacted DSNs.
func (ts Targets) GoString() string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.GoString()
	}
	return "config.Targets{" + strings.Join(parts, ", ") + "}"
}

// Format routes every verb through String or GoString, as Target.Format.
func (ts Targets) Format(f fmt.State, verb rune) { format(f, verb, ts.String(), ts.GoString()) }

// LogValue logs one attribute per target, keyed by name: targets.main=postgres://u:xxxxx@h/db.
func (ts Targets) LogValue() slog.Value {
	attrs := make([]slog.Attr, len(ts))
	for i, t := range ts {
		attrs[i] = slog.String(t.Name, t.RedactedDSN())
	}
	return slog.GroupValue(attrs...)
}

// MarshalJSON encodes the targets as an array of redacted targets ([] when
// empty, not null).
func (ts Targets) MarshalJSON() ([]byte, error) {
	out := make([]targetJSON, len(ts))
	for i, t := range ts {
		out[i] = targetJSON{Name: t.Name, Scheme: t.Scheme, DSN: t.RedactedDSN()}
	}
	return json.Marshal(out)
}

// format prints s for every verb but %#v, which prints gos, honouring width
// and flags.
func format(f fmt.State, verb rune, s, gos string) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, gos)
		return
	}
	if verb == 'v' {
		verb = 's' // %v and %+v print the plain form
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), s)
}

// secretParamPattern finds query parameters (and libpq keyword pairs) that
// carry secrets; the value runs to the next '&', '#' or blank, or is quoted.
var secretParamPattern = regexp.MustCompile(`(?i)((?:^|[?&;\s])(?:password|sslpassword|pass|pwd|secret|token)=)('(?:[^'\\]|\\.)*'?|[^&#\s]*)`)

// RedactDSN returns dsn with its secrets replaced by "xxxxx": the password
// of the user info (user:password@ → user:xxxxx@) and the values of query
// parameters named password, sslpassword, pass, pwd, secret or token, in
// any case.
//
// The user info is taken to end at the last '@', not at the first '/', '?'
// or '#': an unencoded password such as "p/ss" or "p?ss" then stays hidden,
// at the price of hiding more than needed when an '@' appears later in the
// DSN (a query value such as application_name=me@corp). RedactDSN never
// fails: it works on strings that are not valid URLs, too.
func RedactDSN(dsn string) string {
	prefix, rest := splitScheme(dsn, schemePattern)
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return prefix + redactParams(rest)
	}
	userinfo, host := rest[:at], rest[at:]
	user, _, hasPassword := strings.Cut(userinfo, ":")
	if !hasPassword {
		// No password in the user info; a secret parameter may still span
		// the '@' (…?password=p@ss), so redact the whole rest at once.
		return prefix + redactParams(rest)
	}
	// Masking the user info before redacting parameters keeps a parameter
	// value from swallowing the '@' that ends the user info.
	return prefix + redactParams(user) + ":" + redacted + redactParams(host)
}

// redactForError is the stricter redaction of input echoed in errors,
// where the input may be malformed or a piece of a DSN: everything between
// "://" and the last '@' is hidden, user name included, and everything
// after "://" when there is no '@' ("postgres://u:p" may be the start of a
// DSN cut at a ';' inside its password).
func redactForError(s string) string {
	prefix, rest := splitScheme(s, entrySchemePattern)
	at := strings.LastIndex(rest, "@")
	switch {
	case at >= 0:
		return prefix + redacted + redactParams(rest[at:])
	case prefix != "" && rest != "":
		return prefix + redacted
	case strings.Contains(rest, "://"):
		// A "://" after something that is no scheme may sit in a password.
		return redacted
	default:
		return redactParams(rest)
	}
}

// entrySchemePattern is a scheme, possibly after the "NAME=" of a --target
// entry.
var entrySchemePattern = regexp.MustCompile(`^(?:[a-z0-9_-]*=)?[A-Za-z][A-Za-z0-9+.-]*$`)

// splitScheme splits s after its "://" when what precedes matches
// pattern. Otherwise the "://" may be inside a password ("u:p://w@h") and
// must not end the part left visible, so all of s is the rest.
func splitScheme(s string, pattern *regexp.Regexp) (prefix, rest string) {
	if before, after, ok := strings.Cut(s, "://"); ok && pattern.MatchString(before) {
		return before + "://", after
	}
	return "", s
}

func redactParams(s string) string {
	return secretParamPattern.ReplaceAllString(s, "${1}"+redacted)
}
