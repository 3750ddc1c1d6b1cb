package config_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/config"
)

// secret is the password planted in test DSNs; no printed form may hold it.
const secret = "S3cretPw"

func TestParseTarget(t *testing.T) {
	t.Parallel()
	name64 := "a" + strings.Repeat("b", 63)
	tests := []struct {
		in         string
		name       string
		scheme     string
		dsn        string // DSN(), the raw string for the driver
		printed    string // String()
		sqlitePath string
		sqliteOpts string
	}{
		{
			in: "main=postgres://app:" + secret + "@db.internal:5432/app?sslmode=disable", name: "main", scheme: config.SchemePostgres,
			dsn:     "postgres://app:" + secret + "@db.internal:5432/app?sslmode=disable",
			printed: "main=postgres://app:xxxxx@db.internal:5432/app?sslmode=disable",
		},
		{
			in: "main=postgresql://app:" + secret + "@db/app", name: "main", scheme: config.SchemePostgres,
			dsn: "postgresql://app:" + secret + "@db/app", printed: "main=postgresql://app:xxxxx@db/app",
		},
		{
			// Multi-host: the comma must survive.
			in: "ha=postgres://app:" + secret + "@h1:5432,h2:5433/app?target_session_attrs=read-write", name: "ha", scheme: config.SchemePostgres,
			dsn:     "postgres://app:" + secret + "@h1:5432,h2:5433/app?target_session_attrs=read-write",
			printed: "ha=postgres://app:xxxxx@h1:5432,h2:5433/app?target_session_attrs=read-write",
		},
		{
			in: "local=postgres:///app?host=/var/run/postgresql", name: "local", scheme: config.SchemePostgres,
			dsn: "postgres:///app?host=/var/run/postgresql", printed: "local=postgres:///app?host=/var/run/postgresql",
		},
		{
			// An '@' in the password is fine: the user info ends at the last '@'.
			in: "main=postgres://app:p@ss@db/app", name: "main", scheme: config.SchemePostgres,
			dsn: "postgres://app:p@ss@db/app", printed: "main=postgres://app:xxxxx@db/app",
		},
		{
			in: "analytics=mysql://app:" + secret + "@mysql:3306/analytics?parseTime=true", name: "analytics", scheme: config.SchemeMySQL,
			dsn:     "mysql://app:" + secret + "@mysql:3306/analytics?parseTime=true",
			printed: "analytics=mysql://app:xxxxx@mysql:3306/analytics?parseTime=true",
		},
		{
			in: "demo=sqlite:///var/lib/batchflow/demo.db", name: "demo", scheme: config.SchemeSQLite,
			dsn: "sqlite:///var/lib/batchflow/demo.db", printed: "demo=sqlite:///var/lib/batchflow/demo.db",
			sqlitePath: "/var/lib/batchflow/demo.db",
		},
		{
			in: "demo=sqlite://demo.db", name: "demo", scheme: config.SchemeSQLite,
			dsn: "sqlite://demo.db", printed: "demo=sqlite://demo.db", sqlitePath: "demo.db",
		},
		{
			in: "demo=sqlite://data/demo.db?_pragma=busy_timeout(5000)", name: "demo", scheme: config.SchemeSQLite,
			dsn: "sqlite://data/demo.db?_pragma=busy_timeout(5000)", printed: "demo=sqlite://data/demo.db?_pragma=busy_timeout(5000)",
			sqlitePath: "data/demo.db", sqliteOpts: "_pragma=busy_timeout(5000)",
		},
		{
			in: "  db_2-x=sqlite://x.db  ", name: "db_2-x", scheme: config.SchemeSQLite,
			dsn: "sqlite://x.db", printed: "db_2-x=sqlite://x.db", sqlitePath: "x.db",
		},
		{
			in: "0=sqlite://x.db", name: "0", scheme: config.SchemeSQLite,
			dsn: "sqlite://x.db", printed: "0=sqlite://x.db", sqlitePath: "x.db",
		},
		{
			in: name64 + "=sqlite://x.db", name: name64, scheme: config.SchemeSQLite,
			dsn: "sqlite://x.db", printed: name64 + "=sqlite://x.db", sqlitePath: "x.db",
		},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			target, err := config.ParseTarget(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.name, target.Name)
			require.Equal(t, tt.scheme, target.Scheme)
			require.Equal(t, tt.dsn, target.DSN())
			require.Equal(t, tt.printed, target.String())
			path, opts := target.SQLiteFile()
			require.Equal(t, tt.sqlitePath, path)
			require.Equal(t, tt.sqliteOpts, opts)
		})
	}
}

