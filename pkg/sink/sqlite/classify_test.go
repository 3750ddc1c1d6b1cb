package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// TestClassifyInduced provokes each error for real, through ApplySubBatch,
// and checks its class and that the sub-batch changed nothing.
func TestClassifyInduced(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, `CREATE TABLE parents (id INTEGER PRIMARY KEY)`)
	b.db.Exec(t, `INSERT INTO parents (id) VALUES (1)`)
	b.db.Exec(t, `CREATE TABLE items (
		id INTEGER PRIMARY KEY,
		n INT NOT NULL DEFAULT 0 CHECK (n < 100),
		label TEXT UNIQUE,
		parent_id INT REFERENCES parents (id),
		note TEXT
	)`)
	b.db.Exec(t, `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20)
		INSERT INTO items (id, label, parent_id) SELECT i, 'L' || i, 1 FROM c`)
	b.db.Exec(t, `CREATE TABLE strict_items (id INTEGER PRIMARY KEY, n INT NOT NULL DEFAULT 0, label TEXT) STRICT`)
	b.db.Exec(t, `INSERT INTO strict_items (id, label) SELECT id, label FROM items`)
	b.db.Exec(t, `CREATE TABLE guarded (id INTEGER PRIMARY KEY, n INT NOT NULL DEFAULT 0)`)
	b.db.Exec(t, `INSERT INTO guarded (id) SELECT id FROM items`)
	b.db.Exec(t, `CREATE TRIGGER no_big_n BEFORE UPDATE ON guarded WHEN NEW.n > 5 BEGIN SELECT RAISE(ABORT, 'n too big'); END`)

	for i, tc := range []struct {
		table, set string
		want       batches.ErrorClass
		code       int // the extended result code, 0 for not a *sqlite.Error
	}{
		{"items", "n = NULL", batches.ClassData, sqlite3.SQLITE_CONSTRAINT_NOTNULL},
		{"items", "label = 'same'", batches.ClassData, sqlite3.SQLITE_CONSTRAINT_UNIQUE},
		{"items", "id = 1", batches.ClassData, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY},
		{"items", "n = 500", batches.ClassData, sqlite3.SQLITE_CONSTRAINT_CHECK},
		{"items", "parent_id = 999", batches.ClassData, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY}, // foreign_keys is on
		{"items", "id = 'x' || id", batches.ClassData, sqlite3.SQLITE_MISMATCH},
		{"items", "note = json('{\"a\":')", batches.ClassData, sqlite3.SQLITE_ERROR},
		{"items", "n = abs(-9223372036854775807 - 1)", batches.ClassData, sqlite3.SQLITE_ERROR},
		{"strict_items", "n = label", batches.ClassData, sqlite3.SQLITE_CONSTRAINT_DATATYPE}, // the STRICT table's failing cast
		{"guarded", "n = 10", batches.ClassData, sqlite3.SQLITE_CONSTRAINT_TRIGGER},
		{"items", "n = = 1", batches.ClassFatal, sqlite3.SQLITE_ERROR},
		{"items", "no_such_column = 1", batches.ClassFatal, sqlite3.SQLITE_ERROR},
		{"items", "n = no_such_function(n)", batches.ClassFatal, sqlite3.SQLITE_ERROR},
	} {
		rel := b.relation(t, tc.table)
		migration := fmt.Sprintf("classify_%d", i)
		sb := b.subBatch(t, rel, migration, 10)
		_, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, tc.set))
		require.Error(t, err, tc.set)
		require.Equal(t, tc.want, b.sink.Classify(err), "%s: %v", tc.set, err)
		var code int
		if se := sqliteError(err); se != nil {
			code = se.Code()
		}
		require.Equal(t, tc.code, code, "%s: %v", tc.set, err)
		require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM "+tc.table+" WHERE n <> 0"), tc.set)
		cp, err := b.sink.BeginBatch(ctx(t), migration, 0, rel.Key)
		require.NoError(t, err)
		require.True(t, cp.Key.IsNull(), "%s: the checkpoint did not move", tc.set)
	}

	// SQLite's own casts never fail: the "bad cast" of other databases is
	// a zero here, which is why the data class needs constraints above.
	rel := b.relation(t, "items")
	sb := b.subBatch(t, rel, "cast", 5)
	_, err := b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = CAST(label AS INTEGER), note = 1 / 0"))
	require.NoError(t, err)
	require.Equal(t, int64(5), b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 0 AND note IS NULL AND id <= 5"))

	// A dropped table.
	b.db.Exec(t, "DROP TABLE guarded")
	rel = sink.Relation{Table: &sink.Table{Schema: "main", Name: "guarded"}, Column: "id", Key: sink.KeyInt}
	_, err = b.sink.BeginBatch(ctx(t), "dropped", 0, sink.KeyInt)
	require.NoError(t, err)
	_, err = b.sink.ApplySubBatch(ctx(t), sink.SubBatch{Migration: "dropped", Relation: rel, Batch: sink.Range{Hi: batches.IntKey(20)}, Limit: 5}, set(rel, "n = 1"))
	require.ErrorContains(t, err, "no such table")
	require.Equal(t, batches.ClassFatal, b.sink.Classify(err))
}

