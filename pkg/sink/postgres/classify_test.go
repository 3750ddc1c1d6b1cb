package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

// createRole creates a login role without privileges, dropped (with what
// it owns in the test database) at cleanup.
func createRole(t *testing.T, tb *testBundle, attrs ...string) string {
	t.Helper()
	role := fmt.Sprintf("bf_role_%08x", rand.Uint32())
	extra := ""
	for _, a := range attrs {
		extra += " " + a
	}
	tb.db.Exec(t, "CREATE ROLE "+role+" LOGIN"+extra)
	t.Cleanup(func() {
		tb.db.Exec(t, "DROP OWNED BY "+role)
		tb.db.Exec(t, "DROP ROLE "+role)
	})
	return role
}

// roleDSN is dsn connecting as role (the test server trusts local roles).
func roleDSN(t *testing.T, dsn, role string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	u.User = url.User(role)
	return u.String()
}

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// TestClassifyInducedErrors makes each error happen on the server and
// checks its class and that the failed sub-batch changed nothing.
func TestClassifyInducedErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		set   string
		prep  string
		code  string
		class batches.ErrorClass
	}{
		{"bad cast", "n = coalesce(s, '0')::int", "UPDATE t SET s = 'x' WHERE id = 5", "22P02", batches.ClassData},
		{"numeric out of range", "n = 2147483647 + id", "", "22003", batches.ClassData},
		{"string too long", "v = 'abc'", "", "22001", batches.ClassData},
		{"division by zero", "n = 1 / (id - id)", "", "22012", batches.ClassData},
		{"not null", "n = NULL", "", "23502", batches.ClassData},
		{"unique", "s = 'same'", "CREATE UNIQUE INDEX ON t (s)", "23505", batches.ClassData},
		{"check", "n = 10", "ALTER TABLE t ADD CHECK (n < 5)", "23514", batches.ClassData},
		{"foreign key", "p = 99", "CREATE TABLE parent (id int PRIMARY KEY); ALTER TABLE t ADD FOREIGN KEY (p) REFERENCES parent", "23503", batches.ClassData},
		{"trigger raise", "n = 1", "CREATE FUNCTION no() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no'; END $$; CREATE TRIGGER no BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION no()", "P0001", batches.ClassData},
		{"undefined column", "nope = 1", "", "42703", batches.ClassFatal},
		{"syntax error", "n = = 1", "", "42601", batches.ClassFatal},
		{"undefined function", "n = no_such_fn(id)", "", "42883", batches.ClassFatal},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tb := setup(t)
			ctx := t.Context()
			rel := tb.counterTable(t, "t", 20, 1)
			tb.db.Exec(t, "ALTER TABLE t ADD v varchar(2), ADD p int")
			if c.prep != "" {
				tb.db.Exec(t, c.prep)
			}
			_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
			require.NoError(t, err)
			_, err = tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 20), Limit: 10},
				kinds.SQL(rel, batches.SQLArgs{Set: c.set}))
			require.Error(t, err)
			require.Equal(t, c.code, pgCode(err), "%v", err)
			require.Equal(t, c.class, tb.sink.Classify(err), "%v", err)
			require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT count(*) FROM t WHERE n <> 0"))
			require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger WHERE checkpoint IS NULL AND rows_affected = 0"))
		})
	}
}

func TestClassifyLockTimeout(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(o *sink.Options) { o.LockTimeout = 200 * time.Millisecond })
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 20, 1)
	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)

	holder, err := tb.db.DB.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer holder.Rollback()
	_, err = holder.ExecContext(ctx, "SELECT 1 FROM t WHERE id = 5 FOR UPDATE")
	require.NoError(t, err)

	start := time.Now()
	_, err = tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 20), Limit: 10}, setN(rel))
	require.Equal(t, "55P03", pgCode(err), "%v", err)
	require.Equal(t, batches.ClassTransient, tb.sink.Classify(err))
	require.Less(t, time.Since(start), 3*time.Second)
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
	require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger WHERE checkpoint IS NULL"))
}

func TestClassifyStatementTimeout(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(o *sink.Options) { o.StatementTimeout = 200 * time.Millisecond })
	start := time.Now()
	_, err := tb.sink.Throttled(t.Context(), "SELECT true FROM pg_sleep(5)")
	require.Equal(t, "57014", pgCode(err), "%v", err)
	require.Equal(t, batches.ClassTransient, tb.sink.Classify(err))
	require.Less(t, time.Since(start), 3*time.Second)
}

