package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// ledgerDDL creates the ledger (DESIGN.md §6) in the DSN's database.
// InnoDB whatever the server's default engine, so the checkpoint commits
// and rolls back with the data. failed_keys is MEDIUMTEXT: a batch may skip
// many long string keys, and strict mode would refuse TEXT's 64 KiB limit
// rather than truncate. updated_at is DATETIME(6) in UTC, free of
// TIMESTAMP's time zone conversion and 2038 limit.
const ledgerDDL = "CREATE TABLE IF NOT EXISTS `" + sink.LedgerTable + "` (" +
	"migration VARCHAR(255) NOT NULL, " +
	"batch_seq BIGINT NOT NULL, " +
	"checkpoint TEXT NULL, " +
	"rows_affected BIGINT NOT NULL DEFAULT 0, " +
	"failed_keys MEDIUMTEXT NULL, " +
	"updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), " +
	"PRIMARY KEY (migration, batch_seq)" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

// EnsureLedger implements sink.Sink. It looks for the table first: MySQL
// checks the CREATE privilege even for CREATE TABLE IF NOT EXISTS on a
// table that exists, and an executor's user may be allowed to write the
// ledger a DBA created (batchflow init) without being allowed to create
// tables. CREATE TABLE IF NOT EXISTS is safe when two processes race: the
// loser finds the table and does nothing.
func (s *Sink) EnsureLedger(ctx context.Context) error {
	var n int
	err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
		s.database, sink.LedgerTable).Scan(&n)
	if err != nil {
		return fmt.Errorf("look for %s: %w", sink.LedgerTable, err)
	}
	if n > 0 {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, ledgerDDL); err != nil {
		return fmt.Errorf("create %s: %w", sink.LedgerTable, err)
	}
	return nil
}

// ensureLedger creates the ledger once per sink, on first use; a failed
// attempt is retried on the next call.
func (s *Sink) ensureLedger(ctx context.Context) error {
	s.ledgerMu.Lock()
	defer s.ledgerMu.Unlock()
	if s.ledgerReady {
		return nil
	}
	if err := s.EnsureLedger(ctx); err != nil {
		return err
	}
	s.ledgerReady = true
	return nil
}

// BeginBatch implements sink.Sink. It reads the row first, without a lock,
// so a resuming executor does not queue behind the transaction of one
// still applying a sub-batch; only a missing row is inserted (a no-op if
// another executor inserted it meanwhile).
func (s *Sink) BeginBatch(ctx context.Context, migration string, seq int64, key sink.KeyType) (sink.Checkpoint, error) {
	if err := s.ensureLedger(ctx); err != nil {
		return sink.Checkpoint{}, err
	}
	cp, found, err := s.readCheckpoint(ctx, migration, seq, key)
	if err != nil || found {
		return cp, err
	}
	_, err = s.db.ExecContext(ctx, "INSERT INTO `"+sink.LedgerTable+"` (migration, batch_seq, rows_affected, updated_at) "+
		"VALUES (?, ?, 0, ?) ON DUPLICATE KEY UPDATE batch_seq = batch_seq", migration, seq, time.Now().UTC())
	if err != nil {
		return sink.Checkpoint{}, fmt.Errorf("begin %s batch %d: %w", migration, seq, err)
	}
	cp, found, err = s.readCheckpoint(ctx, migration, seq, key)
	if err == nil && !found {
		err = fmt.Errorf("begin %s batch %d: the ledger row vanished after insert", migration, seq)
	}
	return cp, err
}

func (s *Sink) readCheckpoint(ctx context.Context, migration string, seq int64, kt sink.KeyType) (sink.Checkpoint, bool, error) {
	cp := sink.Checkpoint{Migration: migration, Seq: seq}
	var key, failed *string
	err := s.db.QueryRowContext(ctx, "SELECT checkpoint, rows_affected, failed_keys, updated_at FROM `"+sink.LedgerTable+
		"` WHERE migration = ? AND batch_seq = ?", migration, seq).Scan(&key, &cp.RowsAffected, &failed, &cp.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, fmt.Errorf("read ledger of %s batch %d: %w", migration, seq, err)
	}
	if cp.Key, err = sink.DecodeKey(key, kt); err != nil {
		return cp, false, fmt.Errorf("read ledger of %s batch %d: %w", migration, seq, err)
	}
	if cp.FailedKeys, err = sink.DecodeFailedKeys(failed); err != nil {
		return cp, false, fmt.Errorf("read ledger of %s batch %d: %w", migration, seq, err)
	}
	return cp, true, nil
}

