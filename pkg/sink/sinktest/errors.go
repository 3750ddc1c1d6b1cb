package sinktest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// testTransientLockTimeout: a second connection holds a lock on rows of the
// sub-batch; the sink gives up after its lock timeout with a transient
// error (the executor retries in place) and changes nothing.
func testTransientLockTimeout(t *testing.T, b *bundle) {
	b.createItems(t, gappedIDs(50))
	short := b.open(t, b.db.DSN, sink.Options{LockTimeout: 300 * time.Millisecond})
	rel := b.relation(t, "items", "", "")
	r := b.plan(t, rel, 50)[0]
	cp, err := short.BeginBatch(ctx(t), "locked", 0, rel.Key)
	require.NoError(t, err)

	conn, err := b.db.DB.Conn(ctx(t))
	require.NoError(t, err)
	defer conn.Close()
	if b.dialect == "sqlite" {
		_, err = conn.ExecContext(ctx(t), "BEGIN IMMEDIATE")
		require.NoError(t, err)
		_, err = conn.ExecContext(ctx(t), "UPDATE items SET label = 'held'")
	} else {
		_, err = conn.ExecContext(ctx(t), "BEGIN")
		require.NoError(t, err)
		_, err = conn.ExecContext(ctx(t), "UPDATE items SET label = 'held'")
	}
	require.NoError(t, err)
	defer conn.ExecContext(context.Background(), "ROLLBACK") //nolint:errcheck

	started := time.Now()
	_, err = short.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "locked", Seq: 0, Relation: rel, Batch: r, From: cp.Key, Limit: 10}, setChange(rel, "n = n + 1"))
	b.requireClass(t, err, batches.ClassTransient)
	// MySQL's lock wait timeout has a one-second granularity.
	require.Less(t, time.Since(started), 5*time.Second, "the lock timeout bounds the wait")
	_, err = conn.ExecContext(ctx(t), "ROLLBACK")
	require.NoError(t, err)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"))
}

// testTransientConnectionLost kills the sink's connection in the middle of
// a query: a transient error, and the sink keeps working afterwards.
func testTransientConnectionLost(t *testing.T, b *bundle) {
	var sleep, kill string
	switch b.dialect {
	case "postgres":
		sleep = "SELECT pg_sleep(20) IS NULL"
		kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(20)%' AND pid <> pg_backend_pid()"
	case "mysql":
		sleep = "SELECT SLEEP(20) = 42"
		kill = "" // KILL needs the id, found below
	default:
		t.Skip("SQLite runs in the process: there is no connection to lose")
	}
	errc := make(chan error, 1)
	go func() {
		_, err := b.sink.Throttled(ctx(t), sleep)
		errc <- err
	}()
	require.Eventually(t, func() bool {
		if b.dialect == "mysql" {
			procs, err := testenv.MySQLProcesses(ctx(t), b.db.DB)
			if err != nil {
				return false
			}
			for _, p := range procs {
				if strings.HasPrefix(p.Info, "SELECT SLEEP(20)") {
					_, err = b.db.DB.ExecContext(ctx(t), fmt.Sprintf("KILL CONNECTION %d", p.ID))
					return err == nil
				}
			}
			return false
		}
		var killed int64
		rows, err := b.db.DB.QueryContext(ctx(t), kill)
		if err != nil {
			return false
		}
		defer rows.Close()
		for rows.Next() {
			killed++
		}
		return killed > 0
	}, 10*time.Second, 50*time.Millisecond)

	select {
	case err := <-errc:
		b.requireClass(t, err, batches.ClassTransient)
	case <-time.After(15 * time.Second):
		t.Fatal("the query outlived its connection")
	}
	throttled, err := b.sink.Throttled(ctx(t), "SELECT 1 = 1")
	require.NoError(t, err, "the sink recovers with a new connection")
	require.True(t, throttled)
}

