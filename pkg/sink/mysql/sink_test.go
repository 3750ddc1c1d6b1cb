package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/mysql"
)

// testBundle is one test's database and a sink opened on it.
type testBundle struct {
	db *testenv.Database
	s  *mysql.Sink
}

func setup(t *testing.T, opts sink.Options) *testBundle {
	t.Helper()
	db := testenv.MySQL(t)
	return &testBundle{db: db, s: openSink(t, db.DSN, opts)}
}

func openSink(t *testing.T, dsn string, opts sink.Options) *mysql.Sink {
	t.Helper()
	s, err := mysql.Open(testCtx(t), dsn, opts)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// dsnWith returns dsn with query parameters added.
func dsnWith(t *testing.T, dsn string, params url.Values) string {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	q := u.Query()
	for k, vs := range params {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// items creates items(id, n, label) with ids 1..n and returns its relation.
func (b *testBundle) items(t *testing.T, n int) sink.Relation {
	t.Helper()
	b.db.Exec(t, "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 0, label VARCHAR(10))")
	rows := make([]string, n)
	for i := range rows {
		rows[i] = fmt.Sprintf("(%d, 'L%d')", i+1, i+1)
	}
	b.db.Exec(t, "INSERT INTO items (id, label) VALUES "+strings.Join(rows, ", "))
	return b.relation(t, "items")
}

func (b *testBundle) relation(t *testing.T, table string) sink.Relation {
	t.Helper()
	tbl, err := b.s.Table(testCtx(t), table)
	require.NoError(t, err)
	col, err := tbl.BatchColumn("")
	require.NoError(t, err)
	return sink.Relation{Table: tbl, Column: col.Name, Key: col.Key}
}

// apply runs one sub-batch of change from the batch's checkpoint, limit
// rows long.
func (b *testBundle) apply(t *testing.T, migration string, rel sink.Relation, r sink.Range, limit int, change sink.Change) (sink.Result, error) {
	t.Helper()
	return b.applyTo(t, migration, rel, r, batches.Key{}, limit, change)
}

// applyTo runs one sub-batch of change from the batch's checkpoint: up to
// hi if it is not null, else limit rows long.
func (b *testBundle) applyTo(t *testing.T, migration string, rel sink.Relation, r sink.Range, hi batches.Key, limit int, change sink.Change) (sink.Result, error) {
	t.Helper()
	cp, err := b.s.BeginBatch(testCtx(t), migration, 0, rel.Key)
	require.NoError(t, err)
	return b.s.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: migration, Relation: rel, Batch: r, From: cp.Key, Hi: hi, Limit: limit}, change)
}

func setChange(rel sink.Relation, set string) sink.Change {
	return kinds.SQL(rel, batches.SQLArgs{Set: set})
}

func TestOpenDetectsServer(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	var version string
	require.NoError(t, b.db.DB.QueryRow("SELECT VERSION()").Scan(&version))
	server := b.s.Server()
	require.Equal(t, version, server.Version)
	if strings.Contains(version, "MariaDB") {
		require.Equal(t, mysql.FlavourMariaDB, server.Flavour)
	} else {
		require.Equal(t, mysql.FlavourMySQL, server.Flavour)
	}
	require.Positive(t, server.Major)
	require.True(t, server.AtLeast(server.Major, server.Minor, server.Patch))
	require.False(t, server.AtLeast(server.Major+1, 0, 0))
	require.Equal(t, "mysql", b.s.Dialect().Name())
}

// sessionVars reads session variables on every connection of the sink's
// pool at once, so each is a different connection.
func sessionVars(t *testing.T, s *mysql.Sink, conns int, names ...string) []map[string]string {
	t.Helper()
	ctx := testCtx(t)
	held := make([]*sql.Conn, conns)
	for i := range held {
		c, err := s.DB().Conn(ctx)
		require.NoError(t, err)
		held[i] = c
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	cols := make([]string, len(names))
	for i, n := range names {
		cols[i] = "@@SESSION." + n
	}
	var out []map[string]string
	ids := map[int64]bool{}
	for _, c := range held {
		var id int64
		vals := make([]sql.NullString, len(names))
		dest := []any{&id}
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		require.NoError(t, c.QueryRowContext(ctx, "SELECT CONNECTION_ID(), "+strings.Join(cols, ", ")).Scan(dest...))
		ids[id] = true
		m := map[string]string{}
		for i, n := range names {
			m[n] = vals[i].String
		}
		out = append(out, m)
	}
	require.Len(t, ids, conns, "distinct connections")
	return out
}

func TestSessionSafeguardsOnEveryConnection(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{
		MaxConns:                 3,
		LockTimeout:              1500 * time.Millisecond, // rounds up to 2
		IdleInTransactionTimeout: 7 * time.Second,
		StatementTimeout:         2500 * time.Millisecond,
	})
	flavour := b.s.Server().Flavour
	names := []string{"innodb_lock_wait_timeout", "lock_wait_timeout", "sql_mode"}
	if flavour == mysql.FlavourMariaDB {
		names = append(names, "idle_transaction_timeout", "max_statement_time")
	} else {
		names = append(names, "wait_timeout", "max_execution_time")
	}
	for _, vars := range sessionVars(t, b.s, 3, names...) {
		require.Equal(t, "2", vars["innodb_lock_wait_timeout"])
		require.Equal(t, "2", vars["lock_wait_timeout"])
		require.Contains(t, strings.Split(vars["sql_mode"], ","), "STRICT_TRANS_TABLES")
		require.Contains(t, strings.Split(vars["sql_mode"], ","), "ERROR_FOR_DIVISION_BY_ZERO")
		if flavour == mysql.FlavourMariaDB {
			require.Equal(t, "7", vars["idle_transaction_timeout"])
			secs, err := strconv.ParseFloat(vars["max_statement_time"], 64)
			require.NoError(t, err)
			require.InDelta(t, 2.5, secs, 1e-9)
		} else {
			require.Equal(t, "7", vars["wait_timeout"])
			require.Equal(t, "2500", vars["max_execution_time"])
		}
	}
}

// TestTransactionPoolSessions: the connections sub-batches with the
// caller's upper key run on have autocommit off and the same safeguards as
// the main pool's; between sub-batches they are in no transaction, so the
// server's idle-in-transaction timeout leaves them alone in the pool.
func TestTransactionPoolSessions(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{MaxConns: 1, LockTimeout: 1500 * time.Millisecond, IdleInTransactionTimeout: time.Second, StatementTimeout: 2500 * time.Millisecond})
	if b.s.Server().Flavour != mysql.FlavourMariaDB {
		t.Skip("@@in_transaction and idle_transaction_timeout are MariaDB's")
	}
	rel := b.items(t, 100)
	session := func() []string {
		row, err := b.s.TxPoolRow(testCtx(t), "SELECT @@in_transaction, CONNECTION_ID(), @@autocommit, @@innodb_lock_wait_timeout, "+
			"@@lock_wait_timeout, @@idle_transaction_timeout, @@max_statement_time, @@sql_mode")
		require.NoError(t, err)
		return row
	}
	first := session()
	require.Equal(t, "0", first[0], "not in a transaction")
	require.Equal(t, []string{"0", "2", "2", "1", "2.5"}, first[2:7], "autocommit off, the safeguards on")
	require.Contains(t, strings.Split(first[7], ","), "STRICT_TRANS_TABLES")

	_, err := b.applyTo(t, "pool", rel, sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(100)}, batches.IntKey(50), 0, setChange(rel, "n = n + 1"))
	require.NoError(t, err)
	_, err = b.applyTo(t, "pool_error", rel, sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(100)}, batches.IntKey(50), 0, setChange(rel, "n = NULL"))
	require.Error(t, err)
	time.Sleep(2500 * time.Millisecond) // past idle_transaction_timeout
	after := session()
	require.Equal(t, "0", after[0], "the sub-batches ended their transactions")
	require.Equal(t, first[1], after[1], "the same connection, not ended by the server")
	require.Equal(t, int64(50), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
}

