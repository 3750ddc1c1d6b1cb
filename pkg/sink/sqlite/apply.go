package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// applyFolded is sink.ApplyInTx for a foldable change, inside the same
// BEGIN IMMEDIATE transaction, in two or three statements:
//
//  1. without a caller's sb.Hi, one SELECT reads the ledger row and probes
//     for the sub-batch's upper key, and the checkpoint is checked;
//  2. the change, over (From, upper key];
//  3. the ledger UPDATE, a compare-and-set on the checkpoint.
//
// The write lock, held since BEGIN IMMEDIATE, makes 1 to 3 atomic: no other
// writer can move the checkpoint meanwhile. With sb.Hi there is nothing to
// probe, and the UPDATE's compare is the only check: a batch whose
// checkpoint moved has the change run and rolled back (another executor
// owns it, a rare and short-lived state), which saves every other
// sub-batch a statement. A change that fails on such a batch reports the
// move, as the check would have.
//
// With rollbackOnConflict, an UPDATE runs as UPDATE OR ROLLBACK (see
// orRollback); ApplySubBatch runs the sub-batch again as written when that
// fails on a constraint.
func applyFolded(ctx context.Context, q *txQueryer, sb sink.SubBatch, change sink.Change, rollbackOnConflict bool) (sink.Result, error) {
	rel := sb.Relation
	rows := sb.Rows()
	hi, done := sb.Hi, sb.Hi.Equal(sb.Batch.Hi)
	if hi.IsNull() {
		var at batches.Key
		var err error
		if at, hi, done, err = readAndProbe(ctx, q, sb); err != nil {
			return sink.Result{}, err
		}
		if !at.Equal(sb.From) {
			return sink.Result{}, movedError(sb, at)
		}
	}

	sub := sink.Range{Lo: rows.Lo, LoInclusive: rows.LoInclusive, Hi: hi}
	b := sink.NewBuilder(Dialect)
	change.Statement(b, sink.Scope{
		Relation: rel,
		Rows:     rel.Rows(sub),
		Hi:       func(b *sink.Builder) { b.Arg(hi.Value()) },
		Range:    sub,
	})
	stmt := b.String()
	if rollbackOnConflict {
		stmt = orRollback(stmt)
	}
	n, err := q.Exec(ctx, stmt, b.Args()...)
	if err != nil {
		if !sb.Hi.IsNull() {
			if moved := checkMoved(ctx, q, sb); moved != nil {
				return sink.Result{}, fmt.Errorf("%w (the change failed meanwhile: %w)", moved, err)
			}
		}
		return sink.Result{}, err
	}

	advanced, err := q.Exec(ctx, advanceCheckpoint, sink.EncodeKey(hi), n, time.Now().UTC(), sb.Migration, sb.Seq, sink.EncodeKey(sb.From))
	if err != nil {
		return sink.Result{}, fmt.Errorf("advance checkpoint of %s batch %d: %w", sb.Migration, sb.Seq, err)
	}
	if advanced != 1 {
		if moved := checkMoved(ctx, q, sb); moved != nil {
			return sink.Result{}, moved
		}
		return sink.Result{}, fmt.Errorf("%s batch %d: the checkpoint did not advance: %w", sb.Migration, sb.Seq, sink.ErrCheckpointMoved)
	}
	return sink.Result{Checkpoint: hi, Rows: n, Done: done, Lo: rows.Lo, Hi: hi}, nil
}

// orRollback turns "UPDATE t SET …", as the sql kind writes it, into
// "UPDATE OR ROLLBACK t SET …"; anything else stays as it is.
//
// Inside a transaction, SQLite copies every page an UPDATE that might fail
// halfway (a NOT NULL or CHECK column is enough) changes to a statement
// journal, so that a failure can undo the statement alone: 3–5% of a
// 1000-row UPDATE's time (BenchmarkLedgerBreakdown, tx against
// tx-or-rollback). The sink never goes on after a failed statement;
// it rolls the transaction back. OR ROLLBACK says so to SQLite, which then
// keeps no statement journal. It also overrides the conflict resolution
// the table or its triggers declare (ON CONFLICT REPLACE or IGNORE), which
// could only turn a statement that would succeed into one that fails on a
// constraint, never change what a successful one writes: ApplySubBatch
// then runs the sub-batch again as written.
func orRollback(stmt string) string {
	rest, ok := strings.CutPrefix(stmt, "UPDATE ")
	if !ok || len(rest) < 3 || strings.EqualFold(rest[:3], "OR ") {
		return stmt
	}
	return "UPDATE OR ROLLBACK " + rest
}

// isConstraint reports a constraint failure, the one error by which an
// UPDATE OR ROLLBACK and the UPDATE as written can differ.
func isConstraint(err error) bool {
	if err == nil {
		return false
	}
	var se *msqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}

