package kinds_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/planner"
	_ "github.com/batchflow/batchflow/pkg/sink/all"
)

// stack is one dialect's JetStream, database, planner and executor, which
// the kinds' subtests share: each works on its own tables and migrations.
type stack struct {
	db     *testenv.Database
	client *client.Client
}

func startStack(t *testing.T, db *testenv.Database) *stack {
	t.Helper()
	js := testenv.JetStream(t)
	_, err := bus.Bootstrap(context.Background(), js.JetStream, bus.MustNames(""), bus.Topology{BatchAckWait: 5 * time.Second})
	require.NoError(t, err)
	c, err := client.New(context.Background(), js.Conn, client.Options{})
	require.NoError(t, err)

	conn := func() (*nats.Conn, jetstream.JetStream) {
		nc := js.Connect(t)
		j, err := jetstream.New(nc)
		require.NoError(t, err)
		return nc, j
	}
	targets := map[string]string{"main": db.DSN}

	nc, j := conn()
	p, err := planner.New(planner.Config{
		Conn: nc, JetStream: j, Targets: targets, Tick: 20 * time.Millisecond, ProgressInterval: time.Second,
		Logger: testenv.Logger(t).With("component", "planner"),
	})
	require.NoError(t, err)
	run(t, "planner", p.Run)

	nc, j = conn()
	ex, err := executor.New(executor.Config{
		Conn: nc, JetStream: j, ID: "executor", Concurrency: 4, Targets: targets,
		Logger:             testenv.Logger(t).With("component", "executor"),
		InProgressInterval: time.Second, HeartbeatInterval: 200 * time.Millisecond,
		RetryBackoff: []time.Duration{100 * time.Millisecond},
	})
	require.NoError(t, err)
	run(t, "executor", ex.Run)
	return &stack{db: db, client: c}
}

// run runs a component until the test's cleanup.
func run(t *testing.T, name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("%s: %v", name, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// migrate enqueues a spec (small batches and sub-batches of fixed size, so
// a few thousand rows make many of each) and waits for it to succeed.
func (s *stack) migrate(t *testing.T, name, kind, table, args, where string) *batches.Migration {
	t.Helper()
	spec := batches.Spec{
		Name: name, Target: "main", Kind: kind, Table: table, Args: json.RawMessage(args), Where: where,
		BatchSize: 300, SubBatchSize: 40, SubBatchTarget: new(batches.Duration), Parallelism: 3,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := s.client.Enqueue(ctx, spec)
	require.NoError(t, err, "%s is accepted", name)
	m, err := s.client.Wait(ctx, name)
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, "%s: %s", name, m.Reason)
	return m
}

// typeName maps a portable column type to the dialect's DDL.
func typeName(db *testenv.Database, portable string) string {
	types := map[string][3]string{ // postgres, mysql, sqlite
		"bool":      {"BOOLEAN", "BOOLEAN", "BOOLEAN"},
		"json":      {"JSONB", "JSON", "JSON"},
		"decimal":   {"NUMERIC(30,5)", "DECIMAL(30,5)", "NUMERIC(30,5)"},
		"timestamp": {"TIMESTAMP", "DATETIME(6)", "DATETIME"},
		"uuid":      {"UUID", "CHAR(36)", "UUID"},
		"bigint":    {"BIGINT", "SIGNED", "INTEGER"}, // as a CAST type
	}
	i := map[string]int{testenv.DialectPostgres: 0, testenv.DialectMySQL: 1, testenv.DialectSQLite: 2}[db.Dialect]
	return types[portable][i]
}

// row is one row of a table, its columns formatted for comparison.
type row = string

// snapshot reads a table keyed by id, every column formatted.
func snapshot(t *testing.T, db *testenv.Database, table string) map[int64]row {
	t.Helper()
	rows, err := db.DB.QueryContext(context.Background(), "SELECT * FROM "+table+" ORDER BY id")
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	out := map[int64]row{}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		var id int64
		parts := make([]string, len(cols))
		for i, v := range vals {
			parts[i] = cols[i] + "=" + formatValue(v)
			if cols[i] == "id" {
				_, err := fmt.Sscan(formatValue(v), &id)
				require.NoError(t, err)
			}
		}
		out[id] = strings.Join(parts, " ")
	}
	require.NoError(t, rows.Err())
	return out
}

func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case []byte:
		return string(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

// changedRows counts the rows that differ between two snapshots, deleted
// and inserted rows included.
func changedRows(before, after map[int64]row) int64 {
	var n int64
	for id, r := range before {
		if a, ok := after[id]; !ok || a != r {
			n++
		}
	}
	for id := range after {
		if _, ok := before[id]; !ok {
			n++
		}
	}
	return n
}

// requireSameRows fails with the first rows that differ.
func requireSameRows(t *testing.T, want, got map[int64]row, msg string) {
	t.Helper()
	var diffs []string
	ids := map[int64]bool{}
	for id := range want {
		ids[id] = true
	}
	for id := range got {
		ids[id] = true
	}
	sorted := make([]int64, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	for _, id := range sorted {
		w, wok := want[id]
		g, gok := got[id]
		if w != g || wok != gok {
			diffs = append(diffs, fmt.Sprintf("id %d:\n  want %s (present %v)\n  got  %s (present %v)", id, w, wok, g, gok))
		}
		if len(diffs) == 5 {
			break
		}
	}
	require.Empty(t, diffs, "%s: rows differ from the reference", msg)
}

// gappedIDs returns n increasing ids with gaps of every size: most are
// consecutive, some skip a few, every hundred or so jumps a thousand.
func gappedIDs(n int) []int64 {
	ids := make([]int64, n)
	id := int64(0)
	for i := range ids {
		switch {
		case i%97 == 0:
			id += 1000
		case i%13 == 0:
			id += 7
		default:
			id++
		}
		ids[i] = id
	}
	return ids
}

// insert inserts rows in chunks; each row is a list of SQL literals.
func insert(t *testing.T, db *testenv.Database, table, columns string, rows [][]string) {
	t.Helper()
	for start := 0; start < len(rows); start += 500 {
		chunk := rows[start:min(start+500, len(rows))]
		values := make([]string, len(chunk))
		for i, r := range chunk {
			values[i] = "(" + strings.Join(r, ", ") + ")"
		}
		db.Exec(t, "INSERT INTO "+table+" ("+columns+") VALUES "+strings.Join(values, ", "))
	}
}

// lit writes a Go value as a SQL literal for the test's own statements.
func lit(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return "'" + strings.ReplaceAll(x, "'", "''") + "'"
	case bool:
		if x {
			return "TRUE"
		}
		return "FALSE"
	}
	return fmt.Sprint(v)
}

// copyTable makes an identical table named reference with the same rows,
// for the test's own plain SQL to compute the expected outcome on.
func copyTable(t *testing.T, db *testenv.Database, createSQL, table, reference string) {
	t.Helper()
	db.Exec(t, strings.Replace(createSQL, "CREATE TABLE "+table+" ", "CREATE TABLE "+reference+" ", 1))
	db.Exec(t, "INSERT INTO "+reference+" SELECT * FROM "+table)
}

func count(t *testing.T, db *testenv.Database, query string) int64 {
	t.Helper()
	return db.QueryInt(t, query)
}
