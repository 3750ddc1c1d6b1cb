// Package testenv gives each test its own real services: an embedded
// JetStream server and a fresh database on Postgres, MySQL/MariaDB or SQLite,
// each removed at cleanup. Every helper takes the test, registers its own
// cleanup and is safe under t.Parallel, so tests never share state and never
// need a fixed name.
//
// The database servers come from the environment:
//
//	BATCHFLOW_TEST_POSTGRES_DSN  default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
//	BATCHFLOW_TEST_MYSQL_DSN     default mysql://root@127.0.0.1:3306/test
//
// The DSN names an administrative connection allowed to create and drop
// databases. When a server cannot be reached, its tests skip, unless CI is
// set (to anything but "false" or "0"): in CI a missing service is a broken
// pipeline, not a reason to pass.
package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchflow/batchflow/internal/config"
)

const (
	// reachTimeout bounds the one-time check that a database server is up;
	// long enough for a loaded CI machine, short enough for a laptop
	// without the server to skip promptly.
	reachTimeout = 3 * time.Second
	// ddlTimeout bounds CREATE and DROP DATABASE, which wait on locks.
	ddlTimeout = time.Minute
	// queryTimeout bounds Database.Exec and QueryInt.
	queryTimeout = time.Minute
)

// server is a database server the harness creates test databases on. It
// connects once per process: a suite of hundreds of tests pays the
// reachability check, or its timeout, one time.
type server struct {
	dialect    string
	envVar     string
	defaultDSN string
	// howToStart tells a developer whose tests skipped what to run.
	howToStart string
	// open opens a pool on a DSN in batchflow's form; an error means the
	// DSN is malformed, not that the server is down.
	open   func(dsn string) (*sql.DB, error)
	create func(ctx context.Context, admin *sql.DB, name string) error
	drop   func(ctx context.Context, admin *sql.DB, name string) error

	once      sync.Once
	dsn       string
	admin     *sql.DB
	configErr error // malformed DSN: fails the test even outside CI
	reachErr  error // server down or refusing us: skips outside CI
}

// connect returns the process-wide administrative pool, or ends the test.
func (s *server) connect(t testing.TB) *sql.DB {
	t.Helper()
	s.once.Do(func() {
		s.dsn = os.Getenv(s.envVar)
		if s.dsn == "" {
			s.dsn = s.defaultDSN
		}
		s.admin, s.configErr, s.reachErr = s.probe(s.dsn)
	})
	if s.configErr != nil {
		t.Fatalf("testenv: %s=%s: %v", s.envVar, config.RedactDSN(s.dsn), s.configErr)
	}
	if s.reachErr != nil {
		unreachable(t, os.Getenv("CI"), s, s.reachErr)
	}
	return s.admin
}

// probe opens an administrative pool on dsn and checks the server answers
// within reachTimeout.
func (s *server) probe(dsn string) (admin *sql.DB, configErr, reachErr error) {
	admin, err := s.open(dsn)
	if err != nil {
		return nil, err, nil
	}
	// A few connections are enough for CREATE and DROP, and leave the
	// server's connection limit to the tests' own pools.
	admin.SetMaxOpenConns(4)
	ctx, cancel := context.WithTimeout(context.Background(), reachTimeout)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		return nil, nil, err
	}
	return admin, nil, nil
}

// unreachable ends a test whose database server cannot be reached: a
// failure when ci says this is a CI run, a skip otherwise. It names the DSN
// (without password) and the variable that overrides it, since a wrong
// default is the usual cause.
func unreachable(t testing.TB, ci string, s *server, err error) {
	t.Helper()
	if strictCI(ci) {
		t.Fatalf("testenv: %s server unreachable at %s (CI=%s, so this fails instead of skipping): %v\n"+
			"set %s to a reachable administrative DSN",
			s.dialect, config.RedactDSN(s.dsn), ci, err, s.envVar)
		return
	}
	t.Skipf("testenv: skipping, %s server unreachable at %s: %v\n"+
		"start it (%s) or set %s to a reachable administrative DSN; with CI=true this fails",
		s.dialect, config.RedactDSN(s.dsn), err, s.howToStart, s.envVar)
}

// strictCI reports whether the CI variable's value asks for missing
// services to fail the tests.
func strictCI(value string) bool {
	switch strings.ToLower(strings.TrimSpace(value)) {
	case "", "false", "0":
		return false
	}
	return true
}

// newDatabase creates a fresh database on s for t and drops it at cleanup.
func (s *server) newDatabase(t testing.TB) *Database {
	t.Helper()
	admin := s.connect(t)
	name := databaseName(t.Name())

	ctx, cancel := context.WithTimeout(context.Background(), ddlTimeout)
	defer cancel()
	if err := s.create(ctx, admin, name); err != nil {
		t.Fatalf("testenv: create %s database %s: %v", s.dialect, name, err)
	}
	d := &Database{Dialect: s.dialect, Name: name}
	t.Cleanup(func() {
		if d.DB != nil {
			d.DB.Close()
		}
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), ddlTimeout)
		defer cancel()
		if err := s.drop(ctx, admin, name); err != nil {
			t.Errorf("testenv: drop %s database %s: %v", s.dialect, name, err)
		}
	})

	dsn, err := withDatabase(s.dsn, name)
	if err != nil {
		t.Fatalf("testenv: %s=%s: %v", s.envVar, config.RedactDSN(s.dsn), err)
	}
	d.DSN = dsn
	if d.DB, err = s.open(dsn); err != nil {
		t.Fatalf("testenv: open %s database %s: %v", s.dialect, name, err)
	}
	return d
}

// maxNameLen is Postgres' identifier limit; MySQL allows 64.
const maxNameLen = 63

// databaseName derives "bf_<test name>_<random>" from a test name: the test
// name tells whose database a leftover is, the random part keeps parallel
// and repeated (-count=N) runs of the same test apart.
func databaseName(testName string) string {
	var b strings.Builder
	underscore := false
	for _, r := range strings.ToLower(testName) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			underscore = false
		} else if !underscore {
			b.WriteByte('_')
			underscore = true
		}
	}
	const prefix, suffixLen = "bf_", 1 + 8
	base := strings.Trim(b.String(), "_")
	if limit := maxNameLen - len(prefix) - suffixLen; len(base) > limit {
		base = strings.TrimRight(base[:limit], "_")
	}
	if base == "" {
		base = "test"
	}
	return fmt.Sprintf("%s%s_%08x", prefix, base, rand.Uint32())
}

// withDatabase points a URL-form DSN at another database, keeping host,
// credentials and parameters. The database is the last path segment, which
// also holds for a MySQL unix(/path/to/socket)/db URL.
func withDatabase(dsn, name string) (string, error) {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok || scheme == "" {
		return "", errors.New("want a URL such as postgres://user@host:port/db")
	}
	base, query, hasQuery := strings.Cut(rest, "?")
	if i := strings.LastIndexByte(base, '/'); i >= 0 && !strings.Contains(base[i:], ")") {
		base = base[:i]
	}
	out := scheme + "://" + base + "/" + name
	if hasQuery {
		out += "?" + query
	}
	return out, nil
}