// testTransientDeadlock provokes a real deadlock between two transactions
// and checks the sink classifies the driver's error as transient.
func testTransientDeadlock(t *testing.T, b *bundle) {
	if b.dialect == "sqlite" {
		t.Skip("SQLite has one writer at a time: it reports busy (tested with the lock timeout), never a deadlock")
	}
	b.createItems(t, []int64{1, 2})
	one, err := b.db.DB.BeginTx(ctx(t), nil)
	require.NoError(t, err)
	defer one.Rollback() //nolint:errcheck
	two, err := b.db.DB.BeginTx(ctx(t), nil)
	require.NoError(t, err)
	defer two.Rollback() //nolint:errcheck
	_, err = one.ExecContext(ctx(t), "UPDATE items SET n = 1 WHERE id = 1")
	require.NoError(t, err)
	_, err = two.ExecContext(ctx(t), "UPDATE items SET n = 1 WHERE id = 2")
	require.NoError(t, err)

	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() { _, errs[0] = one.ExecContext(ctx(t), "UPDATE items SET n = 2 WHERE id = 2") })
	time.Sleep(200 * time.Millisecond)
	wg.Go(func() { _, errs[1] = two.ExecContext(ctx(t), "UPDATE items SET n = 2 WHERE id = 1") })
	go func() {
		// Whichever survives the deadlock must let the other finish.
		time.Sleep(5 * time.Second)
		_ = one.Rollback()
		_ = two.Rollback()
	}()
	wg.Wait()
	deadlock := errors.Join(errs[0], errs[1])
	require.Error(t, deadlock, "the database detected the deadlock")
	for _, err := range errs {
		if err != nil && !errors.Is(err, sql.ErrTxDone) {
			b.requireClass(t, err, batches.ClassTransient)
		}
	}
}

// testDataErrors: rows at fault (a bad cast, a NOT NULL violation) are data
// errors, and the sub-batch changes nothing.
func testDataErrors(t *testing.T, b *bundle) {
	b.createItems(t, gappedIDs(30))
	b.db.Exec(t, "UPDATE items SET label = 'not a number' WHERE id = (SELECT MIN(id) FROM items WHERE id > 0)")
	rel := b.relation(t, "items", "", "")
	r := b.plan(t, rel, 30)[0]

	// A NOT NULL violation and a duplicate key everywhere, plus what each
	// dialect refuses of its own (SQLite casts 'abc' to 0 without a word).
	sets := []string{"n = NULL", "id = 5, n = n + 1"}
	switch b.dialect {
	case "postgres":
		sets = append(sets, "n = label::int", "n = 1 / (id - id)")
	case "mysql":
		sets = append(sets, "n = CAST(label AS SIGNED)", "label = REPEAT('x', 100)")
	}
	for i, set := range sets {
		cp, err := b.sink.BeginBatch(ctx(t), "data", int64(i), rel.Key)
		require.NoError(t, err)
		_, err = b.sink.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "data", Seq: int64(i), Relation: rel, Batch: r, From: cp.Key, Limit: 30}, setChange(rel, set))
		b.requireClass(t, err, batches.ClassData)
		require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"), "set %s changed nothing", set)
	}
}

// testFatalErrors: a table dropped under the migration and a column that
// does not exist are fatal: retrying cannot help.
func testFatalErrors(t *testing.T, b *bundle) {
	b.createItems(t, gappedIDs(30))
	rel := b.relation(t, "items", "", "")
	r := b.plan(t, rel, 30)[0]
	cp, err := b.sink.BeginBatch(ctx(t), "fatal", 0, rel.Key)
	require.NoError(t, err)
	sb := sink.SubBatch{Migration: "fatal", Seq: 0, Relation: rel, Batch: r, From: cp.Key, Limit: 10}

	_, err = b.sink.ApplySubBatch(ctx(t), sb, setChange(rel, "no_such_column = 1"))
	b.requireClass(t, err, batches.ClassFatal)

	b.db.Exec(t, "DROP TABLE items")
	_, err = b.sink.ApplySubBatch(ctx(t), sb, setChange(rel, "n = n + 1"))
	b.requireClass(t, err, batches.ClassFatal)

	b.requireClass(t, context.Canceled, batches.ClassTransient)
	b.requireClass(t, fmt.Errorf("apply: %w", sink.ErrCheckpointMoved), batches.ClassCheckpointMoved)
}

