package mysql

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/sink"
)

// The MySQL 8 side of the sink cannot run here (the test server is
// MariaDB): these pin what it sends to one.

func TestParseServer(t *testing.T) {
	t.Parallel()
	for version, want := range map[string]Server{
		"10.11.19-MariaDB-0+deb12u1": {Flavour: FlavourMariaDB, Major: 10, Minor: 11, Patch: 19},
		"11.4.2-MariaDB":             {Flavour: FlavourMariaDB, Major: 11, Minor: 4, Patch: 2},
		"8.0.36":                     {Flavour: FlavourMySQL, Major: 8, Minor: 0, Patch: 36},
		"8.0.21-0ubuntu0.20.04.4":    {Flavour: FlavourMySQL, Major: 8, Minor: 0, Patch: 21},
		"8.4.0-commercial":           {Flavour: FlavourMySQL, Major: 8, Minor: 4, Patch: 0},
		"5.7.44-log":                 {Flavour: FlavourMySQL, Major: 5, Minor: 7, Patch: 44},
	} {
		want.Version = version
		require.Equal(t, want, parseServer(version), version)
	}
	require.True(t, parseServer("8.0.22").AtLeast(8, 0, 22))
	require.False(t, parseServer("8.0.21").AtLeast(8, 0, 22))
	require.True(t, parseServer("8.1.0").AtLeast(8, 0, 22))
	require.True(t, parseServer("10.11.2-MariaDB").AtLeast(10, 3, 0))
}

func TestSessionParams(t *testing.T) {
	t.Parallel()
	opts := sink.Options{LockTimeout: 2100 * time.Millisecond, IdleInTransactionTimeout: 30 * time.Second, StatementTimeout: 1500 * time.Millisecond}.WithDefaults()
	mode := "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"

	mysql8 := sessionParams(nil, probeResult{server: parseServer("8.0.36"), sqlMode: mode, waitTimeout: 28800}, opts)
	require.Equal(t, map[string]string{
		"innodb_lock_wait_timeout":        "3",
		"lock_wait_timeout":               "3",
		"wait_timeout":                    "30",
		"max_execution_time":              "1500",
		"information_schema_stats_expiry": "0",
		"sql_mode":                        "'" + mode + "'",
	}, mysql8)

	mariadb := sessionParams(map[string]string{"time_zone": "'+00:00'", "lock_wait_timeout": "60"},
		probeResult{server: parseServer("10.11.19-MariaDB"), sqlMode: "", waitTimeout: 28800}, opts)
	require.Equal(t, map[string]string{
		"innodb_lock_wait_timeout": "3",
		"lock_wait_timeout":        "60", // the DSN's own wins
		"idle_transaction_timeout": "30",
		"max_statement_time":       "1.500000",
		"time_zone":                "'+00:00'",
		"sql_mode":                 "'STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO'",
	}, mariadb)

	old := sessionParams(nil, probeResult{server: parseServer("10.2.44-MariaDB"), sqlMode: "STRICT_ALL_TABLES"}, opts)
	require.Equal(t, "30", old["wait_timeout"], "no idle_transaction_timeout before 10.3")
	require.NotContains(t, old, "idle_transaction_timeout")
	require.Equal(t, "'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO'", old["sql_mode"], "STRICT_ALL_TABLES is strict enough")
}

func TestPoolIdleTime(t *testing.T) {
	t.Parallel()
	opts := sink.Options{IdleInTransactionTimeout: 30 * time.Second}.WithDefaults()
	require.Equal(t, 15*time.Second, poolIdleTime(probeResult{server: parseServer("8.0.36"), waitTimeout: 28800}, opts),
		"MySQL: below the wait_timeout the sink sets")
	require.Equal(t, 5*time.Minute, poolIdleTime(probeResult{server: parseServer("10.11.19-MariaDB"), waitTimeout: 28800}, opts))
	require.Equal(t, 30*time.Second, poolIdleTime(probeResult{server: parseServer("10.11.19-MariaDB"), waitTimeout: 60}, opts),
		"below the server's own wait_timeout")
	require.Equal(t, time.Second, poolIdleTime(probeResult{server: parseServer("10.11.19-MariaDB"), waitTimeout: 1}, opts))
}

func TestReplicationStatusStatement(t *testing.T) {
	t.Parallel()
	for version, want := range map[string][2]string{
		"10.11.19-MariaDB": {"SHOW ALL SLAVES STATUS", "Seconds_Behind_Master"},
		"8.0.21":           {"SHOW SLAVE STATUS", "Seconds_Behind_Master"},
		"8.0.22":           {"SHOW REPLICA STATUS", "Seconds_Behind_Source"},
		"8.4.3":            {"SHOW REPLICA STATUS", "Seconds_Behind_Source"},
	} {
		query, column := replicationStatus(parseServer(version))
		require.Equal(t, want, [2]string{query, column}, version)
	}
}
