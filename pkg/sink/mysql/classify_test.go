package mysql_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/mysql"
)

// TestClassifyInduced makes the server refuse sub-batches for each reason
// a migration meets, through ApplySubBatch, and checks the error number the
// server sent, its class, and that nothing was applied.
func TestClassifyInduced(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, "CREATE TABLE parents (id INT PRIMARY KEY)")
	b.db.Exec(t, "INSERT INTO parents VALUES (1)")
	b.db.Exec(t, `CREATE TABLE items (
		id BIGINT NOT NULL PRIMARY KEY,
		n INT NOT NULL DEFAULT 0,
		small TINYINT NOT NULL DEFAULT 0,
		label VARCHAR(10),
		code INT,
		parent INT,
		positive INT NOT NULL DEFAULT 1,
		UNIQUE KEY (code),
		FOREIGN KEY (parent) REFERENCES parents (id),
		CONSTRAINT positive_ck CHECK (positive > 0)
	)`)
	b.db.Exec(t, "INSERT INTO items (id, label) VALUES (1, 'one'), (2, 'two'), (3, 'x3'), (4, '4'), (5, 'five')")
	rel := b.relation(t, "items")
	r := sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(5)}

	for i, tc := range []struct {
		set    string
		number uint16
		class  batches.ErrorClass
	}{
		{"n = NULL", 1048, batches.ClassData},                  // NOT NULL
		{"code = 7", 1062, batches.ClassData},                  // duplicate key
		{"small = 1000", 1264, batches.ClassData},              // out of range
		{"n = 2147483647 + id", 1264, batches.ClassData},       // out of range
		{"n = CAST(label AS SIGNED)", 1292, batches.ClassData}, // bad cast
		{"n = label", 1366, batches.ClassData},                 // bad value for the column
		{"label = REPEAT('x', 11)", 1406, batches.ClassData},   // too long
		{"parent = 2", 1452, batches.ClassData},                // foreign key
		{"n = 1 / 0", 1365, batches.ClassData},                 // division by zero
		{"n = (SELECT id FROM parents UNION SELECT 2)", 1242, batches.ClassData},
		{"no_such_column = 1", 1054, batches.ClassFatal},      // unknown column
		{"n = = 1", 1064, batches.ClassFatal},                 // syntax
		{"n = no_such_function(1)", 1305, batches.ClassFatal}, // unknown function
		{"n = (SELECT 1 FROM no_such_table)", 1146, batches.ClassFatal},
	} {
		// Both protocols: counting rows (lock first) and the caller's upper key (change first).
		for _, hi := range []batches.Key{{}, r.Hi} {
			_, err := b.applyTo(t, fmt.Sprintf("induced_%d_%s", i, hi), rel, r, hi, 5, setChange(rel, tc.set))
			require.Error(t, err, tc.set)
			var me *gomysql.MySQLError
			require.True(t, errors.As(err, &me), "%s: %T %v", tc.set, err, err)
			require.Equal(t, tc.number, me.Number, "%s: %v", tc.set, err)
			require.Equal(t, tc.class, b.s.Classify(err), "%s: %v", tc.set, err)
			require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0 OR code IS NOT NULL OR parent IS NOT NULL OR small <> 0"), tc.set)
		}
	}

	// Check constraints: enforced from MySQL 8.0.16 (3819) and MariaDB 10.2 (4025).
	_, err := b.apply(t, "check", rel, r, 5, setChange(rel, "positive = -id"))
	require.Error(t, err)
	var me *gomysql.MySQLError
	require.True(t, errors.As(err, &me), "%v", err)
	require.Contains(t, []uint16{3819, 4025}, me.Number, "%v", err)
	require.Equal(t, batches.ClassData, b.s.Classify(err))
}