func sqliteError(err error) interface{ Code() int } {
	var se interface{ Code() int }
	if errors.As(err, &se) {
		return se
	}
	return nil
}

// TestClassifyReadOnly: a read-only file (mode=ro) refuses writes, fatally.
func TestClassifyReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 20)
	sb := b.subBatch(t, rel, "ro", 5)
	ro := openSink(t, b.db.DSN+"?mode=ro", sink.Options{})
	_, err := ro.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.Error(t, err)
	require.Equal(t, sqlite3.SQLITE_READONLY, sqliteError(err).Code()&0xff, "%v", err)
	require.Equal(t, batches.ClassFatal, ro.Classify(err))
	// Reading still works.
	_, _, ok, err := ro.Bounds(ctx(t), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
}

// TestClassifyDiskFull: a database that cannot grow (max_page_count, the
// way SQLite reports a full disk) fails the batch rather than retrying.
func TestClassifyDiskFull(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	rel := b.items(t, 200)
	sb := b.subBatch(t, rel, "full", 200)
	pages := b.db.QueryInt(t, "PRAGMA page_count")
	full := openSink(t, b.db.DSN+"?"+url.Values{"_pragma": {fmt.Sprintf("max_page_count(%d)", pages)}}.Encode(), sink.Options{})
	_, err := full.ApplySubBatch(ctx(t), sb, set(rel, "label = hex(randomblob(2000))"))
	require.Error(t, err)
	require.Equal(t, sqlite3.SQLITE_FULL, sqliteError(err).Code()&0xff, "%v", err)
	require.Equal(t, batches.ClassFatal, full.Classify(err))
	require.Zero(t, b.db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE length(label) > 100"))
}

// TestClassifyBusy: another process's writer holds the lock past
// LockTimeout (busy_timeout): transient.
func TestClassifyBusy(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{LockTimeout: 100 * time.Millisecond})
	rel := b.items(t, 20)
	sb := b.subBatch(t, rel, "busy", 5)
	conn, err := b.db.DB.Conn(ctx(t))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx(t), "BEGIN IMMEDIATE")
	require.NoError(t, err)
	defer conn.ExecContext(context.Background(), "ROLLBACK") //nolint:errcheck
	_, err = b.sink.ApplySubBatch(ctx(t), sb, set(rel, "n = n + 1"))
	require.Error(t, err)
	require.Equal(t, sqlite3.SQLITE_BUSY, sqliteError(err).Code()&0xff, "%v", err)
	require.Equal(t, batches.ClassTransient, b.sink.Classify(err))
}

