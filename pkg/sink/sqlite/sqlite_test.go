package sqlite

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

// testBundle is one test's database and the sink opened on it.
type testBundle struct {
	db   *testenv.Database
	sink *Sink
}

func setup(t *testing.T, opts sink.Options) *testBundle {
	t.Helper()
	db := testenv.SQLite(t)
	return &testBundle{db: db, sink: openSink(t, db.DSN, opts)}
}

func openSink(t *testing.T, dsn string, opts sink.Options) *Sink {
	t.Helper()
	s, err := Open(ctx(t), dsn, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// ctx bounds every call so a hung sink fails its test instead of the run.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// items creates items(id, n, label) with ids 1..count.
func (b *testBundle) items(t *testing.T, count int) sink.Relation {
	t.Helper()
	b.db.Exec(t, `CREATE TABLE items (id INTEGER PRIMARY KEY, n INT NOT NULL DEFAULT 0, label TEXT)`)
	b.db.Exec(t, `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?)
		INSERT INTO items (id, label) SELECT i, 'L' || i FROM c`, count)
	return b.relation(t, "items")
}

func (b *testBundle) relation(t *testing.T, table string) sink.Relation {
	t.Helper()
	tbl, err := b.sink.Table(ctx(t), table)
	require.NoError(t, err)
	col, err := tbl.BatchColumn("")
	require.NoError(t, err)
	return sink.Relation{Table: tbl, Column: col.Name, Key: col.Key}
}

// subBatch is the first sub-batch of a fresh batch over the whole relation.
func (b *testBundle) subBatch(t *testing.T, rel sink.Relation, migration string, limit int) sink.SubBatch {
	t.Helper()
	lo, hi, ok, err := b.sink.Bounds(ctx(t), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	cp, err := b.sink.BeginBatch(ctx(t), migration, 0, rel.Key)
	require.NoError(t, err)
	return sink.SubBatch{Migration: migration, Relation: rel, Batch: sink.Range{Lo: lo, LoInclusive: true, Hi: hi}, From: cp.Key, Limit: limit}
}

func set(rel sink.Relation, s string) sink.Change { return kinds.SQL(rel, batches.SQLArgs{Set: s}) }

func TestOpenPathWithSpecialCharacters(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a#b c%d?e")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, "my db.sqlite")
	s := openSink(t, (&url.URL{Scheme: "sqlite", Path: path}).String(), sink.Options{})
	require.NoError(t, s.EnsureLedger(ctx(t)))
	require.Equal(t, path, s.Path())
	_, err := os.Stat(path)
	require.NoError(t, err, "the file is where the DSN says, not at a decoded or truncated path")
}

func TestOpenRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	s := openSink(t, "sqlite://sub.db", sink.Options{})
	require.NoError(t, s.EnsureLedger(ctx(t)))
	require.NoError(t, s.Close())
	_, err := os.Stat(filepath.Join(dir, "sub.db"))
	require.NoError(t, err)
}

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	_, err := sink.Open(ctx(t), "sqlite://:memory:", sink.Options{})
	require.ErrorIs(t, err, ErrInvalidDSN)
	require.ErrorContains(t, err, "in-memory")

	// A directory that does not exist: SQLite cannot create the file.
	_, err = sink.Open(ctx(t), "sqlite:///nonexistent-dir-"+fmt.Sprint(time.Now().UnixNano())+"/x.db", sink.Options{})
	require.Error(t, err)
	require.Equal(t, batches.ClassFatal, classify(err), "%v", err)
}

// TestSessionSettings checks what every write connection runs with.
func TestSessionSettings(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{LockTimeout: 1234 * time.Millisecond})
	pragma := func(name string) string {
		var v string
		require.NoError(t, b.sink.writeTx(ctx(t), func(ctx context.Context, q *txQueryer) error {
			return q.QueryRow(ctx, "PRAGMA "+name).Scan(&v)
		}))
		return v
	}
	require.Equal(t, "wal", pragma("journal_mode"))
	require.Equal(t, "1234", pragma("busy_timeout"))
	require.Equal(t, "1", pragma("foreign_keys"))
	require.Equal(t, "1", pragma("synchronous"), "NORMAL")

	var readOnly string
	require.NoError(t, b.sink.read.QueryRowContext(ctx(t), "PRAGMA query_only").Scan(&readOnly))
	require.Equal(t, "1", readOnly, "the read pool cannot take the write lock")
	_, err := b.sink.read.ExecContext(ctx(t), "CREATE TABLE x (a INT)")
	require.Error(t, err)
}

