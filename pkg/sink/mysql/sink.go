package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/batchflow/batchflow/internal/config"
	"github.com/batchflow/batchflow/pkg/sink"
)

func init() {
	sink.Register("mysql", func(ctx context.Context, dsn string, opts sink.Options) (sink.Sink, error) {
		return Open(ctx, dsn, opts)
	})
}

// Flavour is the kind of server a sink talks to: their SQL for session
// limits and replication status differs.
type Flavour string

const (
	FlavourMySQL   Flavour = "mysql"
	FlavourMariaDB Flavour = "mariadb"
)

// Server is what Open learned about the server from SELECT VERSION().
type Server struct {
	Flavour Flavour
	// Version is the server's version string as it reports it
	// ("10.11.19-MariaDB-0+deb12u1", "8.0.36").
	Version string
	// Major, Minor and Patch are the leading numbers of Version.
	Major, Minor, Patch int
}

// AtLeast reports whether the server's version is major.minor.patch or later.
func (s Server) AtLeast(major, minor, patch int) bool {
	if s.Major != major {
		return s.Major > major
	}
	if s.Minor != minor {
		return s.Minor > minor
	}
	return s.Patch >= patch
}

// parseServer reads SELECT VERSION()'s answer. MariaDB says so in it;
// anything else is MySQL (Percona Server and the like included).
func parseServer(version string) Server {
	s := Server{Flavour: FlavourMySQL, Version: version}
	if strings.Contains(strings.ToLower(version), "mariadb") {
		s.Flavour = FlavourMariaDB
	}
	nums := version
	if i := strings.IndexFunc(nums, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
		nums = nums[:i]
	}
	parts := strings.Split(nums, ".")
	for i, dst := range []*int{&s.Major, &s.Minor, &s.Patch} {
		if i < len(parts) {
			*dst, _ = strconv.Atoi(parts[i])
		}
	}
	return s
}

// Sink is batchflow's sink for MySQL 8 and MariaDB 10.11. Open it with
// Open, or through sink.Open with a mysql:// DSN.
type Sink struct {
	db *sql.DB
	// txdb is the transaction pool (see txConnector): autocommit off.
	txdb   *sql.DB
	server Server
	opts   sink.Options
	log    *slog.Logger
	// database is the DSN's database: where bare table names and the
	// ledger live.
	database string
	// stmtTimeout is a client-side deadline per statement, set where the
	// server has no statement timeout for writes (MySQL); zero otherwise.
	stmtTimeout time.Duration
	stmts       *stmtCache
	// genericProtocol makes ApplySubBatch run sink.ApplyInTx instead of
	// the folded protocol; set by tests and the benchmark only.
	genericProtocol bool

	ledgerMu    sync.Mutex
	ledgerReady bool
}

var _ sink.Sink = (*Sink)(nil)

// Open connects to the server of a mysql:// DSN (see ParseURL), learns
// whether it is MySQL or MariaDB and which version, and opens a pool whose
// every connection carries batchflow's session safeguards:
//
//   - innodb_lock_wait_timeout and lock_wait_timeout (row and metadata
//     locks): opts.LockTimeout rounded up to whole seconds, at least 1;
//   - MariaDB: idle_transaction_timeout (opts.IdleInTransactionTimeout,
//     whole seconds) and max_statement_time (opts.StatementTimeout);
//   - MySQL, which has no idle-in-transaction timeout: wait_timeout at
//     opts.IdleInTransactionTimeout, so a session that stops talking,
//     in a transaction or not, is ended and its locks released; and
//     max_execution_time (opts.StatementTimeout), which MySQL applies to
//     SELECT only, so writes get a client-side deadline of the same length;
//   - sql_mode: the session's mode with STRICT_TRANS_TABLES and
//     ERROR_FOR_DIVISION_BY_ZERO added when missing, so a bad value is an
//     error and never a silent truncation or NULL.
//
// A session variable the DSN sets itself (?innodb_lock_wait_timeout=2) wins
// over Options; sql_mode from the DSN is kept but made strict. The sink
// keeps two pools of up to opts.MaxConns connections each: the main one,
// and one with autocommit off for sub-batch transactions (see
// txConnector), which connects on the first sub-batch. Both close idle
// connections well before the server's own idle timeout. With
// opts.TracerProvider every statement on either pool is a span (see
// traced); the probe before them, which learns the flavour that names the
// spans' db.system.name, is not. Errors never contain the password.
func Open(ctx context.Context, dsn string, opts sink.Options) (*Sink, error) {
	return open(ctx, dsn, opts, nil)
}

