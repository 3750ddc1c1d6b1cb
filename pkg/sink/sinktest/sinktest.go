// Package sinktest is the conformance suite every sink must pass: the same
// behaviour, checked against the real database, for Postgres, MySQL/MariaDB
// and SQLite. A sink package runs it from its tests:
//
//	func TestConformance(t *testing.T) { sinktest.Run(t, testenv.DialectPostgres) }
//
// Each case gets its own database from internal/testenv and opens the sink
// through sink.Open on that database's DSN, as the planner and executors do.
package sinktest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Run runs every conformance case against the sink registered for dialect's
// DSN scheme. Subtests are named "<dialect>/<case>".
func Run(t *testing.T, dialect string) {
	cases := []struct {
		name string
		fn   func(t *testing.T, b *bundle)
	}{
		{"TableLookup", testTableLookup},
		{"BadIdentifiers", testBadIdentifiers},
		{"BatchColumn", testBatchColumn},
		{"BoundsCoverGappedKeys", testBoundsCoverGappedKeys},
		{"BoundsRespectFilter", testBoundsRespectFilter},
		{"TextKeys", testTextKeys},
		{"ApplyExactlyOnce", testApplyExactlyOnce},
		{"ApplyRespectsFilter", testApplyRespectsFilter},
		{"ConcurrentSameSubBatch", testConcurrentSameSubBatch},
		{"ConcurrentExecutors", testConcurrentExecutors},
		{"CrashAndResume", testCrashAndResume},
		{"FailedChangeRollsBack", testFailedChangeRollsBack},
		{"SkipKey", testSkipKey},
		{"LedgerCreatedOnFirstUse", testLedgerCreatedOnFirstUse},
		{"StatementForm", testStatementForm},
		{"ExplicitRanges", testExplicitRanges},
		{"NumericTextKeys", testNumericTextKeys},
		{"ResetLedger", testResetLedger},
		{"CheckStatement", testCheckStatement},
		{"TransientLockTimeout", testTransientLockTimeout},
		{"TransientConnectionLost", testTransientConnectionLost},
		{"TransientDeadlock", testTransientDeadlock},
		{"DataErrors", testDataErrors},
		{"FatalErrors", testFatalErrors},
		{"PermissionDenied", testPermissionDenied},
		{"ThrottleAndLag", testThrottleAndLag},
		{"EstimateRows", testEstimateRows},
	}
	for _, tc := range cases {
		t.Run(dialect+"/"+tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, setup(t, dialect, sink.Options{}))
		})
	}
}

// bundle is one case's database and the sink opened on it.
type bundle struct {
	dialect string
	db      *testenv.Database
	sink    sink.Sink
	opts    sink.Options
}

func setup(t *testing.T, dialect string, opts sink.Options) *bundle {
	t.Helper()
	db := testenv.Open(t, dialect)
	b := &bundle{dialect: dialect, db: db, opts: opts}
	b.sink = b.open(t, db.DSN, opts)
	return b
}