func TestParseTargetErrors(t *testing.T) {
	t.Parallel()
	const encodeHint = " (percent-encode special characters in the user name and password: @ as %40, / as %2F, # as %23, ? as %3F)"
	tests := []struct {
		in   string
		want string
	}{
		{"main", `target wants NAME=DSN, got "main"`},
		{"", `target wants NAME=DSN, got ""`},
		{"main=", `target wants NAME=DSN, got "main="`},
		{"=sqlite://x.db", `target wants NAME=DSN, got "=sqlite://xxxxx"`},
		{
			// The name was forgotten; the '=' is the query's.
			"postgres://app:" + secret + "@db/app?sslmode=disable",
			`target wants NAME=DSN, got "postgres://xxxxx@db/app?sslmode=disable"`,
		},
		{"Main=sqlite://x.db", `invalid target name "Main": use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit`},
		{"_x=sqlite://x.db", `invalid target name "_x": use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit`},
		{"a.b=sqlite://x.db", `invalid target name "a.b": use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit`},
		{strings.Repeat("a", 65) + "=sqlite://x.db", `invalid target name "` + strings.Repeat("a", 65) + `": use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit`},
		{"u:" + secret + "@x=sqlite://x.db", `invalid target name "xxxxx@x": use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit`},
		{"main=mongodb://app:" + secret + "@mongo/app", `target "main": unknown DSN scheme "mongodb": use postgres://, mysql:// or sqlite://`},
		{"main=POSTGRES://app:" + secret + "@db/app", `target "main": unknown DSN scheme "POSTGRES": use postgres://, mysql:// or sqlite://`},
		{"main=9x://app:" + secret + "@db/app", `target "main": DSN has no valid scheme: use postgres://, mysql:// or sqlite://`},
		{"main=host=db user=app password=" + secret, `target "main": DSN has no scheme: use postgres://, mysql://user:pass@host:port/db or sqlite://`},
		{"main=app:" + secret + "@tcp(db:3306)/app", `target "main": DSN has no scheme: use postgres://, mysql://user:pass@host:port/db or sqlite://`},
		{"main=postgres://app:" + secret + "%zz@db/app", `target "main": malformed DSN "postgres://xxxxx@db/app": not a valid URL` + encodeHint},
		{"main=postgres://app:" + secret + "/x@db/app", `target "main": malformed DSN "postgres://xxxxx@db/app": not a valid URL` + encodeHint},
		{"main=postgres://app:" + secret + "?x@db/app", `target "main": malformed DSN "postgres://xxxxx@db/app": not a valid URL` + encodeHint},
		{
			// Parses, as host "app:12", but the password held a '/'.
			"main=postgres://app:12/" + secret + "@db/app",
			`target "main": malformed DSN "postgres://xxxxx@db/app": it has an '@' after the host` + encodeHint,
		},
		{
			"main=postgres://app:12?" + secret + "@db/app",
			`target "main": malformed DSN "postgres://xxxxx@db/app": it has an '@' after the host` + encodeHint,
		},
		{
			"main=mysql://app:12#" + secret + "@db/app",
			`target "main": malformed DSN "mysql://xxxxx@db/app": it has a '#' fragment` + encodeHint,
		},
		{
			// Cut at a ';' inside the password: nothing after "://" is shown.
			"main=postgres://app:" + secret,
			`target "main": malformed DSN "postgres://xxxxx": not a valid URL` + encodeHint,
		},
		{"main=mysql://app:" + secret + "@/app", `target "main": mysql DSN has no host: use mysql://user:pass@host:port/db`},
		{"main=mysql://app:" + secret + "@db:3306", `target "main": mysql DSN needs one database name: use mysql://user:pass@host:port/db`},
		{"main=mysql://app:" + secret + "@db:3306/", `target "main": mysql DSN needs one database name: use mysql://user:pass@host:port/db`},
		{"main=mysql://app:" + secret + "@db:3306/a/b", `target "main": mysql DSN needs one database name: use mysql://user:pass@host:port/db`},
		{"main=sqlite://", `target "main": sqlite DSN has no file path: use sqlite:///abs/path.db or sqlite://relative.db`},
		{"main=sqlite://?_pragma=x", `target "main": sqlite DSN has no file path: use sqlite:///abs/path.db or sqlite://relative.db`},
		{"main=sqlite:x.db", `target "main": sqlite DSN needs "//": use sqlite:///abs/path.db or sqlite://relative.db`},
		{"main=sqlite::memory:", `target "main": in-memory SQLite is not shared between connections, so the planner and executors would each see an empty database: use a file, e.g. sqlite:///tmp/batchflow.db`},
		{"main=sqlite://:memory:", `target "main": in-memory SQLite is not shared between connections, so the planner and executors would each see an empty database: use a file, e.g. sqlite:///tmp/batchflow.db`},
		{"main=sqlite://file::memory:?cache=shared", `target "main": in-memory SQLite is not shared between connections, so the planner and executors would each see an empty database: use a file, e.g. sqlite:///tmp/batchflow.db`},
		{"main=sqlite://x.db?mode=memory", `target "main": in-memory SQLite is not shared between connections, so the planner and executors would each see an empty database: use a file, e.g. sqlite:///tmp/batchflow.db`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			_, err := config.ParseTarget(tt.in)
			require.EqualError(t, err, tt.want)
			require.NotContains(t, err.Error(), secret)
		})
	}
}

