package sqlite

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// TestFoldedMatchesGeneric runs the same batches through applyFolded and
// through sink.ApplyInTx, on two copies of a table, and requires the same
// sub-batches, results and data: the fold changes the statements, not the
// protocol.
func TestFoldedMatchesGeneric(t *testing.T) {
	t.Parallel()
	seed := func(db *testenv.Database) {
		db.Exec(t, `CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 0, grp INT NOT NULL, k TEXT UNIQUE)`)
		// Negative ids, runs, jumps, and one key far out.
		db.Exec(t, `WITH RECURSIVE c(i, id) AS (SELECT 0, -40 UNION ALL
			SELECT i + 1, id + CASE WHEN i % 97 = 96 THEN 1000000 WHEN i % 13 = 0 THEN 1000 ELSE 1 + i % 3 END FROM c WHERE i < 1499)
			INSERT INTO items (id, grp, k) SELECT id, abs(id) % 3, printf('%08x', (i * 2654435761) % 4294967296) FROM c`)
		db.Exec(t, `UPDATE items SET id = 1 << 40 WHERE id = (SELECT MAX(id) FROM items)`)
	}
	folded, generic := setup(t, sink.Options{}), setup(t, sink.Options{})
	generic.sink.generic = true
	seed(folded.db)
	seed(generic.db)

	for _, tc := range []struct {
		name, column, where string
		batchSize, limit    int
		// span, when set, has the caller choose each sub-batch's upper
		// key: span past the checkpoint, or the next key past a gap.
		span int64
	}{
		{"int", "id", "", 250, 37, 0},
		{"int limit 1", "id", "", 40, 1, 0},
		{"int filtered", "id", "grp = 1", 100, 16, 0},
		{"text", "k", "", 300, 41, 0},
		{"text filtered", "k", "grp <> 2", 200, 50, 0},
		{"int span", "id", "", 250, 0, 60},
		{"int span filtered", "id", "grp = 1", 100, 0, 25},
	} {
		relOf := func(b *testBundle) sink.Relation {
			tbl, err := b.sink.Table(ctx(t), "items")
			require.NoError(t, err)
			col, err := tbl.BatchColumn(tc.column)
			require.NoError(t, err)
			return sink.Relation{Table: tbl, Column: col.Name, Key: col.Key, Where: tc.where}
		}
		fr, gr := relOf(folded), relOf(generic)
		ranges := planBatches(t, folded.sink, fr, tc.batchSize)
		require.Equal(t, ranges, planBatches(t, generic.sink, gr, tc.batchSize))
		set := fmt.Sprintf("n = n + %d", len(tc.name))
		for seq, r := range ranges {
			migration := "m_" + tc.name
			fs := folded.firstSubBatch(t, fr, migration, int64(seq), r, tc.limit)
			gs := generic.firstSubBatch(t, gr, migration, int64(seq), r, tc.limit)
			for i := 0; ; i++ {
				if tc.span > 0 {
					next, ok, err := folded.sink.NextKey(ctx(t), fr, fs.Rows(), 1)
					require.NoError(t, err)
					hi := r.Hi.Int()
					if ok {
						start := r.Lo.Int()
						if !fs.From.IsNull() {
							start = fs.From.Int()
						}
						hi = min(max(start+tc.span, next.Int()), hi)
					}
					fs.Hi, gs.Hi = batches.IntKey(hi), batches.IntKey(hi)
				}
				fres, err := folded.sink.ApplySubBatch(ctx(t), fs, setChange(fr, set))
				require.NoError(t, err)
				gres, err := generic.sink.ApplySubBatch(ctx(t), gs, setChange(gr, set))
				require.NoError(t, err)
				require.Equal(t, gres, fres, "%s batch %d sub-batch %d", tc.name, seq, i)
				if fres.Done {
					break
				}
				fs.From, gs.From = fres.Checkpoint, gres.Checkpoint
				require.Less(t, i, 10_000)
			}
		}
	}
	sum := func(b *testBundle) string {
		var s string
		require.NoError(t, b.db.DB.QueryRowContext(ctx(t), "SELECT group_concat(id || ':' || n, ',') FROM (SELECT id, n FROM items ORDER BY id)").Scan(&s))
		return s
	}
	require.Equal(t, sum(generic), sum(folded))
	// Every row once per case: n is the sum of the cases whose filter it passes.
	require.Zero(t, folded.db.QueryInt(t, `SELECT COUNT(*) FROM items WHERE n <> 3 + 11 + 4 + 8 +
		CASE grp WHEN 1 THEN 12 + 17 ELSE 0 END + CASE WHEN grp <> 2 THEN 13 ELSE 0 END`))
}

