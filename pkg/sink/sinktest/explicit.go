package sinktest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// testExplicitRanges applies batches in sub-batches whose upper key the
// caller chose by key span, as the executor does for integer keys: every
// row changed once, and sub-batches outside their batch refused.
func testExplicitRanges(t *testing.T, b *bundle) {
	ids := gappedIDs(1500)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "", "")
	change := setChange(rel, "n = n + 1")
	var total int64
	for seq, r := range b.plan(t, rel, 400) {
		cp, err := b.sink.BeginBatch(ctx(t), "span", int64(seq), rel.Key)
		require.NoError(t, err)
		from := cp.Key
		for i := 0; ; i++ {
			start := r.Lo.Int()
			if !from.IsNull() {
				start = from.Int()
			}
			// Spans of about 1000 keys, fewer and wider where a batch spans
			// a huge gap (the last key is far out).
			step := max(997, (r.Hi.Int()-r.Lo.Int())/20)
			hi := batches.IntKey(min(start+step, r.Hi.Int()))
			sb := sink.SubBatch{Migration: "span", Seq: int64(seq), Relation: rel, Batch: r, From: from, Hi: hi}
			res, err := b.sink.ApplySubBatch(ctx(t), sb, change)
			require.NoError(t, err)
			require.Equal(t, sb.Hi, res.Checkpoint, "the checkpoint is the chosen upper key")
			total += res.Rows
			if res.Done {
				break
			}
			from = res.Checkpoint
			require.Less(t, i, 100_000)
		}
	}
	require.Equal(t, int64(len(ids)), total)
	require.Equal(t, int64(len(ids)), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"), "every row changed exactly once")
	require.Equal(t, int64(len(ids)), b.db.QueryInt(t, "SELECT SUM(rows_affected) FROM batchflow_ledger WHERE migration = 'span'"))

	// Refused: an upper key beyond the batch, and a batch without an upper key.
	r := b.plan(t, rel, 100)[0]
	cp, err := b.sink.BeginBatch(ctx(t), "bad", 0, rel.Key)
	require.NoError(t, err)
	_, err = b.sink.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "bad", Seq: 0, Relation: rel, Batch: r, From: cp.Key, Hi: batches.IntKey(r.Hi.Int() + 1)}, change)
	require.Error(t, err)
	_, err = b.sink.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "bad", Seq: 0, Relation: rel, Batch: sink.Range{Lo: r.Lo, LoInclusive: true}, From: cp.Key, Limit: 10}, change)
	require.Error(t, err)
	require.Equal(t, int64(len(ids)), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"), "refused sub-batches changed nothing")
}

// testNumericTextKeys: a text key that looks like a number stays a text
// key through the ledger, so a resumed batch keeps its checkpoint.
func testNumericTextKeys(t *testing.T, b *bundle) {
	keys := make([]string, 120)
	for i := range keys {
		keys[i] = string(rune('1'+i%9)) + string(rune('0'+i/9%10)) + string(rune('0'+i/90))
	}
	b.createDocs(t, keys)
	rel := b.relation(t, "docs", "", "")
	r := b.plan(t, rel, 120)[0]
	cp, err := b.sink.BeginBatch(ctx(t), "numeric_text", 0, rel.Key)
	require.NoError(t, err)
	res, err := b.sink.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "numeric_text", Seq: 0, Relation: rel, Batch: r, From: cp.Key, Limit: 50}, setChange(rel, "n = n + 1"))
	require.NoError(t, err)
	require.True(t, res.Checkpoint.IsString())

	again, err := b.sink.BeginBatch(ctx(t), "numeric_text", 0, rel.Key)
	require.NoError(t, err)
	require.Equal(t, res.Checkpoint, again.Key, "read back as the same text key")
	require.Equal(t, int64(70), runBatch(t, b.sink, "numeric_text", 0, rel, r, setChange(rel, "n = n + 1"), 50))
	require.Equal(t, int64(120), b.db.QueryInt(t, "SELECT COUNT(*) FROM docs WHERE n = 1"))
}

// testResetLedger: a cancelled migration's name is reused only after its
// ledger rows are gone, so the new migration starts from scratch.
func testResetLedger(t *testing.T, b *bundle) {
	b.createItems(t, gappedIDs(200))
	rel := b.relation(t, "items", "", "")
	r := b.plan(t, rel, 200)[0]
	runBatch(t, b.sink, "reused", 0, rel, r, setChange(rel, "n = n + 1"), 50)
	runBatch(t, b.sink, "other", 0, rel, r, setChange(rel, "grp = grp"), 50)

	require.NoError(t, b.sink.ResetLedger(ctx(t), "reused"))
	cp, err := b.sink.BeginBatch(ctx(t), "reused", 0, rel.Key)
	require.NoError(t, err)
	require.True(t, cp.Key.IsNull(), "the reused name starts before the first key")
	require.Zero(t, cp.RowsAffected)
	other, err := b.sink.BeginBatch(ctx(t), "other", 0, rel.Key)
	require.NoError(t, err)
	require.Equal(t, r.Hi, other.Key, "other migrations keep their ledger")
	require.NoError(t, b.sink.ResetLedger(ctx(t), "never_ran"), "resetting nothing is fine")
}

// testCheckStatement: a spec's SQL is checked by the server without running.
func testCheckStatement(t *testing.T, b *bundle) {
	b.createItems(t, gappedIDs(20))
	require.NoError(t, b.sink.CheckStatement(ctx(t), "UPDATE items SET n = 99 WHERE id > 0 AND (grp = 1)"))
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 99"), "checked, not run")

	err := b.sink.CheckStatement(ctx(t), "UPDATE items SET no_such_column = 1")
	b.requireClass(t, err, batches.ClassFatal)
	err = b.sink.CheckStatement(ctx(t), "UPDATE items SET n = WHERE")
	b.requireClass(t, err, batches.ClassFatal)
	err = b.sink.CheckStatement(ctx(t), "UPDATE no_such_table SET n = 1")
	b.requireClass(t, err, batches.ClassFatal)
}