// ApplySubBatch implements sink.Sink. MySQL has neither data-modifying
// CTEs nor UPDATE … RETURNING, so the change and the compare-and-set are
// separate statements of one transaction, each prepared once per
// connection. Which statements depends on what the caller gave:
//
// With sb.Hi (the executor's choice for integer keys) and a SQL change,
// the change goes first and the compare-and-set last (changeThenAdvance),
// on a connection with autocommit off (see txConnector), where the first
// statement opens the transaction:
//
//	<the change> over (from, hi]
//	UPDATE batchflow_ledger SET checkpoint = hi, rows_affected = rows_affected + n …
//	  WHERE migration = ? AND batch_seq = ? AND checkpoint <=> from
//	COMMIT
//
// Three round trips: one statement and a COMMIT more than the change run
// alone in autocommit. An UPDATE reads the latest committed ledger row
// and locks it, so the compare is exact: one row changed means the
// checkpoint was still sb.From; none means another executor moved it (or
// there is no ledger row), and the transaction, change included, rolls
// back with sink.ErrCheckpointMoved. The price of the order is paid by
// that other executor only, a stale one: it does its change (waiting for
// the winner's row locks if their rows overlap) before it learns it lost,
// instead of waiting on the ledger row and changing nothing. An executor
// counting rows (below) on the same batch at the same moment takes the two
// locks in the other order; the server breaks such a deadlock and one of
// them retries it as a transient error.
//
// Otherwise (no sb.Hi, a custom change, a statement that needs the key
// below an inclusive text bound, or the empty sub-batch sb.Hi = sb.From of
// an executor resuming a finished batch) the ledger row is locked first
// (lockThenApply), in five round trips: a custom change's Go code must not
// run for a batch its executor no longer owns.
//
// Either way the outcome is sink.ApplyInTx's (TestFoldedMatchesGeneric).
func (s *Sink) ApplySubBatch(ctx context.Context, sb sink.SubBatch, change sink.Change) (sink.Result, error) {
	if err := sb.Check(); err != nil {
		return sink.Result{}, err
	}
	if change.Func == nil && change.Statement == nil {
		return sink.Result{}, errors.New("change has neither a statement nor a function")
	}
	if err := checkHiNotBelowFrom(sb); err != nil {
		return sink.Result{}, err
	}
	if err := s.ensureLedger(ctx); err != nil {
		return sink.Result{}, err
	}
	if s.genericProtocol {
		return s.applyGeneric(ctx, sb, change)
	}
	rows := sb.Rows()
	needLoBelow := change.Func == nil && !change.Foldable && rows.LoInclusive && rows.Lo.IsString()
	if !sb.Hi.IsNull() && !sb.Hi.Equal(sb.From) && change.Statement != nil && !needLoBelow {
		return s.changeThenAdvance(ctx, sb, rows, change)
	}
	return s.lockThenApply(ctx, sb, rows, needLoBelow, change)
}

// checkHiNotBelowFrom refuses an integer Hi below From: the sub-batch
// would move the checkpoint back, and the rows in between would be changed
// again. Hi equal to From is an empty sub-batch, which is how an executor
// resuming a batch finished before it learns that it is done.
func checkHiNotBelowFrom(sb sink.SubBatch) error {
	if sb.Hi.IsInt() && sb.From.IsInt() && sb.Hi.Int() < sb.From.Int() {
		return fmt.Errorf("%s batch %d: sub-batch upper key %s is below the checkpoint %s", sb.Migration, sb.Seq, sb.Hi, sb.From)
	}
	return nil
}

// advanceSQL moves a batch's checkpoint and adds the sub-batch's rows,
// under the lock lockThenApply took.
const advanceSQL = "UPDATE `" + sink.LedgerTable + "` SET checkpoint = ?, rows_affected = rows_affected + ?, updated_at = ? " +
	"WHERE migration = ? AND batch_seq = ?"

// casSQL is advanceSQL as a compare-and-set: it changes the row only if
// the checkpoint is still the caller's, byte for byte (BINARY: the ledger's
// collation ignores trailing spaces; <=>: NULL before the first
// sub-batch). ApplySubBatch runs it only when the new checkpoint differs
// from the old one, so a matched row is a changed row, which is what MySQL
// counts as affected.
const casSQL = advanceSQL + " AND BINARY checkpoint <=> BINARY ?"

