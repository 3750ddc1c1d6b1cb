// Package sink is the boundary between batchflow and one kind of target
// database. A Sink answers the planner's questions (the schema, the key
// range, keyset probes, a row estimate), applies the executor's sub-batches
// with the exactly-once ledger of DESIGN.md §6, classifies errors, and
// probes the database's health for throttling.
//
// Sinks are chosen by DSN scheme, like database/sql drivers: the packages
// pkg/sink/postgres (postgres://, postgresql://), pkg/sink/mysql (mysql://)
// and pkg/sink/sqlite (sqlite://) register themselves when imported, and
// Open picks one. Every sink passes the conformance suite in pkg/sink/sinktest.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/pkg/batches"
)

// Sink is everything batchflow needs from one target database. It is safe
// for concurrent use; Close releases its connections.
type Sink interface {
	// Dialect writes identifiers and placeholders for this database.
	Dialect() Dialect

	// Table looks up a table ("users" or "schema.users"): its columns,
	// their types and its primary key. A missing table is ErrTableNotFound.
	Table(ctx context.Context, name string) (*Table, error)
	// EstimateRows estimates the table's row count from the database's
	// statistics, without counting: progress needs an order of magnitude,
	// not a full scan of 500 million rows. It may return 0 when there are
	// no statistics yet.
	EstimateRows(ctx context.Context, table string) (int64, error)

	// Bounds returns the smallest and largest key of the relation's rows
	// within r (null bounds: unbounded); ok is false when no row matches.
	Bounds(ctx context.Context, rel Relation, r Range) (lo, hi batches.Key, ok bool, err error)
	// NextKey returns the key n rows into the relation's rows within r, in
	// key order (n = 1 is the first); ok is false when fewer rows remain.
	// The planner cuts batches with it, so batches hold about batch_size
	// rows however the keys are spread.
	NextKey(ctx context.Context, rel Relation, r Range, n int) (key batches.Key, ok bool, err error)

	// EnsureLedger creates the batchflow_ledger table if it is missing.
	EnsureLedger(ctx context.Context) error
	// BeginBatch returns the ledger position of a batch, creating its row
	// (at a null checkpoint) on first use. A redelivered or republished
	// batch resumes from here. key is the batch column's key type, which
	// the checkpoint is read back as (a text key "42" is not the integer 42).
	BeginBatch(ctx context.Context, migration string, seq int64, key KeyType) (Checkpoint, error)
	// ApplySubBatch applies change to the next rows of a batch after
	// sb.From — up to sb.Hi when the caller chose the sub-batch's upper key,
	// else at most sb.Limit rows — and moves the batch's checkpoint from
	// sb.From to the sub-batch's last key in the same transaction. If the
	// checkpoint is no longer sb.From (another executor advanced it),
	// nothing changes and the error wraps ErrCheckpointMoved.
	ApplySubBatch(ctx context.Context, sb SubBatch, change Change) (Result, error)
	// SkipKey moves the checkpoint from sb.From to key without applying
	// anything, and records key as failed: the rows there fail on their own
	// (on_row_error skip). Like ApplySubBatch it is a compare-and-set.
	SkipKey(ctx context.Context, sb SubBatch, key batches.Key) (Checkpoint, error)

	// ResetLedger deletes a migration's ledger rows, before a cancelled
	// migration's name is reused: the new migration must not resume from
	// the old one's checkpoints.
	ResetLedger(ctx context.Context, migration string) error

	// CheckStatement prepares a statement on the server without running
	// it, so a spec's SQL (set, where, statement) that names a missing
	// column or does not parse is rejected at enqueue, not at its first batch.
	CheckStatement(ctx context.Context, query string) error

	// ReplicationLag reports how far replicas are behind: on a Postgres
	// primary the largest lag of its replicas, on a replica (any dialect)
	// its own. Zero with no replication. A MySQL primary cannot see its
	// replicas' lag: point the throttle at the replica's target there.
	ReplicationLag(ctx context.Context) (time.Duration, error)
	// Throttled runs a throttle query, trusted SQL returning one row with
	// one boolean column; true means "hold off". The answer is read by
	// Truth; NULL, like no row, is an error (the executor holds off).
	Throttled(ctx context.Context, query string) (bool, error)

	// Classify says what err means for the batch that hit it.
	Classify(err error) batches.ErrorClass

	Close() error
}

