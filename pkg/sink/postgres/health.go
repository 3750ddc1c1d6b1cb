package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/batchflow/batchflow/pkg/sink"
)

// replicationLagSQL is the lag in microseconds. On a replica, its own
// replay delay, 0 when it has replayed everything it received (an idle
// primary sends nothing, and now() - last replay time would grow without
// any lag). On a primary, the largest replay_lag of its standbys, 0 with
// none; replay_lag needs pg_monitor (or pg_read_all_stats) to be visible
// for other roles' walsenders, and reads NULL, so 0, without it.
const replicationLagSQL = `
SELECT CASE
  WHEN pg_catalog.pg_is_in_recovery() THEN
    CASE WHEN pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn() THEN 0
         ELSE coalesce(extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp()) * 1000000, 0) END
  ELSE coalesce((SELECT extract(epoch FROM max(replay_lag)) * 1000000 FROM pg_catalog.pg_stat_replication), 0)
END::bigint`

// ReplicationLag reports how far replicas are behind (on a primary) or
// this server is behind (on a replica).
func (s *Sink) ReplicationLag(ctx context.Context) (time.Duration, error) {
	var us int64
	if err := s.pool.QueryRow(ctx, replicationLagSQL).Scan(&us); err != nil {
		return 0, fmt.Errorf("replication lag: %w", err)
	}
	// Clock skew between primary and replica can make it negative.
	return time.Duration(max(us, 0)) * time.Microsecond, nil
}

// Throttled runs a throttle query: one row, one column, true to hold off.
// The column is read as sink.Truth reads it: a boolean, a number (non-zero
// is true, as MySQL's booleans are) or text such as "t" or "false"; NULL
// is an error.
func (s *Sink) Throttled(ctx context.Context, query string) (bool, error) {
	rows, err := s.pool.Query(ctx, query)
	if err != nil {
		return false, fmt.Errorf("throttle query: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return false, fmt.Errorf("throttle query: %w", err)
		}
		return false, errors.New("throttle query returned no row, want one row with one boolean column")
	}
	if n := len(rows.FieldDescriptions()); n != 1 {
		return false, fmt.Errorf("throttle query returns %d columns, want one boolean column", n)
	}
	var v any
	if err := rows.Scan(&v); err != nil {
		return false, fmt.Errorf("throttle query: %w", err)
	}
	if rows.Next() {
		return false, errors.New("throttle query returned more than one row, want one")
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("throttle query: %w", err)
	}
	return truth(v)
}

// truth reads the throttle query's answer: a numeric (pgx's own type) by
// its value, anything else as every sink does (sink.Truth).
func truth(v any) (bool, error) {
	if x, ok := v.(pgtype.Numeric); ok {
		f, err := x.Float64Value()
		if err != nil || !f.Valid || math.IsNaN(f.Float64) {
			return false, fmt.Errorf("throttle query returned a numeric that is not a number, want a boolean")
		}
		return f.Float64 != 0, nil
	}
	return sink.Truth(v)
}
