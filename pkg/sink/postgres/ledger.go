package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// createLedgerSQL is the ledger of DESIGN.md §6. updated_at is UTC wall
// time, as the other sinks write it.
const createLedgerSQL = `CREATE TABLE IF NOT EXISTS ` + sink.LedgerTable + ` (
	migration     text      NOT NULL,
	batch_seq     bigint    NOT NULL,
	checkpoint    text      NULL,
	rows_affected bigint    NOT NULL DEFAULT 0,
	failed_keys   text      NULL,
	updated_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
	PRIMARY KEY (migration, batch_seq)
)`

// ledgerLockKey is the transaction-scoped advisory lock that serialises
// ledger creation: CREATE TABLE IF NOT EXISTS alone is not safe under
// concurrency (two sessions both find the table missing and the second
// fails on pg_type's unique index). Any constant works; this one reads
// "batchflw".
const ledgerLockKey int64 = 0x62617463686677

// EnsureLedger creates the ledger table if it is missing.
func (s *Sink) EnsureLedger(ctx context.Context) error {
	if s.ledgerReady.Load() {
		return nil
	}
	s.ledgerMu.Lock()
	defer s.ledgerMu.Unlock()
	if s.ledgerReady.Load() {
		return nil
	}
	if err := s.createLedger(ctx); err != nil {
		return fmt.Errorf("create %s: %w", sink.LedgerTable, err)
	}
	s.ledgerReady.Store(true)
	return nil
}

func (s *Sink) createLedger(ctx context.Context) error {
	// An existing ledger needs no CREATE privilege: Postgres checks it on
	// the schema before IF NOT EXISTS, so ask first.
	var exists bool
	if err := s.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", sink.LedgerTable).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", ledgerLockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, createLedgerSQL)
		return err
	})
	if err != nil {
		return err
	}
	s.log.Info("postgres sink: ledger ready", "table", sink.LedgerTable)
	return nil
}

// beginBatchSQL inserts the batch's row if missing and returns it in one
// round trip. A row inserted by a concurrent BeginBatch after this
// statement's snapshot is neither inserted nor visible here: the caller
// reads it again then.
const beginBatchSQL = `
WITH ins AS (
	INSERT INTO ` + sink.LedgerTable + ` (migration, batch_seq) VALUES ($1, $2)
	ON CONFLICT (migration, batch_seq) DO NOTHING
	RETURNING checkpoint, rows_affected, failed_keys, updated_at
)
SELECT checkpoint, rows_affected, failed_keys, updated_at FROM ins
UNION ALL
SELECT checkpoint, rows_affected, failed_keys, updated_at FROM ` + sink.LedgerTable + `
WHERE migration = $1 AND batch_seq = $2`

const readBatchSQL = `SELECT checkpoint, rows_affected, failed_keys, updated_at FROM ` + sink.LedgerTable + `
WHERE migration = $1 AND batch_seq = $2`

// BeginBatch returns the batch's ledger row, creating it at a null
// checkpoint on first use. The checkpoint is read back as a key of type key.
func (s *Sink) BeginBatch(ctx context.Context, migration string, seq int64, key sink.KeyType) (sink.Checkpoint, error) {
	if err := s.EnsureLedger(ctx); err != nil {
		return sink.Checkpoint{}, err
	}
	cp, err := s.readCheckpoint(ctx, beginBatchSQL, migration, seq, key)
	if errors.Is(err, pgx.ErrNoRows) {
		cp, err = s.readCheckpoint(ctx, readBatchSQL, migration, seq, key)
	}
	if err != nil {
		return sink.Checkpoint{}, fmt.Errorf("begin %s batch %d: %w", migration, seq, err)
	}
	return cp, nil
}

func (s *Sink) readCheckpoint(ctx context.Context, query, migration string, seq int64, key sink.KeyType) (sink.Checkpoint, error) {
	cp := sink.Checkpoint{Migration: migration, Seq: seq}
	var text, failed *string
	if err := s.pool.QueryRow(ctx, query, migration, seq).Scan(&text, &cp.RowsAffected, &failed, &cp.UpdatedAt); err != nil {
		return cp, err
	}
	var err error
	if cp.Key, err = sink.DecodeKey(text, key); err != nil {
		return cp, err
	}
	cp.FailedKeys, err = sink.DecodeFailedKeys(failed)
	return cp, err
}

// ResetLedger deletes the migration's ledger rows. A database without a
// ledger has none to delete; the reset creates nothing.
func (s *Sink) ResetLedger(ctx context.Context, migration string) error {
	_, err := s.pool.Exec(ctx, "DELETE FROM "+Dialect.QuoteIdent(sink.LedgerTable)+" WHERE migration = $1", migration)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return nil
	}
	if err != nil {
		return fmt.Errorf("reset the ledger of %s: %w", migration, err)
	}
	return nil
}