// LedgerTable is the name of the ledger table in every target database.
const LedgerTable = "batchflow_ledger"

// Errors callers branch on. Sink errors wrap them.
var (
	// ErrCheckpointMoved: the batch's checkpoint is not where the caller
	// expected; another executor owns the batch now. Nothing was changed.
	ErrCheckpointMoved = errors.New("checkpoint moved: another executor owns this batch")
	// ErrTableNotFound: the table does not exist (or is not visible).
	ErrTableNotFound = errors.New("table not found")
	// ErrColumnNotFound: the column does not exist in the table.
	ErrColumnNotFound = errors.New("column not found")
	// ErrUnsupportedKey: the batch column's type cannot be a batch key.
	ErrUnsupportedKey = errors.New("unsupported batch column type")
	// ErrNoPrimaryKey: no batch_column given and the table has no
	// single-column primary key to default to.
	ErrNoPrimaryKey = errors.New("no single-column primary key")
	// ErrUnknownScheme: no sink is registered for the DSN's scheme.
	ErrUnknownScheme = errors.New("unknown DSN scheme")
)

// Options configure a sink. The zero value is a good default.
type Options struct {
	// Logger receives the sink's own log lines. Nil: discard.
	Logger *slog.Logger
	// MaxConns bounds the connection pool. Default 10.
	MaxConns int
	// LockTimeout bounds a wait for a row or table lock; the statement
	// fails with a transient error instead of queueing behind a long
	// transaction. Default 5s.
	LockTimeout time.Duration
	// IdleInTransactionTimeout ends a session that sits in an open
	// transaction doing nothing (a frozen or partitioned executor), so its
	// locks do not block the batch's next owner. Default 30s.
	IdleInTransactionTimeout time.Duration
	// StatementTimeout cancels one statement running longer. Default 60s;
	// a sub-batch aims at a fraction of a second.
	StatementTimeout time.Duration
	// TracerProvider, when set, gives every SQL statement the sink runs a
	// client span, a child of the span in the statement's context (the
	// sub-batch's); statements outside a recording span start no trace.
	// Nil: no instrumentation at all, the drivers are used unwrapped.
	TracerProvider trace.TracerProvider
}

// WithDefaults returns o with every zero field at its default.
func (o Options) WithDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 10
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 5 * time.Second
	}
	if o.IdleInTransactionTimeout <= 0 {
		o.IdleInTransactionTimeout = 30 * time.Second
	}
	if o.StatementTimeout <= 0 {
		o.StatementTimeout = 60 * time.Second
	}
	return o
}

// OpenFunc opens a sink for a DSN of its scheme.
type OpenFunc func(ctx context.Context, dsn string, opts Options) (Sink, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]OpenFunc{}
)

// Register makes a sink available for DSNs of scheme ("postgres"). Sink
// packages call it from init; it panics on a second registration.
func Register(scheme string, open OpenFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[scheme]; dup {
		panic("sink: Register called twice for scheme " + scheme)
	}
	registry[scheme] = open
}

// Schemes lists the registered DSN schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s := make([]string, 0, len(registry))
	for k := range registry {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Open opens the sink registered for the DSN's scheme and checks that the
// database answers. Errors never contain the DSN's password.
func Open(ctx context.Context, dsn string, opts Options) (Sink, error) {
	scheme, _, ok := strings.Cut(dsn, ":")
	registryMu.RLock()
	open, found := registry[strings.ToLower(scheme)]
	registryMu.RUnlock()
	if !ok || !found {
		return nil, fmt.Errorf("%w %q: registered schemes are %s (import the sink packages, e.g. pkg/sink/all)",
			ErrUnknownScheme, scheme, strings.Join(Schemes(), ", "))
	}
	return open(ctx, dsn, opts.WithDefaults())
}