// TestWriteTransactionsAreImmediate: a write transaction holds SQLite's
// write lock from its first statement, even one that only reads, so the
// ledger read in ApplyInTx is already exclusive of every other writer.
func TestWriteTransactionsAreImmediate(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.items(t, 10)
	inside := make(chan struct{})
	release := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- b.sink.writeTx(ctx(t), func(ctx context.Context, q *txQueryer) error {
			var n int64
			if err := q.QueryRow(ctx, "SELECT COUNT(*) FROM items").Scan(&n); err != nil {
				return err
			}
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	conn, err := b.db.DB.Conn(ctx(t))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx(t), "PRAGMA busy_timeout = 50")
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx(t), "BEGIN IMMEDIATE")
	require.Error(t, err, "a reading write transaction already holds the lock")
	require.Equal(t, batches.ClassTransient, classify(err), "%v", err)
	close(release)
	require.NoError(t, <-errc)
}

// TestStatementTimeout: a statement running longer than StatementTimeout
// is interrupted (modernc.org/sqlite calls sqlite3_interrupt when the
// context ends), and the error is transient.
func TestStatementTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{StatementTimeout: 200 * time.Millisecond})
	endless := "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT MAX(x) FROM c)"
	forever := "SELECT " + endless + " > 0"

	started := time.Now()
	_, err := b.sink.Throttled(ctx(t), forever)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, batches.ClassTransient, classify(err))
	require.Less(t, time.Since(started), 3*time.Second)

	// Inside a sub-batch: the statement is cancelled and the whole
	// transaction rolled back.
	rel := b.items(t, 100)
	sb := b.subBatch(t, rel, "slow", 50)
	started = time.Now()
	_, err = b.sink.ApplySubBatch(ctx(t), sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		q := sink.NewBuilder(tx.Dialect())
		q.SQL("UPDATE items SET n = n + 1 WHERE ").Write(s.Rows)
		if _, err := tx.Exec(ctx, q.String(), q.Args()...); err != nil {
			return 0, err
		}
		return tx.Exec(ctx, "UPDATE items SET n = "+endless)
	}})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, batches.ClassTransient, classify(err))
	require.Less(t, time.Since(started), 3*time.Second)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"), "rolled back")

	// The sql kind's SET, which takes the folded path.
	started = time.Now()
	_, err = b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = "+endless))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(started), 3*time.Second)

	// The sink goes on working.
	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(50), res.Rows)
}

// TestIdleInTransaction: a custom change that stops talking to the
// database while holding the write lock is rolled back after
// IdleInTransactionTimeout, and other writers get the lock back at once.
func TestIdleInTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{IdleInTransactionTimeout: 200 * time.Millisecond})
	rel := b.items(t, 100)
	sb := b.subBatch(t, rel, "idle", 50)

	stuck := make(chan struct{})
	unstick := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := b.sink.ApplySubBatch(ctx(t), sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
			q := sink.NewBuilder(tx.Dialect())
			q.SQL("UPDATE items SET n = n + 1 WHERE ").Write(s.Rows)
			n, err := tx.Exec(ctx, q.String(), q.Args()...)
			if err != nil {
				return 0, err
			}
			close(stuck)
			<-unstick // a call that ignores its context
			return n, nil
		}})
		errc <- err
	}()
	<-stuck
	// Another process's writer gets the lock once the idle transaction is
	// rolled back, well before the stuck change returns.
	started := time.Now()
	b.db.Exec(t, "UPDATE items SET label = 'other writer' WHERE id = 100")
	require.Less(t, time.Since(started), 3*time.Second)
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"), "the idle transaction's writes were rolled back")
	// So does the next writer of the same process.
	other := b.subBatch(t, rel, "idle_other", 10)
	res, err := b.sink.ApplySubBatch(ctx(t), other, set(rel, "label = 'same process'"))
	require.NoError(t, err)
	require.Equal(t, int64(10), res.Rows)
	close(unstick)

	err = <-errc
	require.ErrorIs(t, err, errIdleRollback)
	require.Equal(t, batches.ClassTransient, classify(err), "%v", err)
	cp, err := b.sink.BeginBatch(ctx(t), "idle", 0, rel.Key)
	require.NoError(t, err)
	require.True(t, cp.Key.IsNull(), "the checkpoint did not move")

	// A transaction that keeps working is not cut short by the guard.
	res, err = b.sink.ApplySubBatch(ctx(t), sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		var total int64
		for range 5 {
			time.Sleep(100 * time.Millisecond)
			q := sink.NewBuilder(tx.Dialect())
			q.SQL("UPDATE items SET n = n + 1 WHERE ").Write(s.Rows)
			n, err := tx.Exec(ctx, q.String(), q.Args()...)
			if err != nil {
				return 0, err
			}
			total += n
		}
		return total / 5, nil
	}})
	require.NoError(t, err)
	require.Equal(t, int64(50), res.Rows)
}