// TestClassifyCodes covers the codes that cannot be provoked on demand
// here (a failing disk, an authorizer, memory pressure).
func TestClassifyCodes(t *testing.T) {
	t.Parallel()
	for code, want := range map[int]batches.ErrorClass{
		sqlite3.SQLITE_BUSY:                  batches.ClassTransient,
		sqlite3.SQLITE_BUSY | 2<<8:           batches.ClassTransient, // BUSY_SNAPSHOT
		sqlite3.SQLITE_LOCKED:                batches.ClassTransient,
		sqlite3.SQLITE_LOCKED | 1<<8:         batches.ClassTransient, // LOCKED_SHAREDCACHE
		sqlite3.SQLITE_NOMEM:                 batches.ClassTransient,
		sqlite3.SQLITE_IOERR_NOMEM:           batches.ClassTransient,
		sqlite3.SQLITE_PROTOCOL:              batches.ClassTransient,
		sqlite3.SQLITE_INTERRUPT:             batches.ClassTransient,
		sqlite3.SQLITE_SCHEMA:                batches.ClassTransient,
		sqlite3.SQLITE_ABORT | 2<<8:          batches.ClassTransient, // ABORT_ROLLBACK
		sqlite3.SQLITE_CONSTRAINT_NOTNULL:    batches.ClassData,
		sqlite3.SQLITE_CONSTRAINT_DATATYPE:   batches.ClassData,
		sqlite3.SQLITE_MISMATCH:              batches.ClassData,
		sqlite3.SQLITE_TOOBIG:                batches.ClassData,
		sqlite3.SQLITE_CONSTRAINT_COMMITHOOK: batches.ClassFatal,
		sqlite3.SQLITE_READONLY:              batches.ClassFatal,
		sqlite3.SQLITE_READONLY | 5<<8:       batches.ClassFatal, // READONLY_DBMOVED
		sqlite3.SQLITE_PERM:                  batches.ClassFatal,
		sqlite3.SQLITE_AUTH:                  batches.ClassFatal,
		sqlite3.SQLITE_CANTOPEN:              batches.ClassFatal,
		sqlite3.SQLITE_FULL:                  batches.ClassFatal,
		sqlite3.SQLITE_IOERR:                 batches.ClassFatal,
		sqlite3.SQLITE_IOERR | 4<<8:          batches.ClassFatal, // IOERR_FSYNC
		sqlite3.SQLITE_CORRUPT:               batches.ClassFatal,
		sqlite3.SQLITE_NOTADB:                batches.ClassFatal,
		sqlite3.SQLITE_RANGE:                 batches.ClassFatal,
		sqlite3.SQLITE_MISUSE:                batches.ClassFatal,
		sqlite3.SQLITE_ERROR:                 batches.ClassFatal,
		sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY: batches.ClassData,
		sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY: batches.ClassData,
		sqlite3.SQLITE_CONSTRAINT_UNIQUE:     batches.ClassData,
		sqlite3.SQLITE_CONSTRAINT_CHECK:      batches.ClassData,
		sqlite3.SQLITE_CONSTRAINT_TRIGGER:    batches.ClassData,
		sqlite3.SQLITE_CONSTRAINT:            batches.ClassData,
		sqlite3.SQLITE_CONSTRAINT_ROWID:      batches.ClassData,
		sqlite3.SQLITE_WARNING:               batches.ClassFatal,
		sqlite3.SQLITE_NOTICE:                batches.ClassFatal,
		sqlite3.SQLITE_FORMAT:                batches.ClassFatal,
		sqlite3.SQLITE_EMPTY:                 batches.ClassFatal,
		sqlite3.SQLITE_INTERNAL:              batches.ClassFatal,
		sqlite3.SQLITE_NOLFS:                 batches.ClassFatal,
		sqlite3.SQLITE_NOTFOUND:              batches.ClassFatal,
		sqlite3.SQLITE_CONSTRAINT_PINNED:     batches.ClassData,
	} {
		require.Equal(t, want, classifyCode(code, "some message"), "code %d", code)
	}
	require.Equal(t, batches.ClassData, classifyCode(sqlite3.SQLITE_ERROR, "SQL logic error: malformed JSON (1)"))

	for err, want := range map[error]batches.ErrorClass{
		context.Canceled: batches.ClassTransient,
		fmt.Errorf("x: %w", context.DeadlineExceeded):    batches.ClassTransient,
		fmt.Errorf("x: %w", errWriterBusy):               batches.ClassTransient,
		driver.ErrBadConn:                                batches.ClassTransient,
		sql.ErrConnDone:                                  batches.ClassTransient,
		sql.ErrTxDone:                                    batches.ClassTransient,
		fmt.Errorf("apply: %w", sink.ErrCheckpointMoved): batches.ClassCheckpointMoved,
		fmt.Errorf("x: %w", sink.ErrTableNotFound):       batches.ClassFatal,
		errors.New("something nobody expected"):          batches.ClassFatal,
	} {
		require.Equal(t, want, classify(err), "%v", err)
	}
}
