package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/batchflow/batchflow/pkg/sink"
)

// ErrReplicationStopped: this server is a replica whose replication is not
// running, so its lag is unknown and growing.
var ErrReplicationStopped = errors.New("replication is stopped")

// ReplicationLag implements sink.Sink. On a replica it is the server's own
// lag: the largest Seconds_Behind_Master of MariaDB's SHOW ALL SLAVES
// STATUS (every replication source), or Seconds_Behind_Source of MySQL's
// SHOW REPLICA STATUS (8.0.22 and later; SHOW SLAVE STATUS before). A NULL
// lag means a stopped replication thread: an error wrapping
// ErrReplicationStopped, not zero.
//
// On a primary it is 0: MySQL and MariaDB do not tell a primary how far
// its replicas are behind. To throttle on replicas' lag, configure a
// target on the replica itself, or a throttle query that measures it (a
// heartbeat table, pt-heartbeat style).
//
// Reading replication status needs the REPLICATION CLIENT privilege
// (MariaDB 10.5 and later: SLAVE MONITOR); without it the error says so.
func (s *Sink) ReplicationLag(ctx context.Context) (time.Duration, error) {
	query, column := replicationStatus(s.server)
	rows, err := s.db.QueryContext(ctx, query)
	if err != nil {
		return 0, fmt.Errorf("replication lag (%s): %w", query, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, fmt.Errorf("replication lag (%s): %w", query, err)
	}
	at, name := -1, -1
	for i, c := range cols {
		switch {
		case strings.EqualFold(c, column):
			at = i
		case strings.EqualFold(c, "Connection_name"), strings.EqualFold(c, "Channel_Name"):
			name = i
		}
	}
	if at < 0 {
		return 0, fmt.Errorf("replication lag: %s has no %s column", query, column)
	}
	var lag time.Duration
	for rows.Next() {
		values := make([]sql.RawBytes, len(cols))
		dest := make([]any, len(cols))
		for i := range values {
			dest[i] = &values[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return 0, fmt.Errorf("replication lag (%s): %w", query, err)
		}
		if values[at] == nil {
			source := ""
			if name >= 0 && len(values[name]) > 0 {
				source = " from " + strconv.Quote(string(values[name]))
			}
			return 0, fmt.Errorf("replica%s: %s is NULL: %w (start it, or fix what stopped it)", source, column, ErrReplicationStopped)
		}
		secs, err := strconv.ParseInt(string(values[at]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("replication lag: %s = %q: %w", column, values[at], err)
		}
		lag = max(lag, time.Duration(secs)*time.Second)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("replication lag (%s): %w", query, err)
	}
	return lag, nil
}

// replicationStatus is the statement listing a server's replication
// sources and the column holding each one's lag.
func replicationStatus(server Server) (query, column string) {
	switch {
	case server.Flavour == FlavourMariaDB:
		return "SHOW ALL SLAVES STATUS", "Seconds_Behind_Master"
	case !server.AtLeast(8, 0, 22):
		return "SHOW SLAVE STATUS", "Seconds_Behind_Master"
	}
	return "SHOW REPLICA STATUS", "Seconds_Behind_Source"
}

// Throttled implements sink.Sink: query must return one row whose first
// column is true-ish (1, TRUE, "t", "true", "yes", "on") to hold off, or
// false-ish (0, "f", "false", "no", "off"); anything else, or no row, is an
// error, since a throttle that cannot tell must not silently let work run.
func (s *Sink) Throttled(ctx context.Context, query string) (bool, error) {
	ctx, cancel := s.statementContext(ctx)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, query)
	if err != nil {
		return false, fmt.Errorf("throttle query: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return false, fmt.Errorf("throttle query: %w", err)
		}
		return false, errors.New("throttle query returned no row; it must return one boolean")
	}
	var v any
	cols, err := rows.Columns()
	if err != nil {
		return false, fmt.Errorf("throttle query: %w", err)
	}
	dest := make([]any, len(cols))
	dest[0] = &v
	for i := 1; i < len(dest); i++ {
		dest[i] = new(any)
	}
	if err := rows.Scan(dest...); err != nil {
		return false, fmt.Errorf("throttle query: %w", err)
	}
	return sink.Truth(v)
}