// TestWriterQueueTimeout: sub-batches of one process queue for the write
// connection, at most LockTimeout; then the error is transient.
func TestWriterQueueTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{LockTimeout: 200 * time.Millisecond})
	rel := b.items(t, 100)
	sb := b.subBatch(t, rel, "queue", 10)

	holding := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := b.sink.ApplySubBatch(ctx(t), sb, sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
			close(holding)
			<-release
			return 0, nil
		}})
		done <- err
	}()
	<-holding
	started := time.Now()
	_, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.ErrorIs(t, err, errWriterBusy)
	require.Equal(t, batches.ClassTransient, classify(err))
	require.Less(t, time.Since(started), 2*time.Second)
	close(release)
	require.NoError(t, <-done)
}

func TestThrottledValues(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	for query, want := range map[string]bool{
		"SELECT 1": true, "SELECT 0": false, "SELECT 7": true,
		"SELECT 't'": true, "SELECT 'f'": false, "SELECT 'TRUE'": true, "SELECT 'false'": false,
		"SELECT 1 = 1": true, "SELECT 0.0": false,
	} {
		got, err := b.sink.Throttled(ctx(t), query)
		require.NoError(t, err, query)
		require.Equal(t, want, got, query)
	}
	for _, query := range []string{"SELECT NULL", "SELECT 'maybe'", "SELECT 1 WHERE 0", "SELECT * FROM nowhere", "SELEC 1"} {
		_, err := b.sink.Throttled(ctx(t), query)
		require.Error(t, err, query)
	}
	_, err := b.sink.Throttled(ctx(t), "CREATE TABLE sneaky (a INT)")
	require.Error(t, err, "throttle queries run on read-only connections")
}

func TestTableSQLiteShapes(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, `CREATE TABLE rowids (id INTEGER PRIMARY KEY, f FLOATING POINT, d DATETIME, raw, u UUID, c CLOB, v NVARCHAR(9))`)
	b.db.Exec(t, `CREATE TABLE docs (k TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID`)
	b.db.Exec(t, `CREATE TABLE strict_t (id INTEGER PRIMARY KEY, n INT NOT NULL, s TEXT, a ANY) STRICT`)
	b.db.Exec(t, `CREATE TABLE loose (k TEXT PRIMARY KEY, g INT GENERATED ALWAYS AS (length(k)) STORED)`)
	b.db.Exec(t, `CREATE VIEW a_view AS SELECT * FROM docs`)
	b.db.Exec(t, `CREATE TABLE "we""ird tab" ("se;lect" INTEGER PRIMARY KEY, "a.b" TEXT)`)

	tbl, err := b.sink.Table(ctx(t), "ROWIDS")
	require.NoError(t, err)
	require.Equal(t, "main", tbl.Schema)
	require.Equal(t, "rowids", tbl.Name)
	require.Equal(t, []string{"id"}, tbl.PrimaryKey)
	keys := map[string]sink.KeyType{}
	for _, c := range tbl.Columns {
		keys[c.Name] = c.Key
	}
	require.Equal(t, map[string]sink.KeyType{
		"id": sink.KeyInt, "f": sink.KeyInt, // "FLOATING POINT" has INT in it: INTEGER affinity
		"d": sink.KeyUnsupported, "raw": sink.KeyUnsupported,
		"u": sink.KeyString, "c": sink.KeyString, "v": sink.KeyString,
	}, keys)
	id, _ := tbl.Column("id")
	require.False(t, id.Nullable, "INTEGER PRIMARY KEY is the rowid")

	docs, err := b.sink.Table(ctx(t), "main.docs")
	require.NoError(t, err)
	k, _ := docs.Column("k")
	require.False(t, k.Nullable, "WITHOUT ROWID keys are NOT NULL")
	require.Equal(t, sink.KeyString, k.Key)

	strict, err := b.sink.Table(ctx(t), "strict_t")
	require.NoError(t, err)
	a, _ := strict.Column("a")
	require.Equal(t, sink.KeyUnsupported, a.Key)

	loose, err := b.sink.Table(ctx(t), "loose")
	require.NoError(t, err)
	_, ok := loose.Column("g")
	require.True(t, ok, "generated columns are columns")
	lk, _ := loose.Column("k")
	require.True(t, lk.Nullable, "SQLite lets a TEXT PRIMARY KEY of a rowid table hold NULL")

	_, err = b.sink.Table(ctx(t), "a_view")
	require.ErrorIs(t, err, sink.ErrTableNotFound, "views cannot be migrated")
	_, err = b.sink.Table(ctx(t), "temp.docs")
	require.ErrorIs(t, err, sink.ErrTableNotFound)
	_, err = b.sink.Table(ctx(t), "sqlite_temp_master")
	require.ErrorIs(t, err, sink.ErrTableNotFound)

	weird, err := b.sink.Table(ctx(t), `we"ird tab`)
	require.NoError(t, err)
	require.Equal(t, []string{"se;lect"}, weird.PrimaryKey)
}

