package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"

	"github.com/XSAM/otelsql"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// openPool opens a pool on the driver DSN dsn: the driver's own, or, when
// Options has a TracerProvider, wrapped in github.com/XSAM/otelsql.
//
// Traced, every statement is a client span (named by the database/sql
// call: sql.stmt.exec, sql.conn.prepare, sql.rows, …) with
// db.system.name=sqlite and db.query.text: the sink's SQL, the spec's set
// and where as written, and ? placeholders; the values the sink passes are
// bound and never recorded. Spans start only under a recording span in
// the statement's context, as otelpgx does for Postgres, so work outside
// a batch (a lookup or throttle poll without a span) starts no trace.
// Spans only: the meter is a no-op.
//
// The write connection's watchdog still reaches the driver's connection
// under otelsql's (see interrupter).
func (s *Sink) openPool(dsn string) (*sql.DB, error) {
	tp := s.opts.TracerProvider
	if tp == nil {
		return sql.Open("sqlite", dsn)
	}
	return otelsql.Open("sqlite", dsn,
		otelsql.WithTracerProvider(tp),
		otelsql.WithMeterProvider(noop.NewMeterProvider()),
		otelsql.WithAttributes(semconv.DBSystemNameSQLite),
		otelsql.WithSpanOptions(otelsql.SpanOptions{
			// A check without a statement, on every reuse.
			OmitConnResetSession: true,
			// database/sql's cue to prepare instead, not a failure.
			DisableErrSkip: true,
			SpanFilter: func(ctx context.Context, _ otelsql.Method, _ string, _ []driver.NamedValue) bool {
				return trace.SpanFromContext(ctx).IsRecording()
			},
		}),
	)
}
