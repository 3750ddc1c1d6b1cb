package sink

import (
	"context"
)

// Change is what a kind does to the rows of one sub-batch: a SQL statement
// (stock kinds) or Go code in the ledger transaction (custom kinds).
// Exactly one of Statement and Func is set.
type Change struct {
	// Statement writes one statement acting on the sub-batch described by s.
	Statement func(b *Builder, s Scope)
	// Foldable says Statement writes a single UPDATE or DELETE of the
	// relation's table whose rows are within s.Rows (it may add conditions
	// of its own; no RETURNING, no trailing semicolon), so a sink may fold
	// it with the ledger compare-and-set into one statement, and SQLite may
	// run it as UPDATE OR ROLLBACK.
	Foldable bool
	// Func runs custom code over the sub-batch's rows, inside the ledger
	// transaction, and returns how many rows it changed.
	Func func(ctx context.Context, tx Tx, s Scope) (rows int64, err error)
}

// Scope tells a change which rows its sub-batch covers. The fragments are
// written by the sink: bound values, or expressions when the sink computes
// the sub-batch's bounds inside the statement itself.
type Scope struct {
	Relation Relation
	// Rows writes the predicate selecting the sub-batch's rows: the key
	// range, the spec's where and the kind's filter.
	Rows Fragment
	// Lo writes the sub-batch's exclusive lower key and Hi its inclusive
	// upper key, for statements that place the bounds themselves
	// (the sql kind's :lo and :hi).
	Lo, Hi Fragment
	// Range holds the bounds as values when they are known before the
	// statement runs (always for Func); in a folded statement Hi is null.
	Range Range
}

// Tx is the ledger transaction a custom kind runs in: everything it does
// commits or rolls back with the checkpoint.
type Tx interface {
	Dialect() Dialect
	// Exec runs a statement and returns the rows it affected.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	// Query runs a query; the caller closes the rows.
	Query(ctx context.Context, query string, args ...any) (Rows, error)
}

// Rows iterates a query's result, as database/sql and pgx both do.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}