func TestLockTimeoutRoundsUpToOneSecond(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{LockTimeout: 10 * time.Millisecond})
	vars := sessionVars(t, b.s, 1, "innodb_lock_wait_timeout")
	require.Equal(t, "1", vars[0]["innodb_lock_wait_timeout"], "MySQL's unit is the second; 0 would mean NOWAIT")
}

// TestDSNSessionVariables: a variable the DSN sets wins over Options, and a
// lax sql_mode from the DSN is made strict, not dropped.
func TestDSNSessionVariables(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	dsn := dsnWith(t, db.DSN, url.Values{"innodb_lock_wait_timeout": {"9"}, "sql_mode": {"'NO_ENGINE_SUBSTITUTION'"}})
	s := openSink(t, dsn, sink.Options{LockTimeout: time.Second})
	vars := sessionVars(t, s, 1, "innodb_lock_wait_timeout", "sql_mode")[0]
	require.Equal(t, "9", vars["innodb_lock_wait_timeout"])
	require.ElementsMatch(t, []string{"NO_ENGINE_SUBSTITUTION", "STRICT_TRANS_TABLES", "ERROR_FOR_DIVISION_BY_ZERO"}, strings.Split(vars["sql_mode"], ","))
}

// TestStrictModeEnforced: with the server's or DSN's sql_mode lax, a value
// too long for its column is still an error (a data error, the sub-batch
// rolled back), never a silent truncation.
func TestStrictModeEnforced(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	b := &testBundle{db: db, s: openSink(t, dsnWith(t, db.DSN, url.Values{"sql_mode": {"''"}}), sink.Options{})}
	rel := b.items(t, 20)

	// The same statement on a lax session truncates without a word.
	lax, err := db.DB.Conn(testCtx(t))
	require.NoError(t, err)
	defer lax.Close()
	_, err = lax.ExecContext(testCtx(t), "SET SESSION sql_mode = ''")
	require.NoError(t, err)
	_, err = lax.ExecContext(testCtx(t), "UPDATE items SET label = REPEAT('x', 50) WHERE id = 20")
	require.NoError(t, err, "a lax session truncates")
	require.Equal(t, int64(10), db.QueryInt(t, "SELECT LENGTH(label) FROM items WHERE id = 20"))

	_, err = b.apply(t, "strict", rel, sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(19)}, 10, setChange(rel, "label = REPEAT('x', 50)"))
	require.Error(t, err)
	require.Equal(t, batches.ClassData, b.s.Classify(err), "%v", err)
	require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE id < 20 AND label LIKE 'xx%'"), "nothing truncated or applied")

	_, err = b.apply(t, "div", rel, sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(19)}, 10, setChange(rel, "n = 1 / (id - id)"))
	require.Error(t, err, "division by zero is an error, not NULL")
	require.Equal(t, batches.ClassData, b.s.Classify(err), "%v", err)
}

