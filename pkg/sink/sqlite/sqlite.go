// Package sqlite is batchflow's sink for SQLite files, built on
// modernc.org/sqlite (pure Go, no cgo): the embedded default target.
//
// Importing the package registers it for sqlite:// DSNs (see ParseDSN).
//
// SQLite has one writer at a time, so the sink keeps one write connection,
// whose transactions all start with BEGIN IMMEDIATE and so hold SQLite's
// write lock from their first statement (see writer.go), and a read pool
// (query_only) for the planner's questions, which in WAL mode never wait
// for the writer. Writers of one process queue for the write connection in
// Go rather than polling SQLite's lock; writers of other processes on the
// same file wait under busy_timeout. Either wait longer than
// Options.LockTimeout ends in a transient error.
//
// A sub-batch of a foldable change (the sql kind's SET) is two statements
// in that transaction when the caller chose its upper key (SubBatch.Hi):
// the change and the checkpoint's compare-and-set; three with SubBatch.Limit,
// whose ledger read and probe for the sub-batch's last key are one SELECT.
// Custom and statement-form changes run sink.ApplyInTx. See applyFolded.
//
// StatementTimeout and IdleInTransactionTimeout on the write connection are
// enforced by one watchdog per connection (watchdog.go), not by a context
// deadline per statement, which costs modernc.org/sqlite a goroutine each.
package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Scheme is the DSN scheme the sink registers.
const Scheme = "sqlite"

func init() {
	sink.Register(Scheme, func(ctx context.Context, dsn string, opts sink.Options) (sink.Sink, error) {
		return Open(ctx, dsn, opts)
	})
}

// Sink is the SQLite sink. It is safe for concurrent use.
type Sink struct {
	path string
	opts sink.Options
	log  *slog.Logger
	// write has one connection: SQLite admits one writer at a time, and a
	// queue in Go is fairer and cheaper than polling SQLite's lock.
	write *sql.DB
	// read serves lookups, bounds, estimates and throttle queries.
	read *sql.DB

	// token is the right to the write connection w (see writer.go).
	token chan struct{}
	w     *writer
	// begin starts a write transaction: BEGIN IMMEDIATE, or BEGIN
	// EXCLUSIVE when the DSN says _txlock=exclusive.
	begin string
	// generic makes ApplySubBatch run sink.ApplyInTx for every change:
	// tests compare it with applyFolded.
	generic bool

	ledgerMu    sync.Mutex
	ledgerReady atomic.Bool
}

var _ sink.Sink = (*Sink)(nil)

// Open opens the SQLite file of dsn (see ParseDSN), creating it if it is
// missing and the DSN does not say mode=ro, and checks it answers.
//
// Options map onto SQLite as follows: LockTimeout is busy_timeout, and also
// bounds the wait for this process's write connection; StatementTimeout
// interrupts a statement running longer (sqlite3_interrupt, from the write
// connection's watchdog, or from modernc.org/sqlite for a read connection's
// context deadline), with a transient error; MaxConns is the write connection plus
// MaxConns-1 readers (at least one). IdleInTransactionTimeout rolls back a
// write transaction in which no statement has run for that long (a custom
// kind stuck outside the database while holding the write lock); there is
// no server to end the session of a frozen process, but its lock dies with
// it, and another process waiting for it gets a transient SQLITE_BUSY after
// LockTimeout meanwhile.
//
// DSN parameters win over these defaults: _pragma=busy_timeout(…) or
// _busy_timeout set on the DSN replace LockTimeout's busy_timeout, and so on.
func Open(ctx context.Context, dsn string, opts sink.Options) (*Sink, error) {
	opts = opts.WithDefaults()
	d, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	s := &Sink{
		path:  d.Path,
		opts:  opts,
		log:   opts.Logger.With(slog.String("sink", Scheme), slog.String("path", d.Path)),
		token: make(chan struct{}, 1),
		begin: "BEGIN IMMEDIATE",
	}
	if strings.EqualFold(d.Params.Get("_txlock"), "exclusive") {
		s.begin = "BEGIN EXCLUSIVE"
	}

	// The write pool first: it switches the file to WAL (journal_mode is
	// persistent), which the read pool's query_only connections cannot.
	wdsn, err := d.driverDSN(writePool, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	if s.write, err = s.openPool(wdsn); err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", d.Path, err)
	}
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	// A connection kept open keeps the file's WAL and page cache warm.
	s.write.SetConnMaxIdleTime(0)

	rdsn, err := d.driverDSN(readPool, opts.LockTimeout)
	if err != nil {
		s.write.Close()
		return nil, err
	}
	if s.read, err = s.openPool(rdsn); err != nil {
		s.write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", d.Path, err)
	}
	readers := max(opts.MaxConns-1, 1)
	s.read.SetMaxOpenConns(readers)
	s.read.SetMaxIdleConns(readers)

	if err := s.check(ctx, d); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// check pings both pools and refuses a database that is not a file.
func (s *Sink) check(ctx context.Context, d DSN) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.StatementTimeout)
	defer cancel()
	if err := s.write.PingContext(ctx); err != nil {
		return fmt.Errorf("open sqlite %s: %w", d.Path, err)
	}
	var file, mode string
	if err := s.write.QueryRowContext(ctx, "SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&file); err != nil {
		return fmt.Errorf("open sqlite %s: %w", d.Path, err)
	}
	if file == "" {
		return errInMemory
	}
	if err := s.read.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("open sqlite %s: %w", d.Path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		// A read-only file, or a DSN that chose another mode: writers then
		// block readers, which the sink survives but the planner feels.
		s.log.Warn("sqlite sink: not in WAL mode; readers and the writer will block each other",
			slog.String("journal_mode", mode))
	}
	s.log.Debug("sqlite sink: open", slog.String("journal_mode", mode),
		slog.Duration("lock_timeout", s.opts.LockTimeout), slog.Int("max_conns", s.opts.MaxConns))
	return nil
}

