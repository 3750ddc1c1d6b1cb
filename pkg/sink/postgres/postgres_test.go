package postgres

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/sink"
)

func TestRegisteredSchemes(t *testing.T) {
	t.Parallel()
	require.Subset(t, sink.Schemes(), []string{"postgres", "postgresql"})
	tb := setup(t)
	for _, scheme := range []string{"postgresql", "POSTGRES"} {
		dsn := scheme + strings.TrimPrefix(tb.db.DSN, "postgres")
		s, err := sink.Open(t.Context(), dsn, sink.Options{MaxConns: 1})
		require.NoError(t, err, scheme)
		require.IsType(t, &Sink{}, s)
		require.Equal(t, "postgres", s.Dialect().Name())
		require.NoError(t, s.Close())
	}
}

// TestSessionSafeguards reads the settings back from the server: they
// travel as startup parameters of every pooled connection.
func TestSessionSafeguards(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(o *sink.Options) {
		o.LockTimeout = 1500 * time.Millisecond
		o.IdleInTransactionTimeout = 20 * time.Second
		o.StatementTimeout = 90 * time.Second
		o.MaxConns = 3
	})
	ctx := t.Context()
	show := func(s *Sink, setting string) string {
		var v string
		require.NoError(t, s.pool.QueryRow(ctx, "SELECT current_setting($1)", setting).Scan(&v))
		return v
	}
	require.Equal(t, "1500ms", show(tb.sink, "lock_timeout"))
	require.Equal(t, "20s", show(tb.sink, "idle_in_transaction_session_timeout"))
	require.Equal(t, "90s", show(tb.sink, "statement_timeout"))
	require.Equal(t, ApplicationName, show(tb.sink, "application_name"))
	require.EqualValues(t, 3, tb.sink.pool.Config().MaxConns)
	require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'batchflow'"))

	// Defaults; the DSN's application_name stays, Options win over its timeouts.
	s := openSink(t, tb.db.DSN+"&application_name=backfills&lock_timeout=0&pool_max_conns=50", sink.Options{})
	require.Equal(t, "backfills", show(s, "application_name"))
	require.Equal(t, "5s", show(s, "lock_timeout"))
	require.Equal(t, "30s", show(s, "idle_in_transaction_session_timeout"))
	require.Equal(t, "1min", show(s, "statement_timeout"))
	require.EqualValues(t, 10, s.pool.Config().MaxConns)
}

func TestMilliseconds(t *testing.T) {
	t.Parallel()
	require.Equal(t, "1", milliseconds(time.Microsecond), "a tiny timeout must not become 0, which disables it")
	require.Equal(t, "1500", milliseconds(1500*time.Millisecond))
	require.Equal(t, "0", milliseconds(0))
}

func TestOpenErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, dsn := range []string{
		"postgres://bob:pa55word@127.0.0.1:1/db?connect_timeout=2",     // refused
		"postgres://bob:pa55word@127.0.0.1:notaport/db",                // unparsable port
		"postgres://bob:pa55word@127.0.0.1/db?sslmode=bogus",           // bad parameter
		"postgres://bob@127.0.0.1/db?password=pa55word&sslmode=bogus",  // password parameter
		"postgres://bob:pa%35%35word@127.0.0.1/db?sslmode=bogus",       // percent-encoded
		"postgresql://bob:pa55word@127.0.0.1:5432/db?pool_max_conns=x", // bad pool parameter
	} {
		_, err := Open(ctx, dsn, sink.Options{})
		require.Error(t, err, dsn)
		require.NotContains(t, err.Error(), "pa55word", dsn)
		require.NotContains(t, err.Error(), "pa%35%35word", dsn)
		require.Contains(t, err.Error(), "bob", "the error still says which target: %v", err)
	}
	_, err := Open(ctx, "postgres://bob:pa55word@127.0.0.1:notaport/db", sink.Options{})
	require.ErrorContains(t, err, "invalid port", "the error says what is wrong")
}

func TestDialect(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"users":            `"users"`,
		"Users":            `"Users"`,
		"public.users":     `"public"."users"`,
		`we"ird`:           `"we""ird"`,
		`a b.c"d`:          `"a b"."c""d"`,
		`x"; DROP--`:       `"x""; DROP--"`,
		"batchflow_ledger": `"batchflow_ledger"`,
	} {
		require.Equal(t, want, Dialect.QuoteIdent(in), in)
	}
	require.Equal(t, "$1", Dialect.Placeholder(1))
	require.Equal(t, "$12", Dialect.Placeholder(12))
	require.Equal(t, " FOR UPDATE", Dialect.LockClause())
	require.Equal(t, "postgres", Dialect.Name())
}

// FuzzQuoteIdent checks against the server that a quoted identifier
// names exactly the input, whatever it holds.
func FuzzQuoteIdent(f *testing.F) {
	for _, s := range []string{"users", `a"b`, `"`, `""`, "x y", "Ünïcode", "; DROP TABLE t; --", "$1", "'", `\`, "select"} {
		f.Add(s)
	}
	db := testenv.Postgres(f)
	s, err := Open(f.Context(), db.DSN, sink.Options{MaxConns: 1})
	require.NoError(f, err)
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, name string) {
		if name == "" || strings.ContainsAny(name, ".\x00") || len(name) > 63 || !utf8.ValidString(name) {
			t.Skip("not a single identifier Postgres keeps as it is")
		}
		rows, err := s.pool.Query(t.Context(), "SELECT 1 AS "+Dialect.QuoteIdent(name))
		require.NoError(t, err)
		col := rows.FieldDescriptions()[0].Name
		rows.Close()
		require.NoError(t, rows.Err())
		require.Equal(t, name, col)
	})
}
