package sqlite

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseDSN(t *testing.T) {
	t.Parallel()
	wd, err := os.Getwd()
	require.NoError(t, err)
	for _, tc := range []struct {
		dsn    string
		path   string
		params url.Values
	}{
		{"sqlite:///abs/path.db", "/abs/path.db", url.Values{}},
		{"sqlite://relative/path.db", filepath.Join(wd, "relative/path.db"), url.Values{}},
		{"sqlite://x.db", filepath.Join(wd, "x.db"), url.Values{}},
		{"SQLITE:///abs/x.db", "/abs/x.db", url.Values{}},
		{"sqlite:///tmp/a%23b/c%20d%25.db", "/tmp/a#b/c d%.db", url.Values{}},
		{"sqlite:///tmp/q%3Fx.db?mode=ro", "/tmp/q?x.db", url.Values{"mode": {"ro"}}},
		{"sqlite:///x.db?_pragma=cache_size(-64000)&_txlock=immediate&_pragma=temp_store(2)", "/x.db",
			url.Values{"_pragma": {"cache_size(-64000)", "temp_store(2)"}, "_txlock": {"immediate"}}},
	} {
		d, err := ParseDSN(tc.dsn)
		require.NoError(t, err, tc.dsn)
		require.Equal(t, tc.path, d.Path, tc.dsn)
		require.Equal(t, tc.params, d.Params, tc.dsn)
	}

	// The form internal/testenv builds, from a path holding every character
	// a test name can put in a temporary directory.
	path := "/tmp/Test#1/a b%c?d/test.db"
	d, err := ParseDSN((&url.URL{Scheme: "sqlite", Path: path}).String())
	require.NoError(t, err)
	require.Equal(t, path, d.Path)
}

func TestParseDSNRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ dsn, why string }{
		{"sqlite::memory:", "in-memory"},
		{"sqlite://:memory:", "in-memory"},
		{"sqlite://file::memory:?cache=shared", "in-memory"},
		{"sqlite:///x.db?mode=memory", "in-memory"},
		{"sqlite:///x.db?vfs=memdb", "in-memory"},
		{"sqlite://", "no file path"},
		{"sqlite://?mode=ro", "no file path"},
		{"sqlite:x.db", "want sqlite://"},
		{"postgres://u:secret@h/db", "want sqlite://"},
		{"sqlite:///a#b.db", "%23"},
		{"sqlite:///a%zz.db", "escape"},
		{"sqlite://file:x.db", "file:"},
	} {
		_, err := ParseDSN(tc.dsn)
		require.ErrorIs(t, err, ErrInvalidDSN, tc.dsn)
		require.ErrorContains(t, err, tc.why, tc.dsn)
		require.NotContains(t, err.Error(), "secret")
	}
}

func TestDriverDSN(t *testing.T) {
	t.Parallel()
	d, err := ParseDSN("sqlite:///data/a%23b.db")
	require.NoError(t, err)
	w, err := d.driverDSN(writePool, 1500*time.Millisecond)
	require.NoError(t, err)
	require.Equal(t, "file:///data/a%23b.db?_busy_timeout=1500&_foreign_keys=1&_journal_mode=WAL&_synchronous=NORMAL&_time_format=sqlite&_txlock=immediate", w)
	r, err := d.driverDSN(readPool, time.Second)
	require.NoError(t, err)
	require.Equal(t, "file:///data/a%23b.db?_busy_timeout=1000&_foreign_keys=1&_journal_mode=WAL&_query_only=1&_synchronous=NORMAL&_time_format=sqlite", r)

	// The target's own settings win over the sink's defaults.
	d, err = ParseDSN("sqlite:///x.db?_pragma=busy_timeout(9000)&_sync=FULL&_pragma=foreign_keys(0)&_txlock=exclusive&mode=ro")
	require.NoError(t, err)
	w, err = d.driverDSN(writePool, time.Second)
	require.NoError(t, err)
	q, err := url.ParseQuery(w[len("file:///x.db?"):])
	require.NoError(t, err)
	require.Equal(t, url.Values{
		"_pragma":      {"busy_timeout(9000)", "foreign_keys(0)"},
		"_sync":        {"FULL"},
		"_txlock":      {"exclusive"},
		"mode":         {"ro"},
		"_time_format": {"sqlite"},
	}, q, "no WAL switch on a read-only file, no second busy_timeout")

	d, err = ParseDSN("sqlite:///x.db?_txlock=deferred")
	require.NoError(t, err)
	_, err = d.driverDSN(writePool, time.Second)
	require.ErrorIs(t, err, ErrInvalidDSN)
	require.ErrorContains(t, err, "_txlock=immediate")
}
