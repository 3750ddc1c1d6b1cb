package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestDatabasesAreDistinctUnderParallel runs several parallel tests per
// dialect that each create the same table: on a shared database the second
// CREATE TABLE fails or a test sees another's row.
func TestDatabasesAreDistinctUnderParallel(t *testing.T) {
	t.Parallel()
	for _, dialect := range Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			names := map[string]bool{}
			dsns := map[string]bool{}
			const tests = 4
			// t.Run of the group returns only when its parallel subtests end.
			t.Run("group", func(t *testing.T) {
				for i := range tests {
					t.Run(fmt.Sprint(i), func(t *testing.T) {
						t.Parallel()
						db := Open(t, dialect)
						db.Exec(t, "CREATE TABLE marker (v integer NOT NULL)")
						db.Exec(t, "INSERT INTO marker (v) VALUES ("+db.Placeholder(1)+")", i)
						require.Equal(t, int64(1), db.QueryInt(t, "SELECT count(*) FROM marker"))
						require.Equal(t, int64(i), db.QueryInt(t, "SELECT v FROM marker"))
						mu.Lock()
						defer mu.Unlock()
						names[db.Name] = true
						dsns[db.DSN] = true
					})
				}
			})
			if len(names) == 0 {
				t.Skipf("every %s test skipped", dialect)
			}
			require.Len(t, names, tests, "database names")
			require.Len(t, dsns, tests, "database DSNs")
		})
	}
}

// TestDataIsInvisibleAcrossDatabases writes through a connection opened from
// one database's DSN (as a sink would open it) and checks the other database
// does not have it.
func TestDataIsInvisibleAcrossDatabases(t *testing.T) {
	t.Parallel()
	ForEachDialect(t, func(t *testing.T, a *Database) {
		t.Parallel()
		b := Open(t, a.Dialect)
		require.NotEqual(t, a.Name, b.Name)

		viaDSN := openDSN(t, a)
		_, err := viaDSN.Exec("CREATE TABLE marker (v integer NOT NULL)")
		require.NoError(t, err)
		_, err = viaDSN.Exec("INSERT INTO marker (v) VALUES (42)")
		require.NoError(t, err)

		require.Equal(t, int64(42), a.QueryInt(t, "SELECT v FROM marker"), "the DSN and the DB of one Database reach the same database")
		require.Equal(t, int64(1), countTables(t, a, "marker"))
		require.Equal(t, int64(0), countTables(t, b, "marker"), "a table created in %s is visible in %s", a.Name, b.Name)
	})
}

// TestDatabaseIsGoneAfterCleanup leaves a connection open inside a
// transaction, as a crashed sink would, and checks the cleanup still drops
// the database and closes the test's pool.
func TestDatabaseIsGoneAfterCleanup(t *testing.T) {
	t.Parallel()
	for _, s := range []*server{postgresServer, mysqlServer} {
		t.Run(s.dialect, func(t *testing.T) {
			t.Parallel()
			admin := s.connect(t)
			var db *Database
			// Opened on the outer test, so it outlives the inner one's cleanup.
			var leftover *sql.DB
			outer := t
			if !t.Run("use", func(t *testing.T) {
				db = s.newDatabase(t)
				require.Equal(t, int64(1), countDatabases(t, admin, s.dialect, db.Name))
				db.Exec(t, "CREATE TABLE marker (v integer)")
				leftover = openDSN(outer, db)
				tx, err := leftover.Begin()
				require.NoError(t, err)
				_, err = tx.Exec("INSERT INTO marker (v) VALUES (1)")
				require.NoError(t, err)
			}) {
				return
			}
			require.Equal(t, int64(0), countDatabases(t, admin, s.dialect, db.Name), "database %s still exists after cleanup", db.Name)
			require.ErrorContains(t, db.DB.Ping(), "database is closed")
		})
	}
}

func TestSQLiteDatabase(t *testing.T) {
	t.Parallel()
	var db *Database
	if !t.Run("use", func(t *testing.T) {
		db = SQLite(t)
		require.Equal(t, "sqlite://"+db.Name, db.DSN)
		require.True(t, strings.HasPrefix(db.Name, "/"), "absolute path")
		var mode string
		require.NoError(t, db.DB.QueryRow("PRAGMA journal_mode").Scan(&mode))
		require.Equal(t, "wal", mode)
		require.Equal(t, int64(5000), db.QueryInt(t, "PRAGMA busy_timeout"))
	}) {
		return
	}
	require.ErrorContains(t, db.DB.Ping(), "database is closed")
}