// TestQuotedIdentifiersEndToEnd migrates a table whose names need quoting.
func TestQuotedIdentifiersEndToEnd(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, `CREATE TABLE "we""ird tab" ("se;lect" INTEGER PRIMARY KEY, "n""" INT NOT NULL DEFAULT 0)`)
	b.db.Exec(t, `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 30) INSERT INTO "we""ird tab" ("se;lect") SELECT i * 7 FROM c`)
	rel := b.relation(t, `we"ird tab`)
	require.Equal(t, "se;lect", rel.Column)
	sb := b.subBatch(t, rel, "weird", 12)
	total := int64(0)
	for {
		res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, `"n""" = "n""" + 1`))
		require.NoError(t, err)
		total += res.Rows
		if res.Done {
			break
		}
		sb.From = res.Checkpoint
	}
	require.Equal(t, int64(30), total)
	require.Equal(t, int64(30), b.db.QueryInt(t, `SELECT COUNT(*) FROM "we""ird tab" WHERE "n""" = 1`))

	require.Equal(t, `"a""b"`, Dialect.QuoteIdent(`a"b`))
	require.Equal(t, `"main"."t"`, Dialect.QuoteIdent("main.t"))
	require.Equal(t, `"main"."a.b"`, Dialect.QuoteIdent("main.a.b"))
	require.Equal(t, `"x"" OR 1=1 --"`, Dialect.QuoteIdent(`x" OR 1=1 --`))
}

// TestStringCheckpoints: text keys go through the ledger and back.
func TestStringCheckpoints(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, `CREATE TABLE docs (k TEXT PRIMARY KEY, n INT NOT NULL DEFAULT 0) WITHOUT ROWID`)
	b.db.Exec(t, `INSERT INTO docs (k) VALUES ('apple'), ('banana'), ('cherry'), ('date'), ('elder')`)
	rel := b.relation(t, "docs")
	sb := b.subBatch(t, rel, "fruit", 2)
	res, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, batches.StringKey("banana"), res.Checkpoint)
	cp, err := b.sink.BeginBatch(ctx(t), "fruit", 0, rel.Key)
	require.NoError(t, err)
	require.Equal(t, batches.StringKey("banana"), cp.Key)
	require.Equal(t, int64(2), cp.RowsAffected)
	require.WithinDuration(t, time.Now(), cp.UpdatedAt, time.Minute)
}

// TestNullKeysAreNotBounds: a nullable batch column's NULLs sort first in
// SQLite; they bound no batch.
func TestNullKeysAreNotBounds(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, `CREATE TABLE t (id INTEGER PRIMARY KEY, ext INT)`)
	b.db.Exec(t, `INSERT INTO t (ext) VALUES (NULL), (NULL), (5), (9), (NULL)`)
	tbl, err := b.sink.Table(ctx(t), "t")
	require.NoError(t, err)
	rel := sink.Relation{Table: tbl, Column: "ext", Key: sink.KeyInt}
	lo, hi, ok, err := b.sink.Bounds(ctx(t), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, batches.IntKey(5), lo)
	require.Equal(t, batches.IntKey(9), hi)
	key, ok, err := b.sink.NextKey(ctx(t), rel, sink.Range{}, 1)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, batches.IntKey(5), key)
}

func TestEnsureLedgerRetriesAfterFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{LockTimeout: 100 * time.Millisecond})
	conn, err := b.db.DB.Conn(ctx(t))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx(t), "BEGIN IMMEDIATE")
	require.NoError(t, err)
	_, err = b.sink.BeginBatch(ctx(t), "m", 1, sink.KeyInt)
	require.Error(t, err, "the ledger cannot be created while another writer holds the lock")
	require.Equal(t, batches.ClassTransient, classify(err), "%v", err)
	_, err = conn.ExecContext(ctx(t), "ROLLBACK")
	require.NoError(t, err)
	cp, err := b.sink.BeginBatch(ctx(t), "m", 1, sink.KeyInt)
	require.NoError(t, err, "created on the next use")
	require.True(t, cp.Key.IsNull())
}

func TestCheckpointMovedWraps(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 20)
	sb := b.subBatch(t, rel, "moved", 5)
	_, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.NoError(t, err)
	_, err = b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.True(t, errors.Is(err, sink.ErrCheckpointMoved), "%v", err)
	require.Equal(t, batches.ClassCheckpointMoved, b.sink.Classify(err))
	require.Equal(t, int64(5), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
}
