package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/batchflow/batchflow/pkg/sink"
)

// The write path. SQLite has one writer at a time, so the sink owns one
// write connection and hands it to one transaction at a time:
//
//   - A token (a channel of one) is the right to the connection. Writers of
//     this process queue for it in Go, at most LockTimeout.
//   - Transactions are BEGIN IMMEDIATE … COMMIT statements on that
//     connection, not database/sql's Tx: BEGIN IMMEDIATE takes SQLite's
//     write lock at once (waiting under busy_timeout = LockTimeout for a
//     writer of another process), so everything read in the transaction is
//     read under the lock, and the connection's prepared statements can be
//     used inside it. Preparing costs SQLite more than running the ledger's
//     small statements, and database/sql's Tx would prepare them again in
//     every transaction.
//   - Every way out of a transaction ends it: COMMIT, or ROLLBACK, or, when
//     a ROLLBACK fails, closing the connection (which rolls back).

// stmtCacheSize bounds the prepared statements kept per write connection:
// the ledger's few, and each relation's probe and change.
const stmtCacheSize = 64

// errWriterBusy: this process's write connection stayed busy with other
// transactions for longer than LockTimeout. Transient, like SQLITE_BUSY.
var errWriterBusy = errors.New("write connection busy")

// errIdleRollback: the transaction sat idle past IdleInTransactionTimeout
// and was rolled back; its later statements are refused.
var errIdleRollback = errors.New("transaction rolled back after sitting idle")

// writer is the write connection, its prepared statements and its
// watchdog (see watchdog.go).
type writer struct {
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
	order []string // oldest first, for eviction
	watch *watchdog
}

// stmt returns the connection's prepared statement for query.
func (w *writer) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := w.stmts[query]; ok {
		return st, nil
	}
	st, err := w.conn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if len(w.order) >= stmtCacheSize {
		oldest := w.order[0]
		w.order = w.order[1:]
		_ = w.stmts[oldest].Close()
		delete(w.stmts, oldest)
	}
	w.stmts[query] = st
	w.order = append(w.order, query)
	return st, nil
}

func (w *writer) exec(ctx context.Context, query string) error {
	st, err := w.stmt(ctx, query)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx)
	return err
}

// close closes the statements and hands the connection back; bad says it
// may be inside a transaction, so database/sql must close it instead.
func (w *writer) close(bad bool) {
	w.watch.close()
	for _, st := range w.stmts {
		_ = st.Close()
	}
	w.stmts = nil
	if bad {
		_ = w.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = w.conn.Close()
}

// acquire takes the write token, waiting at most LockTimeout.
func (s *Sink) acquire(ctx context.Context) (release func(), err error) {
	select {
	case s.token <- struct{}{}:
	default:
		t := time.NewTimer(s.opts.LockTimeout)
		defer t.Stop()
		select {
		case s.token <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, fmt.Errorf("%w for longer than the lock timeout %s", errWriterBusy, s.opts.LockTimeout)
		}
	}
	return sync.OnceFunc(func() { <-s.token }), nil
}

// writerConn returns the write connection, opening it if needed. The
// caller holds the token.
func (s *Sink) writerConn(ctx context.Context) (*writer, error) {
	if s.w != nil {
		return s.w, nil
	}
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return nil, err
	}
	var interrupt func()
	_ = conn.Raw(func(dc any) error {
		interrupt = interrupter(dc, s.path)
		return nil
	})
	if interrupt == nil {
		s.log.Warn("sqlite sink: cannot reach the driver's interrupt; statements carry their own deadlines")
	}
	s.w = &writer{conn: conn, stmts: map[string]*sql.Stmt{},
		watch: newWatchdog(s.opts.StatementTimeout, s.opts.IdleInTransactionTimeout, interrupt)}
	return s.w, nil
}

// rollback ends the transaction on w; if it cannot, the connection goes,
// and its transaction with it. The caller holds the token. ctx carries the
// span the ROLLBACK belongs to; its end does not stop the ROLLBACK.
func (s *Sink) rollback(ctx context.Context, w *writer) {
	err := w.exec(context.WithoutCancel(ctx), "ROLLBACK")
	if err == nil || strings.Contains(err.Error(), "no transaction is active") {
		return
	}
	s.log.Warn("sqlite sink: rollback failed; closing the write connection", slog.Any("error", err))
	w.close(true)
	if s.w == w {
		s.w = nil
	}
}