// testPermissionDenied connects as a user that may read but not write:
// writing is a fatal error, not something to retry.
func testPermissionDenied(t *testing.T, b *bundle) {
	b.createItems(t, gappedIDs(10))
	var dsn string
	switch b.dialect {
	case "postgres":
		role := "bf_ro_" + strings.ToLower(strings.ReplaceAll(b.db.Name[len(b.db.Name)-8:], "-", ""))
		b.db.Exec(t, "CREATE ROLE "+role+" LOGIN")
		t.Cleanup(func() {
			_, _ = b.db.DB.ExecContext(context.Background(), "DROP OWNED BY "+role)
			_, _ = b.db.DB.ExecContext(context.Background(), "DROP ROLE "+role)
		})
		b.db.Exec(t, "GRANT SELECT ON items TO "+role)
		// The ledger exists and is writable: the data statement is what fails.
		require.NoError(t, b.sink.EnsureLedger(ctx(t)))
		b.db.Exec(t, "GRANT SELECT, INSERT, UPDATE ON batchflow_ledger TO "+role)
		dsn = b.dsnWith(t, role, "", nil)
	case "mysql":
		user := "bf_ro_" + b.db.Name[len(b.db.Name)-8:]
		b.db.Exec(t, "CREATE USER '"+user+"'@'%' IDENTIFIED BY 'pw'")
		t.Cleanup(func() { _, _ = b.db.DB.ExecContext(context.Background(), "DROP USER '"+user+"'@'%'") })
		require.NoError(t, b.sink.EnsureLedger(ctx(t)))
		b.db.Exec(t, "GRANT SELECT ON `"+b.db.Name+"`.items TO '"+user+"'@'%'")
		b.db.Exec(t, "GRANT SELECT, INSERT, UPDATE ON `"+b.db.Name+"`.batchflow_ledger TO '"+user+"'@'%'")
		dsn = b.dsnWith(t, user, "pw", nil)
	default:
		require.NoError(t, b.sink.EnsureLedger(ctx(t)))
		dsn = b.dsnWith(t, "", "", url.Values{"mode": {"ro"}})
	}
	ro := b.open(t, dsn, sink.Options{})
	tbl, err := ro.Table(ctx(t), "items")
	require.NoError(t, err, "reading the schema is allowed")
	col, err := tbl.BatchColumn("")
	require.NoError(t, err)
	rel := sink.Relation{Table: tbl, Column: col.Name, Key: col.Key}
	r := b.plan(t, rel, 10)[0]

	var from batches.Key
	if b.dialect == "sqlite" {
		// A read-only connection cannot even create the batch's ledger row.
		_, err := ro.BeginBatch(ctx(t), "denied", 0, sink.KeyInt)
		b.requireClass(t, err, batches.ClassFatal)
		_, err = b.sink.BeginBatch(ctx(t), "denied", 0, sink.KeyInt)
		require.NoError(t, err)
	} else {
		cp, err := ro.BeginBatch(ctx(t), "denied", 0, sink.KeyInt)
		require.NoError(t, err)
		from = cp.Key
	}
	_, err = ro.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "denied", Seq: 0, Relation: rel, Batch: r, From: from, Limit: 10}, setChange(rel, "n = n + 1"))
	b.requireClass(t, err, batches.ClassFatal)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"))
}

func testThrottleAndLag(t *testing.T, b *bundle) {
	yes, err := b.sink.Throttled(ctx(t), "SELECT 1 = 1")
	require.NoError(t, err)
	require.True(t, yes)
	no, err := b.sink.Throttled(ctx(t), "SELECT 1 = 0")
	require.NoError(t, err)
	require.False(t, no)
	b.createItems(t, gappedIDs(60))
	busy, err := b.sink.Throttled(ctx(t), "SELECT COUNT(*) > 50 FROM items")
	require.NoError(t, err)
	require.True(t, busy)
	_, err = b.sink.Throttled(ctx(t), "SELECT * FROM no_such_table")
	require.Error(t, err, "a broken throttle query is an error, not a yes or a no")
	_, err = b.sink.Throttled(ctx(t), "SELECT NULL")
	require.ErrorContains(t, err, "NULL", "a throttle query that cannot tell is an error, on every sink")
	yes, err = b.sink.Throttled(ctx(t), "SELECT 'yes'")
	require.NoError(t, err)
	require.True(t, yes, "text is read the same way on every sink")

	lag, err := b.sink.ReplicationLag(ctx(t))
	require.NoError(t, err)
	require.Zero(t, lag, "no replication here")
}

func testEstimateRows(t *testing.T, b *bundle) {
	b.createItems(t, gappedIDs(3000))
	switch b.dialect {
	case "mysql":
		b.db.Exec(t, "ANALYZE TABLE items")
	default:
		b.db.Exec(t, "ANALYZE items")
	}
	n, err := b.sink.EstimateRows(ctx(t), "items")
	require.NoError(t, err)
	require.InDelta(t, 3000, n, 1500, "an estimate of the right size")
	_, err = b.sink.EstimateRows(ctx(t), "no_such_table")
	require.ErrorIs(t, err, sink.ErrTableNotFound)
}
