package sinktest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/sink"
)

func testTableLookup(t *testing.T, b *bundle) {
	b.createItems(t, []int64{1, 2, 3})
	tbl, err := b.sink.Table(ctx(t), "items")
	require.NoError(t, err)
	require.Equal(t, "items", tbl.Name)
	require.NotEmpty(t, tbl.Schema)
	require.Equal(t, []string{"id"}, tbl.PrimaryKey)

	want := map[string]sink.KeyType{"id": sink.KeyInt, "n": sink.KeyInt, "grp": sink.KeyInt, "label": sink.KeyString, "score": sink.KeyUnsupported}
	require.Len(t, tbl.Columns, len(want))
	for _, c := range tbl.Columns {
		kt, ok := want[c.Name]
		require.True(t, ok, "unexpected column %q", c.Name)
		require.Equal(t, kt, c.Key, "key type of %s (%s)", c.Name, c.Type)
		require.NotEmpty(t, c.Type)
	}
	label, ok := tbl.Column("label")
	require.True(t, ok)
	require.True(t, label.Nullable)
	id, _ := tbl.Column("id")
	require.False(t, id.Nullable)

	// Schema-qualified, and unquoted-identifier case rules.
	again, err := b.sink.Table(ctx(t), tbl.Schema+".items")
	require.NoError(t, err)
	require.Equal(t, tbl.QualifiedName(), again.QualifiedName())
	upper, err := b.sink.Table(ctx(t), "ITEMS")
	require.NoError(t, err, "an unquoted name matches whatever its case")
	require.Equal(t, "items", upper.Name)

	_, err = b.sink.Table(ctx(t), "no_such_table")
	require.ErrorIs(t, err, sink.ErrTableNotFound)
	require.Contains(t, err.Error(), "no_such_table", "the error names the table")
	_, err = b.sink.Table(ctx(t), "no_such_schema.items")
	require.ErrorIs(t, err, sink.ErrTableNotFound)
}

func testBadIdentifiers(t *testing.T, b *bundle) {
	b.createItems(t, []int64{1, 2, 3})
	for _, name := range []string{
		"items; DROP TABLE items",
		`items"; DROP TABLE items; --`,
		"items`; DROP TABLE items; --",
		"items' OR '1'='1",
		"items--",
		"(SELECT 1)",
		"",
	} {
		_, err := b.sink.Table(ctx(t), name)
		require.ErrorIs(t, err, sink.ErrTableNotFound, "%q", name)
	}
	tbl, err := b.sink.Table(ctx(t), "items")
	require.NoError(t, err)
	for _, col := range []string{"id; DROP TABLE items", `id"--`, "id`--"} {
		_, err := tbl.BatchColumn(col)
		require.ErrorIs(t, err, sink.ErrColumnNotFound)
	}
	require.Equal(t, int64(3), b.db.QueryInt(t, "SELECT COUNT(*) FROM items"), "the table survived")

	// Quoting is the dialect's: embedded quotes are doubled, never closed.
	d := b.sink.Dialect()
	for _, name := range []string{`a"b`, "a`b"} {
		q := d.QuoteIdent(name)
		require.Greater(t, len(q), len(name)+1)
		require.NotEqual(t, name, q)
	}
	require.Equal(t, d.QuoteIdent("s")+"."+d.QuoteIdent("t"), d.QuoteIdent("s.t"))
}

func testBatchColumn(t *testing.T, b *bundle) {
	b.createItems(t, []int64{1})
	tbl, err := b.sink.Table(ctx(t), "items")
	require.NoError(t, err)
	col, err := tbl.BatchColumn("")
	require.NoError(t, err)
	require.Equal(t, "id", col.Name, "the primary key is the default batch column")

	_, err = tbl.BatchColumn("nope")
	require.ErrorIs(t, err, sink.ErrColumnNotFound)
	require.Contains(t, err.Error(), "nope")
	_, err = tbl.BatchColumn("score")
	require.ErrorIs(t, err, sink.ErrUnsupportedKey)

	b.db.Exec(t, "CREATE TABLE pairs (a INT NOT NULL, c INT NOT NULL, PRIMARY KEY (a, c))")
	pairs, err := b.sink.Table(ctx(t), "pairs")
	require.NoError(t, err)
	require.Equal(t, []string{"a", "c"}, pairs.PrimaryKey)
	_, err = pairs.BatchColumn("")
	require.ErrorIs(t, err, sink.ErrNoPrimaryKey)
	require.True(t, strings.Contains(err.Error(), "batch_column"), "the error says what to do: %v", err)
}
