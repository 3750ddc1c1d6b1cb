package sink

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/batchflow/batchflow/pkg/batches"
)

// Queryer is the part of an open transaction the ledger protocol needs. The
// sinks adapt database/sql's and pgx's transactions to it.
type Queryer interface {
	Tx
	// QueryRow runs a query expected to return at most one row.
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Row is a single-row result; Scan returns ErrNoRows when there is none.
type Row interface {
	Scan(dest ...any) error
}

// ErrNoRows is returned by Row.Scan when the query returned no row; the
// adapters translate their driver's own sentinel to it.
var ErrNoRows = errors.New("no rows in result set")

// ApplyInTx runs one sub-batch inside tx, an open transaction: it locks the
// batch's ledger row and checks the checkpoint is still sb.From, finds the
// sub-batch's upper key, applies change and moves the checkpoint. The
// caller commits when it returns nil and rolls back otherwise.
//
// This is the protocol every sink can run. A sink may fold the same steps
// into fewer statements (Postgres does, for foldable changes) as long as
// the outcome is the same.
func ApplyInTx(ctx context.Context, tx Queryer, sb SubBatch, change Change) (Result, error) {
	if err := sb.Check(); err != nil {
		return Result{}, err
	}
	if _, err := lockCheckpoint(ctx, tx, sb); err != nil {
		return Result{}, err
	}
	rows := sb.Rows()
	hi, done := sb.Hi, sb.Hi.Equal(sb.Batch.Hi)
	if hi.IsNull() {
		var err error
		if hi, done, err = probeSubBatchHi(ctx, tx, sb.Relation, rows, sb.Limit, sb.Batch.Hi); err != nil {
			return Result{}, err
		}
	}
	sub := Range{Lo: rows.Lo, LoInclusive: rows.LoInclusive, Hi: hi}
	n, err := runChange(ctx, tx, sb.Relation, sub, change)
	if err != nil {
		return Result{}, err
	}
	b := NewBuilder(tx.Dialect())
	b.SQL("UPDATE ").Ident(LedgerTable).SQL(" SET checkpoint = ").Arg(EncodeKey(hi)).
		SQL(", rows_affected = rows_affected + ").Arg(n).
		SQL(", updated_at = ").Arg(time.Now().UTC()).
		SQL(" WHERE migration = ").Arg(sb.Migration).SQL(" AND batch_seq = ").Arg(sb.Seq)
	if _, err := tx.Exec(ctx, b.String(), b.Args()...); err != nil {
		return Result{}, fmt.Errorf("advance checkpoint of %s batch %d: %w", sb.Migration, sb.Seq, err)
	}
	return Result{Checkpoint: hi, Rows: n, Done: done, Lo: rows.Lo, Hi: hi}, nil
}

// SkipInTx moves the checkpoint from sb.From to key inside tx and records
// key as failed, after the same lock and check as ApplyInTx.
func SkipInTx(ctx context.Context, tx Queryer, sb SubBatch, key batches.Key) (Checkpoint, error) {
	cp, err := lockCheckpoint(ctx, tx, sb)
	if err != nil {
		return Checkpoint{}, err
	}
	failed, err := EncodeFailedKeys(cp.failedText, key)
	if err != nil {
		return Checkpoint{}, err
	}
	now := time.Now().UTC()
	b := NewBuilder(tx.Dialect())
	b.SQL("UPDATE ").Ident(LedgerTable).SQL(" SET checkpoint = ").Arg(EncodeKey(key)).
		SQL(", failed_keys = ").Arg(failed).
		SQL(", updated_at = ").Arg(now).
		SQL(" WHERE migration = ").Arg(sb.Migration).SQL(" AND batch_seq = ").Arg(sb.Seq)
	if _, err := tx.Exec(ctx, b.String(), b.Args()...); err != nil {
		return Checkpoint{}, fmt.Errorf("skip key %s of %s batch %d: %w", key, sb.Migration, sb.Seq, err)
	}
	keys, _ := DecodeFailedKeys(&failed)
	return Checkpoint{Migration: sb.Migration, Seq: sb.Seq, Key: key, RowsAffected: cp.RowsAffected, FailedKeys: keys, UpdatedAt: now}, nil
}

type lockedCheckpoint struct {
	Checkpoint
	failedText *string
}

// lockCheckpoint reads the batch's ledger row with the dialect's lock
// clause, so a concurrent holder of the batch waits here, and checks the
// checkpoint is still sb.From.
func lockCheckpoint(ctx context.Context, tx Queryer, sb SubBatch) (lockedCheckpoint, error) {
	b := NewBuilder(tx.Dialect())
	b.SQL("SELECT checkpoint, rows_affected, failed_keys FROM ").Ident(LedgerTable).
		SQL(" WHERE migration = ").Arg(sb.Migration).SQL(" AND batch_seq = ").Arg(sb.Seq).
		SQL(tx.Dialect().LockClause())
	var (
		text   *string
		cp     = lockedCheckpoint{Checkpoint: Checkpoint{Migration: sb.Migration, Seq: sb.Seq}}
		failed *string
	)
	if err := tx.QueryRow(ctx, b.String(), b.Args()...).Scan(&text, &cp.RowsAffected, &failed); err != nil {
		if errors.Is(err, ErrNoRows) {
			return cp, fmt.Errorf("%s batch %d has no ledger row (call BeginBatch first): %w", sb.Migration, sb.Seq, ErrCheckpointMoved)
		}
		return cp, fmt.Errorf("lock ledger row of %s batch %d: %w", sb.Migration, sb.Seq, err)
	}
	key, err := DecodeKey(text, sb.Relation.Key)
	if err != nil {
		return cp, err
	}
	if !key.Equal(sb.From) {
		return cp, fmt.Errorf("%s batch %d is at %s, not %s: %w", sb.Migration, sb.Seq, key, sb.From, ErrCheckpointMoved)
	}
	cp.Key, cp.failedText = key, failed
	return cp, nil
}

// probeSubBatchHi finds the key limit rows into rows: the sub-batch's upper
// bound. With fewer rows left, the sub-batch runs to batchHi and the batch
// is done.
func probeSubBatchHi(ctx context.Context, tx Queryer, rel Relation, rows Range, limit int, batchHi batches.Key) (batches.Key, bool, error) {
	if limit < 1 {
		return batches.Key{}, false, fmt.Errorf("sub-batch limit %d: must be at least 1", limit)
	}
	b := NewBuilder(tx.Dialect())
	b.SQL("SELECT ").Ident(rel.Column).SQL(" FROM ").Ident(rel.Table.QualifiedName()).
		SQL(" WHERE ").Write(rel.Rows(rows)).
		SQL(" ORDER BY ").Ident(rel.Column).SQL(" LIMIT 1 OFFSET ").Arg(limit - 1)
	key, ok, err := scanKey(tx.QueryRow(ctx, b.String(), b.Args()...), rel.Key)
	if err != nil {
		return batches.Key{}, false, fmt.Errorf("find the end of the sub-batch: %w", err)
	}
	if !ok {
		return batchHi, true, nil
	}
	return key, key.Equal(batchHi), nil
}

// scanKey scans a one-column row into a key of type kt; ok is false for no
// row or a NULL.
func scanKey(row Row, kt KeyType) (batches.Key, bool, error) {
	var err error
	var key batches.Key
	switch kt {
	case KeyInt:
		var v *int64
		if err = row.Scan(&v); err == nil && v != nil {
			key = batches.IntKey(*v)
		}
	case KeyString:
		var v *string
		if err = row.Scan(&v); err == nil && v != nil {
			key = batches.StringKey(*v)
		}
	default:
		return key, false, ErrUnsupportedKey
	}
	if errors.Is(err, ErrNoRows) {
		return key, false, nil
	}
	return key, err == nil && !key.IsNull(), err
}

// runChange applies change to the rows of rel within sub and returns the
// rows it changed.
func runChange(ctx context.Context, tx Queryer, rel Relation, sub Range, change Change) (int64, error) {
	scope := Scope{
		Relation: rel,
		Rows:     rel.Rows(sub),
		Hi:       func(b *Builder) { b.Arg(sub.Hi.Value()) },
		Range:    sub,
	}
	if change.Func != nil {
		n, err := change.Func(ctx, tx, scope)
		if err != nil {
			return 0, err
		}
		return n, nil
	}
	if change.Statement == nil {
		return 0, errors.New("change has neither a statement nor a function")
	}
	if !change.Foldable {
		// Statements that place :lo themselves need an exclusive bound.
		lo, err := exclusiveLo(ctx, tx, rel, sub)
		if err != nil {
			return 0, err
		}
		scope.Lo = func(b *Builder) { b.Arg(lo.Value()) }
	}
	b := NewBuilder(tx.Dialect())
	change.Statement(b, scope)
	return tx.Exec(ctx, b.String(), b.Args()...)
}

// ErrNoExclusiveLo: a statement placing :lo itself cannot start at the
// very first key of a string-keyed relation, since no value below it is known.
var ErrNoExclusiveLo = errors.New("no key below the first one to bind :lo to")

// exclusiveLo returns an exclusive lower bound equivalent to r's: r.Lo
// itself, the integer below an inclusive integer bound, or for strings
// the largest key in the table below it.
func exclusiveLo(ctx context.Context, tx Queryer, rel Relation, r Range) (batches.Key, error) {
	if !r.LoInclusive || r.Lo.IsNull() {
		return r.Lo, nil
	}
	if r.Lo.IsInt() {
		if r.Lo.Int() == math.MinInt64 {
			return batches.Key{}, fmt.Errorf("key %s: %w", r.Lo, ErrNoExclusiveLo)
		}
		return batches.IntKey(r.Lo.Int() - 1), nil
	}
	b := NewBuilder(tx.Dialect())
	b.SQL("SELECT MAX(").Ident(rel.Column).SQL(") FROM ").Ident(rel.Table.QualifiedName()).
		SQL(" WHERE ").Ident(rel.Column).SQL(" < ").Arg(r.Lo.Value())
	key, ok, err := scanKey(tx.QueryRow(ctx, b.String(), b.Args()...), rel.Key)
	if err != nil {
		return batches.Key{}, err
	}
	if !ok {
		return batches.Key{}, fmt.Errorf("%s is the smallest %s of %s: %w; use args.set, or a min_value above it",
			r.Lo, rel.Column, rel.Table.Name, ErrNoExclusiveLo)
	}
	return key, nil
}