// TestStatementTimeout: a statement running past StatementTimeout is
// cancelled by the server (MariaDB's max_statement_time; on MySQL the
// client's deadline for writes) with a transient error, and a write's
// sub-batch is rolled back.
func TestStatementTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{StatementTimeout: 500 * time.Millisecond})
	rel := b.items(t, 10)

	started := time.Now()
	_, err := b.s.Throttled(testCtx(t), "SELECT SLEEP(5) = 0")
	require.Error(t, err)
	t.Logf("statement timeout: %v", err)
	require.Equal(t, batches.ClassTransient, b.s.Classify(err), "%v", err)
	require.Less(t, time.Since(started), 3*time.Second)

	for _, hi := range []batches.Key{{}, batches.IntKey(10)} { // both protocols
		migration := fmt.Sprintf("slow_%s", hi)
		started = time.Now()
		_, err = b.applyTo(t, migration, rel, sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(10)}, hi, 10, setChange(rel, "n = n + 1 + SLEEP(0.3)"))
		require.Error(t, err)
		require.Equal(t, batches.ClassTransient, b.s.Classify(err), "%v", err)
		require.Less(t, time.Since(started), 3*time.Second, "ten rows of 0.3 s were cut short")
		require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"))
		cp, err := b.s.BeginBatch(testCtx(t), migration, 0, rel.Key)
		require.NoError(t, err)
		require.True(t, cp.Key.IsNull(), "the checkpoint did not move")
	}
}

// TestCancelledSubBatch: a sub-batch whose context ends mid-statement
// fails (transient), commits nothing, and its connection, whose
// transaction state is unknown, is not reused: the next sub-batch, on a
// one-connection pool, runs on a fresh one.
func TestCancelledSubBatch(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{MaxConns: 1})
	rel := b.items(t, 10)
	r := sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(10)}
	cp, err := b.s.BeginBatch(testCtx(t), "cancel", 0, rel.Key)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	_, err = b.s.ApplySubBatch(ctx, sink.SubBatch{Migration: "cancel", Relation: rel, Batch: r, From: cp.Key, Hi: batches.IntKey(5)}, setChange(rel, "n = n + 1 + SLEEP(0.2)"))
	require.Error(t, err)
	require.Equal(t, batches.ClassTransient, b.s.Classify(err), "%v", err)

	res, err := b.s.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "cancel", Relation: rel, Batch: r, From: cp.Key, Hi: batches.IntKey(5)}, setChange(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(5), res.Rows)
	require.Eventually(t, func() bool { // the cancelled statement ends on the server, rolled back
		return b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1") == 5
	}, 5*time.Second, 50*time.Millisecond)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n > 1"))
	require.Equal(t, int64(5), b.db.QueryInt(t, "SELECT rows_affected FROM batchflow_ledger WHERE migration = 'cancel'"))
}

