package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx" with database/sql
	_ "modernc.org/sqlite"             // registers "sqlite" with database/sql

	"github.com/batchflow/batchflow/internal/mysqldsn"
)

// Dialect names, one per sink; they are also the subtest names of ForEachDialect.
const (
	DialectPostgres = "postgres"
	DialectMySQL    = "mysql"
	DialectSQLite   = "sqlite"
)

// Dialects lists every dialect, in the order ForEachDialect runs them.
var Dialects = []string{DialectPostgres, DialectMySQL, DialectSQLite}

// Database is one test's own database.
type Database struct {
	// DSN is the batchflow target DSN of the database, as a sink or a
	// --target flag takes it.
	DSN string
	// Name is the database's name on its server (bf_<test>_<random>); for
	// SQLite, the absolute path of the file.
	Name string
	// Dialect is DialectPostgres, DialectMySQL or DialectSQLite.
	Dialect string
	// DB is a pool for the test's own setup and assertions, separate from
	// whatever the code under test opens; closed at cleanup.
	DB *sql.DB
}

// Exec runs a statement and fails the test if it errors.
func (d *Database) Exec(t testing.TB, query string, args ...any) sql.Result {
	t.Helper()
	// Not t.Context(): Exec is also useful in a t.Cleanup, where that is done.
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	res, err := d.DB.ExecContext(ctx, query, args...)
	if err != nil {
		t.Fatalf("testenv: %s exec %q: %v", d.Dialect, query, err)
	}
	return res
}

// QueryInt runs a query returning one integer (a count, a sum, a value) and
// fails the test if it errors, returns no row or returns NULL.
func (d *Database) QueryInt(t testing.TB, query string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	var n sql.NullInt64
	if err := d.DB.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("testenv: %s query %q: %v", d.Dialect, query, err)
	}
	if !n.Valid {
		t.Fatalf("testenv: %s query %q: NULL", d.Dialect, query)
	}
	return n.Int64
}

// Placeholder is the n-th (1-based) bound parameter in the dialect's SQL,
// so one test body can run on every dialect: "$1" on Postgres, "?" elsewhere.
func (d *Database) Placeholder(n int) string {
	if d.Dialect == DialectPostgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// Postgres gives the test a fresh database on the Postgres server of
// BATCHFLOW_TEST_POSTGRES_DSN, dropped (WITH (FORCE): connections the code
// under test left open do not block it) at cleanup.
func Postgres(t testing.TB) *Database {
	t.Helper()
	return postgresServer.newDatabase(t)
}

// MySQL gives the test a fresh database on the MySQL/MariaDB server of
// BATCHFLOW_TEST_MYSQL_DSN, dropped at cleanup after killing the
// connections still using it.
func MySQL(t testing.TB) *Database {
	t.Helper()
	return mysqlServer.newDatabase(t)
}

// SQLite gives the test a fresh database file in t.TempDir(), in WAL mode
// with a busy timeout as the SQLite sink runs it.
func SQLite(t testing.TB) *Database {
	t.Helper()
	path, err := filepath.Abs(filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatalf("testenv: sqlite path: %v", err)
	}
	// A URL, so a test name that put '#' or '%' in the temporary
	// directory still yields a DSN that parses back to the same path.
	dsn := (&url.URL{Scheme: "sqlite", Path: path}).String()
	db, err := openSQLite(path)
	if err != nil {
		t.Fatalf("testenv: open sqlite %s: %v", path, err)
	}
	// Registered after t.TempDir's removal, so it runs before it.
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("testenv: open sqlite %s: %v", path, err)
	}
	return &Database{DSN: dsn, Name: path, Dialect: DialectSQLite, DB: db}
}

// Open gives the test a fresh database of the named dialect, for table
// tests that list dialects.
func Open(t testing.TB, dialect string) *Database {
	t.Helper()
	switch dialect {
	case DialectPostgres:
		return Postgres(t)
	case DialectMySQL:
		return MySQL(t)
	case DialectSQLite:
		return SQLite(t)
	}
	t.Fatalf("testenv: unknown dialect %q (want one of %s)", dialect, strings.Join(Dialects, ", "))
	return nil
}

