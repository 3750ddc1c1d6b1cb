package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// testBundle is one test's database and a sink open on it.
type testBundle struct {
	db   *testenv.Database
	sink *Sink
}

// setup gives the test its own database and a sink on it, closed at
// cleanup. Pools stay small: every package's tests share one server.
func setup(t *testing.T, opts ...func(*sink.Options)) *testBundle {
	t.Helper()
	db := testenv.Postgres(t)
	o := sink.Options{MaxConns: 4}
	for _, f := range opts {
		f(&o)
	}
	return &testBundle{db: db, sink: openSink(t, db.DSN, o)}
}

// openSink opens a sink on dsn, closed at cleanup.
func openSink(t *testing.T, dsn string, o sink.Options) *Sink {
	t.Helper()
	s, err := Open(t.Context(), dsn, o)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// counterTable creates table (id BIGINT PRIMARY KEY, n INT NOT NULL
// DEFAULT 0) with ids step, 2·step, … rows·step, and resolves it.
func (tb *testBundle) counterTable(t *testing.T, name string, rows, step int) sink.Relation {
	t.Helper()
	q := Dialect.QuoteIdent(name)
	tb.db.Exec(t, "CREATE TABLE "+q+" (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, s text)")
	tb.db.Exec(t, "INSERT INTO "+q+" (id) SELECT g * $1 FROM generate_series(1, $2) g", step, rows)
	return tb.relation(t, name, "id")
}

// relation resolves a table and batch column through the sink.
func (tb *testBundle) relation(t *testing.T, table, column string) sink.Relation {
	t.Helper()
	tab, err := tb.sink.Table(t.Context(), table)
	require.NoError(t, err)
	col, err := tab.BatchColumn(column)
	require.NoError(t, err)
	return sink.Relation{Table: tab, Column: col.Name, Key: col.Key}
}

// runBatch applies change over the batch from its ledger checkpoint to the
// end, as an executor does, and returns the rows changed.
func (tb *testBundle) runBatch(t *testing.T, migration string, seq int64, rel sink.Relation, batch sink.Range, limit int, change sink.Change) int64 {
	t.Helper()
	ctx := t.Context()
	cp, err := tb.sink.BeginBatch(ctx, migration, seq, rel.Key)
	require.NoError(t, err)
	from := cp.Key
	var total int64
	for range 100000 {
		res, err := tb.sink.ApplySubBatch(ctx, sink.SubBatch{
			Migration: migration, Seq: seq, Relation: rel, Batch: batch, From: from, Limit: limit,
		}, change)
		require.NoError(t, err)
		total += res.Rows
		from = res.Checkpoint
		if res.Done {
			return total
		}
	}
	t.Fatal("batch never done")
	return 0
}

func intRange(lo, hi int64) sink.Range {
	return sink.Range{Lo: batches.IntKey(lo), Hi: batches.IntKey(hi)}
}

// waitForLockWait waits until a session of the database waits on a lock.
func waitForLockWait(t *testing.T, db *testenv.Database) {
	t.Helper()
	require.Eventually(t, func() bool {
		return db.QueryInt(t, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") > 0
	}, 10*time.Second, 5*time.Millisecond, "no session waits on a lock")
}

// ctxTimeout is a context for a step that must not hang the test.
func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
