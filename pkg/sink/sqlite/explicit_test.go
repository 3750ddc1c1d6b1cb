package sqlite

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// explicitSubBatch is the first sub-batch of a fresh batch over the whole
// relation, with the caller's upper key hi.
func (b *testBundle) explicitSubBatch(t *testing.T, rel sink.Relation, migration string, hi int64) sink.SubBatch {
	t.Helper()
	sb := b.subBatch(t, rel, migration, 0)
	sb.Hi = batches.IntKey(hi)
	return sb
}

// TestExplicitHiRefused: sub-batches whose upper key would move the
// checkpoint back, out of the batch or to another key type change nothing.
func TestExplicitHiRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 100)
	sb := b.explicitSubBatch(t, rel, "refused", 40)
	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(40), res.Rows)

	sb.From = res.Checkpoint
	for name, hi := range map[string]batches.Key{
		"below the checkpoint":  batches.IntKey(39),
		"beyond the batch":      batches.IntKey(101),
		"a text key for an int": batches.StringKey("50"),
	} {
		sb.Hi = hi
		_, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
		require.Error(t, err, name)
	}
	// An empty sub-batch at the checkpoint is no harm, and no progress.
	sb.Hi = batches.IntKey(40)
	res, err = b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Zero(t, res.Rows)
	require.Equal(t, int64(40), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	require.Equal(t, int64(40), b.db.QueryInt(t, "SELECT SUM(n) FROM items"))
}

// TestExplicitHiMoved: with the caller's Hi the sink reads no checkpoint
// before the change; the compare-and-set still refuses a moved batch, a
// missing ledger row, and a change that failed on a moved batch reports
// the move.
func TestExplicitHiMoved(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 100)
	sb := b.explicitSubBatch(t, rel, "moved", 30)
	_, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)

	// Applied again from the old checkpoint, as a second executor would.
	_, err = b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)
	require.ErrorContains(t, err, "is at 30, not null")
	// The same, with a change that fails on the rows.
	_, err = b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = NULL"))
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)
	require.Equal(t, batches.ClassCheckpointMoved, b.sink.Classify(err))

	noRow := sb
	noRow.Migration = "never_begun"
	_, err = b.sink.ApplySubBatch(ctx(t), noRow, set(rel, "n = n + 1"))
	require.ErrorIs(t, err, sink.ErrCheckpointMoved)
	require.ErrorContains(t, err, "no ledger row")

	require.Equal(t, int64(30), b.db.QueryInt(t, "SELECT SUM(n) FROM items"), "only the first sub-batch changed rows")
	cp, err := b.sink.BeginBatch(ctx(t), "moved", 0, rel.Key)
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(30), cp.Key)
	require.Equal(t, int64(30), cp.RowsAffected)
}

// TestDeclaredConflictResolution: the sink runs the sql kind's UPDATE as
// UPDATE OR ROLLBACK; a table or trigger that resolves conflicts itself
// (ON CONFLICT REPLACE or IGNORE, INSERT OR IGNORE) still gets its way,
// and the ledger counts the rows the statement as written changed.
func TestDeclaredConflictResolution(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, `CREATE TABLE items (id INTEGER PRIMARY KEY, n INT NOT NULL ON CONFLICT IGNORE DEFAULT 0, code INT UNIQUE ON CONFLICT REPLACE)`)
	b.db.Exec(t, `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20) INSERT INTO items (id, code) SELECT i, i FROM c`)
	b.db.Exec(t, `CREATE TABLE audit (id INT PRIMARY KEY)`)
	b.db.Exec(t, `INSERT INTO audit VALUES (3)`)
	b.db.Exec(t, `CREATE TRIGGER items_audit AFTER UPDATE ON items BEGIN INSERT OR IGNORE INTO audit VALUES (NEW.id); END`)
	rel := b.relation(t, "items")

	// NOT NULL … ON CONFLICT IGNORE: the rows are skipped, not an error.
	sb := b.explicitSubBatch(t, rel, "ignore", 5)
	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = NULL"))
	require.NoError(t, err)
	require.Zero(t, res.Rows)
	require.Equal(t, batches.IntKey(5), res.Checkpoint)

	// UNIQUE … ON CONFLICT REPLACE: code 1 replaces the row that had it;
	// the trigger's INSERT OR IGNORE meets audit's row 3.
	sb = b.explicitSubBatch(t, rel, "replace", 5)
	res, err = b.sink.ApplySubBatch(ctx(t), sb, set(rel, "code = CASE id WHEN 2 THEN 1 ELSE code END, n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(5), res.Rows)
	require.Equal(t, int64(19), b.db.QueryInt(t, "SELECT COUNT(*) FROM items"), "row 1 was replaced")
	require.Equal(t, int64(5), b.db.QueryInt(t, "SELECT COUNT(*) FROM audit"))

	// A plain constraint failure is still a data error, and changes nothing.
	b.db.Exec(t, `CREATE TABLE strict_items (id INTEGER PRIMARY KEY, n INT NOT NULL DEFAULT 0)`)
	b.db.Exec(t, `INSERT INTO strict_items (id) VALUES (1), (2), (3)`)
	strict := b.relation(t, "strict_items")
	sb = b.explicitSubBatch(t, strict, "strict", 3)
	_, err = b.sink.ApplySubBatch(ctx(t), sb, set(strict, "n = CASE id WHEN 3 THEN NULL ELSE n + 1 END"))
	require.Equal(t, batches.ClassData, b.sink.Classify(err), "%v", err)
	require.Zero(t, b.db.QueryInt(t, "SELECT SUM(n) FROM strict_items"))
}

func TestOrRollback(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`UPDATE "main"."t" SET n = 1 WHERE x`:   `UPDATE OR ROLLBACK "main"."t" SET n = 1 WHERE x`,
		`UPDATE OR IGNORE t SET n = 1`:          `UPDATE OR IGNORE t SET n = 1`,
		`update or replace t set n = 1`:         `update or replace t set n = 1`,
		`DELETE FROM "main"."t" WHERE x`:        `DELETE FROM "main"."t" WHERE x`,
		`WITH c AS (SELECT 1) UPDATE t SET n=1`: `WITH c AS (SELECT 1) UPDATE t SET n=1`,
	} {
		require.Equal(t, want, orRollback(in))
	}
}