// ForEachDialect runs fn as one subtest per dialect, named "postgres",
// "mysql" and "sqlite" (so `go test -run 'TestX/mysql'` picks a sink), each
// with its own fresh database. A dialect whose server is unreachable skips
// (or fails in CI) on its own. Call t.Parallel() inside fn to run the
// dialects concurrently.
func ForEachDialect(t *testing.T, fn func(t *testing.T, db *Database)) {
	t.Helper()
	for _, dialect := range Dialects {
		t.Run(dialect, func(t *testing.T) {
			fn(t, Open(t, dialect))
		})
	}
}

var postgresServer = &server{
	dialect:    DialectPostgres,
	envVar:     "BATCHFLOW_TEST_POSTGRES_DSN",
	defaultDSN: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
	howToStart: "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
	open: func(dsn string) (*sql.DB, error) {
		return sql.Open("pgx", dsn)
	},
	create: func(ctx context.Context, admin *sql.DB, name string) error {
		_, err := admin.ExecContext(ctx, "CREATE DATABASE "+quotePostgres(name))
		return err
	},
	drop: func(ctx context.Context, admin *sql.DB, name string) error {
		_, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quotePostgres(name)+" WITH (FORCE)")
		return err
	},
}

var mysqlServer = &server{
	dialect:    DialectMySQL,
	envVar:     "BATCHFLOW_TEST_MYSQL_DSN",
	defaultDSN: "mysql://root@127.0.0.1:3306/test",
	howToStart: "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
	open: func(dsn string) (*sql.DB, error) {
		cfg, err := mysqldsn.ParseURL(dsn)
		if err != nil {
			return nil, err
		}
		connector, err := gomysql.NewConnector(cfg)
		if err != nil {
			return nil, fmt.Errorf("mysql connector: %w", err)
		}
		return sql.OpenDB(connector), nil
	},
	create: func(ctx context.Context, admin *sql.DB, name string) error {
		_, err := admin.ExecContext(ctx, "CREATE DATABASE "+quoteMySQL(name))
		return err
	},
	drop: dropMySQL,
}

// dropMySQL kills the connections still using the database first: MySQL has
// no DROP DATABASE … FORCE, and a transaction the code under test left open
// would hold a metadata lock that blocks the drop until ddlTimeout.
func dropMySQL(ctx context.Context, admin *sql.DB, name string) error {
	procs, err := MySQLProcesses(ctx, admin)
	if err != nil {
		return err
	}
	for _, p := range procs {
		if p.DB == name && !p.Self {
			// Ignored: the connection may have ended by itself meanwhile.
			_, _ = admin.ExecContext(ctx, "KILL "+strconv.FormatInt(p.ID, 10))
		}
	}
	_, err = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteMySQL(name))
	return err
}

// MySQLProcess is one server connection as SHOW FULL PROCESSLIST lists it.
type MySQLProcess struct {
	ID   int64
	DB   string
	Info string // the statement running, if any
	Self bool   // the connection that asked
}

// MySQLProcesses lists the server's connections. It uses SHOW FULL
// PROCESSLIST rather than information_schema.processlist: on MariaDB 10.11
// every information_schema read builds an on-disk temporary table, and we saw
// the server crash while cleaning one up.
func MySQLProcesses(ctx context.Context, db *sql.DB) ([]MySQLProcess, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var self int64
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&self); err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	rows, err := conn.QueryContext(ctx, "SHOW FULL PROCESSLIST")
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var procs []MySQLProcess
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("list connections: %w", err)
		}
		var p MySQLProcess
		for i, c := range cols {
			switch strings.ToLower(c) {
			case "id":
				p.ID, _ = strconv.ParseInt(vals[i].String, 10, 64)
			case "db":
				p.DB = vals[i].String
			case "info":
				p.Info = vals[i].String
			}
		}
		p.Self = p.ID == self
		procs = append(procs, p)
	}
	return procs, rows.Err()
}

// openSQLite opens a file the way the SQLite sink is meant to: WAL, so
// readers and the one writer do not block each other, and a busy timeout, so
// two pools on the file wait for the lock instead of failing with SQLITE_BUSY.
func openSQLite(path string) (*sql.DB, error) {
	return sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
}

func quotePostgres(ident string) string {
	return `"` + strings.ReplaceAll(ident, `"`, `""`) + `"`
}

func quoteMySQL(ident string) string {
	return "`" + strings.ReplaceAll(ident, "`", "``") + "`"
}