func TestIdleInTransactionSessionIsEnded(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(o *sink.Options) { o.IdleInTransactionTimeout = 200 * time.Millisecond })
	ctx := t.Context()
	tx, err := tb.sink.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	var pid int64
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
	require.Eventually(t, func() bool {
		return tb.db.QueryInt(t, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0
	}, 10*time.Second, 20*time.Millisecond, "the idle transaction's session was not ended")
	_, err = tx.Exec(ctx, "SELECT 1")
	require.Error(t, err)
	require.Equal(t, batches.ClassTransient, tb.sink.Classify(err), "%v", err)
}

// TestClassifyKilledConnection kills the sink's session in the middle of
// a sub-batch: a transient error, nothing half-applied, and the retry
// applies the sub-batch once on a fresh connection.
func TestClassifyKilledConnection(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(o *sink.Options) { o.MaxConns = 1 })
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 20, 1)
	tb.db.Exec(t, `CREATE TABLE gate (open bool NOT NULL)`)
	tb.db.Exec(t, `INSERT INTO gate VALUES (false)`)
	tb.db.Exec(t, `CREATE FUNCTION wait_gate() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			WHILE NOT (SELECT open FROM gate) LOOP PERFORM pg_sleep(0.05); END LOOP;
			RETURN NULL;
		END $$`)
	tb.db.Exec(t, `CREATE TRIGGER wait_gate AFTER UPDATE ON t FOR EACH STATEMENT EXECUTE FUNCTION wait_gate()`)
	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)

	sb := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 20), Limit: 10}
	errc := make(chan error, 1)
	go func() {
		_, err := tb.sink.ApplySubBatch(ctx, sb, setN(rel))
		errc <- err
	}()
	var pid int64
	require.Eventually(t, func() bool {
		pid = tb.db.QueryInt(t, "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'WITH claim%' AND state = 'active'")
		return pid != 0
	}, 10*time.Second, 10*time.Millisecond, "the sub-batch never reached the trigger")
	tb.db.Exec(t, "SELECT pg_terminate_backend($1)", pid)
	err = <-errc
	require.Error(t, err)
	require.Equal(t, batches.ClassTransient, tb.sink.Classify(err), "%v", err)
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
	require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger WHERE checkpoint IS NULL"))

	tb.db.Exec(t, "UPDATE gate SET open = true")
	res, err := tb.sink.ApplySubBatch(ctx, sb, setN(rel))
	require.NoError(t, err)
	require.EqualValues(t, 10, res.Rows)
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
}

func TestClassifyPrivilegesAndReadOnly(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	tb.counterTable(t, "t", 20, 1)
	require.NoError(t, tb.sink.EnsureLedger(ctx))
	role := createRole(t, tb)
	tb.db.Exec(t, "GRANT SELECT ON t TO "+role)
	tb.db.Exec(t, "GRANT SELECT, INSERT, UPDATE ON batchflow_ledger TO "+role)

	for name, dsn := range map[string]string{
		"insufficient privilege": roleDSN(t, tb.db.DSN, role),
		"read only":              tb.db.DSN + "&default_transaction_read_only=on",
	} {
		s := openSink(t, dsn, sink.Options{MaxConns: 1})
		rel := sink.Relation{}
		tab, err := s.Table(ctx, "t")
		require.NoError(t, err)
		rel = sink.Relation{Table: tab, Column: "id", Key: sink.KeyInt}
		_, err = s.BeginBatch(ctx, "m", 1, sink.KeyInt)
		if name == "read only" {
			require.Equal(t, "25006", pgCode(err), "%v", err)
			require.Equal(t, batches.ClassFatal, s.Classify(err))
			continue
		}
		require.NoError(t, err)
		_, err = s.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 20), Limit: 10}, setN(rel))
		require.Equal(t, "42501", pgCode(err), "%v", err)
		require.Equal(t, batches.ClassFatal, s.Classify(err), name)
	}
}

func TestClassifyDroppedTable(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	rel := tb.counterTable(t, "t", 20, 1)
	_, err := tb.sink.BeginBatch(ctx, "m", 1, sink.KeyInt)
	require.NoError(t, err)
	tb.db.Exec(t, "DROP TABLE t")
	for _, change := range []sink.Change{setN(rel), kinds.SQL(rel, batches.SQLArgs{Statement: "UPDATE t SET n = 1 WHERE id > :lo AND id <= :hi"})} {
		_, err = tb.sink.ApplySubBatch(ctx, sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 20), Limit: 10}, change)
		require.Equal(t, "42P01", pgCode(err), "%v", err)
		require.Equal(t, batches.ClassFatal, tb.sink.Classify(err))
	}
	_, err = tb.sink.EstimateRows(ctx, "t")
	require.ErrorIs(t, err, sink.ErrTableNotFound)
}

func TestClassifyTooManyConnections(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	role := createRole(t, tb, "CONNECTION LIMIT 1")
	dsn := roleDSN(t, tb.db.DSN, role)
	first, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer first.Close(ctx)

	_, err = Open(ctx, dsn, sink.Options{MaxConns: 1})
	require.Equal(t, "53300", pgCode(err), "%v", err)
	require.Equal(t, batches.ClassTransient, classify(err))
}

