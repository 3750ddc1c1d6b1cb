package sqlite

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidDSN is wrapped by every ParseDSN error.
var ErrInvalidDSN = errors.New("invalid sqlite DSN")

// errInMemory explains why in-memory databases are refused.
var errInMemory = fmt.Errorf("%w: an in-memory SQLite database is private to one connection, so the planner and the executors would each see their own empty database: use a file, e.g. sqlite:///var/lib/batchflow/app.db", ErrInvalidDSN)

// DSN is a parsed sqlite target.
type DSN struct {
	// Path is the database file, absolute.
	Path string
	// Params are the query parameters, passed on to modernc.org/sqlite:
	// its own keys (_pragma, _txlock, _busy_timeout, _time_format, …) and
	// SQLite's URI parameters (mode=ro, cache, immutable, vfs, …).
	Params url.Values
}

// ParseDSN parses batchflow's form of a SQLite target:
//
//	sqlite:///abs/path.db            the file /abs/path.db
//	sqlite://relative/path.db        relative to the working directory, made absolute here
//	sqlite:///abs/path.db?mode=ro&_pragma=cache_size(-64000)
//
// The path is percent-decoded ('#' is %23, '?' is %3F, '%' is %25), as
// net/url writes it. In-memory databases (":memory:", mode=memory,
// vfs=memdb) are refused: every connection would have its own.
func ParseDSN(dsn string) (DSN, error) {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok || !strings.EqualFold(scheme, Scheme) {
		if strings.HasPrefix(strings.ToLower(dsn), Scheme+":") && strings.Contains(dsn, ":memory:") {
			return DSN{}, errInMemory
		}
		return DSN{}, fmt.Errorf("%w: want sqlite:///abs/path.db or sqlite://relative/path.db", ErrInvalidDSN)
	}
	if strings.Contains(rest, "#") {
		return DSN{}, fmt.Errorf("%w: unencoded '#' (url parsers read a fragment there): write it as %%23", ErrInvalidDSN)
	}
	rawPath, rawQuery, _ := strings.Cut(rest, "?")
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		return DSN{}, fmt.Errorf("%w: the path has a malformed %%-escape", ErrInvalidDSN)
	}
	params, err := url.ParseQuery(rawQuery)
	if err != nil {
		return DSN{}, fmt.Errorf("%w: malformed query parameters", ErrInvalidDSN)
	}
	switch {
	case path == "":
		return DSN{}, fmt.Errorf("%w: no file path: use sqlite:///abs/path.db or sqlite://relative/path.db", ErrInvalidDSN)
	case path == ":memory:", strings.HasPrefix(path, "file:"):
		// "file:" would be a second URI inside ours; ":memory:" is not a file.
		if strings.Contains(path, ":memory:") {
			return DSN{}, errInMemory
		}
		return DSN{}, fmt.Errorf("%w: the path starts with \"file:\": write sqlite:///abs/path.db", ErrInvalidDSN)
	}
	for _, m := range params["mode"] {
		if strings.EqualFold(m, "memory") {
			return DSN{}, errInMemory
		}
	}
	for _, v := range params["vfs"] {
		if strings.EqualFold(v, "memdb") {
			return DSN{}, errInMemory
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return DSN{}, fmt.Errorf("%w: %s: %w", ErrInvalidDSN, path, err)
	}
	return DSN{Path: abs, Params: params}, nil
}

// readOnly reports mode=ro: the file cannot be written, so journal_mode
// cannot be switched to WAL either.
func (d DSN) readOnly() bool {
	for _, m := range d.Params["mode"] {
		if strings.EqualFold(m, "ro") {
			return true
		}
	}
	return false
}

// pool says which of the sink's two pools a driver DSN is for.
type pool int

const (
	writePool pool = iota
	readPool
)

// driverDSN is the name given to modernc.org/sqlite: a "file:" URI, so
// SQLite's own parameters (mode=ro, …) take effect, with the sink's
// settings added where the target's DSN does not set them itself:
//
//   - busy_timeout = lockTimeout: a writer waiting longer for SQLite's write
//     lock gets SQLITE_BUSY, a transient error.
//   - journal_mode = WAL: readers and the one writer do not block each other.
//   - synchronous = NORMAL: in WAL mode a commit is not fsynced; the WAL is
//     at checkpoints. A process crash loses nothing; a power loss or OS crash
//     may lose the last commits, data and ledger row together (they share a
//     transaction), so exactly-once holds and the lost sub-batches are
//     simply applied again.
//   - foreign_keys = ON, so a change that breaks a reference fails as data.
//   - _txlock = immediate on the write pool: every transaction takes the
//     write lock at BEGIN, waiting under busy_timeout, instead of failing
//     with SQLITE_BUSY_SNAPSHOT when it first writes after reading. The
//     sink's own transactions say BEGIN IMMEDIATE (or BEGIN EXCLUSIVE for
//     _txlock=exclusive) themselves; the parameter covers any other.
//   - query_only on the read pool: only the write pool writes.
//   - _time_format = sqlite: times stored as "YYYY-MM-DD HH:MM:SS.SSS+00:00",
//     which SQLite's date functions read.
func (d DSN) driverDSN(p pool, lockTimeout time.Duration) (string, error) {
	q := url.Values{}
	for k, vs := range d.Params {
		q[k] = append([]string(nil), vs...)
	}
	setDefault := func(pragma string, keys []string, value string) {
		for _, k := range keys {
			if q.Has(k) {
				return
			}
		}
		for _, v := range q["_pragma"] {
			name := strings.ToLower(strings.TrimSpace(v))
			if strings.HasPrefix(name, pragma) {
				return
			}
		}
		q.Set(keys[0], value)
	}
	ms := max(lockTimeout.Milliseconds(), 1)
	setDefault("busy_timeout", []string{"_busy_timeout", "_timeout"}, strconv.FormatInt(ms, 10))
	if !d.readOnly() {
		setDefault("journal_mode", []string{"_journal_mode", "_journal"}, "WAL")
	}
	setDefault("synchronous", []string{"_synchronous", "_sync"}, "NORMAL")
	setDefault("foreign_keys", []string{"_foreign_keys", "_fk"}, "1")
	if !q.Has("_time_format") && !q.Has("_time_integer_format") {
		q.Set("_time_format", "sqlite")
	}
	switch p {
	case writePool:
		switch strings.ToLower(q.Get("_txlock")) {
		case "", "immediate":
			q.Set("_txlock", "immediate")
		case "exclusive":
		default:
			return "", fmt.Errorf("%w: _txlock=%s: the sink's write transactions must take the write lock at BEGIN (_txlock=immediate)", ErrInvalidDSN, q.Get("_txlock"))
		}
	case readPool:
		q.Del("_txlock")
		if !q.Has("_query_only") {
			q.Set("_query_only", "1")
		}
	}
	// url.URL escapes '%', '?', '#' and blanks in the path; SQLite decodes them.
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(d.Path), RawQuery: q.Encode()}
	return u.String(), nil
}