// TestClassifyPrivileges connects as a user allowed to read the table but
// not write it, and as one without access to the database at all.
func TestClassifyPrivileges(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 10)
	require.NoError(t, b.s.EnsureLedger(testCtx(t)))

	user := uniqueUser("bf_ro")
	b.db.Exec(t, "CREATE USER '"+user+"'@'%' IDENTIFIED BY 'pw'")
	t.Cleanup(func() { b.db.Exec(t, "DROP USER IF EXISTS '"+user+"'@'%'") })
	b.db.Exec(t, "GRANT SELECT ON `"+b.db.Name+"`.items TO '"+user+"'@'%'")
	b.db.Exec(t, "GRANT SELECT, INSERT, UPDATE ON `"+b.db.Name+"`.batchflow_ledger TO '"+user+"'@'%'")
	u, err := url.Parse(b.db.DSN)
	require.NoError(t, err)
	u.User = url.UserPassword(user, "pw")
	ro := openSink(t, u.String(), sink.Options{})

	_, err = ro.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "ro", Relation: rel, Batch: sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(10)}, Limit: 5},
		setChange(rel, "n = n + 1"))
	require.ErrorIs(t, err, sink.ErrCheckpointMoved, "no ledger row yet")
	_, err = ro.BeginBatch(testCtx(t), "ro", 0, rel.Key)
	require.NoError(t, err)
	_, err = ro.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "ro", Relation: rel, Batch: sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(10)}, Limit: 5},
		setChange(rel, "n = n + 1"))
	requireNumber(t, err, 1142)
	require.Equal(t, batches.ClassFatal, ro.Classify(err))

	// No privilege on the database at all: refused at connect.
	stranger := uniqueUser("bf_none")
	b.db.Exec(t, "CREATE USER '"+stranger+"'@'%' IDENTIFIED BY 'pw'")
	t.Cleanup(func() { b.db.Exec(t, "DROP USER IF EXISTS '"+stranger+"'@'%'") })
	u.User = url.UserPassword(stranger, "pw")
	_, err = mysql.Open(testCtx(t), u.String(), sink.Options{})
	requireNumber(t, err, 1044)
	require.Equal(t, batches.ClassFatal, mysql.Classify(err))
}

// TestClassifyTooManyConnections: a user at its connection limit is refused
// (1226 for an account's MAX_USER_CONNECTIONS, 1203 for the server's
// max_user_connections: 1040's per-user twins), which clears when
// connections are released: transient.
func TestClassifyTooManyConnections(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	user := uniqueUser("bf_two")
	b.db.Exec(t, "CREATE USER '"+user+"'@'%' IDENTIFIED BY 'pw' WITH MAX_USER_CONNECTIONS 2")
	t.Cleanup(func() { b.db.Exec(t, "DROP USER IF EXISTS '"+user+"'@'%'") })
	b.db.Exec(t, "GRANT ALL ON `"+b.db.Name+"`.* TO '"+user+"'@'%'")
	u, err := url.Parse(b.db.DSN)
	require.NoError(t, err)
	u.User = url.UserPassword(user, "pw")
	s := openSink(t, u.String(), sink.Options{})

	var held []*sql.Conn // the two connections allowed
	require.Eventually(t, func() bool {
		c, err := s.DB().Conn(testCtx(t))
		if err == nil {
			held = append(held, c)
		}
		return len(held) == 2
	}, 10*time.Second, 50*time.Millisecond)
	_, err = mysql.Open(testCtx(t), u.String(), sink.Options{})
	var me *gomysql.MySQLError
	require.True(t, errors.As(err, &me), "%v", err)
	require.Contains(t, []uint16{1203, 1226}, me.Number, "%v", err)
	require.Equal(t, batches.ClassTransient, mysql.Classify(err))

	for _, c := range held {
		c.Close()
	}
	require.NoError(t, s.Close())
	require.Eventually(t, func() bool {
		again, err := mysql.Open(testCtx(t), u.String(), sink.Options{})
		if err != nil {
			return false
		}
		again.Close()
		return true
	}, 10*time.Second, 50*time.Millisecond, "the limit clears")
}