// changeThenAdvance applies a SQL change over (From, sb.Hi] and then moves
// the checkpoint with casSQL; see ApplySubBatch.
func (s *Sink) changeThenAdvance(ctx context.Context, sb sink.SubBatch, rows sink.Range, change sink.Change) (sink.Result, error) {
	sub := sink.Range{Lo: rows.Lo, LoInclusive: rows.LoInclusive, Hi: sb.Hi}
	var lo batches.Key
	if !change.Foldable {
		var err error
		if lo, err = exclusiveLo(sb.Relation, sub, nil); err != nil {
			return sink.Result{}, err
		}
	}
	b := sink.NewBuilder(Dialect{})
	change.Statement(b, changeScope(sb.Relation, sub, lo, !change.Foldable))

	var n int64
	err := s.inAutocommitTx(ctx, func(c *txConn) error {
		var err error
		if n, err = s.execIn(ctx, c, b.String(), b.Args()...); err != nil {
			return err
		}
		moved, err := s.execIn(ctx, c, casSQL, sink.EncodeKey(sb.Hi), n, time.Now().UTC(), sb.Migration, sb.Seq, sink.EncodeKey(sb.From))
		if err != nil {
			return fmt.Errorf("advance checkpoint of %s batch %d: %w", sb.Migration, sb.Seq, err)
		}
		if moved != 1 {
			return errCheckpointMoved
		}
		return nil
	})
	if errors.Is(err, errCheckpointMoved) {
		return sink.Result{}, s.checkpointMoved(ctx, sb)
	}
	if err != nil {
		return sink.Result{}, err
	}
	return sink.Result{Checkpoint: sb.Hi, Rows: n, Done: sb.Hi.Equal(sb.Batch.Hi), Lo: rows.Lo, Hi: sb.Hi}, nil
}

// execIn runs one statement of a transaction on c, within the sink's
// statement timeout.
func (s *Sink) execIn(ctx context.Context, c *txConn, query string, args ...any) (int64, error) {
	ctx, cancel := s.statementContext(ctx)
	defer cancel()
	return c.exec(ctx, query, args...)
}

// errCheckpointMoved rolls back changeThenAdvance's transaction; the error
// the caller sees says where the checkpoint is.
var errCheckpointMoved = fmt.Errorf("compare-and-set found another checkpoint: %w", sink.ErrCheckpointMoved)

// checkpointMoved describes a failed compare-and-set, after the rollback:
// where the batch's checkpoint is now, read without a lock.
func (s *Sink) checkpointMoved(ctx context.Context, sb sink.SubBatch) error {
	cp, found, err := s.readCheckpoint(ctx, sb.Migration, sb.Seq, sb.Relation.Key)
	switch {
	case err != nil:
		return fmt.Errorf("%s batch %d is no longer at %s: %w", sb.Migration, sb.Seq, sb.From, sink.ErrCheckpointMoved)
	case !found:
		return fmt.Errorf("%s batch %d has no ledger row (call BeginBatch first): %w", sb.Migration, sb.Seq, sink.ErrCheckpointMoved)
	}
	return fmt.Errorf("%s batch %d is at %s, not %s: %w", sb.Migration, sb.Seq, cp.Key, sb.From, sink.ErrCheckpointMoved)
}

// lockThenApply runs a sub-batch in three statements besides START
// TRANSACTION and COMMIT:
//
//  1. one SELECT … FOR UPDATE locks the batch's ledger row and, in scalar
//     subqueries, finds the sub-batch's upper key (LIMIT 1 OFFSET limit-1)
//     when the caller gave none and, where a statement needs an exclusive
//     :lo below an inclusive string bound, the key before it; if the
//     checkpoint is not sb.From the transaction rolls back with
//     ErrCheckpointMoved;
//  2. the change;
//  3. the ledger update, moving the checkpoint and adding the rows.
//
// Five round trips. The lock makes a second executor on the same batch
// wait, then find the checkpoint moved; the probe's subquery is a plain
// consistent read (a locking clause does not reach into subqueries), and
// which upper key it finds never matters to exactly-once: the change and
// the ledger both use the same one, under the lock.
func (s *Sink) lockThenApply(ctx context.Context, sb sink.SubBatch, rows sink.Range, needLoBelow bool, change sink.Change) (sink.Result, error) {
	lock := lockAndProbe(sb, rows, needLoBelow)
	// Prepared before the transaction takes its connection (see stmtCache).
	s.stmts.prepare(ctx, lock.String())
	s.stmts.prepare(ctx, advanceSQL)
	if change.Statement != nil {
		// The change's text as it will be, whatever the upper key: only
		// bound values differ.
		predicted := sink.Range{Lo: rows.Lo, LoInclusive: rows.LoInclusive, Hi: sb.Batch.Hi}
		b := sink.NewBuilder(Dialect{})
		change.Statement(b, changeScope(sb.Relation, predicted, batches.Key{}, !change.Foldable))
		s.stmts.prepare(ctx, b.String())
	}

	var res sink.Result
	err := s.inTx(ctx, func(q txQueryer) error {
		var err error
		res, err = s.lockedApply(ctx, q, sb, rows, lock, needLoBelow, change)
		return err
	})
	if err != nil {
		return sink.Result{}, err
	}
	return res, nil
}

