package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
)

// createItems makes items(id, n) with rows 1…n, n = 0, in a SQLite database.
func createItems(t *testing.T, db *testenv.Database, rows int) {
	t.Helper()
	db.Exec(t, "CREATE TABLE items (id INTEGER PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	db.Exec(t, fmt.Sprintf(`WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %d)
		INSERT INTO items (id) SELECT i FROM seq`, rows))
}

// TestEnqueueWaitStatus drives a migration through the commands an operator
// uses, against a planner, executors and watchdog running in this process.
func TestEnqueueWaitStatus(t *testing.T) {
	t.Parallel()
	js := testenv.JetStreamListening(t)
	db := testenv.SQLite(t)
	createItems(t, db, 3000)
	startStack(t, js, db.DSN)

	t.Run("a spec the planner rejects prints every problem, one per line, and exits 2", func(t *testing.T) {
		r := runCLI(t, js.URL, "enqueue", "--file", writeSpec(t, `{"name": "Bad Name", "target": "main", "kind": "sql", "table": "items", "args": {}, "batch_size": 0}`))
		require.Equal(t, exitRefused, r.code, r)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		require.GreaterOrEqual(t, len(lines), 3, r.stderr)
		require.Equal(t, "batchflow: the spec was rejected:", lines[0])
		require.Contains(t, r.stderr, "\n  - name: \"Bad Name\" is not a valid name")
		require.Contains(t, r.stderr, "\n  - args: the sql kind needs args.set")

		r = runCLI(t, js.URL, "enqueue", "--file", writeSpec(t, `{"name": "no_table", "target": "main", "kind": "sql", "table": "missing_table", "args": {"set": "n = 1"}}`))
		require.Equal(t, exitRefused, r.code, r)
		require.Contains(t, r.stderr, "no_table was rejected")
		require.Contains(t, r.stderr, "missing_table")
		require.Empty(t, r.stdout)
	})

	spec := writeSpec(t, `{"name": "bump_items", "target": "main", "kind": "sql", "table": "items",
		"args": {"set": "n = n + 1"}, "batch_size": 500}`)
	t.Run("enqueue --wait prints the outcome and exits 0 when it succeeded", func(t *testing.T) {
		r := runCLI(t, js.URL, "enqueue", "--file", spec, "--wait", "--timeout", "1m")
		require.Equal(t, exitOK, r.code, r)
		require.Contains(t, r.stdout, "enqueued bump_items (")
		require.Contains(t, r.stdout, "bump_items succeeded: 3,000 rows in ")
		require.Equal(t, int64(3000), db.QueryInt(t, "SELECT count(*) FROM items WHERE n = 1"))
	})

	t.Run("status --json has the documented fields", func(t *testing.T) {
		v := statusJSON(t, js.URL, "bump_items")
		for _, key := range []string{"name", "status", "target", "kind", "table", "progress", "rows_affected", "estimated_rows",
			"batches_total", "batches_succeeded", "batches_failed", "batches_in_flight", "retries", "failed_keys",
			"rows_per_second", "eta_seconds", "throttled", "last_error", "created_at", "started_at", "finished_at"} {
			require.Contains(t, v, key)
		}
		require.Equal(t, "bump_items", v["name"])
		require.Equal(t, "succeeded", v["status"])
		require.EqualValues(t, 100, v["progress"])
		require.EqualValues(t, 3000, v["rows_affected"])
		require.EqualValues(t, 6, v["batches_total"])
		require.EqualValues(t, 6, v["batches_succeeded"])
		require.EqualValues(t, 0, v["batches_failed"])
		require.Equal(t, []any{}, v["failed_keys"])

		r := runCLI(t, js.URL, "status", "--json")
		require.Equal(t, exitOK, r.code, r)
		require.True(t, strings.HasPrefix(r.stdout, "["), "without NAME, an array: %s", r.stdout)
	})

	t.Run("status shows a table, and one migration in detail", func(t *testing.T) {
		r := runCLI(t, js.URL, "status")
		require.Equal(t, exitOK, r.code, r)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		require.Len(t, lines, 2, r.stdout)
		require.Regexp(t, `^NAME +STATUS +PROGRESS +ROWS +BATCHES +RATE +ETA +NOTE$`, lines[0])
		require.Regexp(t, `^bump_items +succeeded +100\.0% +3,000 +6/6 +[0-9,]+ rows/s$`, lines[1])

		r = runCLI(t, js.URL, "status", "bump_items")
		require.Equal(t, exitOK, r.code, r)
		require.Contains(t, r.stdout, "bump_items  succeeded  100.0%")
		require.Contains(t, r.stdout, "batches    6 succeeded, 0 failed, 0 in flight, 6 in all")

		r = runCLI(t, js.URL, "status", "bump_items", "--watch")
		require.Equal(t, exitOK, r.code, "a settled migration ends the watch at once: %s", r)
		require.Contains(t, r.stdout, "bump_items succeeded: 3,000 rows, 6 batches in ")
	})

	t.Run("enqueueing the same spec again changes nothing", func(t *testing.T) {
		r := runCLI(t, js.URL, "enqueue", "--file", spec)
		require.Equal(t, exitOK, r.code, r)
		require.Contains(t, r.stdout, "bump_items was enqueued before with this spec; nothing changed")
		require.Equal(t, int64(3000), db.QueryInt(t, "SELECT count(*) FROM items WHERE n = 1"))
	})

	t.Run("control requests the migration's status does not allow exit 2 with the planner's reason", func(t *testing.T) {
		r := runCLI(t, js.URL, "pause", "bump_items")
		require.Equal(t, exitRefused, r.code, r)
		require.Contains(t, r.stderr, "bump_items")
		require.Contains(t, r.stderr, "succeeded")
	})

	t.Run("status says why a migration is throttled", func(t *testing.T) {
		before := db.QueryInt(t, "SELECT sum(n) FROM items")
		r := runCLI(t, js.URL, "enqueue", "--file", writeSpec(t, `{"name": "held", "target": "main", "kind": "sql", "table": "items",
			"args": {"set": "n = n + 1"}, "parallelism": 1, "throttle": {"query": "SELECT count(*) > 0 FROM items"}}`))
		require.Equal(t, exitOK, r.code, r)
		var v migrationView
		require.Eventually(t, func() bool {
			r := runCLI(t, js.URL, "status", "held", "--json")
			require.Equal(t, exitOK, r.code, r)
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &v))
			return v.Throttled != nil
		}, 30*time.Second, 200*time.Millisecond)
		require.Equal(t, "running", string(v.Status))
		require.NotEmpty(t, v.Throttled.Reason)
		require.Zero(t, v.RowsAffected)

		r = runCLI(t, js.URL, "status")
		require.Equal(t, exitOK, r.code, r)
		require.Regexp(t, `(?m)^held +running .* throttled: `+regexp.QuoteMeta(v.Throttled.Reason)+`$`, r.stdout)
		r = runCLI(t, js.URL, "status", "held")
		require.Contains(t, r.stdout, "  throttled  "+v.Throttled.Reason+" (since ")

		r = runCLI(t, js.URL, "cancel", "held")
		require.Equal(t, exitOK, r.code, r)
		require.Equal(t, before, db.QueryInt(t, "SELECT sum(n) FROM items"), "nothing applied while throttled")
	})

	t.Run("unknown migration names exit 2 and say where to look", func(t *testing.T) {
		for _, args := range [][]string{{"wait", "nosuch"}, {"status", "nosuch"}, {"pause", "nosuch"}, {"set", "nosuch", "--parallelism", "2"}} {
			r := runCLI(t, js.URL, args...)
			require.Equal(t, exitRefused, r.code, r)
			require.Contains(t, r.stderr, `no migration named "nosuch" (`+"`batchflow status` lists them)", r)
		}
	})
}

// TestInitCreatesTheLedger prepares a target without NATS: the ledger
// table exists afterwards, and a second run changes nothing.
func TestInitCreatesTheLedger(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	unreachable := "nats://127.0.0.1:" + freePort(t) // init needs no NATS
	for range 2 {
		r := runCLI(t, unreachable, "init", "--target", "main="+db.DSN)
		require.Equal(t, exitOK, r.code, r)
		require.Equal(t, "main ("+db.DSN+"): batchflow_ledger ready\n", r.stdout)
	}
	require.Equal(t, int64(1), db.QueryInt(t, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'batchflow_ledger'"))

	r := runCLI(t, unreachable, "init")
	require.Equal(t, exitRefused, r.code, r)
	require.Contains(t, r.stderr, "no target: give --target NAME=DSN")
}

// TestExitCodes checks the statuses of DESIGN.md §5 that scripts branch on.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	js := testenv.JetStreamListening(t)
	db := testenv.SQLite(t)
	createItems(t, db, 200)
	startStack(t, js, db.DSN)

	t.Run("a failed migration exits 1 from wait and from enqueue --wait", func(t *testing.T) {
		// n is NOT NULL: every sub-batch fails, and one attempt is all it has.
		spec := writeSpec(t, `{"name": "null_n", "target": "main", "kind": "sql", "table": "items",
			"args": {"set": "n = NULL"}, "max_attempts": 1}`)
		r := runCLI(t, js.URL, "enqueue", "--file", spec, "--wait")
		require.Equal(t, exitFailed, r.code, r)
		require.Contains(t, r.stdout, "null_n failed: ")
		require.Contains(t, r.stdout, "last error: data in batch #0 attempt 1: ")
		require.Contains(t, r.stdout, "`batchflow retry null_n`")

		r = runCLI(t, js.URL, "wait", "null_n")
		require.Equal(t, exitFailed, r.code, r)
		require.Contains(t, r.stdout, "null_n failed")

		v := statusJSON(t, js.URL, "null_n")
		require.Equal(t, "failed", v["status"])
		require.EqualValues(t, 1, v["batches_failed"])
		require.NotNil(t, v["last_error"])
	})

	t.Run("wait exits 3 when --timeout passes first, 1 once cancelled", func(t *testing.T) {
		// 20 sub-batches of 10 rows, 2s apart: it runs for most of a minute.
		spec := writeSpec(t, `{"name": "slow", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = n + 1"},
			"sub_batch_size": 10, "sub_batch_target": "0s", "sub_batch_pause": "2s", "parallelism": 1}`)
		r := runCLI(t, js.URL, "enqueue", "--file", spec)
		require.Equal(t, exitOK, r.code, r)

		r = runCLI(t, js.URL, "wait", "slow", "--timeout", "1s")
		require.Equal(t, exitTimeout, r.code, r)
		require.Regexp(t, `batchflow: timed out after 1s: slow is still (enqueued|running) \(`, r.stderr)

		r = runCLI(t, js.URL, "enqueue", "--file", spec, "--wait", "--timeout", "1s")
		require.Equal(t, exitTimeout, r.code, "enqueue --wait times out as wait does: %s", r)

		r = runCLI(t, js.URL, "cancel", "slow", "--reason", "test over")
		require.Equal(t, exitOK, r.code, r)
		require.Contains(t, r.stdout, "cancelled slow: now cancelled")
		r = runCLI(t, js.URL, "wait", "slow")
		require.Equal(t, exitFailed, r.code, r)
		require.Contains(t, r.stdout, "slow was cancelled: test over")
	})

	t.Run("enqueue exits 2 when NATS cannot be reached, saying what to do", func(t *testing.T) {
		url := "nats://127.0.0.1:" + freePort(t)
		spec := writeSpec(t, `{"name": "x", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = 1"}}`)
		for _, args := range [][]string{{"enqueue", "--file", spec}, {"wait", "x"}, {"status"}, {"events"}} {
			r := runCLI(t, url, args...)
			require.Equal(t, exitRefused, r.code, r)
			require.Equal(t, "batchflow: cannot reach NATS at "+url+": start `batchflow run` or pass --nats-url (BATCHFLOW_NATS_URL)\n", r.stderr)
		}
	})

	t.Run("a spec file that does not exist or is not JSON exits 2 before anything is sent", func(t *testing.T) {
		r := runCLI(t, js.URL, "enqueue", "--file", "/nonexistent/spec.json")
		require.Equal(t, exitRefused, r.code, r)
		require.Equal(t, "batchflow: spec file /nonexistent/spec.json does not exist\n", r.stderr)

		broken := writeSpec(t, `{}`)
		require.NoError(t, os.WriteFile(broken, []byte("{\n  \"name\": \"x\",\n  \"kind\" \"sql\"\n}\n"), 0o600))
		r = runCLI(t, js.URL, "enqueue", "--file", broken)
		require.Equal(t, exitRefused, r.code, r)
		require.Contains(t, r.stderr, "is not valid JSON: line 3, column 10: invalid character '\"' after object key")
	})

	t.Run("control requests with no planner running exit 2", func(t *testing.T) {
		lone := testenv.JetStreamListening(t)
		r := runCLI(t, lone.URL, "pause", "anything")
		require.Equal(t, exitRefused, r.code, r)
		require.Equal(t, "batchflow: no planner answered: start `batchflow run` or cmd/planner\n", r.stderr)
	})

	t.Run("usage mistakes exit 2 and point at --help", func(t *testing.T) {
		for _, args := range [][]string{{"wait"}, {"wait", "a", "b"}, {"status", "--bogus"}, {"enqueue"}, {"set", "x"}, {"quickstart", "--rows", "0"}} {
			r := runCLI(t, js.URL, args...)
			require.Equal(t, exitRefused, r.code, r)
			require.Contains(t, r.stderr, "--help`)", r)
		}
	})
}