// open opens another sink on dsn, closed at cleanup: a second executor.
func (b *bundle) open(t *testing.T, dsn string, opts sink.Options) sink.Sink {
	t.Helper()
	s, err := sink.Open(ctx(t), dsn, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// ctx bounds every call so a hung sink fails its case instead of the run.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// createItems creates items(id, n, grp, label, score) with the given ids;
// grp is id mod 3, label "L<id>", n 0.
func (b *bundle) createItems(t *testing.T, ids []int64) {
	t.Helper()
	b.db.Exec(t, `CREATE TABLE items (
		id BIGINT NOT NULL PRIMARY KEY,
		n INT NOT NULL DEFAULT 0,
		grp INT NOT NULL,
		label VARCHAR(40),
		score REAL
	)`)
	rows := make([]string, len(ids))
	for i, id := range ids {
		rows[i] = fmt.Sprintf("(%d, %d, 'L%d')", id, mod(id, 3), id)
	}
	b.insert(t, "INSERT INTO items (id, grp, label) VALUES ", rows)
}

// createDocs creates docs(k, n) with string keys.
func (b *bundle) createDocs(t *testing.T, keys []string) {
	t.Helper()
	b.db.Exec(t, `CREATE TABLE docs (k VARCHAR(64) NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 0)`)
	rows := make([]string, len(keys))
	for i, k := range keys {
		rows[i] = "('" + k + "')"
	}
	b.insert(t, "INSERT INTO docs (k) VALUES ", rows)
}

func (b *bundle) insert(t *testing.T, prefix string, rows []string) {
	t.Helper()
	for len(rows) > 0 {
		n := min(len(rows), 500)
		b.db.Exec(t, prefix+strings.Join(rows[:n], ", "))
		rows = rows[n:]
	}
}

func mod(a, m int64) int64 { return ((a % m) + m) % m }

// gappedIDs returns n increasing ids with gaps of every size, negative ones
// included: runs of neighbours, jumps of a thousand and of a million, and a
// last key far out, as real tables look after years of deletes.
func gappedIDs(n int) []int64 {
	ids := make([]int64, 0, n)
	id := int64(-40)
	for i := range n {
		switch {
		case i > 0 && i%97 == 0:
			id += 1_000_000
		case i%13 == 0:
			id += 1000
		default:
			id += 1 + int64(i%3)
		}
		ids = append(ids, id)
	}
	ids[n-1] = 1 << 40
	return ids
}

// textKeys returns n distinct lowercase hex keys in no particular order,
// like uuids.
func textKeys(n int) []string {
	keys := make([]string, n)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range keys {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		keys[i] = fmt.Sprintf("%016x-%04d", x, i)
	}
	return keys
}

// relation resolves table and its batch column through the sink, as the
// planner does.
func (b *bundle) relation(t *testing.T, table, column, where string) sink.Relation {
	t.Helper()
	tbl, err := b.sink.Table(ctx(t), table)
	require.NoError(t, err)
	col, err := tbl.BatchColumn(column)
	require.NoError(t, err)
	return sink.Relation{Table: tbl, Column: col.Name, Key: col.Key, Where: where}
}

// plan cuts the relation into batches of batchSize rows with Bounds and
// NextKey, the way the planner does.
func (b *bundle) plan(t *testing.T, rel sink.Relation, batchSize int) []sink.Range {
	t.Helper()
	lo, hi, ok, err := b.sink.Bounds(ctx(t), rel, sink.Range{})
	require.NoError(t, err)
	if !ok {
		return nil
	}
	var ranges []sink.Range
	r := sink.Range{Lo: lo, LoInclusive: true, Hi: hi}
	for {
		key, found, err := b.sink.NextKey(ctx(t), rel, r, batchSize)
		require.NoError(t, err)
		if !found || key.Equal(hi) {
			ranges = append(ranges, sink.Range{Lo: r.Lo, LoInclusive: r.LoInclusive, Hi: hi})
			return ranges
		}
		ranges = append(ranges, sink.Range{Lo: r.Lo, LoInclusive: r.LoInclusive, Hi: key})
		r = sink.Range{Lo: key, Hi: hi}
		require.Less(t, len(ranges), 100_000, "planning does not end")
	}
}

// countIn counts the relation's rows within r, with the database's own
// ordering (text keys sort by collation, not bytes).
func (b *bundle) countIn(t *testing.T, rel sink.Relation, r sink.Range) int64 {
	t.Helper()
	q := sink.NewBuilder(b.sink.Dialect())
	q.SQL("SELECT COUNT(*) FROM ").Ident(rel.Table.QualifiedName()).SQL(" WHERE ").Write(rel.Rows(r))
	var n int64
	require.NoError(t, b.db.DB.QueryRowContext(ctx(t), q.String(), q.Args()...).Scan(&n))
	return n
}

// setChange is the sql kind with a SET clause, the common case.
func setChange(rel sink.Relation, set string) sink.Change {
	return kinds.SQL(rel, batches.SQLArgs{Set: set})
}

// runBatch applies a whole batch from its ledger checkpoint, sub-batch by
// sub-batch, as one executor does, and returns the rows it changed.
func runBatch(t *testing.T, s sink.Sink, migration string, seq int64, rel sink.Relation, r sink.Range, change sink.Change, limit int) int64 {
	t.Helper()
	cp, err := s.BeginBatch(ctx(t), migration, seq, rel.Key)
	require.NoError(t, err)
	from := cp.Key
	var total int64
	for i := 0; ; i++ {
		res, err := s.ApplySubBatch(ctx(t), sink.SubBatch{Migration: migration, Seq: seq, Relation: rel, Batch: r, From: from, Limit: limit}, change)
		require.NoError(t, err)
		total += res.Rows
		if res.Done {
			require.True(t, res.Checkpoint.Equal(r.Hi), "a finished batch's checkpoint is its Hi, got %s", res.Checkpoint)
			return total
		}
		require.False(t, res.Checkpoint.Equal(from), "sub-batch %d did not advance from %s", i, from)
		from = res.Checkpoint
		require.Less(t, i, 1_000_000)
	}
}

// requireClass asserts err is non-nil and the sink classifies it as want.
func (b *bundle) requireClass(t *testing.T, err error, want batches.ErrorClass) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want, b.sink.Classify(err), "classify %T: %v", err, err)
}

// dsnWith returns the database's DSN with its user replaced (server
// databases) or a query parameter added (SQLite).
func (b *bundle) dsnWith(t *testing.T, user, password string, query url.Values) string {
	t.Helper()
	u, err := url.Parse(b.db.DSN)
	require.NoError(t, err)
	if user != "" {
		if password != "" {
			u.User = url.UserPassword(user, password)
		} else {
			u.User = url.User(user)
		}
	}
	q := u.Query()
	for k, vs := range query {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// isErr reports whether err wraps target, for readable assertions.
func isErr(err, target error) bool { return errors.Is(err, target) }

// kindsStatement is the sql kind with a statement.
func kindsStatement(rel sink.Relation, stmt string) sink.Change {
	return kinds.SQL(rel, batches.SQLArgs{Statement: stmt})
}