// Path returns the database file's absolute path.
func (s *Sink) Path() string { return s.path }

// Dialect returns the SQLite dialect.
func (s *Sink) Dialect() sink.Dialect { return Dialect }

// Close closes both pools. The last connection to close checkpoints the WAL.
// A transaction still running gets LockTimeout to finish first.
func (s *Sink) Close() error {
	if release, err := s.acquire(context.Background()); err == nil {
		if s.w != nil {
			s.w.close(false)
			s.w = nil
		}
		defer release()
	}
	var errs []error
	if s.read != nil {
		errs = append(errs, s.read.Close())
	}
	if s.write != nil {
		errs = append(errs, s.write.Close())
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("close sqlite %s: %w", s.path, err)
		}
	}
	return nil
}

// ReplicationLag is always zero: SQLite has no replicas batchflow can see.
func (s *Sink) ReplicationLag(context.Context) (time.Duration, error) { return 0, nil }

// Throttled runs query on a read connection: one row, one column, read as
// a boolean (SQLite has no boolean type: 0/1, or "t"/"f"/"true"/"false";
// see sink.Truth). No row, or NULL, is an error.
func (s *Sink) Throttled(ctx context.Context, query string) (bool, error) {
	ctx, cancel := s.statementCtx(ctx)
	defer cancel()
	var v any
	if err := s.read.QueryRowContext(ctx, query).Scan(&v); err != nil {
		if err == sql.ErrNoRows {
			return false, fmt.Errorf("throttle query returned no row: want one row with one boolean column")
		}
		return false, fmt.Errorf("throttle query: %w", err)
	}
	return sink.Truth(v)
}

// statementCtx bounds one statement by StatementTimeout, unless ctx ends
// sooner; modernc.org/sqlite interrupts the statement when it ends.
func (s *Sink) statementCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.StatementTimeout)
}

// Classify says what err means for the batch that hit it; see classify.
func (s *Sink) Classify(err error) batches.ErrorClass { return classify(err) }

// CheckStatement prepares query on a read connection and closes it without
// running it: SQLite resolves every table and column at prepare, so a
// missing one or a syntax error comes back as the error Classify calls
// fatal. Preparing writes nothing and takes no lock a writer waits for.
// Of a script (statements separated by ';'), modernc.org/sqlite prepares
// the first statement only: the rest is checked when it runs.
func (s *Sink) CheckStatement(ctx context.Context, query string) error {
	ctx, cancel := s.statementCtx(ctx)
	defer cancel()
	conn, err := s.read.Conn(ctx)
	if err != nil {
		return fmt.Errorf("check statement: %w", err)
	}
	defer conn.Close()
	st, err := conn.PrepareContext(ctx, query)
	if err != nil {
		return fmt.Errorf("check statement: %w", err)
	}
	return st.Close()
}
