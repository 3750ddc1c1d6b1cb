package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"net"

	"github.com/batchflow/batchflow/pkg/sink"
)

// UseGenericProtocol makes s apply sub-batches with sink.ApplyInTx, the
// protocol every sink shares, instead of the folded one.
func (s *Sink) UseGenericProtocol() { s.genericProtocol = true }

// OpenWithDial is Open with every connection dialled by dial.
func OpenWithDial(ctx context.Context, dsn string, opts sink.Options, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*Sink, error) {
	return open(ctx, dsn, opts, dial)
}

// CachedStatements is the number of statements s keeps prepared.
func (s *Sink) CachedStatements() int {
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	return s.stmts.lru.Len()
}

// DB returns the sink's connection pool.
func (s *Sink) DB() *sql.DB { return s.db }

// TxPoolRow runs query as the first statement of a transaction on a
// connection of the transaction pool (then committed) and returns its one
// row as text.
func (s *Sink) TxPoolRow(ctx context.Context, query string) ([]string, error) {
	var out []string
	err := s.inAutocommitTx(ctx, func(c *txConn) error {
		rows, err := c.Conn.(driver.QueryerContext).QueryContext(ctx, query, nil)
		if err != nil {
			return err
		}
		defer rows.Close()
		dest := make([]driver.Value, len(rows.Columns()))
		if err := rows.Next(dest); err != nil {
			return err
		}
		for _, v := range dest {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			out = append(out, fmt.Sprint(v))
		}
		return nil
	})
	return out, err
}

// DriverConnTypes names the driver connections under the main pool and
// under the transaction pool's txConn: the driver's own, or a wrapper.
func (s *Sink) DriverConnTypes(ctx context.Context) (main, tx string, err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	_ = conn.Raw(func(dc any) error {
		main = fmt.Sprintf("%T", dc)
		return nil
	})
	err = s.inAutocommitTx(ctx, func(c *txConn) error {
		tx = fmt.Sprintf("%T", c.Conn)
		return nil
	})
	return main, tx, err
}