// writeTx runs fn in a write transaction and commits if it returns nil.
func (s *Sink) writeTx(ctx context.Context, fn func(ctx context.Context, q *txQueryer) error) (err error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	w, err := s.writerConn(ctx)
	if err != nil {
		return err
	}
	// BEGIN waits for another process's write lock at most busy_timeout =
	// LockTimeout; it is not interrupted.
	if err := w.exec(context.WithoutCancel(ctx), s.begin); err != nil {
		s.rollback(ctx, w) // normally "no transaction is active": a guard
		return err
	}

	txCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	q := &txQueryer{w: w, stmtCtx: context.WithoutCancel(ctx), timeout: s.opts.StatementTimeout, traced: s.opts.TracerProvider != nil}
	q.sess = w.watch.begin(ctx, func() {
		// Runs while fn is stuck outside the database: end the
		// transaction and let the next writer have the connection.
		cancel()
		s.rollback(ctx, w)
		release()
	})
	open := true
	defer func() {
		if open && !q.sess.finish() {
			s.rollback(ctx, w) // fn panicked
		}
	}()

	fnErr := fn(txCtx, q)
	open = false
	if q.sess.finish() {
		return fmt.Errorf("%w (idle in transaction for longer than %s): %w", errIdleRollback, s.opts.IdleInTransactionTimeout, errors.Join(fnErr, context.Canceled))
	}
	if fnErr != nil {
		s.rollback(ctx, w)
		return fnErr
	}
	// Not interruptible: a COMMIT cut short would leave its outcome
	// unknown. It waits for nothing (the write lock is held) and writes only
	// the transaction's own pages.
	if err := w.exec(context.WithoutCancel(ctx), "COMMIT"); err != nil {
		s.rollback(ctx, w)
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// txQueryer adapts the write connection inside a transaction to
// sink.Queryer. Each statement is prepared once per connection and runs
// under the watchdog: StatementTimeout, the caller's context, and the idle
// timer paused.
type txQueryer struct {
	w    *writer
	sess *session
	// stmtCtx is what statements run with: no Done channel, so the driver
	// starts no goroutine of its own to watch it (the watchdog does).
	stmtCtx context.Context
	timeout time.Duration
	// traced: statements run with their caller's context instead, minus
	// its end, so that their spans nest under the caller's span (a custom
	// change's own, say) rather than the transaction's.
	traced bool
}

var _ sink.Queryer = (*txQueryer)(nil)

func (q *txQueryer) Dialect() sink.Dialect { return Dialect }

// start prepares query and begins a statement, which end ends.
func (q *txQueryer) start(ctx context.Context, query string) (context.Context, *sql.Stmt, context.CancelFunc, error) {
	if err := q.sess.busy(); err != nil {
		return nil, nil, nil, err
	}
	sctx, cancel := q.stmtCtx, context.CancelFunc(nil)
	if q.traced {
		sctx = context.WithoutCancel(ctx)
	}
	if q.w.watch.interrupt == nil {
		// The watchdog cannot interrupt: the driver does, at a deadline.
		sctx, cancel = context.WithTimeout(ctx, q.timeout)
	}
	st, err := q.w.stmt(sctx, query)
	if err != nil {
		return nil, nil, nil, q.end(cancel, err)
	}
	return sctx, st, cancel, nil
}

// end ends a statement and explains its error.
func (q *txQueryer) end(cancel context.CancelFunc, err error) error {
	if cancel != nil {
		cancel()
	}
	return q.sess.done(err)
}

func (q *txQueryer) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	sctx, st, cancel, err := q.start(ctx, query)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(sctx, args...)
	if err = q.end(cancel, err); err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q *txQueryer) Query(ctx context.Context, query string, args ...any) (sink.Rows, error) {
	sctx, st, cancel, err := q.start(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(sctx, args...)
	if err != nil {
		return nil, q.end(cancel, err)
	}
	return &txRows{Rows: rows, q: q, cancel: cancel}, nil
}

func (q *txQueryer) QueryRow(ctx context.Context, query string, args ...any) sink.Row {
	sctx, st, cancel, err := q.start(ctx, query)
	if err != nil {
		return errRow{err}
	}
	return txRow{row: st.QueryRowContext(sctx, args...), q: q, cancel: cancel}
}

// txRows ends the statement when closed.
type txRows struct {
	*sql.Rows
	q      *txQueryer
	cancel context.CancelFunc
	once   sync.Once
}

func (r *txRows) Err() error { return r.q.sess.explain(r.Rows.Err()) }

func (r *txRows) Close() {
	_ = r.Rows.Close()
	r.once.Do(func() { _ = r.q.end(r.cancel, nil) })
}

type txRow struct {
	row    *sql.Row
	q      *txQueryer
	cancel context.CancelFunc
}

func (r txRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		err = sink.ErrNoRows
	}
	return r.q.end(r.cancel, err)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
