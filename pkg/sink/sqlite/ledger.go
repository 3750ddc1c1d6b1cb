package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// ledgerDDL is DESIGN.md §6's ledger. WITHOUT ROWID: the table is its
// primary key's b-tree, one lookup and one page write per CAS instead of
// an index and a table.
const ledgerDDL = `CREATE TABLE IF NOT EXISTS ` + sink.LedgerTable + ` (
	migration TEXT NOT NULL,
	batch_seq BIGINT NOT NULL,
	checkpoint TEXT NULL,
	rows_affected BIGINT NOT NULL DEFAULT 0,
	failed_keys TEXT NULL,
	updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
	PRIMARY KEY (migration, batch_seq)
) WITHOUT ROWID`

// EnsureLedger creates batchflow_ledger in the main database if it is
// missing. Two processes racing are serialized by SQLite's write lock; the
// second finds the table there.
func (s *Sink) EnsureLedger(ctx context.Context) error {
	err := s.writeTx(ctx, func(ctx context.Context, q *txQueryer) error {
		_, err := q.Exec(ctx, ledgerDDL)
		return err
	})
	if err != nil {
		return fmt.Errorf("create %s: %w", sink.LedgerTable, err)
	}
	return nil
}

// ensureLedger runs EnsureLedger once per sink, and again after a failure.
func (s *Sink) ensureLedger(ctx context.Context) error {
	if s.ledgerReady.Load() {
		return nil
	}
	s.ledgerMu.Lock()
	defer s.ledgerMu.Unlock()
	if s.ledgerReady.Load() {
		return nil
	}
	if err := s.EnsureLedger(ctx); err != nil {
		return err
	}
	s.ledgerReady.Store(true)
	return nil
}

// BeginBatch returns the batch's ledger row, inserting it at a null
// checkpoint first if it is missing. The checkpoint is read back as a key
// of type kt, the batch column's.
func (s *Sink) BeginBatch(ctx context.Context, migration string, seq int64, kt sink.KeyType) (sink.Checkpoint, error) {
	if err := s.ensureLedger(ctx); err != nil {
		return sink.Checkpoint{}, err
	}
	cp := sink.Checkpoint{Migration: migration, Seq: seq}
	err := s.writeTx(ctx, func(ctx context.Context, q *txQueryer) error {
		if _, err := q.Exec(ctx, `INSERT INTO `+sink.LedgerTable+` (migration, batch_seq, rows_affected, updated_at)
			VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING`, migration, seq, time.Now().UTC()); err != nil {
			return err
		}
		var key, failed *string
		var updated any
		if err := q.QueryRow(ctx, `SELECT checkpoint, rows_affected, failed_keys, updated_at FROM `+sink.LedgerTable+`
			WHERE migration = ? AND batch_seq = ?`, migration, seq).Scan(&key, &cp.RowsAffected, &failed, &updated); err != nil {
			return err
		}
		var err error
		if cp.Key, err = sink.DecodeKey(key, kt); err != nil {
			return err
		}
		if cp.FailedKeys, err = sink.DecodeFailedKeys(failed); err != nil {
			return err
		}
		cp.UpdatedAt = timeOf(updated)
		return nil
	})
	if err != nil {
		return sink.Checkpoint{}, fmt.Errorf("begin %s batch %d: %w", migration, seq, err)
	}
	return cp, nil
}

// ResetLedger deletes the migration's ledger rows, creating the ledger
// first if it is missing (there is then nothing to delete).
func (s *Sink) ResetLedger(ctx context.Context, migration string) error {
	if err := s.ensureLedger(ctx); err != nil {
		return err
	}
	err := s.writeTx(ctx, func(ctx context.Context, q *txQueryer) error {
		_, err := q.Exec(ctx, `DELETE FROM `+sink.LedgerTable+` WHERE migration = ?`, migration)
		return err
	})
	if err != nil {
		return fmt.Errorf("reset the ledger of %s: %w", migration, err)
	}
	return nil
}