// lockAndProbe writes statement 1 of lockThenApply: the probe only when
// the caller gave no upper key. The ledger's columns are qualified; the
// subqueries' names resolve in the relation's table first.
func lockAndProbe(sb sink.SubBatch, rows sink.Range, loBelow bool) *sink.Builder {
	rel := sb.Relation
	b := sink.NewBuilder(Dialect{})
	b.SQL("SELECT bf_ledger.checkpoint")
	if sb.Hi.IsNull() {
		b.SQL(", (SELECT ").Ident(rel.Column).SQL(" FROM ").Ident(rel.Table.QualifiedName()).
			SQL(" WHERE ").Write(rel.Rows(rows)).
			SQL(" ORDER BY ").Ident(rel.Column).SQL(" LIMIT 1 OFFSET ").Arg(sb.Limit - 1).SQL(")")
	}
	if loBelow {
		b.SQL(", (SELECT MAX(").Ident(rel.Column).SQL(") FROM ").Ident(rel.Table.QualifiedName()).
			SQL(" WHERE ").Ident(rel.Column).SQL(" < ").Arg(rows.Lo.Value()).SQL(")")
	}
	b.SQL(" FROM `" + sink.LedgerTable + "` AS bf_ledger WHERE bf_ledger.migration = ").Arg(sb.Migration).
		SQL(" AND bf_ledger.batch_seq = ").Arg(sb.Seq).SQL(Dialect{}.LockClause())
	return b
}

func (s *Sink) lockedApply(ctx context.Context, q txQueryer, sb sink.SubBatch, rows sink.Range, lock *sink.Builder, needLoBelow bool, change sink.Change) (sink.Result, error) {
	var checkpoint *string
	dest := []any{&checkpoint}
	readProbe := func() batches.Key { return batches.Key{} }
	if sb.Hi.IsNull() {
		var probeDest any
		var err error
		if probeDest, readProbe, err = keyDest(sb.Relation.Key); err != nil {
			return sink.Result{}, err
		}
		dest = append(dest, probeDest)
	}
	var readBelow func() batches.Key
	if needLoBelow {
		var belowDest any
		belowDest, readBelow, _ = keyDest(sb.Relation.Key)
		dest = append(dest, belowDest)
	}
	if err := q.QueryRow(ctx, lock.String(), lock.Args()...).Scan(dest...); err != nil {
		if errors.Is(err, sink.ErrNoRows) {
			return sink.Result{}, fmt.Errorf("%s batch %d has no ledger row (call BeginBatch first): %w", sb.Migration, sb.Seq, sink.ErrCheckpointMoved)
		}
		return sink.Result{}, fmt.Errorf("lock ledger row of %s batch %d: %w", sb.Migration, sb.Seq, err)
	}
	// Compared in the ledger's text form, which is what it stores.
	if from := sink.EncodeKey(sb.From); (checkpoint == nil) != (from == nil) || (checkpoint != nil && *checkpoint != from.(string)) {
		at, err := sink.DecodeKey(checkpoint, sb.Relation.Key)
		if err != nil {
			return sink.Result{}, fmt.Errorf("%s batch %d is at %q, not %s: %w", sb.Migration, sb.Seq, *checkpoint, sb.From, sink.ErrCheckpointMoved)
		}
		return sink.Result{}, fmt.Errorf("%s batch %d is at %s, not %s: %w", sb.Migration, sb.Seq, at, sb.From, sink.ErrCheckpointMoved)
	}

	hi, done := sb.Hi, sb.Hi.Equal(sb.Batch.Hi)
	if hi.IsNull() {
		if hi = readProbe(); hi.IsNull() {
			hi, done = sb.Batch.Hi, true
		} else {
			done = hi.Equal(sb.Batch.Hi)
		}
	}
	sub := sink.Range{Lo: rows.Lo, LoInclusive: rows.LoInclusive, Hi: hi}

	var (
		n   int64
		err error
	)
	if change.Func != nil {
		n, err = change.Func(ctx, q, changeScope(sb.Relation, sub, batches.Key{}, false))
	} else {
		var lo batches.Key
		if !change.Foldable {
			if lo, err = exclusiveLo(sb.Relation, sub, readBelow); err != nil {
				return sink.Result{}, err
			}
		}
		b := sink.NewBuilder(Dialect{})
		change.Statement(b, changeScope(sb.Relation, sub, lo, !change.Foldable))
		n, err = q.Exec(ctx, b.String(), b.Args()...)
	}
	if err != nil {
		return sink.Result{}, err
	}

	if _, err := q.Exec(ctx, advanceSQL, sink.EncodeKey(hi), n, time.Now().UTC(), sb.Migration, sb.Seq); err != nil {
		return sink.Result{}, fmt.Errorf("advance checkpoint of %s batch %d: %w", sb.Migration, sb.Seq, err)
	}
	return sink.Result{Checkpoint: hi, Rows: n, Done: done, Lo: rows.Lo, Hi: hi}, nil
}

