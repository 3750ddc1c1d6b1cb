// Package postgres is batchflow's sink for PostgreSQL, built on
// github.com/jackc/pgx/v5 and its pgxpool. Importing it registers the
// "postgres" and "postgresql" DSN schemes with pkg/sink.
//
// Sub-batches of foldable changes (the sql kind's set, and every stock kind
// that writes one UPDATE or DELETE over the sub-batch's rows) run as one
// autocommit statement: data-modifying CTEs lock the batch's ledger row,
// apply the change up to the caller's upper key (or find the key Limit
// rows on, without one) and advance the checkpoint, so the exactly-once
// ledger costs no extra round trip or commit over a plain keyset loop.
// Other changes run sink.ApplyInTx in a pgx transaction.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/internal/config"
	"github.com/batchflow/batchflow/pkg/sink"
)

func init() {
	open := func(ctx context.Context, dsn string, opts sink.Options) (sink.Sink, error) {
		s, err := Open(ctx, dsn, opts)
		if err != nil {
			return nil, err // not a nil *Sink in a non-nil interface
		}
		return s, nil
	}
	sink.Register("postgres", open)
	sink.Register("postgresql", open)
}

// ApplicationName is the application_name of the sink's sessions, so a DBA
// can tell batchflow's load in pg_stat_activity, unless the DSN sets its own.
const ApplicationName = "batchflow"

// Sink is the PostgreSQL sink. It is safe for concurrent use.
type Sink struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	// ledgerReady is the fast path of ensureLedger; ledgerMu serialises the
	// creation, which is retried on the next call if it failed.
	ledgerReady atomic.Bool
	ledgerMu    sync.Mutex
}

var _ sink.Sink = (*Sink)(nil)

// Open connects to the database of dsn (postgres:// or postgresql://, any
// form pgxpool.ParseConfig accepts, pool_* parameters included), applies
// the session safeguards of opts and pings the server. Options win over
// the same settings in the DSN: MaxConns over pool_max_conns, and the
// timeouts over lock_timeout, idle_in_transaction_session_timeout and
// statement_timeout parameters. Errors never contain the DSN's password.
func Open(ctx context.Context, dsn string, opts sink.Options) (*Sink, error) {
	opts = opts.WithDefaults()
	cfg, err := poolConfig(dsn, opts)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres sink %s: %s", config.RedactDSN(dsn), scrubSecrets(err.Error(), dsn))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres sink %s: connect: %w", config.RedactDSN(dsn), err)
	}
	opts.Logger.Debug("postgres sink: connected",
		"host", cfg.ConnConfig.Host, "database", cfg.ConnConfig.Database, "max_conns", cfg.MaxConns)
	return &Sink{pool: pool, log: opts.Logger}, nil
}

// poolConfig parses dsn and applies opts to it.
func poolConfig(dsn string, opts sink.Options) (*pgxpool.Config, error) {
	// The registry matches schemes case-insensitively; pgx only knows the
	// lowercase ones.
	if scheme, rest, ok := strings.Cut(dsn, "://"); ok && (strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql")) {
		dsn = strings.ToLower(scheme) + "://" + rest
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres sink: invalid DSN %s: %s", config.RedactDSN(dsn), parseErrorReason(err, dsn))
	}
	cfg.MaxConns = int32(min(opts.MaxConns, 1<<31-1))
	if cfg.MinConns > cfg.MaxConns {
		cfg.MinConns = cfg.MaxConns
	}

	// Session safeguards travel as startup parameters, so every pooled
	// connection has them from its first statement, with no SET round trip
	// and nothing a RESET ALL could undo.
	params := cfg.ConnConfig.RuntimeParams
	params["lock_timeout"] = milliseconds(opts.LockTimeout)
	params["idle_in_transaction_session_timeout"] = milliseconds(opts.IdleInTransactionTimeout)
	params["statement_timeout"] = milliseconds(opts.StatementTimeout)
	if _, set := params["application_name"]; !set {
		params["application_name"] = ApplicationName
	}

	if opts.TracerProvider != nil {
		cfg.ConnConfig.Tracer = tracer(opts.TracerProvider)
	}
	return cfg, nil
}

// tracer is the pgx tracer of a sink given a TracerProvider: a client span
// per statement (and per pool acquire, which shows waits for MaxConns),
// named by its operation, with db.system.name and db.query.text, and only
// under a recording span in the statement's context. The text is the
// sink's SQL, the spec's set and where as written, and $n placeholders:
// the values the sink passes are bound, and otelpgx's recording of them
// stays off. Spans only: the meter is a no-op.
func tracer(tp trace.TracerProvider) *otelpgx.Tracer {
	return otelpgx.NewTracer(otelpgx.WithTracerProvider(tp), otelpgx.WithMeterProvider(noop.NewMeterProvider()))
}

// milliseconds is d as a Postgres timeout setting. A positive duration
// under a millisecond rounds up: 0 would disable the timeout.
func milliseconds(d time.Duration) string {
	ms := d.Milliseconds()
	if d > 0 && ms == 0 {
		ms = 1
	}
	return strconv.FormatInt(ms, 10)
}

// parseErrorReason is the cause of a DSN parse failure without the DSN:
// pgconn's own message quotes the connection string, redacting passwords
// only on a best-effort basis for malformed input.
func parseErrorReason(err error, dsn string) string {
	reason := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		// "cannot parse `<connection string>`: <reason>"
		reason = pce.Error()
		if i := strings.LastIndex(reason, "`: "); i >= 0 {
			reason = reason[i+len("`: "):]
		} else {
			reason = "cannot parse the connection string"
		}
	}
	return scrubSecrets(reason, dsn)
}

// scrubSecrets removes from msg anything that may be the DSN's password:
// the user info's password, raw and decoded, and password parameters.
func scrubSecrets(msg, dsn string) string {
	var secrets []string
	if _, rest, ok := strings.Cut(dsn, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok && pw != "" {
				secrets = append(secrets, pw)
				if dec, err := url.PathUnescape(pw); err == nil {
					secrets = append(secrets, dec)
				}
			}
		}
		if _, query, ok := strings.Cut(rest, "?"); ok {
			for _, kv := range strings.Split(query, "&") {
				k, v, _ := strings.Cut(kv, "=")
				if lk := strings.ToLower(k); (lk == "password" || lk == "sslpassword") && v != "" {
					secrets = append(secrets, v)
					if dec, err := url.QueryUnescape(v); err == nil {
						secrets = append(secrets, dec)
					}
				}
			}
		}
	}
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	return msg
}

// Dialect returns the Postgres dialect.
func (s *Sink) Dialect() sink.Dialect { return Dialect }

// Close closes the pool, waiting for connections in use to be returned.
func (s *Sink) Close() error {
	s.pool.Close()
	return nil
}
