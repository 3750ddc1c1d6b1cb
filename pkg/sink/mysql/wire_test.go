package mysql_test

import (
	"context"
	"database/sql"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/sink/mysql"
)

// wire counts round trips to the server: a client write that follows a
// server reply starts a new one. Writes the client sends without waiting
// (the driver's COM_STMT_CLOSE) ride along with the next request.
type wire struct {
	trips atomic.Int64

	mu sync.Mutex
	// commands are the command bytes the client sent (COM_QUERY,
	// COM_STMT_PREPARE, …): the first payload byte of each packet with
	// sequence number 0, which starts every command.
	commands []byte
}

// Command bytes of the client/server protocol.
const (
	comQuery       = 0x03
	comStmtPrepare = 0x16
	comStmtExecute = 0x17
	comStmtClose   = 0x19
)

// Commands returns the command bytes sent since ClearCommands.
func (w *wire) Commands() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.commands...)
}

// ClearCommands forgets the commands sent so far.
func (w *wire) ClearCommands() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.commands = nil
}

func (w *wire) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, w: w}, nil
}

// Trips returns the round trips so far.
func (w *wire) Trips() int64 { return w.trips.Load() }

type countedConn struct {
	net.Conn
	w         *wire
	afterRead atomic.Bool
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.afterRead.Store(true)
	}
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	if c.afterRead.Swap(false) {
		c.w.trips.Add(1)
	}
	// The driver writes one packet per Write: a 4-byte header (length,
	// sequence number), then the payload.
	if len(p) > 4 && p[3] == 0 {
		c.w.mu.Lock()
		c.w.commands = append(c.w.commands, p[4])
		c.w.mu.Unlock()
	}
	return c.Conn.Write(p)
}

// openCounted opens a plain pool on dsn whose connections w counts.
func openCounted(t testing.TB, dsn string, w *wire) *sql.DB {
	t.Helper()
	cfg, err := mysql.ParseURL(dsn)
	require.NoError(t, err)
	cfg.DialFunc = w.dial
	connector, err := gomysql.NewConnector(cfg)
	require.NoError(t, err)
	db := sql.OpenDB(connector)
	t.Cleanup(func() { db.Close() })
	return db
}
