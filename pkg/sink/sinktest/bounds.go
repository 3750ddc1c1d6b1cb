package sinktest

import (
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// requireCover checks ranges are contiguous, cover every row of rel once
// and each hold exactly batchSize rows but the last.
func (b *bundle) requireCover(t *testing.T, rel sink.Relation, ranges []sink.Range, batchSize int, total int64) {
	t.Helper()
	require.NotEmpty(t, ranges)
	require.True(t, ranges[0].LoInclusive)
	var sum int64
	for i, r := range ranges {
		if i > 0 {
			require.True(t, r.Lo.Equal(ranges[i-1].Hi), "batch %d starts at %s, the previous ends at %s", i, r.Lo, ranges[i-1].Hi)
			require.False(t, r.LoInclusive)
		}
		n := b.countIn(t, rel, r)
		if i < len(ranges)-1 {
			require.Equal(t, int64(batchSize), n, "batch %d %s", i, r)
		} else {
			require.LessOrEqual(t, n, int64(batchSize), "last batch %s", r)
			require.Positive(t, n, "last batch %s", r)
		}
		sum += n
	}
	require.Equal(t, total, sum, "every row in exactly one batch")
}

func testBoundsCoverGappedKeys(t *testing.T, b *bundle) {
	ids := gappedIDs(2500)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "", "")

	lo, hi, ok, err := b.sink.Bounds(ctx(t), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, batches.IntKey(ids[0]), lo)
	require.Equal(t, batches.IntKey(ids[len(ids)-1]), hi)

	for _, size := range []int{1, 97, 1000, 5000} {
		ranges := b.plan(t, rel, size)
		b.requireCover(t, rel, ranges, size, int64(len(ids)))
		require.Equal(t, (len(ids)+size-1)/size, len(ranges), "batch size %d", size)
	}

	// NextKey counts rows, not key space: the 50th row after a key.
	key, ok, err := b.sink.NextKey(ctx(t), rel, sink.Range{Lo: batches.IntKey(ids[100]), Hi: hi}, 50)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, batches.IntKey(ids[150]), key)
	_, ok, err = b.sink.NextKey(ctx(t), rel, sink.Range{Lo: batches.IntKey(ids[len(ids)-10]), Hi: hi}, 50)
	require.NoError(t, err)
	require.False(t, ok, "fewer rows than asked remain")

	// Bounds within a range, and of an empty range.
	lo, hi, ok, err = b.sink.Bounds(ctx(t), rel, sink.Range{Lo: batches.IntKey(ids[10]), Hi: batches.IntKey(ids[20])})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, batches.IntKey(ids[11]), lo, "the lower bound is exclusive")
	require.Equal(t, batches.IntKey(ids[20]), hi)
	_, _, ok, err = b.sink.Bounds(ctx(t), rel, sink.Range{Lo: batches.IntKey(1 << 41)})
	require.NoError(t, err)
	require.False(t, ok)
}

func testBoundsRespectFilter(t *testing.T, b *bundle) {
	ids := gappedIDs(1500)
	b.createItems(t, ids)
	rel := b.relation(t, "items", "id", "grp = 1")
	var want []int64
	for _, id := range ids {
		if mod(id, 3) == 1 {
			want = append(want, id)
		}
	}
	lo, hi, ok, err := b.sink.Bounds(ctx(t), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, batches.IntKey(want[0]), lo)
	require.Equal(t, batches.IntKey(want[len(want)-1]), hi)

	ranges := b.plan(t, rel, 64)
	b.requireCover(t, rel, ranges, 64, int64(len(want)))

	// A filter matching nothing plans nothing.
	none := b.relation(t, "items", "id", "grp = 7")
	_, _, ok, err = b.sink.Bounds(ctx(t), none, sink.Range{})
	require.NoError(t, err)
	require.False(t, ok)
}

func testTextKeys(t *testing.T, b *bundle) {
	keys := textKeys(1200)
	b.createDocs(t, keys)
	rel := b.relation(t, "docs", "", "")
	require.Equal(t, sink.KeyString, rel.Key)

	lo, hi, ok, err := b.sink.Bounds(ctx(t), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	sorted := append([]string(nil), keys...)
	sort.Strings(sorted) // lowercase hex and digits sort alike in every collation
	require.Equal(t, batches.StringKey(sorted[0]), lo)
	require.Equal(t, batches.StringKey(sorted[len(sorted)-1]), hi)

	ranges := b.plan(t, rel, 100)
	b.requireCover(t, rel, ranges, 100, int64(len(keys)))

	for i, r := range ranges {
		runBatch(t, b.sink, "docs_bump", int64(i), rel, r, setChange(rel, "n = n + 1"), 33)
	}
	require.Equal(t, int64(len(keys)), b.db.QueryInt(t, "SELECT COUNT(*) FROM docs WHERE n = 1"), "every row changed exactly once")
}
