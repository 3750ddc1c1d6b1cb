package sqlite

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/sink"
)

func TestEstimateRows(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	// Sparse ids with one far out, where MAX(rowid) - MIN(rowid) is useless.
	b.db.Exec(t, `CREATE TABLE sparse (id INTEGER PRIMARY KEY, n INT NOT NULL DEFAULT 0, label TEXT)`)
	b.db.Exec(t, `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 60000)
		INSERT INTO sparse (id, label) SELECT i * 3, 'label ' || i FROM c`)
	b.db.Exec(t, `INSERT INTO sparse (id) VALUES (1 << 40)`)
	// A WITHOUT ROWID table is an index b-tree.
	b.db.Exec(t, `CREATE TABLE docs (k TEXT PRIMARY KEY, body TEXT) WITHOUT ROWID`)
	b.db.Exec(t, `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
		INSERT INTO docs (k, body) SELECT printf('%08x', i * 2654435761 % 4294967296), hex(randomblob(20)) FROM c`)
	b.db.Exec(t, `CREATE TABLE small (id INTEGER PRIMARY KEY)`)
	b.db.Exec(t, `INSERT INTO small (id) VALUES (1), (2), (3), (1000000)`)
	b.db.Exec(t, `CREATE TABLE empty (id INTEGER PRIMARY KEY)`)

	within := func(table string, want, factor float64) {
		t.Helper()
		n, err := b.sink.EstimateRows(ctx(t), table)
		require.NoError(t, err)
		require.GreaterOrEqual(t, float64(n), want/factor, "%s: %d", table, n)
		require.LessOrEqual(t, float64(n), want*factor, "%s: %d", table, n)
		t.Logf("%s: estimate %d for %.0f rows", table, n, want)
	}
	within("sparse", 60001, 2)
	within("docs", 20000, 2)
	within("small", 4, 1)
	within("empty", 0, 1)

	// After ANALYZE, the statistics' count.
	b.db.Exec(t, "ANALYZE sparse")
	within("main.sparse", 60001, 1)

	_, err := b.sink.EstimateRows(ctx(t), "no_such_table")
	require.ErrorIs(t, err, sink.ErrTableNotFound)
}
