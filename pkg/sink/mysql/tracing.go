package mysql

import (
	"context"
	"database/sql/driver"

	"github.com/XSAM/otelsql"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// traced returns c wrapped in github.com/XSAM/otelsql when tp is set, and
// c itself otherwise: without a provider nothing sits between
// database/sql and the driver.
//
// Every statement on a connection of the wrapped connector is a client
// span (named by the database/sql call: sql.stmt.exec, sql.conn.prepare,
// sql.conn.exec, sql.tx.commit, …) with db.system.name (mysql or mariadb,
// as the server said) and db.query.text: the sink's SQL, the spec's set
// and where as written, and ? placeholders; the values the sink passes are
// bound and never recorded. Spans start only under a recording span in
// the statement's context, as otelpgx does for Postgres, so background
// work (the pool's own dials, a throttle poll outside a batch) starts no
// trace. Spans only: the meter is a no-op.
//
// The connector is wrapped, not the pool: the transaction pool's txConn
// (see txConnector) then wraps otelsql's connection, and the statements it
// prepares and runs through the driver interfaces are spans too, which
// wrapping the pool with otelsql.OpenDB would hide behind sql.Conn.Raw.
func traced(c driver.Connector, tp trace.TracerProvider, server Server) driver.Connector {
	if tp == nil {
		return c
	}
	system := semconv.DBSystemNameMySQL
	if server.Flavour == FlavourMariaDB {
		system = semconv.DBSystemNameMariaDB
	}
	d := otelsql.WrapDriver(connectorDriver{c},
		otelsql.WithTracerProvider(tp),
		otelsql.WithMeterProvider(noop.NewMeterProvider()),
		otelsql.WithAttributes(system),
		otelsql.WithSpanOptions(otelsql.SpanOptions{
			// A liveness check without a statement, on every reuse.
			OmitConnResetSession: true,
			// database/sql's cue to prepare instead, not a failure.
			DisableErrSkip: true,
			SpanFilter: func(ctx context.Context, _ otelsql.Method, _ string, _ []driver.NamedValue) bool {
				return trace.SpanFromContext(ctx).IsRecording()
			},
		}),
	)
	// connectorDriver is a driver.DriverContext, so this is otelsql's
	// connector around c; its OpenConnector never fails.
	wrapped, _ := d.(driver.DriverContext).OpenConnector("")
	return wrapped
}

// connectorDriver hands otelsql a connector built from a mysql.Config,
// whose dialer, logger and session variables a DSN string cannot carry:
// otelsql returns a wrapped connector only from a driver's OpenConnector
// (its OpenDB keeps it inside the *sql.DB).
type connectorDriver struct{ c driver.Connector }

func (d connectorDriver) Open(string) (driver.Conn, error) { return d.c.Connect(context.Background()) }

func (d connectorDriver) OpenConnector(string) (driver.Connector, error) { return d.c, nil }
