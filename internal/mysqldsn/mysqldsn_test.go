package mysqldsn_test

import (
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	mysql "github.com/batchflow/batchflow/internal/mysqldsn"
	"github.com/batchflow/batchflow/internal/testenv"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	paris, err := time.LoadLocation("Europe/Paris")
	require.NoError(t, err)

	for _, tc := range []struct {
		name  string
		dsn   string
		check func(t *testing.T, cfg *gomysql.Config)
	}{
		{"defaults", "mysql://root@127.0.0.1:3306/test", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "root", cfg.User)
			require.Empty(t, cfg.Passwd)
			require.Equal(t, "tcp", cfg.Net)
			require.Equal(t, "127.0.0.1:3306", cfg.Addr)
			require.Equal(t, "test", cfg.DBName)
			require.True(t, cfg.ParseTime, "DATETIME scans into time.Time")
			require.False(t, cfg.InterpolateParams, "values travel as bound parameters")
			require.False(t, cfg.MultiStatements)
			require.Equal(t, mysql.DefaultDialTimeout, cfg.Timeout)
			require.Equal(t, time.UTC, cfg.Loc)
			require.Nil(t, cfg.TLS)
			require.Empty(t, cfg.Params)
		}},
		{"default port", "mysql://app:pw@db.example/app", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "db.example:3306", cfg.Addr)
			require.Equal(t, "pw", cfg.Passwd)
		}},
		{"default host", "mysql://root@/test", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "127.0.0.1:3306", cfg.Addr)
		}},
		{"upper-case scheme", "MySQL://root@h:3307/test", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "h:3307", cfg.Addr)
		}},
		{"ipv6", "mysql://root@[::1]:3307/test", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "[::1]:3307", cfg.Addr)
		}},
		{"percent-encoded credentials", "mysql://us%40er:p%40ss%2Fw%3Ard%23%25%3F@h/test", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "us@er", cfg.User)
			require.Equal(t, "p@ss/w:rd#%?", cfg.Passwd)
		}},
		{"colon in password", "mysql://u:a:b@h/test", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "a:b", cfg.Passwd)
		}},
		{"no database", "mysql://root@127.0.0.1", func(t *testing.T, cfg *gomysql.Config) {
			require.Empty(t, cfg.DBName)
		}},
		{"percent-encoded database", "mysql://root@h/my%20db", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "my db", cfg.DBName)
		}},
		{"driver parameters", "mysql://root@h/test?tls=skip-verify&timeout=5s&readTimeout=30s&writeTimeout=1m" +
			"&charset=utf8mb4&collation=utf8mb4_unicode_ci&parseTime=false&loc=Europe%2FParis&maxAllowedPacket=1024" +
			"&interpolateParams=true&clientFoundRows=true", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "skip-verify", cfg.TLSConfig)
			require.NotNil(t, cfg.TLS)
			require.True(t, cfg.TLS.InsecureSkipVerify)
			require.Equal(t, 5*time.Second, cfg.Timeout)
			require.Equal(t, 30*time.Second, cfg.ReadTimeout)
			require.Equal(t, time.Minute, cfg.WriteTimeout)
			require.Equal(t, "utf8mb4_unicode_ci", cfg.Collation)
			require.Contains(t, cfg.FormatDSN(), "charset=utf8mb4")
			require.False(t, cfg.ParseTime, "an explicit parseTime wins")
			require.Equal(t, paris.String(), cfg.Loc.String())
			require.Equal(t, 1024, cfg.MaxAllowedPacket)
			require.True(t, cfg.InterpolateParams)
			require.True(t, cfg.ClientFoundRows)
			require.Empty(t, cfg.Params, "known parameters are not session variables")
		}},
		{"unescaped slash in a value", "mysql://root@h/test?loc=Europe/Paris", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "test", cfg.DBName)
			require.Equal(t, paris.String(), cfg.Loc.String())
		}},
		{"tls verifies the url's host", "mysql://root@db.example:3306/test?tls=true", func(t *testing.T, cfg *gomysql.Config) {
			require.NotNil(t, cfg.TLS)
			require.Equal(t, "db.example", cfg.TLS.ServerName)
			require.False(t, cfg.TLS.InsecureSkipVerify)
		}},
		{"session variables", "mysql://root@h/test?sql_mode=TRADITIONAL&time_zone=%27%2B00%3A00%27", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, map[string]string{"sql_mode": "TRADITIONAL", "time_zone": "'+00:00'"}, cfg.Params)
		}},
		{"unix socket", "mysql://root:pw@unix(/run/mysqld/mysqld.sock)/test?timeout=2s", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "unix", cfg.Net)
			require.Equal(t, "/run/mysqld/mysqld.sock", cfg.Addr)
			require.Equal(t, "root", cfg.User)
			require.Equal(t, "pw", cfg.Passwd)
			require.Equal(t, "test", cfg.DBName)
			require.Equal(t, 2*time.Second, cfg.Timeout)
		}},
		{"unix socket without user", "mysql://unix(/tmp/mysql.sock)/test", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "unix", cfg.Net)
			require.Equal(t, "/tmp/mysql.sock", cfg.Addr)
		}},
		{"socket parameter", "mysql://root@localhost/test?socket=%2Frun%2Fmysqld%2Fmysqld.sock&tls=false", func(t *testing.T, cfg *gomysql.Config) {
			require.Equal(t, "unix", cfg.Net)
			require.Equal(t, "/run/mysqld/mysqld.sock", cfg.Addr)
			require.Empty(t, cfg.Params, "socket is batchflow's, not a session variable")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := mysql.ParseURL(tc.dsn)
			require.NoError(t, err)
			tc.check(t, cfg)
			// The driver accepts what ParseURL produced.
			_, err = gomysql.NewConnector(cfg)
			require.NoError(t, err)
		})
	}
}

func TestParseURLRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, dsn, want string
		// secret must not appear in the error.
		secret string
	}{
		{"other scheme", "postgres://u:hunter2@h/db", "want mysql://", "hunter2"},
		{"driver form", "u:hunter2@tcp(h:3306)/db", "want mysql://", "hunter2"},
		{"port out of range", "mysql://u:hunter2@h:99999/db", "port", "hunter2"},
		{"port not a number", "mysql://u:hunter2@h:abc/db", "malformed", "hunter2"},
		{"slash in password spills into the port", "mysql://u:99999/x@h/db", "percent-encode", "99999"},
		{"slash in password spills into the path", "mysql://u:12/hunter2@h/db", "percent-encode", "hunter2"},
		{"question mark in password spills into the query", "mysql://u:1?timeout=hunter2@h/db", "percent-encode", "hunter2"},
		{"hash in password", "mysql://u:hun#ter2@h/db", "percent-encode", "ter2"},
		{"bad escape in password", "mysql://u:hunter%zz2@h/db", "malformed", "zz"},
		{"database with slash", "mysql://u:hunter2@h/db/extra", "database name", "hunter2"},
		{"bad duration", "mysql://u:hunter2@h/db?timeout=soon", "soon", "hunter2"},
		{"bad bool", "mysql://u:hunter2@h/db?parseTime=maybe", "maybe", "hunter2"},
		{"removed strict mode", "mysql://u:hunter2@h/db?strict=true", "strict", "hunter2"},
		{"unknown tls config", "mysql://u:hunter2@h/db?tls=nosuchconfig", "nosuchconfig", "hunter2"},
		{"bad query escape", "mysql://u:hunter2@h/db?a=%zz", "query", "hunter2"},
		{"fragment", "mysql://u:hunter2@h/db#x", "'#'", "hunter2"},
		{"password without user", "mysql://:hunter2@h/db", "without a user", "hunter2"},
		{"unclosed socket", "mysql://u:hunter2@unix(/run/x.sock/db", "not closed", "hunter2"},
		{"empty socket", "mysql://u:hunter2@unix()/db", "empty", "hunter2"},
		{"port after socket", "mysql://u:hunter2@unix(/run/x.sock):3306/db", "after the unix socket", "hunter2"},
		{"two sockets", "mysql://u:hunter2@unix(/a.sock)/db?socket=/b.sock", "both", "hunter2"},
		{"socket with port", "mysql://u:hunter2@h:3306/db?socket=/b.sock", "port", "hunter2"},
		{"empty", "", "want mysql://", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := mysql.ParseURL(tc.dsn)
			require.Error(t, err)
			require.Nil(t, cfg)
			require.ErrorIs(t, err, mysql.ErrInvalidURL)
			require.Contains(t, err.Error(), tc.want)
			if tc.secret != "" {
				require.NotContains(t, err.Error(), tc.secret)
			}
		})
	}
}