// ApplySubBatch applies change to the sub-batch's rows and advances the
// checkpoint from sb.From, atomically. A foldable change costs one
// statement (see foldedStatement); any other runs sink.ApplyInTx in a
// transaction.
func (s *Sink) ApplySubBatch(ctx context.Context, sb sink.SubBatch, change sink.Change) (sink.Result, error) {
	if err := sb.Check(); err != nil {
		return sink.Result{}, err
	}
	if err := checkSubBatch(sb); err != nil {
		return sink.Result{}, err
	}
	if err := s.EnsureLedger(ctx); err != nil {
		return sink.Result{}, err
	}
	if change.Foldable && change.Statement != nil && change.Func == nil {
		return s.applyFolded(ctx, sb, change)
	}
	var res sink.Result
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		res, err = sink.ApplyInTx(ctx, txQueryer{tx}, sb, change)
		return err
	})
	if err != nil {
		if errors.Is(err, sink.ErrCheckpointMoved) {
			s.log.Debug("postgres sink: checkpoint moved", "migration", sb.Migration, "batch", sb.Seq, "from", sb.From.String())
		}
		return sink.Result{}, fmt.Errorf("apply %s batch %d sub-batch after %s: %w", sb.Migration, sb.Seq, sb.From, err)
	}
	return res, nil
}

// checkSubBatch refuses what sb.Check leaves to the sinks: keys of another
// type than the relation's (binding them would fail or compare wrongly),
// and a caller-chosen integer Hi below where the sub-batch starts, which
// would move the checkpoint back over rows already applied, or below the
// batch into another batch's rows.
func checkSubBatch(sb sink.SubBatch) error {
	if err := checkRelation(sb.Relation); err != nil {
		return err
	}
	for _, k := range []batches.Key{sb.Batch.Lo, sb.Batch.Hi, sb.From, sb.Hi} {
		if err := checkKey(k, sb.Relation.Key); err != nil {
			return err
		}
	}
	rows := sb.Rows()
	if sb.Hi.IsInt() && !rows.Lo.IsNull() && sb.Hi.Int() < rows.Lo.Int() {
		return fmt.Errorf("%s batch %d: sub-batch upper key %s is below its start %s", sb.Migration, sb.Seq, sb.Hi, rows.Lo)
	}
	return nil
}

// SkipKey moves the checkpoint from sb.From to key and records key as
// failed, in one transaction (sink.SkipInTx: the failed keys are appended
// in Go, so their JSON reads the same in every sink).
func (s *Sink) SkipKey(ctx context.Context, sb sink.SubBatch, key batches.Key) (sink.Checkpoint, error) {
	if err := s.EnsureLedger(ctx); err != nil {
		return sink.Checkpoint{}, err
	}
	if err := checkRelation(sb.Relation); err != nil {
		return sink.Checkpoint{}, err
	}
	if err := checkKey(sb.From, sb.Relation.Key); err != nil {
		return sink.Checkpoint{}, err
	}
	if err := checkKey(key, sb.Relation.Key); err != nil {
		return sink.Checkpoint{}, err
	}
	if key.IsNull() {
		return sink.Checkpoint{}, errors.New("skip key: the key is null")
	}
	if key.IsInt() && sb.From.IsInt() && key.Int() <= sb.From.Int() {
		// The checkpoint would move back over rows already applied.
		return sink.Checkpoint{}, fmt.Errorf("skip key %s of %s batch %d: not after the checkpoint %s", key, sb.Migration, sb.Seq, sb.From)
	}
	var cp sink.Checkpoint
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		cp, err = sink.SkipInTx(ctx, txQueryer{tx}, sb, key)
		return err
	})
	if err != nil {
		return sink.Checkpoint{}, fmt.Errorf("skip key %s of %s batch %d: %w", key, sb.Migration, sb.Seq, err)
	}
	return cp, nil
}

// txQueryer adapts a pgx transaction to sink.Queryer, the transaction
// ApplyInTx, SkipInTx and custom kinds run in.
type txQueryer struct{ tx pgx.Tx }

func (q txQueryer) Dialect() sink.Dialect { return Dialect }

func (q txQueryer) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.tx.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

// Query returns pgx's rows, which already have sink.Rows' methods.
func (q txQueryer) Query(ctx context.Context, query string, args ...any) (sink.Rows, error) {
	rows, err := q.tx.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (q txQueryer) QueryRow(ctx context.Context, query string, args ...any) sink.Row {
	return row{q.tx.QueryRow(ctx, query, args...)}
}

// row translates pgx.ErrNoRows to sink.ErrNoRows.
type row struct{ pgx.Row }

func (r row) Scan(dest ...any) error {
	err := r.Row.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return sink.ErrNoRows
	}
	return err
}

// PgxTx returns the pgx transaction behind the sink.Tx a custom kind's
// Func receives from this sink, for what only pgx offers (CopyFrom,
// SendBatch, LargeObjects). Whatever it runs commits or rolls back with
// the checkpoint. ok is false for a Tx of another sink.
func PgxTx(tx sink.Tx) (ptx pgx.Tx, ok bool) {
	q, ok := tx.(txQueryer)
	if !ok {
		return nil, false
	}
	return q.tx, true
}