func TestParseTargets(t *testing.T) {
	t.Parallel()
	const (
		pgMain  = "main=postgres://app:" + secret + "@db/app"
		sqlDemo = "demo=sqlite://demo.db"
	)
	tests := []struct {
		name    string
		flags   []string
		env     string
		want    []string // String() of each target, in order
		wantErr string
	}{
		{name: "nothing", want: nil},
		{name: "flags", flags: []string{pgMain, sqlDemo}, want: []string{"main=postgres://app:xxxxx@db/app", "demo=sqlite://demo.db"}},
		{name: "env", env: pgMain + ";" + sqlDemo, want: []string{"main=postgres://app:xxxxx@db/app", "demo=sqlite://demo.db"}},
		{name: "env keeps order", env: sqlDemo + ";" + pgMain, want: []string{"demo=sqlite://demo.db", "main=postgres://app:xxxxx@db/app"}},
		{name: "env trailing separator and blanks", env: " " + pgMain + " ; ;" + sqlDemo + ";", want: []string{"main=postgres://app:xxxxx@db/app", "demo=sqlite://demo.db"}},
		{name: "env only separators", env: ";;", want: nil},
		{name: "flags replace env entirely", flags: []string{sqlDemo}, env: pgMain, want: []string{"demo=sqlite://demo.db"}},
		{name: "flags win over a broken env", flags: []string{sqlDemo}, env: "garbage", want: []string{"demo=sqlite://demo.db"}},
		{name: "multi-host comma in a flag", flags: []string{"ha=postgres://h1,h2/app"}, want: []string{"ha=postgres://h1,h2/app"}},
		{name: "flag without name", flags: []string{"main"}, wantErr: `--target wants NAME=DSN, got "main"`},
		{name: "empty flag", flags: []string{""}, wantErr: `--target wants NAME=DSN, got ""`},
		{name: "flag DSN without name", flags: []string{"postgres://app:" + secret + "@db/app"}, wantErr: `--target wants NAME=DSN, got "postgres://xxxxx@db/app"`},
		{name: "flag duplicate", flags: []string{pgMain, "main=sqlite://x.db"}, wantErr: `--target: target "main" given twice`},
		{name: "flag bad scheme", flags: []string{"main=mongodb://app:" + secret + "@m/app"}, wantErr: `--target: target "main": unknown DSN scheme "mongodb": use postgres://, mysql:// or sqlite://`},
		{name: "flag bad name", flags: []string{"Main=sqlite://x.db"}, wantErr: `--target: invalid target name "Main": use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit`},
		{name: "env without name", env: sqlDemo + ";main", wantErr: `BATCHFLOW_TARGETS entry 2 wants NAME=DSN (entries are separated by ';': percent-encode a ';' inside a DSN as %3B)`},
		{name: "env duplicate", env: pgMain + ";" + "main=sqlite://x.db", wantErr: `BATCHFLOW_TARGETS: target "main" given twice`},
		{name: "env bad scheme", env: "main=mongodb://app:" + secret + "@m/app", wantErr: `BATCHFLOW_TARGETS: target "main": unknown DSN scheme "mongodb": use postgres://, mysql:// or sqlite://`},
		{
			// An unencoded ';' in a password cuts the entry; neither piece is shown.
			name: "env password with a semicolon", env: "main=postgres://app:ab;" + secret + "@db/app",
			wantErr: `BATCHFLOW_TARGETS: target "main": malformed DSN "postgres://xxxxx": not a valid URL (percent-encode special characters in the user name and password: @ as %40, / as %2F, # as %23, ? as %3F)`,
		},
		{
			name: "env password with a semicolon, first piece valid", env: "main=postgres://app:12;" + secret + "@db/app",
			wantErr: `BATCHFLOW_TARGETS entry 2 wants NAME=DSN (entries are separated by ';': percent-encode a ';' inside a DSN as %3B)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			targets, err := config.ParseTargets(tt.flags, tt.env)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				require.NotContains(t, err.Error(), secret)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, target := range targets {
				got = append(got, target.String())
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestTargetsLookup(t *testing.T) {
	t.Parallel()
	targets, err := config.ParseTargets(nil, "main=postgres://app:"+secret+"@db/app;demo=sqlite://demo.db")
	require.NoError(t, err)
	require.Equal(t, []string{"main", "demo"}, targets.Names())

	main, ok := targets.Get("main")
	require.True(t, ok)
	require.Equal(t, config.SchemePostgres, main.Scheme)
	require.Equal(t, "postgres://app:"+secret+"@db/app", main.DSN())

	_, ok = targets.Get("missing")
	require.False(t, ok)

	require.Empty(t, config.Targets(nil).Names())
	_, ok = config.Targets(nil).Get("main")
	require.False(t, ok)
}