func planBatches(t *testing.T, s *Sink, rel sink.Relation, size int) []sink.Range {
	t.Helper()
	lo, hi, ok, err := s.Bounds(ctx(t), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	var ranges []sink.Range
	r := sink.Range{Lo: lo, LoInclusive: true, Hi: hi}
	for {
		key, found, err := s.NextKey(ctx(t), rel, r, size)
		require.NoError(t, err)
		if !found || key.Equal(hi) {
			return append(ranges, sink.Range{Lo: r.Lo, LoInclusive: r.LoInclusive, Hi: hi})
		}
		ranges = append(ranges, sink.Range{Lo: r.Lo, LoInclusive: r.LoInclusive, Hi: key})
		r = sink.Range{Lo: key, Hi: hi}
	}
}

func (b *testBundle) firstSubBatch(t *testing.T, rel sink.Relation, migration string, seq int64, r sink.Range, limit int) sink.SubBatch {
	t.Helper()
	cp, err := b.sink.BeginBatch(ctx(t), migration, seq, rel.Key)
	require.NoError(t, err)
	return sink.SubBatch{Migration: migration, Seq: seq, Relation: rel, Batch: r, From: cp.Key, Limit: limit}
}

func setChange(rel sink.Relation, s string) sink.Change { return set(rel, s) }

// TestStatementCache: the write connection's prepared statements survive
// schema changes by other connections and stay bounded.
func TestStatementCache(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 300)
	sb := b.subBatch(t, rel, "cache", 100)
	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	sb.From = res.Checkpoint

	// Another connection changes the table under the prepared statements.
	b.db.Exec(t, "ALTER TABLE items ADD COLUMN extra TEXT")
	b.db.Exec(t, "CREATE INDEX items_n ON items (n)")
	res, err = b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(100), res.Rows)
	sb.From = res.Checkpoint

	// Many distinct statements in one transaction: older ones are evicted.
	res, err = b.sink.ApplySubBatch(ctx(t), sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		for i := range 3 * stmtCacheSize {
			if _, err := tx.Exec(ctx, fmt.Sprintf("UPDATE items SET extra = 'x%d' WHERE id = ?", i), i+1); err != nil {
				return 0, err
			}
		}
		q := sink.NewBuilder(tx.Dialect())
		q.SQL("UPDATE items SET n = n + 1 WHERE ").Write(s.Rows)
		return tx.Exec(ctx, q.String(), q.Args()...)
	}})
	require.NoError(t, err)
	require.Equal(t, int64(100), res.Rows)
	require.LessOrEqual(t, len(b.sink.w.stmts), stmtCacheSize)
	require.Equal(t, int64(300), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	require.Equal(t, int64(3*stmtCacheSize), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE extra IS NOT NULL"))
}

// TestPanicInChangeRollsBack: a custom change that panics leaves no
// transaction open behind it.
func TestPanicInChangeRollsBack(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 50)
	sb := b.subBatch(t, rel, "panic", 10)
	require.Panics(t, func() {
		_, _ = b.sink.ApplySubBatch(ctx(t), sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
			q := sink.NewBuilder(tx.Dialect())
			q.SQL("UPDATE items SET n = n + 1 WHERE ").Write(s.Rows)
			if _, err := tx.Exec(ctx, q.String(), q.Args()...); err != nil {
				return 0, err
			}
			panic("custom kind bug")
		}})
	})
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"), "rolled back")
	b.db.Exec(t, "UPDATE items SET label = 'free' WHERE id = 50") // the write lock is free
	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, batches.IntKey(10), res.Checkpoint)
}

// TestNumericTextKeysResume: a text key that looks like a number ("142")
// comes back from BeginBatch as the text key it is, so a batch resumed
// from the ledger before every sub-batch, with a skipped key among them,
// keeps its place and changes every other row once.
func TestNumericTextKeysResume(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, `CREATE TABLE codes (code VARCHAR(10) PRIMARY KEY, n INT NOT NULL DEFAULT 0)`)
	b.db.Exec(t, `WITH RECURSIVE c(i) AS (SELECT 100 UNION ALL SELECT i + 7 FROM c WHERE i < 800) INSERT INTO codes (code) SELECT i FROM c`)
	rel := b.relation(t, "codes")
	require.Equal(t, sink.KeyString, rel.Key)
	total := b.db.QueryInt(t, "SELECT COUNT(*) FROM codes")
	lo, hi, ok, err := b.sink.Bounds(ctx(t), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	r := sink.Range{Lo: lo, LoInclusive: true, Hi: hi}
	for i := 0; ; i++ {
		// Every sub-batch resumes from the ledger, as a redelivered batch does.
		cp, err := b.sink.BeginBatch(ctx(t), "codes", 0, rel.Key)
		require.NoError(t, err)
		require.False(t, cp.Key.IsInt(), "a text checkpoint is never read back as an integer")
		sb := sink.SubBatch{Migration: "codes", Relation: rel, Batch: r, From: cp.Key, Limit: 9}
		if i == 3 {
			key, ok, err := b.sink.NextKey(ctx(t), rel, sb.Rows(), 1)
			require.NoError(t, err)
			require.True(t, ok)
			skipped, err := b.sink.SkipKey(ctx(t), sb, key)
			require.NoError(t, err)
			require.Equal(t, key, skipped.Key)
			require.Equal(t, []batches.Key{key}, skipped.FailedKeys)
			sb.From = key
		}
		res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
		require.NoError(t, err)
		if res.Done {
			break
		}
		require.Less(t, i, 1000)
	}
	require.Equal(t, total-1, b.db.QueryInt(t, "SELECT COUNT(*) FROM codes WHERE n = 1"))
	require.Equal(t, int64(1), b.db.QueryInt(t, "SELECT COUNT(*) FROM codes WHERE n = 0"))
}
