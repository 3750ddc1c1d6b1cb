package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/events"
)

// TestDaemonsWithPostgres is a production layout in miniature: a
// nats-server, the planner, the watchdog and two executors, each its own
// process, a Postgres target, and the operator's commands.
func TestDaemonsWithPostgres(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	const rows = 50000
	db.Exec(t, "CREATE TABLE items (id BIGINT PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	db.Exec(t, "INSERT INTO items (id) SELECT g FROM generate_series(1, $1) g", rows)

	natsServer := testenv.Binary(t, "github.com/nats-io/nats-server/v2")
	planner := testenv.Binary(t, "./cmd/planner")
	executor := testenv.Binary(t, "./cmd/executor")
	watchdog := testenv.Binary(t, "./cmd/watchdog")
	bin := testenv.Binary(t, "./cmd/batchflow")

	port := freePort(t)
	url := "nats://127.0.0.1:" + port
	testenv.Start(t, "nats-server", natsServer, []string{"-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", port})
	waitReachable(t, url, 30*time.Second)

	common := []string{"--nats-url", url, "--target", "main=" + db.DSN}
	testenv.Start(t, "planner", planner, common)
	testenv.Start(t, "watchdog", watchdog, []string{"--nats-url", url})
	// One batch at a time each: with four batches in flight, both take work.
	testenv.Start(t, "executor-1", executor, append(common, "--concurrency", "1"))
	testenv.Start(t, "executor-2", executor, append(common, "--concurrency", "1"))

	cli := func(args ...string) cliResult {
		return runBinary(t, bin, append([]string{"--nats-url", url}, args...)...)
	}
	spec := writeSpec(t, `{"name": "bump_items", "target": "main", "kind": "sql", "table": "items",
		"args": {"set": "n = n + 1"}, "batch_size": 5000, "parallelism": 4}`)
	r := cli("enqueue", "--file", spec)
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "enqueued bump_items")

	r = cli("wait", "bump_items", "--timeout", "2m")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "bump_items succeeded: 50,000 rows")

	r = cli("status", "bump_items", "--json")
	require.Equal(t, exitOK, r.code, r)
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), r.stdout)
	require.Equal(t, "succeeded", v["status"])
	require.EqualValues(t, 100, v["progress"])
	require.EqualValues(t, rows, v["rows_affected"])
	require.EqualValues(t, 10, v["batches_total"])
	require.EqualValues(t, 10, v["batches_succeeded"])
	require.EqualValues(t, 0, v["batches_failed"])
	require.Equal(t, []any{}, v["failed_keys"])

	require.Equal(t, int64(rows), db.QueryInt(t, "SELECT count(*) FROM items WHERE n = 1"))
	require.Equal(t, int64(0), db.QueryInt(t, "SELECT count(*) FROM items WHERE n <> 1"))

	// The events name who did the work: both executor processes did.
	r = cli("events", "--migration", "bump_items", "--json")
	require.Equal(t, exitOK, r.code, r)
	sources := map[string]int{}
	for line := range strings.Lines(r.stdout) {
		ev, err := events.Decode([]byte(line))
		require.NoError(t, err, line)
		if ev.Type == events.BatchCompleted {
			sources[ev.Source]++
		}
	}
	require.Len(t, sources, 2, "batches completed by: %v", sources)
}
