package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Classify says what err means for the batch that hit it, from the
// server's SQLSTATE when there is one, else from what pgx and the network
// say about the connection. Classify(nil) is "".
//
// An error it does not recognise is fatal: it is most likely a bug or a
// misconfiguration (a sink error such as ErrUnsupportedKey, a value pgx
// cannot encode), which retrying cannot fix and an operator must see; a
// transient cause it missed costs one failed batch that `batchflow retry`
// restarts, while a fatal cause taken for transient would be retried for
// max_attempts with growing backoff before anyone hears of it.
func (s *Sink) Classify(err error) batches.ErrorClass { return classify(err) }

func classify(err error) batches.ErrorClass {
	if err == nil {
		return ""
	}
	if errors.Is(err, sink.ErrCheckpointMoved) {
		return batches.ClassCheckpointMoved
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classifySQLState(pgErr.Code)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The executor's own deadline or shutdown: the sub-batch rolled
		// back and the batch is retried (or returned) as it is.
		return batches.ClassTransient
	}
	var (
		connectErr *pgconn.ConnectError
		netErr     net.Error
	)
	switch {
	case pgconn.Timeout(err), pgconn.SafeToRetry(err),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.As(err, &connectErr), // no PgError inside: the server was not reached
		errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		// The connection failed, not the statement: a fresh connection
		// from the pool retries the sub-batch, which the ledger keeps
		// exactly-once even if the lost one had committed.
		return batches.ClassTransient
	}
	return batches.ClassFatal
}

// classifySQLState maps a Postgres error code (Appendix A of the manual).
func classifySQLState(code string) batches.ErrorClass {
	switch code {
	case "40001", // serialization_failure
		"40P01", // deadlock_detected
		"40003", // statement_completion_unknown
		"55P03", // lock_not_available: lock_timeout while waiting for a row or table lock
		"55006", // object_in_use
		// query_canceled: statement_timeout (or pg_cancel_backend). A
		// sub-batch aims at a fraction of a second, so one that runs past
		// the timeout is waiting on load or locks; it is retried with
		// backoff, and the executor cuts the sub-batch size after a slow
		// one. A statement that is always too slow still ends the batch
		// after max_attempts.
		"57014",
		"57P01", // admin_shutdown: pg_terminate_backend, fast shutdown
		"57P02", // crash_shutdown
		"57P03", // cannot_connect_now: starting up, recovering
		"57P05", // idle_session_timeout
		"25P03", // idle_in_transaction_session_timeout: a stalled session of ours was ended
		"72000": // snapshot_too_old
		return batches.ClassTransient
	case "40002", // transaction_integrity_constraint_violation (deferred constraints at commit)
		"27000", // triggered_data_change_violation
		"44000", // with_check_option_violation
		// raise_exception and assert_failure: RAISE or ASSERT in a trigger
		// or function the change calls, which in practice rejects rows
		// (validation triggers), so bisection can isolate them.
		"P0001", "P0004":
		return batches.ClassData
	}
	switch {
	case strings.HasPrefix(code, "08"), // connection_exception
		strings.HasPrefix(code, "53"): // insufficient_resources: too_many_connections, out_of_memory, disk_full
		return batches.ClassTransient
	case strings.HasPrefix(code, "22"), // data_exception: bad casts, out of range, too long, division by zero
		strings.HasPrefix(code, "23"): // integrity_constraint_violation: NOT NULL, unique, foreign key, check, exclusion
		return batches.ClassData
	}
	// Everything else fails the batch: class 42 (insufficient_privilege,
	// undefined table or column, syntax errors), 25006
	// read_only_sql_transaction (a read-only session or a replica: the
	// target DSN names the wrong server), 28 (authorization), 3D/3F
	// (missing database or schema), 0A (feature_not_supported), XX
	// (internal errors, data corruption) and codes unknown today.
	return batches.ClassFatal
}