func TestUnreachableFailsInCIAndSkipsElsewhere(t *testing.T) {
	t.Parallel()
	s := &server{
		dialect:    DialectPostgres,
		envVar:     "BATCHFLOW_TEST_POSTGRES_DSN",
		howToStart: "pg_ctlcluster … start",
		open:       postgresServer.open,
		dsn:        "postgres://postgres:hunter2@127.0.0.1:1/x?sslmode=disable",
	}
	start := time.Now()
	_, configErr, reachErr := s.probe(s.dsn)
	require.NoError(t, configErr)
	require.Error(t, reachErr)
	require.Less(t, time.Since(start), reachTimeout+time.Second)

	for _, tc := range []struct {
		ci   string
		fail bool
	}{
		{"", false}, {"false", false}, {"FALSE", false}, {"0", false},
		{"true", true}, {"1", true}, {"yes", true},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			unreachable(rec, tc.ci, s, reachErr)
			if tc.fail {
				require.NotEmpty(t, rec.fatal, "CI=%q must fail", tc.ci)
				require.Empty(t, rec.skip)
				require.Contains(t, rec.fatal, "postgres://postgres:xxxxx@127.0.0.1:1/x")
				require.Contains(t, rec.fatal, "BATCHFLOW_TEST_POSTGRES_DSN")
			} else {
				require.NotEmpty(t, rec.skip, "CI=%q must skip", tc.ci)
				require.Empty(t, rec.fatal)
				require.Contains(t, rec.skip, "BATCHFLOW_TEST_POSTGRES_DSN")
				require.Contains(t, rec.skip, "pg_ctlcluster")
			}
			require.NotContains(t, rec.fatal+rec.skip, "hunter2")
		})
	}
}

// TestMalformedDSNIsAConfigError: a typo in the variable is a configuration
// error, which fails even outside CI instead of turning the suite into skips.
func TestMalformedDSNIsAConfigError(t *testing.T) {
	t.Parallel()
	s := &server{dialect: DialectMySQL, open: mysqlServer.open}
	_, configErr, _ := s.probe("mysql://root:hunter2@127.0.0.1:99999/test")
	require.Error(t, configErr)
	require.NotContains(t, configErr.Error(), "hunter2")
}

// recordingTB records Fatalf and Skipf instead of ending the test, so the
// decision can be checked without failing the real test.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper()                        {}
func (r *recordingTB) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recordingTB) Skipf(format string, a ...any)  { r.skip = fmt.Sprintf(format, a...) }