// FuzzParseURL checks two promises for any password: written
// percent-encoded it comes back exactly, and written raw (as people do) it
// never shows in an error.
func FuzzParseURL(f *testing.F) {
	for _, seed := range []string{"hunter2", "p@ss", "a/b", "x?y=z", "#frag", "100%", "12/34", "[::1]", "@unix(/s)/", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, password string) {
		encoded := "mysql://" + url.UserPassword("app", password).String() + "@db.example:3306/app?timeout=5s"
		cfg, err := mysql.ParseURL(encoded)
		require.NoError(t, err, "percent-encoded password %q", password)
		require.Equal(t, "app", cfg.User)
		require.Equal(t, password, cfg.Passwd)
		require.Equal(t, "db.example:3306", cfg.Addr)
		require.Equal(t, "app", cfg.DBName)

		const template = "mysql://app:@db.example:3306/app?timeout=5s"
		if len(password) < 4 || strings.Contains(template, password) || strings.Contains("want mysql://user:password@host:port/database", password) {
			return // too short to tell a leak from a coincidence
		}
		raw := "mysql://app:" + password + "@db.example:3306/app?timeout=5s"
		if _, err := mysql.ParseURL(raw); err != nil {
			require.NotContains(t, err.Error(), password)
		}
	})
}

// TestParseURLConnects opens the configuration on a real server and checks
// the defaults a sink relies on: the right database, DATETIME as time.Time,
// and a password with URL-special characters that works once percent-encoded.
func TestParseURLConnects(t *testing.T) {
	t.Parallel()
	db := testenv.MySQL(t)

	user := fmt.Sprintf("bf_dsn_%08x", rand.Uint32())
	const password = "p@ss/w:rd#?%&="
	db.Exec(t, "CREATE USER '"+user+"'@'%' IDENTIFIED BY '"+password+"'")
	t.Cleanup(func() { db.Exec(t, "DROP USER IF EXISTS '"+user+"'@'%'") })
	db.Exec(t, "GRANT ALL ON `"+db.Name+"`.* TO '"+user+"'@'%'")

	admin, err := mysql.ParseURL(db.DSN)
	require.NoError(t, err)
	u := &url.URL{
		Scheme: "mysql",
		User:   url.UserPassword(user, password),
		Host:   admin.Addr,
		Path:   "/" + db.Name,
	}
	cfg, err := mysql.ParseURL(u.String())
	require.NoError(t, err)
	connector, err := gomysql.NewConnector(cfg)
	require.NoError(t, err)
	conn := sql.OpenDB(connector)
	t.Cleanup(func() { conn.Close() })

	var current string
	require.NoError(t, conn.QueryRow("SELECT DATABASE()").Scan(&current))
	require.Equal(t, db.Name, current)

	var at time.Time
	require.NoError(t, conn.QueryRow("SELECT CAST('2026-01-02 03:04:05' AS DATETIME)").Scan(&at))
	require.Equal(t, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), at)

	wrong := *u
	wrong.User = url.UserPassword(user, "not-"+password)
	cfg, err = mysql.ParseURL(wrong.String())
	require.NoError(t, err)
	connector, err = gomysql.NewConnector(cfg)
	require.NoError(t, err)
	bad := sql.OpenDB(connector)
	defer bad.Close()
	err = bad.Ping()
	var mysqlErr *gomysql.MySQLError
	require.True(t, errors.As(err, &mysqlErr), "got %v", err)
	require.Equal(t, uint16(1045), mysqlErr.Number, "access denied")
}
