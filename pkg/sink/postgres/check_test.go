package postgres

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// TestCheckStatement: the server parses and analyses the statement and
// nothing runs; it neither waits on the rows another session has locked
// nor leaves a prepared statement behind on the pooled connection.
func TestCheckStatement(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(o *sink.Options) { o.MaxConns = 1 })
	ctx := t.Context()
	tb.counterTable(t, "t", 10, 1)

	// Another session holds every row of t.
	holder, err := tb.db.DB.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer holder.Rollback()
	_, err = holder.ExecContext(ctx, "SELECT 1 FROM t FOR UPDATE")
	require.NoError(t, err)

	for _, q := range []string{
		"UPDATE t SET n = 99 WHERE id > 0 AND (n = 0)",
		"UPDATE t SET n = 99 WHERE id > $1 AND id <= $2",
		"DELETE FROM t WHERE id > 0",
		"INSERT INTO t (id) VALUES (1000)",
	} {
		require.NoError(t, tb.sink.CheckStatement(ctxTimeout(t, 3*time.Second), q), q)
	}
	require.NoError(t, holder.Rollback())
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT sum(n) FROM t"), "checked, not run")
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT count(*) FROM t"))

	for q, code := range map[string]string{
		"UPDATE t SET no_such_column = 1":            "42703",
		"UPDATE no_such_table SET n = 1":             "42P01",
		"UPDATE t SET n = WHERE":                     "42601",
		"UPDATE t SET n = 1; DROP TABLE t":           "42601", // one statement only
		"UPDATE t SET n = 'x' || no_such_function()": "42883",
	} {
		err := tb.sink.CheckStatement(ctx, q)
		require.ErrorContains(t, err, "SQLSTATE "+code, q)
		require.Equal(t, batches.ClassFatal, tb.sink.Classify(err), q)
	}
	require.EqualValues(t, 10, tb.db.QueryInt(t, "SELECT count(*) FROM t"), "the table is still there")

	// The pool's only connection: its prepared statements are pgx's own
	// cache, never a checked statement.
	var left int64
	require.NoError(t, tb.sink.pool.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE statement !~ 'pg_prepared_statements' AND statement ~ '^(UPDATE|DELETE|INSERT)'").Scan(&left))
	require.Zero(t, left)
}