// dialFunc dials a connection to the server; nil is the driver's own.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// open is Open with a dialer of the caller's (tests count round trips).
func open(ctx context.Context, dsn string, opts sink.Options, dial dialFunc) (*Sink, error) {
	opts = opts.WithDefaults()
	cfg, err := ParseURL(dsn)
	if err != nil {
		return nil, err
	}
	if cfg.DBName == "" {
		return nil, fmt.Errorf("%w %s: no database: the ledger and bare table names live in the DSN's database", ErrInvalidURL, config.RedactDSN(dsn))
	}
	cfg.Logger = driverLogger{opts.Logger}
	if dial != nil {
		cfg.DialFunc = dial
	}

	probe, err := probeServer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql sink: connect to %s: %w", config.RedactDSN(dsn), err)
	}
	cfg.Params = sessionParams(cfg.Params, probe, opts)

	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql sink: %s: %w", config.RedactDSN(dsn), err)
	}
	txCfg := cfg.Clone()
	txCfg.Params = make(map[string]string, len(cfg.Params)+1)
	maps.Copy(txCfg.Params, cfg.Params)
	txCfg.Params["autocommit"] = "0"
	txConnector, err := mysql.NewConnector(txCfg)
	if err != nil {
		return nil, fmt.Errorf("mysql sink: %s: %w", config.RedactDSN(dsn), err)
	}
	db := sql.OpenDB(traced(connector, opts.TracerProvider, probe.server))
	txdb := openTxPool(traced(txConnector, opts.TracerProvider, probe.server))
	for _, pool := range []*sql.DB{db, txdb} {
		pool.SetMaxOpenConns(opts.MaxConns)
		pool.SetMaxIdleConns(opts.MaxConns)
		pool.SetConnMaxIdleTime(poolIdleTime(probe, opts))
	}
	// The transaction pool connects on its first sub-batch: a planner never
	// opens one. Its session differs from the main pool's in autocommit only.
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		txdb.Close()
		return nil, fmt.Errorf("mysql sink: connect to %s with session safeguards: %w", config.RedactDSN(dsn), err)
	}

	s := &Sink{
		db:       db,
		txdb:     txdb,
		server:   probe.server,
		opts:     opts,
		log:      opts.Logger,
		database: cfg.DBName,
		stmts:    newStmtCache(db, stmtCacheSize),
	}
	if probe.server.Flavour == FlavourMySQL || !probe.server.AtLeast(10, 1, 1) {
		s.stmtTimeout = opts.StatementTimeout
	}
	s.log.Info("mysql sink: connected",
		slog.String("target", config.RedactDSN(dsn)),
		slog.String("flavour", string(probe.server.Flavour)),
		slog.String("version", probe.server.Version),
		slog.String("sql_mode", strings.Trim(cfg.Params["sql_mode"], "'")))
	return s, nil
}

// probeResult is what one connection with the DSN's own settings tells
// about the server, before the pool is configured from it.
type probeResult struct {
	server  Server
	sqlMode string
	// waitTimeout is the session's wait_timeout in seconds.
	waitTimeout int64
}

func probeServer(ctx context.Context, cfg *mysql.Config) (probeResult, error) {
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return probeResult{}, err
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	db.SetMaxOpenConns(1)
	var (
		p       probeResult
		version string
	)
	err = db.QueryRowContext(ctx, "SELECT VERSION(), @@SESSION.sql_mode, @@SESSION.wait_timeout").
		Scan(&version, &p.sqlMode, &p.waitTimeout)
	if err != nil {
		return probeResult{}, err
	}
	p.server = parseServer(version)
	return p, nil
}

