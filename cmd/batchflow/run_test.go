package main

import (
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
)

// TestRunResumesAfterStopAndKill drives `batchflow run` with the CLI alone:
// a rejected spec, then a non-idempotent migration (n = n + 1) interrupted
// twice, by SIGTERM and by SIGKILL, each time restarted on the same
// --data-dir. It must finish with every row changed exactly once.
func TestRunResumesAfterStopAndKill(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "./cmd/batchflow")
	db := testenv.SQLite(t)
	const rows = 20000
	createItems(t, db, rows)
	dataDir := t.TempDir()
	port := freePort(t)
	url := "nats://127.0.0.1:" + port
	runArgs := []string{"run", "--target", "main=" + db.DSN, "--data-dir", dataDir, "--listen", "127.0.0.1:" + port, "--executors", "2"}
	start := func(name string) *testenv.Process {
		p := testenv.Start(t, name, bin, runArgs)
		waitReachable(t, url, 30*time.Second)
		return p
	}
	cli := func(args ...string) cliResult {
		return runBinary(t, bin, append([]string{"--nats-url", url}, args...)...)
	}
	changed := func() int64 { return db.QueryInt(t, "SELECT count(*) FROM items WHERE n > 0") }
	// waitChanged waits until at least n rows have changed, failing if
	// the migration finishes first: the interruption must land mid-way.
	waitChanged := func(n int64) {
		t.Helper()
		require.Eventually(t, func() bool { return changed() >= n }, time.Minute, 20*time.Millisecond)
		require.Less(t, changed(), int64(rows), "the migration finished before it could be interrupted")
	}

	run1 := start("run-1")

	r := cli("enqueue", "--file", writeSpec(t, `{"name": "bump_missing", "target": "main", "kind": "sql", "table": "missing_table", "args": {"set": "n = n + 1"}}`))
	require.Equal(t, exitRefused, r.code, r)
	require.Contains(t, r.stderr, "bump_missing was rejected:\n  - table: table \"missing_table\" does not exist on target main")

	// 10 batches of 2000 rows, 2 at a time, in sub-batches of 200 rows
	// 100ms apart: about 5s of work, long enough to interrupt twice. A
	// batch whose executor died is republished 3s after its last
	// sub-batch.
	spec := writeSpec(t, `{"name": "bump_all", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = n + 1"},
		"batch_size": 2000, "sub_batch_size": 200, "sub_batch_target": "0s", "sub_batch_pause": "100ms", "parallelism": 2,
		"health_check": {"frequency": "1s", "timeout": "3s"}}`)
	r = cli("enqueue", "--file", spec)
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "enqueued bump_all")

	waitChanged(2000)
	run1.Signal(t, syscall.SIGTERM)
	require.Equal(t, 0, run1.Wait(t, 30*time.Second), "a graceful stop exits 0")
	require.Contains(t, run1.Output(), "migrations in flight resume at the next start with the same --data-dir")
	afterStop := changed()
	t.Logf("SIGTERM after %d of %d rows", afterStop, rows)

	run2 := start("run-2")
	waitChanged(afterStop + 2000)
	run2.Signal(t, syscall.SIGKILL)
	run2.Wait(t, 10*time.Second)
	t.Logf("SIGKILL after %d of %d rows", changed(), rows)

	start("run-3")
	r = cli("wait", "bump_all", "--timeout", "2m")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "bump_all succeeded: 20,000 rows")

	require.Equal(t, int64(rows), db.QueryInt(t, "SELECT count(*) FROM items WHERE n = 1"), "every row changed once")
	require.Equal(t, int64(0), db.QueryInt(t, "SELECT count(*) FROM items WHERE n <> 1"), "no row changed twice")

	r = cli("status", "bump_all", "--json")
	require.Equal(t, exitOK, r.code, r)
	var v migrationView
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), r.stdout)
	require.Equal(t, "succeeded", string(v.Status))
	require.EqualValues(t, 100, v.Progress)
	require.EqualValues(t, rows, v.RowsAffected, "the ledger counts each row once, across restarts")
	require.EqualValues(t, 10, v.BatchesSucceeded)
	require.Zero(t, v.BatchesFailed)
}