// advanceCheckpoint moves a batch's checkpoint from its last argument to
// its first, adding rows. OR ROLLBACK: SQLite then keeps no statement
// journal for it, which only a statement that can fail halfway and be
// undone alone needs; any failure rolls the whole transaction back anyway.
const advanceCheckpoint = `UPDATE OR ROLLBACK ` + sink.LedgerTable + ` SET checkpoint = ?, rows_affected = rows_affected + ?, updated_at = ?
	WHERE migration = ? AND batch_seq = ? AND checkpoint IS ?`

// checkMoved returns the error for a batch whose checkpoint is not
// sb.From (or that has no ledger row), or nil: the checkpoint is where the
// caller said, or could not be read.
func checkMoved(ctx context.Context, q *txQueryer, sb sink.SubBatch) error {
	at, err := readCheckpoint(ctx, q, sb)
	switch {
	case errors.Is(err, sink.ErrCheckpointMoved):
		return err
	case err != nil, at.Equal(sb.From):
		return nil
	}
	return movedError(sb, at)
}

func movedError(sb sink.SubBatch, at batches.Key) error {
	return fmt.Errorf("%s batch %d is at %s, not %s: %w", sb.Migration, sb.Seq, at, sb.From, sink.ErrCheckpointMoved)
}

// readCheckpoint reads the batch's checkpoint.
func readCheckpoint(ctx context.Context, q *txQueryer, sb sink.SubBatch) (batches.Key, error) {
	var text *string
	err := q.QueryRow(ctx, `SELECT checkpoint FROM `+sink.LedgerTable+` WHERE migration = ? AND batch_seq = ?`,
		sb.Migration, sb.Seq).Scan(&text)
	if errors.Is(err, sink.ErrNoRows) {
		return batches.Key{}, fmt.Errorf("%s batch %d has no ledger row (call BeginBatch first): %w", sb.Migration, sb.Seq, sink.ErrCheckpointMoved)
	}
	if err != nil {
		return batches.Key{}, fmt.Errorf("read the ledger: %w", err)
	}
	return sink.DecodeKey(text, sb.Relation.Key)
}

// readAndProbe reads the batch's checkpoint and finds the sub-batch's
// upper key, sb.Limit rows after sb.From, in one SELECT; done says the
// batch has no rows after it.
//
// The probe of an integer key over a relation without filters leaves out
// the batch's upper bound and compares the key it finds with it in Go: the
// same answer, for a third of the probe's cost (SQLite then only steps
// through the index instead of comparing every entry with the bound).
func readAndProbe(ctx context.Context, q *txQueryer, sb sink.SubBatch) (at, hi batches.Key, done bool, err error) {
	rel := sb.Relation
	rows := sb.Rows()
	probe := rows
	filtered := strings.TrimSpace(rel.Where) != "" || rel.Filter != nil
	unbounded := rel.Key == sink.KeyInt && rows.Hi.IsInt() && !filtered
	if unbounded {
		probe.Hi = batches.Key{}
	}
	b := sink.NewBuilder(Dialect)
	b.SQL("SELECT l.checkpoint, (SELECT ").Ident(rel.Column).SQL(" FROM ").Ident(rel.Table.QualifiedName()).
		SQL(" WHERE ").Write(rel.Rows(probe))
	if probe.Lo.IsNull() {
		// NULL keys sort first and bound nothing; a lower bound excludes them already.
		b.SQL(" AND ").Ident(rel.Column).SQL(" IS NOT NULL")
	}
	b.SQL(" ORDER BY ").Ident(rel.Column).SQL(" LIMIT 1 OFFSET ").Arg(sb.Limit - 1).
		SQL(") FROM ").Ident(sink.LedgerTable).SQL(" AS l WHERE l.migration = ").Arg(sb.Migration).
		SQL(" AND l.batch_seq = ").Arg(sb.Seq)
	var text *string
	row := q.QueryRow(ctx, b.String(), b.Args()...)
	switch rel.Key {
	case sink.KeyInt:
		var k *int64
		if err = row.Scan(&text, &k); err == nil && k != nil {
			hi = batches.IntKey(*k)
		}
	case sink.KeyString:
		var k *string
		if err = row.Scan(&text, &k); err == nil && k != nil {
			hi = batches.StringKey(*k)
		}
	default:
		return at, hi, false, fmt.Errorf("%s.%s: %w", rel.Table.Name, rel.Column, sink.ErrUnsupportedKey)
	}
	if errors.Is(err, sink.ErrNoRows) {
		return at, hi, false, fmt.Errorf("%s batch %d has no ledger row (call BeginBatch first): %w", sb.Migration, sb.Seq, sink.ErrCheckpointMoved)
	}
	if err != nil {
		return at, hi, false, fmt.Errorf("read the ledger and find the end of the sub-batch: %w", err)
	}
	if at, err = sink.DecodeKey(text, rel.Key); err != nil {
		return at, hi, false, err
	}
	switch {
	case hi.IsNull(), unbounded && hi.Int() >= rows.Hi.Int():
		hi, done = rows.Hi, true
	default:
		done = hi.Equal(rows.Hi)
	}
	return at, hi, done, nil
}