// TestStatementCancel: a statement is interrupted when the caller's
// context ends, and the transaction rolled back.
func TestStatementCancel(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 100)
	sb := b.explicitSubBatch(t, rel, "cancel", 50)
	c, cancel := context.WithCancel(ctx(t))
	time.AfterFunc(200*time.Millisecond, cancel)
	started := time.Now()
	_, err := b.sink.ApplySubBatch(c, sb, set(rel, "n = "+endless))
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, batches.ClassTransient, classify(err), "%v", err)
	require.Less(t, time.Since(started), 3*time.Second)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"))

	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(50), res.Rows)
}

// endless is a scalar subquery that never finishes.
const endless = "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT MAX(x) FROM c)"

// TestWatchdogInterrupts: with the driver this module pins, the watchdog
// reaches the connection's interrupt, so statements carry no context
// deadline of their own; a query left running in a custom change is
// interrupted too.
func TestWatchdogInterrupts(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{StatementTimeout: 200 * time.Millisecond})
	rel := b.items(t, 100)
	sb := b.explicitSubBatch(t, rel, "rows", 10)
	require.NotNil(t, b.sink.w.watch.interrupt, "the driver's connection changed: see interrupter")

	started := time.Now()
	_, err := b.sink.ApplySubBatch(ctx(t), sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		rows, err := tx.Query(ctx, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c")
		if err != nil {
			return 0, err
		}
		defer rows.Close()
		for rows.Next() {
		}
		return 0, rows.Err()
	}})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(started), 3*time.Second)

	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(10), res.Rows)
}

// TestStatementTimeoutWithoutInterrupt: where the watchdog cannot reach
// the driver's interrupt, each statement gets a context deadline, as
// before the watchdog.
func TestStatementTimeoutWithoutInterrupt(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{StatementTimeout: 200 * time.Millisecond})
	rel := b.items(t, 100)
	sb := b.explicitSubBatch(t, rel, "fallback", 10)
	b.sink.w.watch.interrupt = nil

	started := time.Now()
	_, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = "+endless))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(started), 3*time.Second)
	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(10), res.Rows)
}

// TestResetLedgerFirstUse: resetting before the ledger exists is fine.
func TestResetLedgerFirstUse(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	require.NoError(t, b.sink.ResetLedger(ctx(t), "m"))
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM batchflow_ledger"))
}

// TestCheckStatementRunsNothing: a checked statement neither runs nor
// waits for the write lock another process holds.
func TestCheckStatementRunsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{LockTimeout: 5 * time.Second})
	b.items(t, 10)
	conn, err := b.db.DB.Conn(ctx(t))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx(t), "BEGIN IMMEDIATE")
	require.NoError(t, err)
	started := time.Now()
	require.NoError(t, b.sink.CheckStatement(ctx(t), "DELETE FROM items"))
	require.Less(t, time.Since(started), time.Second, "no wait for the write lock")
	_, err = conn.ExecContext(ctx(t), "ROLLBACK")
	require.NoError(t, err)
	require.Equal(t, int64(10), b.db.QueryInt(t, "SELECT COUNT(*) FROM items"))

	err = b.sink.CheckStatement(ctx(t), "UPDATE items SET nope = 1")
	require.ErrorContains(t, err, "no such column")
	require.Equal(t, batches.ClassFatal, b.sink.Classify(err))
}

// TestStatementTimeoutLongerThanIdle: the watchdog's timer, set by the
// shorter idle timeout, still interrupts a statement at its own deadline,
// and does not take a running statement for an idle transaction.
func TestStatementTimeoutLongerThanIdle(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{StatementTimeout: 600 * time.Millisecond, IdleInTransactionTimeout: 150 * time.Millisecond})
	rel := b.items(t, 100)
	sb := b.explicitSubBatch(t, rel, "long", 10)
	started := time.Now()
	_, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = "+endless))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, errIdleRollback)
	require.GreaterOrEqual(t, time.Since(started), 600*time.Millisecond)
	require.Less(t, time.Since(started), 3*time.Second)
}