// timeOf reads updated_at: modernc.org/sqlite returns a time.Time for a
// TIMESTAMP column it can parse, the text otherwise.
func timeOf(v any) time.Time {
	switch x := v.(type) {
	case time.Time:
		return x.UTC()
	case string:
		for _, layout := range []string{"2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05", time.RFC3339Nano} {
			if t, err := time.Parse(layout, x); err == nil {
				return t.UTC()
			}
		}
	}
	return time.Time{}
}

// ApplySubBatch runs one sub-batch inside one BEGIN IMMEDIATE transaction:
// the change and the checkpoint's compare-and-set (and, when the caller
// gave no sb.Hi, the ledger read and the probe for the sub-batch's last
// key) all happen under SQLite's write lock, which no other writer can hold
// meanwhile, so the compare-and-set needs no row lock and a second executor
// finds the checkpoint moved.
func (s *Sink) ApplySubBatch(ctx context.Context, sb sink.SubBatch, change sink.Change) (sink.Result, error) {
	if err := checkSubBatch(sb); err != nil {
		return sink.Result{}, err
	}
	if err := s.ensureLedger(ctx); err != nil {
		return sink.Result{}, err
	}
	folded := change.Foldable && change.Statement != nil && !s.generic
	apply := func(rollbackOnConflict bool) (res sink.Result, err error) {
		err = s.writeTx(ctx, func(ctx context.Context, q *txQueryer) error {
			var err error
			if folded {
				res, err = applyFolded(ctx, q, sb, change, rollbackOnConflict)
			} else {
				res, err = sink.ApplyInTx(ctx, q, sb, change)
			}
			return err
		})
		return res, err
	}
	res, err := apply(folded)
	if folded && isConstraint(err) && !errors.Is(err, sink.ErrCheckpointMoved) {
		// The transaction rolled back, so nothing was written: run the
		// change as written, with the conflict resolution the table
		// declares (see orRollback).
		res, err = apply(false)
	}
	if err != nil {
		return sink.Result{}, fmt.Errorf("apply %s batch %d after %s: %w", sb.Migration, sb.Seq, sb.From, err)
	}
	return res, nil
}

// checkSubBatch refuses what sb.Check refuses, and a caller's Hi that is
// not of the relation's key type or lies below the sub-batch's start: the
// checkpoint would move back (or out of the batch), and the rows in between
// would be applied again.
func checkSubBatch(sb sink.SubBatch) error {
	if err := sb.Check(); err != nil {
		return err
	}
	if sb.Hi.IsNull() {
		return nil
	}
	if sb.Hi.IsInt() != (sb.Relation.Key == sink.KeyInt) {
		return fmt.Errorf("%s batch %d: sub-batch upper key %s is not a %s key", sb.Migration, sb.Seq, sb.Hi, sb.Relation.Key)
	}
	if lo := sb.Rows().Lo; sb.Hi.IsInt() && lo.IsInt() && sb.Hi.Int() < lo.Int() {
		return fmt.Errorf("%s batch %d: sub-batch upper key %s is below its start %s", sb.Migration, sb.Seq, sb.Hi, lo)
	}
	return nil
}

// SkipKey moves the checkpoint from sb.From to key and records key as
// failed, in one transaction.
func (s *Sink) SkipKey(ctx context.Context, sb sink.SubBatch, key batches.Key) (sink.Checkpoint, error) {
	if key.IsNull() {
		return sink.Checkpoint{}, errors.New("skip key: the key is null")
	}
	if err := s.ensureLedger(ctx); err != nil {
		return sink.Checkpoint{}, err
	}
	var cp sink.Checkpoint
	err := s.writeTx(ctx, func(ctx context.Context, q *txQueryer) error {
		var err error
		cp, err = sink.SkipInTx(ctx, q, sb, key)
		return err
	})
	if err != nil {
		return sink.Checkpoint{}, err
	}
	return cp, nil
}