// TestIdleInTransactionTimeout: an executor that stops talking in the
// middle of its transaction (frozen, partitioned) is disconnected by the
// server; its transaction rolls back and releases the batch's ledger row.
func TestIdleInTransactionTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{IdleInTransactionTimeout: time.Second})
	rel := b.items(t, 10)
	frozen := sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		q := sink.NewBuilder(tx.Dialect())
		q.SQL("UPDATE items SET n = n + 1 WHERE ").Write(s.Rows)
		n, err := tx.Exec(ctx, q.String(), q.Args()...)
		if err != nil {
			return 0, err
		}
		time.Sleep(3 * time.Second) // idle in transaction, holding the ledger row
		return n, nil
	}}
	_, err := b.apply(t, "frozen", rel, sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(10)}, 5, frozen)
	require.Error(t, err, "the server ended the idle transaction")
	t.Logf("idle in transaction: %v", err)
	require.Equal(t, batches.ClassTransient, b.s.Classify(err), "%v", err)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"), "rolled back")

	// The batch's row is free: another executor applies the sub-batch.
	other := openSink(t, b.db.DSN, sink.Options{LockTimeout: time.Second})
	res, err := other.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "frozen", Relation: rel,
		Batch: sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(10)}, Limit: 5}, setChange(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(5), res.Rows)
}

func TestPoolSurvivesServerIdleTimeout(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits for an idle timeout")
	}
	b := setup(t, sink.Options{IdleInTransactionTimeout: time.Second})
	// On MySQL the idle timeout is wait_timeout itself; on MariaDB set it
	// low too, so the pool's idle limit is what saves the next query.
	_, err := b.s.DB().Exec("SET SESSION wait_timeout = 1")
	require.NoError(t, err)
	time.Sleep(2500 * time.Millisecond)
	for range 3 {
		yes, err := b.s.Throttled(testCtx(t), "SELECT 1")
		require.NoError(t, err, "a connection the server dropped is replaced, not returned as an error")
		require.True(t, yes)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)
	u, err := url.Parse(db.DSN)
	require.NoError(t, err)

	wrong := *u
	wrong.User = url.UserPassword("root", "hunter2-secret")
	_, err = mysql.Open(testCtx(t), wrong.String(), sink.Options{})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2-secret")
	require.Equal(t, batches.ClassFatal, mysql.Classify(err), "%v", err)

	noDB := *u
	noDB.Path = ""
	_, err = mysql.Open(testCtx(t), noDB.String(), sink.Options{})
	require.ErrorIs(t, err, mysql.ErrInvalidURL)
	require.Contains(t, err.Error(), "no database")

	down := *u
	down.Host = "127.0.0.1:1" // nothing listens on port 1
	down.User = url.UserPassword("root", "hunter2-secret")
	_, err = mysql.Open(testCtx(t), down.String(), sink.Options{})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2-secret")
	require.Equal(t, batches.ClassTransient, mysql.Classify(err), "a server that is down may come back: %v", err)

	_, err = sink.Open(testCtx(t), "mysql://root:hunter2-secret@127.0.0.1:1/x?timeout=nope", sink.Options{})
	require.ErrorIs(t, err, mysql.ErrInvalidURL, "the sink is registered for mysql://")
	require.NotContains(t, err.Error(), "hunter2-secret")
}

func TestThrottledValues(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	for query, want := range map[string]bool{
		"SELECT 1": true, "SELECT 0": false, "SELECT TRUE": true, "SELECT 2 > 3": false,
		"SELECT 't'": true, "SELECT 'f'": false, "SELECT 'true'": true, "SELECT 'FALSE'": false,
		"SELECT CAST(1 AS UNSIGNED)": true, "SELECT 1, 'extra columns are ignored'": true,
	} {
		got, err := b.s.Throttled(testCtx(t), query)
		require.NoError(t, err, query)
		require.Equal(t, want, got, query)
	}
	for _, query := range []string{"SELECT NULL", "SELECT 'maybe'", "SELECT 1 FROM DUAL WHERE 1 = 0"} {
		_, err := b.s.Throttled(testCtx(t), query)
		require.Error(t, err, "%s is not a yes or a no", query)
	}
}

// TestConcurrentSubBatchesShareStatements runs executors on separate
// batches at once through one sink: the statement cache and the pool hold
// up under -race, and the pool never deadlocks on a prepare.
func TestConcurrentSubBatchesShareStatements(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{MaxConns: 2})
	rel := b.items(t, 2000)
	change := setChange(rel, "n = n + 1")
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			lo, hi := int64(w*333), int64(min((w+1)*333, 2000))
			if w == 5 {
				hi = 2000
			}
			cp, err := b.s.BeginBatch(testCtx(t), "shared", int64(w), rel.Key)
			if !assertNoError(t, err) {
				return
			}
			from := cp.Key
			for {
				res, err := b.s.ApplySubBatch(testCtx(t), sink.SubBatch{Migration: "shared", Seq: int64(w), Relation: rel,
					Batch: sink.Range{Lo: batches.IntKey(lo), Hi: batches.IntKey(hi)}, From: from, Limit: 17}, change)
				if !assertNoError(t, err) || res.Done {
					return
				}
				from = res.Checkpoint
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(2000), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

// uniqueUser returns a user name no other test uses.
func uniqueUser(prefix string) string {
	return fmt.Sprintf("%s_%08x", prefix, rand.Uint32())
}