// killWhenRunning kills (KILL CONNECTION, or KILL QUERY with query) the
// connection of db's database running a statement that starts with prefix,
// once it shows in SHOW FULL PROCESSLIST.
func killWhenRunning(t *testing.T, db *testenv.Database, prefix string, query bool) {
	t.Helper()
	kill := "KILL CONNECTION "
	if query {
		kill = "KILL QUERY "
	}
	require.Eventually(t, func() bool {
		procs, err := testenv.MySQLProcesses(testCtx(t), db.DB)
		if err != nil {
			return false
		}
		for _, p := range procs {
			if p.DB == db.Name && strings.HasPrefix(p.Info, prefix) {
				_, err = db.DB.Exec(kill + strconv.FormatInt(p.ID, 10))
				return err == nil
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)
}

// TestClassifyKilledConnection kills the sink's connection in the middle
// of a sub-batch's transaction (the change sleeps on the server), in both
// protocols: transient, nothing applied, and the sink goes on with a new
// connection.
func TestClassifyKilledConnection(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{MaxConns: 1})
	rel := b.items(t, 10)
	r := sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(10)}
	for _, hi := range []batches.Key{{}, batches.IntKey(5)} {
		errc := make(chan error, 1)
		migration := fmt.Sprintf("killed_%s", hi)
		go func() {
			_, err := b.applyTo(t, migration, rel, r, hi, 5, setChange(rel, "n = n + 1 + SLEEP(2)"))
			errc <- err
		}()
		killWhenRunning(t, b.db, "UPDATE", false)
		err := <-errc
		require.Error(t, err)
		require.Equal(t, batches.ClassTransient, b.s.Classify(err), "%T %v", err, err)
		require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"))

		res, err := b.applyTo(t, migration, rel, r, hi, 5, setChange(rel, "n = 0"))
		require.NoError(t, err, "the sink recovers with a new connection")
		require.Equal(t, batches.IntKey(5), res.Checkpoint)
	}

	// KILL QUERY ends the statement, not the session: 1317, transient too.
	errc := make(chan error, 1)
	go func() {
		_, err := b.s.Throttled(testCtx(t), "SELECT SLEEP(5) = 0")
		errc <- err
	}()
	killWhenRunning(t, b.db, "SELECT SLEEP(5)", true)
	err := <-errc
	t.Logf("KILL QUERY: %v", err)
	require.Equal(t, batches.ClassTransient, b.s.Classify(err), "%T %v", err, err)
}

// TestClassifyReadOnly: a read-only transaction refuses writes (1792), as a
// replica or a server in read-only mode does (1290, 1836): fatal.
func TestClassifyReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.items(t, 1)
	tx, err := b.db.DB.BeginTx(testCtx(t), &sql.TxOptions{ReadOnly: true})
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck
	_, err = tx.Exec("UPDATE items SET n = 1")
	requireNumber(t, err, 1792)
	require.Equal(t, batches.ClassFatal, b.s.Classify(err))
}

// TestClassifyNumbers pins the whole mapping, including errors a test
// cannot provoke on a shared server (shutdown, too many connections).
func TestClassifyNumbers(t *testing.T) {
	t.Parallel()
	classes := map[batches.ErrorClass][]uint16{
		batches.ClassTransient: {1213, 1205, 1040, 1203, 1053, 1927, 1317, 2006, 2013, 3024, 1969, 4031, 1206, 1412},
		batches.ClassData:      {1048, 1062, 1264, 1690, 1265, 1292, 1366, 1406, 1451, 1452, 3819, 4025, 1365},
		batches.ClassFatal:     {1044, 1045, 1142, 1143, 1227, 1146, 1054, 1064, 1290, 1792, 1836, 9999},
	}
	for want, numbers := range classes {
		for _, n := range numbers {
			err := fmt.Errorf("apply sub-batch: %w", &gomysql.MySQLError{Number: n, Message: "x"})
			require.Equal(t, want, mysql.Classify(err), "error %d", n)
		}
	}
	for _, err := range []error{
		gomysql.ErrInvalidConn, driver.ErrBadConn, sql.ErrConnDone, io.ErrUnexpectedEOF,
		context.Canceled, context.DeadlineExceeded, syscall.ECONNRESET, syscall.ECONNREFUSED,
		&net.OpError{Op: "dial", Err: errors.New("no route to host")},
	} {
		require.Equal(t, batches.ClassTransient, mysql.Classify(fmt.Errorf("x: %w", err)), "%v", err)
	}
	require.Equal(t, batches.ClassCheckpointMoved, mysql.Classify(fmt.Errorf("x: %w", sink.ErrCheckpointMoved)))
	require.Equal(t, batches.ClassFatal, mysql.Classify(errors.New("something nobody understood")))
}

func requireNumber(t *testing.T, err error, number uint16) {
	t.Helper()
	var me *gomysql.MySQLError
	require.True(t, errors.As(err, &me), "want MySQL error %d, got %T %v", number, err, err)
	require.Equal(t, number, me.Number, "%v", err)
}
