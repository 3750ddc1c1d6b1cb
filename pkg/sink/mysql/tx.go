package mysql

import (
	"container/list"
	"context"
	"database/sql"
	"errors"
	"sync"

	"github.com/batchflow/batchflow/pkg/sink"
)

// stmtCacheSize bounds the statements the sink keeps prepared, in the main
// pool's cache and in each connection of the transaction pool: a few per
// migration in progress (the change, for the first sub-batch and the
// others, the lock and probe, the ledger updates). Each is prepared once
// per connection, and the server caps prepared statements for all its
// clients (max_prepared_stmt_count, 16382 by default).
const stmtCacheSize = 64

// stmtCache keeps the statements lockThenApply runs over and over
// prepared, on the main pool (the transaction pool's connections keep
// their own: txConn). database/sql sends an unprepared statement with
// arguments as prepare, execute and close, two round trips; a statement
// prepared once per connection is one. Values still travel as bound
// parameters.
//
// Statements are prepared outside any transaction (prepare takes a pool
// connection of its own, which a transaction holding the last free one
// would wait for forever) and then reused inside transactions with
// Tx.StmtContext, which finds the statement already prepared on the
// transaction's connection, or prepares it there once.
type stmtCache struct {
	db  *sql.DB
	max int

	mu      sync.Mutex
	entries map[string]*list.Element // of *cachedStmt, most recent at the front
	lru     *list.List
	closed  bool
}

type cachedStmt struct {
	text string
	stmt *sql.Stmt
}

func newStmtCache(db *sql.DB, size int) *stmtCache {
	return &stmtCache{db: db, max: size, entries: map[string]*list.Element{}, lru: list.New()}
}

// get returns the prepared statement for text, or nil.
func (c *stmtCache) get(text string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[text]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cachedStmt).stmt
	}
	return nil
}

// prepare makes sure text is prepared. It must not be called while the
// caller holds a transaction. A statement that fails to prepare is not
// cached: running it unprepared reports its error where it belongs.
func (c *stmtCache) prepare(ctx context.Context, text string) {
	if c.get(text) != nil {
		return
	}
	stmt, err := c.db.PrepareContext(ctx, text)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.entries[text]; dup || c.closed {
		stmt.Close()
		return
	}
	c.entries[text] = c.lru.PushFront(&cachedStmt{text: text, stmt: stmt})
	for c.lru.Len() > c.max {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		evicted := oldest.Value.(*cachedStmt)
		delete(c.entries, evicted.text)
		// A transaction still using it keeps it alive until it ends.
		evicted.stmt.Close()
	}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, e := range c.entries {
		e.Value.(*cachedStmt).stmt.Close()
	}
	c.entries = map[string]*list.Element{}
	c.lru.Init()
}

// txQueryer adapts a *sql.Tx to sink.Queryer (and so sink.Tx, the
// transaction a custom kind runs in). Statements the cache holds run
// prepared; others run as they are.
type txQueryer struct {
	s  *Sink
	tx *sql.Tx
}

var _ sink.Queryer = txQueryer{}

func (q txQueryer) Dialect() sink.Dialect { return Dialect{} }

// stmt returns the transaction's handle on text's prepared statement, or
// nil. The caller closes it.
func (q txQueryer) stmt(ctx context.Context, text string) *sql.Stmt {
	if prepared := q.s.stmts.get(text); prepared != nil {
		return q.tx.StmtContext(ctx, prepared)
	}
	return nil
}

func (q txQueryer) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	ctx, cancel := q.s.statementContext(ctx)
	defer cancel()
	var (
		res sql.Result
		err error
	)
	if st := q.stmt(ctx, query); st != nil {
		res, err = st.ExecContext(ctx, args...)
		st.Close()
	} else {
		res, err = q.tx.ExecContext(ctx, query, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q txQueryer) Query(ctx context.Context, query string, args ...any) (sink.Rows, error) {
	ctx, cancel := q.s.statementContext(ctx)
	var (
		rows *sql.Rows
		err  error
	)
	if st := q.stmt(ctx, query); st != nil {
		rows, err = st.QueryContext(ctx, args...)
		st.Close()
	} else {
		rows, err = q.tx.QueryContext(ctx, query, args...)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return sqlRows{rows, cancel}, nil
}

func (q txQueryer) QueryRow(ctx context.Context, query string, args ...any) sink.Row {
	ctx, cancel := q.s.statementContext(ctx)
	var row *sql.Row
	if st := q.stmt(ctx, query); st != nil {
		row = st.QueryRowContext(ctx, args...)
		st.Close()
	} else {
		row = q.tx.QueryRowContext(ctx, query, args...)
	}
	return sqlRow{row, cancel}
}

// sqlRows adapts *sql.Rows to sink.Rows.
type sqlRows struct {
	*sql.Rows
	cancel context.CancelFunc
}

func (r sqlRows) Close() {
	r.Rows.Close()
	r.cancel()
}

// sqlRow adapts *sql.Row to sink.Row, with sink.ErrNoRows for no row.
type sqlRow struct {
	row    *sql.Row
	cancel context.CancelFunc
}

func (r sqlRow) Scan(dest ...any) error {
	defer r.cancel()
	err := r.row.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return sink.ErrNoRows
	}
	return err
}
