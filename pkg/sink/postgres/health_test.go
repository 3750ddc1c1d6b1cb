package postgres

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestThrottled(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	for query, want := range map[string]bool{
		"SELECT true":            true,
		"SELECT 1 > 2":           false,
		"SELECT 1":               true,
		"SELECT 0::smallint":     false,
		"SELECT 1::bigint":       true,
		"SELECT 0::numeric":      false,
		"SELECT 1.0::float8":     true,
		"SELECT 't'":             true,
		"SELECT 'false'::text":   false,
		"SELECT 'TRUE'::varchar": true,
		"SELECT 'f'::char(1)":    false,
		"SELECT count(*) > 50 FROM pg_stat_activity WHERE datname = current_database()": false,
	} {
		got, err := tb.sink.Throttled(ctx, query)
		require.NoError(t, err, query)
		require.Equal(t, want, got, query)
	}
	for query, msg := range map[string]string{
		"SELECT * FROM no_such_table":             "no_such_table",
		"SELECT true, false":                      "2 columns",
		"SELECT true WHERE false":                 "no row",
		"SELECT true FROM generate_series(1, 2)":  "more than one row",
		"SELECT NULL::bool":                       "NULL",
		"SELECT 'maybe'":                          `"maybe"`,
		"SELECT now()":                            "time.Time",
		"SELECT 1/0 = 1":                          "division by zero",
		"SELECT true FROM generate_series(1, 1)a": "",
	} {
		_, err := tb.sink.Throttled(ctx, query)
		if msg == "" {
			require.NoError(t, err, query)
			continue
		}
		require.ErrorContains(t, err, msg, query)
	}
}

func TestReplicationLagWithoutReplicas(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	lag, err := tb.sink.ReplicationLag(t.Context())
	require.NoError(t, err)
	require.Zero(t, lag)
}
