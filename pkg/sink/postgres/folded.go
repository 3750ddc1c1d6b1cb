package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/batchflow/batchflow/pkg/sink"
)

// A foldable sub-batch is one autocommit statement, so the ledger costs
// the plain keyset loop no extra round trip and no extra commit. When the
// caller chose the sub-batch's upper key (sb.Hi), it is
//
//	WITH claim AS MATERIALIZED (      -- lock the ledger row, if still at From
//	       SELECT 1 FROM batchflow_ledger
//	       WHERE migration = $m AND batch_seq = $s
//	         AND checkpoint IS NOT DISTINCT FROM $from FOR NO KEY UPDATE),
//	     data AS (                    -- the change, on (From, Hi], only if claimed
//	       UPDATE t SET … WHERE col > $from AND col <= $hi
//	                        AND col <= (SELECT $hi FROM claim) AND <where>
//	       RETURNING 1),
//	     changed AS MATERIALIZED (SELECT count(*) AS n FROM data)
//	UPDATE batchflow_ledger           -- the compare-and-set's "set"
//	SET checkpoint = $hi::text, rows_affected = rows_affected + (SELECT n FROM changed),
//	    updated_at = now() AT TIME ZONE 'UTC'
//	WHERE migration = $m AND batch_seq = $s AND EXISTS (SELECT 1 FROM claim)
//	RETURNING (SELECT n FROM changed)
//
// and without one (sb.Limit rows: text keys, or isolating failing rows)
// two more CTEs find the upper key first, as sink.ApplyInTx does: the key
// Limit rows after From, or with fewer rows left the batch's Hi, and the
// batch is done:
//
//	probe AS MATERIALIZED (SELECT col AS k FROM t WHERE <rows after From>
//	  ORDER BY col LIMIT 1 OFFSET $limit - 1),
//	bounds AS MATERIALIZED (SELECT p.k AS probe, coalesce(p.k, $batchHi) AS hi
//	  FROM claim LEFT JOIN probe AS p ON true),
//
// data's upper bound is then (SELECT hi FROM bounds), the checkpoint the
// probe's key or the batch's Hi, and the statement also returns the
// checkpoint and whether the probe found no key. An OFFSET probe rather
// than max(k) and count(*) over the first Limit keys: Postgres has no
// max(uuid), and the probe needs neither a materialized list of keys nor
// an aggregate over it.
//
// Why this is a compare-and-set, under READ COMMITTED:
//
//   - claim reads the ledger row with FOR NO KEY UPDATE, the lock the
//     ledger UPDATE takes anyway (so it never has to upgrade it). If
//     another session holds the row (a second executor of the batch inside
//     the same statement, or inside SkipKey, ResetLedger or a
//     transactional sub-batch, which lock it FOR UPDATE), this statement
//     waits for it to end. When it commits, Postgres re-fetches the row's
//     newest version and re-checks claim's WHERE on it (EvalPlanQual),
//     although the statement's snapshot predates that commit: a moved
//     checkpoint fails the check, claim returns no row and holds no lock.
//     If it rolls back, the old version stands and claim locks it. So at
//     most one of two concurrent statements with the same From gets a row.
//   - data and the ledger change nothing without claim's row. data's upper
//     bound comes out of claim (directly, or through bounds): with no row
//     it is NULL, and col <= NULL holds for no row, so the index scan
//     returns nothing, wherever the kind places s.Rows in its WHERE (even
//     under a NOT: NULL stays NULL). The bound is an initplan, evaluated
//     once when the scan starts, and costs nothing per row, where a
//     separate EXISTS filter would put a Result node above the scan. The
//     ledger UPDATE's EXISTS (SELECT 1 FROM claim) is such a one-time
//     filter over its single row. A statement that lost the claim modifies
//     nothing and returns no row, and since it runs in autocommit there is
//     no transaction left holding anything either.
//   - claim is evaluated, and so the ledger row locked, before data locks
//     any row of the table: two executors of one batch queue on the ledger
//     row, never on each other's data rows in a different order (no deadlock).
//   - Everything commits together: it is one statement. A crash or a lost
//     connection leaves either the whole sub-batch and its checkpoint, or
//     neither; a retry with the same From then finds the checkpoint moved
//     (ErrCheckpointMoved, the executor re-reads it) or applies the
//     sub-batch once.
//   - The ledger UPDATE reads the row through the statement's snapshot; if
//     claim locked a newer version than that, the UPDATE follows it to
//     the version claim locked (EvalPlanQual again), so rows_affected
//     adds to the newest count.
//
// data reads the table through the statement's snapshot, taken before
// any wait on claim. That is sound because a checkpoint that is still
// From after the wait means no executor applied rows after From
// meanwhile: the rows data sees in the sub-batch are the ones no sub-batch
// has changed. Writes of the application itself are re-checked row by row
// by UPDATE as in any statement.
//
// rows_affected is exact: data's RETURNING rows, counted once. Reading
// them costs Postgres a tuplestore entry per row, about 5% of a narrow
// row's UPDATE, but a row count is not otherwise visible inside a
// statement, and the command tag of a top-level data UPDATE would reach
// only the client, too late for the ledger row of the same statement.
func (s *Sink) applyFolded(ctx context.Context, sb sink.SubBatch, change sink.Change) (sink.Result, error) {
	b := foldedStatement(sb, change)
	res := sink.Result{Lo: sb.Rows().Lo}
	var (
		row = s.pool.QueryRow(ctx, b.String(), b.Args()...)
		err error
	)
	if !sb.Hi.IsNull() {
		res.Checkpoint, res.Done = sb.Hi, sb.Hi.Equal(sb.Batch.Hi)
		err = row.Scan(&res.Rows)
	} else {
		var (
			cpText *string
			last   bool
		)
		if err = row.Scan(&res.Rows, &cpText, &last); err == nil {
			if res.Checkpoint, err = sink.DecodeKey(cpText, sb.Relation.Key); err != nil {
				return sink.Result{}, err
			}
			res.Done = last || res.Checkpoint.Equal(sb.Batch.Hi)
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return sink.Result{}, s.checkpointMoved(ctx, sb)
	}
	if err != nil {
		return sink.Result{}, fmt.Errorf("apply %s batch %d sub-batch after %s: %w", sb.Migration, sb.Seq, sb.From, err)
	}
	res.Hi = res.Checkpoint
	return res, nil
}

// foldedStatement writes the statement described above.
func foldedStatement(sb sink.SubBatch, change sink.Change) *sink.Builder {
	rel := sb.Relation
	rows := sb.Rows()
	table := rel.Table.QualifiedName()
	ledgerRow := func(b *sink.Builder) {
		b.SQL(" WHERE migration = ").Arg(sb.Migration).SQL(" AND batch_seq = ").Arg(sb.Seq)
	}

	b := sink.NewBuilder(Dialect)
	b.SQL("WITH claim AS MATERIALIZED (SELECT 1 FROM ").Ident(sink.LedgerTable).Write(ledgerRow).
		SQL(" AND checkpoint IS NOT DISTINCT FROM ").Arg(sink.EncodeKey(sb.From)).SQL("::text FOR NO KEY UPDATE)")

	// The scope's rows: after From, up to the upper key, which is NULL
	// unless claimed. It sits inside the fragment, so it holds wherever the
	// kind places s.Rows in its WHERE.
	scope := sink.Scope{Relation: rel, Range: sink.Range{Lo: rows.Lo, LoInclusive: rows.LoInclusive, Hi: sb.Hi}}
	if !rows.LoInclusive {
		scope.Lo = func(b *sink.Builder) { b.Arg(rows.Lo.Value()) }
	}
	explicit := !sb.Hi.IsNull()
	if explicit {
		scope.Rows = func(b *sink.Builder) {
			// The claimed bound repeats Hi's placeholder, which the first
			// comparison types as the column's type.
			b.Write(sink.KeyRange(rel.Column, scope.Range))
			hi := Dialect.Placeholder(len(b.Args()))
			b.SQL(" AND ").Ident(rel.Column).SQL(" <= (SELECT " + hi + " FROM claim)").Write(rel.Filters())
		}
		scope.Hi = func(b *sink.Builder) { b.Arg(sb.Hi.Value()) }
	} else {
		// probe is the key Limit rows after From, or no row; bounds holds
		// it (NULL for none) and the upper key, once claimed.
		b.SQL(", probe AS MATERIALIZED (SELECT ").Ident(rel.Column).SQL(" AS k FROM ").Ident(table).
			SQL(" WHERE ").Write(keyRows(rel, rows)).
			SQL(" ORDER BY ").Ident(rel.Column).SQL(" LIMIT 1 OFFSET ").Arg(int64(sb.Limit - 1)).SQL(")")
		b.SQL(", bounds AS MATERIALIZED (SELECT p.k AS probe, coalesce(p.k, ").Arg(sb.Batch.Hi.Value()).
			SQL(") AS hi FROM claim LEFT JOIN probe AS p ON true)")
		scope.Rows = func(b *sink.Builder) {
			b.Write(sink.KeyRange(rel.Column, sink.Range{Lo: rows.Lo, LoInclusive: rows.LoInclusive})).
				SQL(" AND ").Ident(rel.Column).SQL(" <= (SELECT hi FROM bounds)").
				Write(rel.Filters())
		}
		scope.Hi = func(b *sink.Builder) { b.SQL("(SELECT hi FROM bounds)") }
	}
	b.SQL(", data AS (")
	change.Statement(b, scope)
	b.SQL(" RETURNING 1), changed AS MATERIALIZED (SELECT count(*) AS n FROM data)")

	// The compare-and-set's "set": the upper key, or once no rows remain
	// the batch's Hi, as sink.ApplyInTx does.
	b.SQL(" UPDATE ").Ident(sink.LedgerTable).SQL(" SET checkpoint = ")
	if explicit {
		b.Arg(sink.EncodeKey(sb.Hi)).SQL("::text")
	} else {
		b.SQL("coalesce((SELECT probe FROM bounds)::text, ").Arg(sink.EncodeKey(sb.Batch.Hi)).SQL("::text)")
	}
	b.SQL(", rows_affected = rows_affected + (SELECT n FROM changed)").
		SQL(", updated_at = now() AT TIME ZONE 'UTC'").
		Write(ledgerRow).SQL(" AND EXISTS (SELECT 1 FROM claim) RETURNING (SELECT n FROM changed)")
	if !explicit {
		b.SQL(", checkpoint, (SELECT probe IS NULL FROM bounds)")
	}
	return b
}

// checkpointMoved builds the error of a sub-batch whose claim failed,
// reading the checkpoint afresh to say where it is now.
func (s *Sink) checkpointMoved(ctx context.Context, sb sink.SubBatch) error {
	s.log.Debug("postgres sink: checkpoint moved", "migration", sb.Migration, "batch", sb.Seq, "from", sb.From.String())
	var text *string
	err := s.pool.QueryRow(ctx, "SELECT checkpoint FROM "+Dialect.QuoteIdent(sink.LedgerTable)+
		" WHERE migration = $1 AND batch_seq = $2", sb.Migration, sb.Seq).Scan(&text)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%s batch %d has no ledger row (call BeginBatch first): %w", sb.Migration, sb.Seq, sink.ErrCheckpointMoved)
	case err == nil:
		if now, kerr := sink.DecodeKey(text, sb.Relation.Key); kerr == nil {
			return fmt.Errorf("%s batch %d is at %s, not %s: %w", sb.Migration, sb.Seq, now, sb.From, sink.ErrCheckpointMoved)
		}
	}
	return fmt.Errorf("%s batch %d is no longer at %s: %w", sb.Migration, sb.Seq, sb.From, sink.ErrCheckpointMoved)
}