func TestClassifyDeadlockAndSerializationFailure(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	tb.counterTable(t, "t", 2, 1)
	conns := make([]*pgx.Conn, 2)
	for i := range conns {
		c, err := pgx.Connect(ctx, tb.db.DSN)
		require.NoError(t, err)
		defer c.Close(ctx)
		conns[i] = c
	}

	// Each holds one row and asks for the other's.
	txs := make([]pgx.Tx, 2)
	for i, c := range conns {
		tx, err := c.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx)
		txs[i] = tx
		_, err = tx.Exec(ctx, "UPDATE t SET n = 1 WHERE id = $1", i+1)
		require.NoError(t, err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, tx := range txs {
		wg.Go(func() {
			_, errs[i] = tx.Exec(ctx, "UPDATE t SET n = 2 WHERE id = $1", 2-i)
			if errs[i] != nil {
				tx.Rollback(ctx)
			}
		})
	}
	wg.Wait()
	deadlock := errors.Join(errs...)
	require.Equal(t, "40P01", pgCode(deadlock), "%v", deadlock)
	require.Equal(t, batches.ClassTransient, classify(deadlock))
	for _, tx := range txs {
		tx.Rollback(ctx)
	}

	// Two repeatable read transactions update the same row.
	for i, c := range conns {
		tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
		require.NoError(t, err)
		defer tx.Rollback(ctx)
		txs[i] = tx
		_, err = tx.Exec(ctx, "SELECT * FROM t")
		require.NoError(t, err)
	}
	_, err := txs[0].Exec(ctx, "UPDATE t SET n = 3 WHERE id = 1")
	require.NoError(t, err)
	require.NoError(t, txs[0].Commit(ctx))
	_, err = txs[1].Exec(ctx, "UPDATE t SET n = 4 WHERE id = 1")
	require.Equal(t, "40001", pgCode(err), "%v", err)
	require.Equal(t, batches.ClassTransient, classify(err))
}

func TestClassifyWithoutServerCodes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, refused := Open(ctx, "postgres://u:s3cret@127.0.0.1:1/db?connect_timeout=2", sink.Options{})
	require.Error(t, refused)
	require.NotContains(t, refused.Error(), "s3cret")

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	tb := setup(t)
	_, ctxErr := tb.sink.Throttled(canceled, "SELECT true")
	require.Error(t, ctxErr)

	for _, c := range []struct {
		name  string
		err   error
		class batches.ErrorClass
	}{
		{"nil", nil, ""},
		{"connection refused", refused, batches.ClassTransient},
		{"canceled context", ctxErr, batches.ClassTransient},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), batches.ClassTransient},
		{"checkpoint moved", fmt.Errorf("x: %w", sink.ErrCheckpointMoved), batches.ClassCheckpointMoved},
		{"checkpoint moved wins", errors.Join(&pgconn.PgError{Code: "40001"}, sink.ErrCheckpointMoved), batches.ClassCheckpointMoved},
		{"conn closed", fmt.Errorf("x: %w", pgconn.ErrConnClosed), batches.ClassTransient},
		{"unsupported key", sink.ErrUnsupportedKey, batches.ClassFatal},
		{"unknown", errors.New("something else"), batches.ClassFatal},
	} {
		require.Equal(t, c.class, classify(c.err), c.name)
	}
}

func TestClassifySQLState(t *testing.T) {
	t.Parallel()
	for code, class := range map[string]batches.ErrorClass{
		"40001": batches.ClassTransient, "40P01": batches.ClassTransient, "55P03": batches.ClassTransient,
		"57014": batches.ClassTransient, "57P01": batches.ClassTransient, "57P02": batches.ClassTransient,
		"57P03": batches.ClassTransient, "08006": batches.ClassTransient, "08001": batches.ClassTransient,
		"53300": batches.ClassTransient, "53100": batches.ClassTransient, "25P03": batches.ClassTransient,
		"22P02": batches.ClassData, "22003": batches.ClassData, "22001": batches.ClassData, "22012": batches.ClassData,
		"23502": batches.ClassData, "23505": batches.ClassData, "23503": batches.ClassData, "23514": batches.ClassData,
		"42501": batches.ClassFatal, "42P01": batches.ClassFatal, "42703": batches.ClassFatal, "42601": batches.ClassFatal,
		"25006": batches.ClassFatal, "28P01": batches.ClassFatal, "3D000": batches.ClassFatal, "XX000": batches.ClassFatal,
		"57P04": batches.ClassFatal, "ZZZZZ": batches.ClassFatal,
	} {
		require.Equal(t, class, classify(fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code})), code)
	}
}
