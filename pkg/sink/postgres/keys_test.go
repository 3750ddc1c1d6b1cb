package postgres

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

func TestBoundsAndNextKeyIntegerKeys(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	for _, typ := range []string{"smallint", "int", "bigint"} {
		tb.db.Exec(t, "CREATE TABLE k_"+typ+" (id "+typ+", grp int NOT NULL)")
		// Gapped keys, a NULL key that belongs to no batch, and a filter.
		tb.db.Exec(t, "INSERT INTO k_"+typ+" SELECT g * 7 - 30, g % 2 FROM generate_series(1, 100) g UNION ALL SELECT NULL, 0")
		rel := tb.relation(t, "k_"+typ, "id")
		require.Equal(t, sink.KeyInt, rel.Key)

		lo, hi, ok, err := tb.sink.Bounds(ctx, rel, sink.Range{})
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, []batches.Key{batches.IntKey(-23), batches.IntKey(670)}, []batches.Key{lo, hi}, typ)

		key, ok, err := tb.sink.NextKey(ctx, rel, sink.Range{Lo: lo, LoInclusive: true, Hi: hi}, 10)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, batches.IntKey(40), key, "the 10th key, counting the inclusive first")
		key, ok, err = tb.sink.NextKey(ctx, rel, sink.Range{Lo: key, Hi: hi}, 90)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, hi, key)
		_, ok, err = tb.sink.NextKey(ctx, rel, sink.Range{Lo: key}, 1)
		require.NoError(t, err)
		require.False(t, ok, "no key after the last; the NULL key is not one")

		rel.Where = "grp = 0"
		lo, hi, ok, err = tb.sink.Bounds(ctx, rel, sink.Range{Lo: batches.IntKey(100), Hi: batches.IntKey(300)})
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, []batches.Key{batches.IntKey(110), batches.IntKey(292)}, []batches.Key{lo, hi}, typ)
		_, _, ok, err = tb.sink.Bounds(ctx, rel, sink.Range{Lo: batches.IntKey(1000)})
		require.NoError(t, err)
		require.False(t, ok)
	}
	_, _, err := tb.sink.NextKey(ctx, tb.relation(t, "k_int", "id"), sink.Range{}, 0)
	require.Error(t, err)
}

func TestBoundsAndNextKeyStringKeys(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	tb.db.Exec(t, `CREATE TABLE u (id uuid PRIMARY KEY)`)
	tb.db.Exec(t, `INSERT INTO u SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(g), 12, '0'))::uuid FROM generate_series(1, 50) g`)
	tb.db.Exec(t, `CREATE TABLE s (code text COLLATE "C" PRIMARY KEY)`)
	tb.db.Exec(t, `INSERT INTO s VALUES ('b'), ('a'), ('B'), ('aa'), ('é')`)

	rel := tb.relation(t, "u", "")
	lo, hi, ok, err := tb.sink.Bounds(ctx, rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, batches.StringKey("00000000-0000-0000-0000-000000000001"), lo, "uuids come back as text, not [16]byte")
	require.Equal(t, batches.StringKey("00000000-0000-0000-0000-000000000032"), hi)
	key, ok, err := tb.sink.NextKey(ctx, rel, sink.Range{Lo: lo, Hi: hi}, 10)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, batches.StringKey("00000000-0000-0000-0000-00000000000b"), key)

	rel = tb.relation(t, "s", "code")
	var got []batches.Key
	r := sink.Range{}
	for {
		key, ok, err := tb.sink.NextKey(ctx, rel, r, 1)
		require.NoError(t, err)
		if !ok {
			break
		}
		got = append(got, key)
		r = sink.Range{Lo: key}
	}
	require.Equal(t, []batches.Key{batches.StringKey("B"), batches.StringKey("a"), batches.StringKey("aa"), batches.StringKey("b"), batches.StringKey("é")}, got,
		"the database's order")
}

// TestKeysOfAnotherTypeAreRefused: keys are never converted between
// types; a string key for an integer column is a caller's bug.
func TestKeysOfAnotherTypeAreRefused(t *testing.T) {
	t.Parallel()
	require.NoError(t, checkKey(batches.IntKey(42), sink.KeyInt))
	require.NoError(t, checkKey(batches.StringKey("42"), sink.KeyString))
	require.NoError(t, checkKey(batches.Key{}, sink.KeyInt))
	require.Error(t, checkKey(batches.StringKey("42"), sink.KeyInt))
	require.Error(t, checkKey(batches.IntKey(42), sink.KeyString))

	tb := setup(t)
	rel := tb.counterTable(t, "t", 10, 1)
	_, err := tb.sink.BeginBatch(t.Context(), "m", 1, rel.Key)
	require.NoError(t, err)
	_, _, _, err = tb.sink.Bounds(t.Context(), rel, sink.Range{Lo: batches.StringKey("3")})
	require.ErrorContains(t, err, "not a key of the batch column's type")
	_, _, err = tb.sink.NextKey(t.Context(), rel, sink.Range{Hi: batches.StringKey("3")}, 1)
	require.Error(t, err)
	sb := sink.SubBatch{Migration: "m", Seq: 1, Relation: rel, Batch: intRange(0, 10), From: batches.StringKey("3"), Limit: 5}
	_, err = tb.sink.ApplySubBatch(t.Context(), sb, setN(rel))
	require.Error(t, err)
	sb.From = batches.Key{}
	_, err = tb.sink.SkipKey(t.Context(), sb, batches.StringKey("3"))
	require.Error(t, err)
	require.EqualValues(t, 0, tb.db.QueryInt(t, "SELECT sum(n) FROM t"))
	require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM batchflow_ledger WHERE checkpoint IS NULL"))
}

// TestStringKeysThatLookLikeIntegers resumes a text-keyed batch whose
// checkpoint looks like an integer: it reads back as the text key it is.
func TestStringKeysThatLookLikeIntegers(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.db.Exec(t, `CREATE TABLE s (code varchar(10) PRIMARY KEY, n int NOT NULL DEFAULT 0)`)
	tb.db.Exec(t, `INSERT INTO s (code) SELECT g::text FROM generate_series(10, 59) g`)
	rel := tb.relation(t, "s", "code")
	batch := sink.Range{Lo: batches.StringKey("10"), LoInclusive: true, Hi: batches.StringKey("59")}
	for seq, change := range []sink.Change{setN(rel), {Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		b := sink.NewBuilder(tx.Dialect())
		b.SQL("UPDATE s SET n = n + 1 WHERE ").Write(s.Rows)
		return tx.Exec(ctx, b.String(), b.Args()...)
	}}} {
		_, err := tb.sink.BeginBatch(t.Context(), "m", int64(seq), rel.Key)
		require.NoError(t, err)
		first, err := tb.sink.ApplySubBatch(t.Context(), sink.SubBatch{Migration: "m", Seq: int64(seq), Relation: rel, Batch: batch, Limit: 7}, change)
		require.NoError(t, err)
		require.Equal(t, batches.StringKey("16"), first.Checkpoint)
		cp, err := tb.sink.BeginBatch(t.Context(), "m", int64(seq), rel.Key)
		require.NoError(t, err)
		require.Equal(t, batches.StringKey("16"), cp.Key, "the ledger's text reads back as the column's type")
		rows := tb.runBatch(t, "m", int64(seq), rel, batch, 7, change)
		require.EqualValues(t, 43, rows)
	}
	require.EqualValues(t, 50, tb.db.QueryInt(t, "SELECT count(*) FROM s WHERE n = 2"))
}