// changeScope is the scope a change runs on: the rows of rel within sub,
// with :lo bound to lo when withLo (statements placing their bounds).
func changeScope(rel sink.Relation, sub sink.Range, lo batches.Key, withLo bool) sink.Scope {
	scope := sink.Scope{
		Relation: rel,
		Rows:     rel.Rows(sub),
		Hi:       func(b *sink.Builder) { b.Arg(sub.Hi.Value()) },
		Range:    sub,
	}
	if withLo {
		scope.Lo = func(b *sink.Builder) { b.Arg(lo.Value()) }
	}
	return scope
}

// exclusiveLo is the exclusive lower bound equivalent to r's, as
// sink.ApplyInTx binds :lo: r.Lo itself, the integer below an inclusive
// integer bound, or the key below an inclusive string bound (read by the
// locking statement: below).
func exclusiveLo(rel sink.Relation, r sink.Range, below func() batches.Key) (batches.Key, error) {
	if !r.LoInclusive || r.Lo.IsNull() {
		return r.Lo, nil
	}
	if r.Lo.IsInt() {
		if r.Lo.Int() == math.MinInt64 {
			return batches.Key{}, fmt.Errorf("key %s: %w", r.Lo, sink.ErrNoExclusiveLo)
		}
		return batches.IntKey(r.Lo.Int() - 1), nil
	}
	if below != nil {
		if key := below(); !key.IsNull() {
			return key, nil
		}
	}
	return batches.Key{}, fmt.Errorf("%s is the smallest %s of %s: %w; use args.set, or a min_value above it",
		r.Lo, rel.Column, rel.Table.Name, sink.ErrNoExclusiveLo)
}

// applyGeneric runs sink.ApplyInTx, the protocol every sink shares: kept
// for the benchmark's comparison and as the reference the folded protocol
// must agree with.
func (s *Sink) applyGeneric(ctx context.Context, sb sink.SubBatch, change sink.Change) (sink.Result, error) {
	var res sink.Result
	err := s.inTx(ctx, func(q txQueryer) error {
		var err error
		res, err = sink.ApplyInTx(ctx, q, sb, change)
		return err
	})
	return res, err
}

// SkipKey implements sink.Sink with sink.SkipInTx in one transaction.
func (s *Sink) SkipKey(ctx context.Context, sb sink.SubBatch, key batches.Key) (sink.Checkpoint, error) {
	if err := s.ensureLedger(ctx); err != nil {
		return sink.Checkpoint{}, err
	}
	var cp sink.Checkpoint
	err := s.inTx(ctx, func(q txQueryer) error {
		var err error
		cp, err = sink.SkipInTx(ctx, q, sb, key)
		return err
	})
	return cp, err
}

// inTx runs fn in a transaction, committed when fn returns nil and rolled
// back otherwise.
func (s *Sink) inTx(ctx context.Context, fn func(q txQueryer) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(txQueryer{s: s, tx: tx}); err != nil {
		// The error that matters is fn's; a failed rollback (a lost
		// connection) ends the transaction on the server all the same.
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// ResetLedger implements sink.Sink. A ledger that does not exist yet holds
// nothing to delete, and is not created for it.
func (s *Sink) ResetLedger(ctx context.Context, migration string) error {
	ctx, cancel := s.statementContext(ctx)
	defer cancel()
	_, err := s.db.ExecContext(ctx, "DELETE FROM `"+sink.LedgerTable+"` WHERE migration = ?", migration)
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == errNoSuchTable {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reset the ledger of %s: %w", migration, err)
	}
	return nil
}

// errNoSuchTable is ER_NO_SUCH_TABLE.
const errNoSuchTable = 1146
