package executor

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Kind is a custom migration kind: Go code that changes the rows of one
// sub-batch, for work SQL cannot express (a hash, a parsed JSON field, a
// call to a library). It runs inside the ledger transaction: what it writes
// through tx commits together with the batch's checkpoint, exactly once.
//
// Return an error made with Retry, SkipRows or Fail to say what the error
// means. Any other error fails the attempt: the batch is retried with
// backoff until its max_attempts, as a panic-free job queue would; errors
// of the database driver keep the class the sink gives them.
type Kind interface {
	ProcessBatch(ctx context.Context, tx sink.Tx, b SubBatch) (rowsAffected int64, err error)
}

// KindFunc adapts a function to Kind.
type KindFunc func(ctx context.Context, tx sink.Tx, b SubBatch) (int64, error)

// ProcessBatch calls f.
func (f KindFunc) ProcessBatch(ctx context.Context, tx sink.Tx, b SubBatch) (int64, error) {
	return f(ctx, tx, b)
}

// ArgsChecker is implemented by kinds that check their arguments when a
// spec is validated (the planner of the same binary, `batchflow enqueue`).
type ArgsChecker interface {
	CheckArgs(args json.RawMessage) []batches.Problem
}

// SubBatch is what a custom kind works on.
type SubBatch struct {
	Migration string
	Seq       int64
	Attempt   int
	// Spec is the migration's spec; decode its Args with json.Unmarshal.
	Spec batches.Spec
	// Table and Column are the table and batch column as the database has them.
	Table  *sink.Table
	Column string
	// Range holds the sub-batch's keys.
	Range sink.Range
	// Rows writes the predicate selecting the sub-batch's rows (key range,
	// the spec's where): use it in the kind's own statements.
	Rows sink.Fragment
	// Dialect quotes identifiers and writes placeholders for the target.
	Dialect sink.Dialect
}

// Builder returns a statement builder for the target's dialect.
func (b SubBatch) Builder() *sink.Builder { return sink.NewBuilder(b.Dialect) }

// controlError carries what a custom kind says about its error.
type controlError struct {
	class batches.ErrorClass
	err   error
}

func (e *controlError) Error() string { return e.err.Error() }
func (e *controlError) Unwrap() error { return e.err }

// Retry marks err as transient: the sub-batch is tried again in place, and
// after a few tries the attempt fails and the batch is retried with backoff.
func Retry(err error) error { return &controlError{class: batches.ClassTransient, err: err} }

// SkipRows marks err as the rows' fault: with on_row_error skip the
// sub-batch is bisected down to the failing rows, which are recorded as
// failed_keys, and the rest is applied; with fail, the attempt fails.
func SkipRows(err error) error { return &controlError{class: batches.ClassData, err: err} }

// Fail marks err as fatal: the batch fails at once, without more attempts.
func Fail(err error) error { return &controlError{class: batches.ClassFatal, err: err} }

// ClassOf returns the class a custom kind gave err with Retry, SkipRows or
// Fail, if any: for a kind's own tests.
func ClassOf(err error) (batches.ErrorClass, bool) {
	var ce *controlError
	if errors.As(err, &ce) {
		return ce.class, true
	}
	return "", false
}

// kindError wraps what a custom kind returned, so the executor can tell the
// kind's own errors from the database's.
type kindError struct {
	kind string
	err  error
}

func (e *kindError) Error() string { return "kind " + e.kind + ": " + e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

// customChange runs a custom kind as the sink's Func change.
func customChange(kind Kind, m *batches.Migration, rel sink.Relation, seq int64, attempt int) sink.Change {
	return sink.Change{Func: func(ctx context.Context, tx sink.Tx, s sink.Scope) (int64, error) {
		n, err := kind.ProcessBatch(ctx, tx, SubBatch{
			Migration: m.Spec.Name, Seq: seq, Attempt: attempt, Spec: m.Spec,
			Table: rel.Table, Column: rel.Column, Range: s.Range, Rows: s.Rows, Dialect: tx.Dialect(),
		})
		if err != nil {
			return 0, &kindError{kind: m.Spec.Kind, err: err}
		}
		return n, nil
	}}
}
