package mysql

import (
	"container/list"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
)

// The transaction pool holds the connections changeThenAdvance runs its
// sub-batches on. They differ from the main pool's in two ways, each worth
// a round trip per sub-batch:
//
//   - autocommit is off for the session (the server's, set at connect with
//     the other session variables), so the first statement of a sub-batch
//     opens its transaction and no START TRANSACTION is sent. Nothing else
//     runs on them, and every use ends in COMMIT or ROLLBACK, or the
//     connection is discarded: none goes back to the pool in a transaction.
//   - each connection keeps its own prepared statements (txConn), so the
//     statements run with one round trip each, as database/sql's pool-wide
//     statements do, without database/sql's transaction (whose Begin is a
//     START TRANSACTION).
//
// The pool itself stays database/sql's, with the main pool's limits: idle
// connections expire, broken ones are discarded.

// txConnector opens the transaction pool's connections: the driver's
// connection wrapped in a txConn.
type txConnector struct{ driver.Connector }

func (c txConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &txConn{Conn: conn, stmts: map[string]*list.Element{}, lru: list.New()}, nil
}

// txConn is a driver connection of the transaction pool and the statements
// prepared on it, the most recently used first. It is only used through
// sql.Conn.Raw, one caller at a time.
type txConn struct {
	driver.Conn
	stmts map[string]*list.Element // of *txStmt
	lru   *list.List
}

type txStmt struct {
	text string
	stmt driver.Stmt
}

// IsValid implements driver.Validator: a connection the driver gave up on
// is not put back in the pool.
func (c *txConn) IsValid() bool {
	v, ok := c.Conn.(driver.Validator)
	return !ok || v.IsValid()
}

// ResetSession implements driver.SessionResetter: the driver's check that
// an idle connection is still alive before it is reused.
func (c *txConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

// Ping implements driver.Pinger.
func (c *txConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

// exec runs a statement with bound values, prepared on this connection on
// first use (COM_STMT_PREPARE, then COM_STMT_EXECUTE each time), and
// returns the rows it affected. The least recently used statement beyond
// stmtCacheSize is closed.
func (c *txConn) exec(ctx context.Context, query string, args ...any) (int64, error) {
	st, err := c.prepared(ctx, query)
	if err != nil {
		return 0, err
	}
	named, err := namedValues(st, c.Conn, args)
	if err != nil {
		return 0, err
	}
	execer, ok := st.(driver.StmtExecContext)
	if !ok {
		return 0, fmt.Errorf("mysql sink: the driver's statement %T cannot execute with a context", st)
	}
	res, err := execer.ExecContext(ctx, named)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (c *txConn) prepared(ctx context.Context, query string) (driver.Stmt, error) {
	if e, ok := c.stmts[query]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*txStmt).stmt, nil
	}
	preparer, ok := c.Conn.(driver.ConnPrepareContext)
	if !ok {
		return nil, fmt.Errorf("mysql sink: the driver's connection %T cannot prepare with a context", c.Conn)
	}
	st, err := preparer.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = c.lru.PushFront(&txStmt{text: query, stmt: st})
	for c.lru.Len() > stmtCacheSize {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		evicted := oldest.Value.(*txStmt)
		delete(c.stmts, evicted.text)
		// COM_STMT_CLOSE has no reply: no round trip. An error means a
		// broken connection, which the next statement reports.
		_ = evicted.stmt.Close()
	}
	return st, nil
}

// command runs a statement without values (COMMIT, ROLLBACK) as text.
func (c *txConn) command(ctx context.Context, query string) error {
	execer, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return fmt.Errorf("mysql sink: the driver's connection %T cannot execute with a context", c.Conn)
	}
	_, err := execer.ExecContext(ctx, query, nil)
	return err
}

// namedValues converts args as database/sql would: by the statement's or
// the connection's own converter, else the default one.
func namedValues(st driver.Stmt, conn driver.Conn, args []any) ([]driver.NamedValue, error) {
	checker, ok := st.(driver.NamedValueChecker)
	if !ok {
		checker, _ = conn.(driver.NamedValueChecker)
	}
	named := make([]driver.NamedValue, len(args))
	for i, arg := range args {
		nv := driver.NamedValue{Ordinal: i + 1, Value: arg}
		err := driver.ErrSkip
		if checker != nil {
			err = checker.CheckNamedValue(&nv)
		}
		if errors.Is(err, driver.ErrSkip) {
			nv.Value, err = driver.DefaultParameterConverter.ConvertValue(arg)
		}
		if err != nil {
			return nil, fmt.Errorf("mysql sink: argument %d (%T): %w", i+1, arg, err)
		}
		named[i] = nv
	}
	return named, nil
}

// inAutocommitTx runs fn on a connection of the transaction pool, whose
// first statement opens the transaction; it commits when fn returns nil
// and rolls back otherwise. A connection whose transaction may still be
// open (the ROLLBACK or COMMIT did not get an answer) is discarded, which
// ends the transaction on the server.
func (s *Sink) inAutocommitTx(ctx context.Context, fn func(c *txConn) error) error {
	conn, err := s.txdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer conn.Close()
	var result error
	_ = conn.Raw(func(dc any) error {
		c, ok := dc.(*txConn)
		if !ok {
			result = fmt.Errorf("mysql sink: transaction pool connection is a %T", dc)
			return errDiscard
		}
		if err := fn(c); err != nil {
			result = err
			if c.command(ctx, "ROLLBACK") != nil {
				return errDiscard
			}
			return nil
		}
		if err := c.command(ctx, "COMMIT"); err != nil {
			result = fmt.Errorf("commit: %w", err)
			return errDiscard
		}
		return nil
	})
	return result
}

// errDiscard makes sql.Conn.Raw close the connection instead of putting
// it back in the pool.
var errDiscard = fmt.Errorf("mysql sink: discard the connection: %w", driver.ErrBadConn)

// openTxPool opens the transaction pool on the driver's connector, whose
// session variables turn autocommit off.
func openTxPool(connector driver.Connector) *sql.DB {
	return sql.OpenDB(txConnector{connector})
}