func TestDatabaseName(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^bf_[a-z0-9_]+_[0-9a-f]{8}$`)
	for _, tc := range []struct{ test, wantPrefix string }{
		{"TestBackfill", "bf_testbackfill_"},
		{"TestBackfill/postgres", "bf_testbackfill_postgres_"},
		{"TestX/with_spaces_and-dashes#01", "bf_testx_with_spaces_and_dashes_01_"},
		{"Test/ünïcode/", "bf_test_n_code_"},
		{strings.Repeat("TestVeryLongName", 10), "bf_testverylongnametestverylongnametestverylongnamet"},
		{"///", "bf_test_"},
	} {
		name := databaseName(tc.test)
		require.Regexp(t, valid, name)
		require.True(t, strings.HasPrefix(name, tc.wantPrefix), "%q → %q", tc.test, name)
		require.LessOrEqual(t, len(name), 63)
	}
	require.NotEqual(t, databaseName("TestSame"), databaseName("TestSame"))
}

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/bf_x?sslmode=disable"},
		{"postgres://u:p%2Fw@db.example", "postgres://u:p%2Fw@db.example/bf_x"},
		{"mysql://root@127.0.0.1:3306/test", "mysql://root@127.0.0.1:3306/bf_x"},
		{"mysql://root@unix(/run/mysqld/mysqld.sock)/test?tls=false", "mysql://root@unix(/run/mysqld/mysqld.sock)/bf_x?tls=false"},
		{"mysql://root@unix(/run/mysqld/mysqld.sock)", "mysql://root@unix(/run/mysqld/mysqld.sock)/bf_x"},
	} {
		got, err := withDatabase(tc.in, "bf_x")
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
	_, err := withDatabase("host=127.0.0.1 dbname=postgres", "bf_x")
	require.Error(t, err)
}

// TestJetStream publishes into a stream and reads the message back, on the
// in-process server and, over TCP from a separate connection, on the
// listening one.
func TestJetStream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *JS
	}{
		{"in-process", JetStream},
		{"listening", JetStreamListening},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var js *JS
			if !t.Run("use", func(t *testing.T) {
				js = tc.start(t)
				ctx := t.Context()
				stream, err := js.JetStream.CreateStream(ctx, jetstream.StreamConfig{Name: "TEST", Subjects: []string{"test.>"}})
				require.NoError(t, err)

				publisher := js.JetStream
				if tc.name == "listening" {
					u, err := url.Parse(js.URL)
					require.NoError(t, err)
					require.Equal(t, "127.0.0.1", u.Hostname())
					require.NotEqual(t, "0", u.Port())
					nc, err := nats.Connect(js.URL)
					require.NoError(t, err)
					defer nc.Close()
					publisher, err = jetstream.New(nc)
					require.NoError(t, err)
				} else {
					require.Empty(t, js.URL)
				}
				ack, err := publisher.Publish(ctx, "test.hello", []byte("world"))
				require.NoError(t, err)
				require.Equal(t, "TEST", ack.Stream)

				msg, err := stream.GetMsg(ctx, ack.Sequence)
				require.NoError(t, err)
				require.Equal(t, "test.hello", msg.Subject)
				require.Equal(t, "world", string(msg.Data))
			}) {
				return
			}
			require.True(t, js.Conn.IsClosed(), "connection closed at cleanup")
			require.False(t, js.Server.NATSServer().Running(), "server shut down at cleanup")
		})
	}
}

// TestJetStreamServersAreSeparate: a stream created in one test's server
// does not exist in another's.
func TestJetStreamServersAreSeparate(t *testing.T) {
	t.Parallel()
	a, b := JetStream(t), JetStream(t)
	_, err := a.JetStream.CreateStream(t.Context(), jetstream.StreamConfig{Name: "ONLY_A", Subjects: []string{"a.>"}})
	require.NoError(t, err)
	_, err = b.JetStream.Stream(t.Context(), "ONLY_A")
	require.True(t, errors.Is(err, jetstream.ErrStreamNotFound), "got %v", err)
}

// BenchmarkDatabase measures what one test pays for its own database.
func BenchmarkDatabase(b *testing.B) {
	for _, s := range []*server{postgresServer, mysqlServer} {
		b.Run(s.dialect, func(b *testing.B) {
			admin := s.connect(b)
			ctx := context.Background()
			for b.Loop() {
				name := databaseName(b.Name())
				if err := s.create(ctx, admin, name); err != nil {
					b.Fatal(err)
				}
				if err := s.drop(ctx, admin, name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run(DialectSQLite, func(b *testing.B) {
		for b.Loop() {
			db, err := openSQLite(b.TempDir() + "/test.db")
			if err != nil {
				b.Fatal(err)
			}
			if err := db.Ping(); err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
	})
}

// openDSN opens a database the way a sink would: from its DSN alone.
func openDSN(t testing.TB, d *Database) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	switch d.Dialect {
	case DialectPostgres:
		db, err = postgresServer.open(d.DSN)
	case DialectMySQL:
		db, err = mysqlServer.open(d.DSN)
	case DialectSQLite:
		u, perr := url.Parse(d.DSN)
		require.NoError(t, perr)
		require.Equal(t, "sqlite", u.Scheme)
		db, err = openSQLite(u.Path)
	}
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func countTables(t testing.TB, d *Database, table string) int64 {
	t.Helper()
	switch d.Dialect {
	case DialectPostgres:
		return d.QueryInt(t, "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1", table)
	case DialectMySQL:
		return d.QueryInt(t, "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?", table)
	default:
		return d.QueryInt(t, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", table)
	}
}

func countDatabases(t testing.TB, admin *sql.DB, dialect, name string) int64 {
	t.Helper()
	query := "SELECT count(*) FROM pg_database WHERE datname = $1"
	if dialect == DialectMySQL {
		query = "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?"
	}
	var n int64
	require.NoError(t, admin.QueryRow(query, name).Scan(&n))
	return n
}
