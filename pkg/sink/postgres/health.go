package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
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
// The column may be a boolean, a number (non-zero is true, as MySQL's
// booleans are) or text "t", "f", "true", "false", "1" or "0".
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

// truth reads a boolean-ish value.
func truth(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case int16:
		return x != 0, nil
	case int32:
		return x != 0, nil
	case int64:
		return x != 0, nil
	case float32:
		return x != 0, nil
	case float64:
		return x != 0, nil
	case pgtype.Numeric:
		f, err := x.Float64Value()
		if err == nil && f.Valid && !math.IsNaN(f.Float64) {
			return f.Float64 != 0, nil
		}
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "t", "true", "1":
			return true, nil
		case "f", "false", "0":
			return false, nil
		}
		return false, fmt.Errorf("throttle query returned %q, want a boolean (t, f, true, false, 1, 0)", x)
	case nil:
		return false, errors.New("throttle query returned NULL, want a boolean")
	}
	return false, fmt.Errorf("throttle query returned a %T, want a boolean", v)
}