// sessionParams returns the session variables every pooled connection sets
// at connect: the DSN's own, then batchflow's safeguards where the DSN
// does not set them. The driver writes them as SET name = value, so values
// are SQL literals.
func sessionParams(dsnParams map[string]string, p probeResult, opts sink.Options) map[string]string {
	params := make(map[string]string, len(dsnParams)+6)
	for k, v := range dsnParams {
		params[k] = v
	}
	def := func(name, value string) {
		if _, set := params[name]; !set {
			params[name] = value
		}
	}
	lock := strconv.FormatInt(wholeSeconds(opts.LockTimeout), 10)
	def("innodb_lock_wait_timeout", lock)
	def("lock_wait_timeout", lock)
	idle := strconv.FormatInt(wholeSeconds(opts.IdleInTransactionTimeout), 10)
	switch {
	case p.server.Flavour == FlavourMariaDB && p.server.AtLeast(10, 3, 0):
		def("idle_transaction_timeout", idle)
		// Fractional seconds are allowed; 6 decimals is its precision.
		def("max_statement_time", strconv.FormatFloat(opts.StatementTimeout.Seconds(), 'f', 6, 64))
	case p.server.Flavour == FlavourMariaDB:
		// Before 10.3 MariaDB had no idle-in-transaction timeout.
		def("wait_timeout", idle)
	default:
		def("wait_timeout", idle)
		if p.server.AtLeast(5, 7, 8) {
			def("max_execution_time", strconv.FormatInt(max(1, opts.StatementTimeout.Milliseconds()), 10))
		}
		if p.server.AtLeast(8, 0, 3) {
			// TABLE_ROWS is otherwise cached for a day (EstimateRows).
			def("information_schema_stats_expiry", "0")
		}
	}
	// The probe read the mode the DSN's own sql_mode (if any) resulted in.
	params["sql_mode"] = quoteString(strictSQLMode(p.sqlMode))
	return params
}

// strictSQLMode adds the modes that turn bad values into errors to mode.
func strictSQLMode(mode string) string {
	var parts []string
	has := map[string]bool{}
	for _, m := range strings.Split(mode, ",") {
		if m = strings.TrimSpace(m); m != "" {
			parts = append(parts, m)
			has[strings.ToUpper(m)] = true
		}
	}
	if !has["STRICT_TRANS_TABLES"] && !has["STRICT_ALL_TABLES"] {
		parts = append(parts, "STRICT_TRANS_TABLES")
	}
	if !has["ERROR_FOR_DIVISION_BY_ZERO"] {
		parts = append(parts, "ERROR_FOR_DIVISION_BY_ZERO")
	}
	return strings.Join(parts, ",")
}

// poolIdleTime keeps pooled connections for less than half the server's
// idle timeout, so the pool closes them before the server kills them under
// a query.
func poolIdleTime(p probeResult, opts sink.Options) time.Duration {
	server := time.Duration(p.waitTimeout) * time.Second
	if p.server.Flavour == FlavourMySQL || !p.server.AtLeast(10, 3, 0) {
		server = time.Duration(wholeSeconds(opts.IdleInTransactionTimeout)) * time.Second
	}
	idle := min(server/2, 5*time.Minute)
	return max(idle, time.Second)
}

// wholeSeconds rounds d up to whole seconds, at least 1: the unit of
// MySQL's lock and idle timeouts.
func wholeSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}

// quoteString writes s as a single-quoted SQL string literal, quotes
// doubled. Only used for sql_mode, a list of names from the server (no
// backslashes, whose meaning depends on NO_BACKSLASH_ESCAPES).
func quoteString(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// Server reports the flavour and version the sink detected at Open.
func (s *Sink) Server() Server { return s.server }

// Dialect implements sink.Sink.
func (s *Sink) Dialect() sink.Dialect { return Dialect{} }

// Close implements sink.Sink.
func (s *Sink) Close() error {
	s.stmts.close()
	return errors.Join(s.db.Close(), s.txdb.Close())
}

// statementContext bounds one statement by the client-side statement
// timeout, where the sink has one.
func (s *Sink) statementContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.stmtTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.stmtTimeout)
}

// driverLogger sends the driver's own messages (a bad idle connection
// closed, a fallback auth plugin) to the sink's logger.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) {
	l.log.Warn("mysql sink: driver", slog.String("detail", fmt.Sprint(v...)))
}

// Dialect is MySQL's: backtick-quoted identifiers, ? placeholders and
// SELECT … FOR UPDATE.
type Dialect struct{}

var _ sink.Dialect = Dialect{}

// Name implements sink.Dialect.
func (Dialect) Name() string { return "mysql" }

// QuoteIdent implements sink.Dialect: `name`, backticks doubled, a dotted
// name quoted part by part (`db`.`table`).
func (Dialect) QuoteIdent(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = quotePart(p)
	}
	return strings.Join(parts, ".")
}

// quotePart quotes one identifier, dots and all.
func quotePart(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// Placeholder implements sink.Dialect.
func (Dialect) Placeholder(int) string { return "?" }

// LockClause implements sink.Dialect.
func (Dialect) LockClause() string { return " FOR UPDATE" }
