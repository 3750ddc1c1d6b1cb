package planner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/planner"
	"github.com/batchflow/batchflow/pkg/sink"
	_ "github.com/batchflow/batchflow/pkg/sink/all"
)

// testBundle is one test's JetStream, database, client and stand-in executor.
type testBundle struct {
	js     *testenv.JS
	db     *testenv.Database
	res    *bus.Resources
	client *client.Client
	exec   *recordingExecutor
}

func setup(t *testing.T, db *testenv.Database) *testBundle {
	t.Helper()
	js := testenv.JetStream(t)
	res, err := bus.Bootstrap(context.Background(), js.JetStream, bus.MustNames(""), bus.Topology{})
	require.NoError(t, err)
	c, err := client.New(context.Background(), js.Conn, client.Options{})
	require.NoError(t, err)
	b := &testBundle{js: js, db: db, res: res, client: c}
	b.exec = newRecordingExecutor(t, b)
	return b
}

// startPlanner runs a planner with its own NATS connection until the test
// ends or the returned stop is called.
func (b *testBundle) startPlanner(t *testing.T, id string, tune func(*planner.Config)) (p *planner.Planner, stop func(), nc *nats.Conn) {
	t.Helper()
	nc = b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	cfg := planner.Config{
		Conn: nc, JetStream: js, ID: id,
		Logger:           testenv.Logger(t).With("planner", id),
		Targets:          map[string]string{"main": b.db.DSN},
		Tick:             20 * time.Millisecond,
		ProgressInterval: 200 * time.Millisecond,
		LeaseTTL:         2 * time.Second,
	}
	if tune != nil {
		tune(&cfg)
	}
	p, err = planner.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A planner whose connection a test closed stops with that error.
		if err := p.Run(ctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("planner %s: %v", id, err)
		}
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return p, stop, nc
}

// recordingExecutor stands in for the executors (built separately): it
// takes each published batch, counts the rows in its range, marks it
// succeeded (or failed, for migrations told to fail) in KV and acks. It
// records every delivery, so tests can see a batch executed twice.
type recordingExecutor struct {
	t    *testing.T
	b    *testBundle
	sink sink.Sink

	mu         sync.Mutex
	unheld     *sync.Cond
	deliveries map[string][]batches.Batch
	failing    map[string]bool
	held       bool
}

func newRecordingExecutor(t *testing.T, b *testBundle) *recordingExecutor {
	e := &recordingExecutor{t: t, b: b, deliveries: map[string][]batches.Batch{}, failing: map[string]bool{}}
	e.unheld = sync.NewCond(&e.mu)
	return e
}

func (e *recordingExecutor) start(t *testing.T) {
	s, err := sink.Open(context.Background(), e.b.db.DSN, sink.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	e.sink = s
	it, err := e.b.res.ExecutorsConsumer.Messages(jetstream.PullMaxMessages(1))
	require.NoError(t, err)
	t.Cleanup(it.Stop)
	go func() {
		for {
			msg, err := it.Next()
			if err != nil {
				return
			}
			e.handle(msg)
		}
	}()
}

func (e *recordingExecutor) setFailing(migration string, fail bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failing[migration] = fail
}

// setHeld stops (true) or resumes taking batches; while held, batches
// wait in the stream.
func (e *recordingExecutor) setHeld(held bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.held = held
	e.unheld.Broadcast()
}

func (e *recordingExecutor) handle(msg jetstream.Msg) {
	ctx := context.Background()
	e.mu.Lock()
	for e.held {
		e.unheld.Wait()
	}
	e.mu.Unlock()
	var b batches.Batch
	if err := json.Unmarshal(msg.Data(), &b); err != nil {
		e.t.Errorf("batch message: %v", err)
		_ = msg.Term()
		return
	}
	key := bus.BatchKey(b.Migration, b.Seq)
	entry, err := e.b.res.BatchesKV.Get(ctx, key)
	if err != nil {
		e.t.Errorf("batch record %s: %v", key, err)
		return
	}
	var rec batches.Batch
	_ = json.Unmarshal(entry.Value(), &rec)
	if rec.Status != batches.BatchPending || rec.Epoch != b.Epoch {
		_ = msg.Ack() // a duplicate of a batch already taken
		return
	}
	mig, err := e.b.client.Status(ctx, b.Migration)
	if err != nil {
		e.t.Errorf("migration %s: %v", b.Migration, err)
		return
	}
	if mig.Status == batches.MigrationCancelled {
		_ = msg.Term() // as executors do: a cancelled migration's batch is dropped
		return
	}
	e.mu.Lock()
	e.deliveries[b.Migration] = append(e.deliveries[b.Migration], rec)
	fail := e.failing[b.Migration]
	e.mu.Unlock()

	now := time.Now().UTC()
	rec.FinishedAt, rec.UpdatedAt = &now, now
	if fail {
		rec.Status, rec.Attempts = batches.BatchFailed, mig.Spec.MaxAttempts
		rec.Errors = batches.AppendError(rec.Errors, batches.ErrorRecord{Time: now, Class: batches.ClassData, Message: "told to fail", Attempt: rec.Attempts})
	} else {
		rel := sink.Relation{Table: &sink.Table{Schema: "", Name: mig.Spec.Table}, Column: mig.BatchColumn, Where: mig.Spec.Where}
		rec.RowsAffected = e.count(rel, sink.Range{Lo: rec.Lo, LoInclusive: rec.LoInclusive, Hi: rec.Hi})
		rec.Status, rec.Checkpoint = batches.BatchSucceeded, rec.Hi
	}
	data, _ := json.Marshal(rec)
	if _, err := e.b.res.BatchesKV.Update(ctx, key, data, entry.Revision()); err != nil {
		e.t.Errorf("complete batch %s: %v", key, err)
	}
	_ = msg.DoubleAck(ctx)
}

func (e *recordingExecutor) count(rel sink.Relation, r sink.Range) int64 {
	q := sink.NewBuilder(e.sink.Dialect())
	q.SQL("SELECT COUNT(*) FROM ").Ident(rel.Table.Name).SQL(" WHERE ").Write(rel.Rows(r))
	var n int64
	if err := e.b.db.DB.QueryRow(q.String(), q.Args()...).Scan(&n); err != nil {
		e.t.Errorf("count rows: %v", err)
	}
	return n
}

func (e *recordingExecutor) delivered(migration string) []batches.Batch {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]batches.Batch(nil), e.deliveries[migration]...)
}

// createItems makes items(id, n, grp) with gapped ids; grp = id mod 3.
func createItems(t *testing.T, db *testenv.Database, n int) []int64 {
	t.Helper()
	db.Exec(t, "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 0, grp INT NOT NULL)")
	ids := make([]int64, 0, n)
	id := int64(-5)
	var rows []string
	for i := range n {
		switch {
		case i%50 == 0:
			id += 100_000
		case i%7 == 0:
			id += 40
		default:
			id++
		}
		ids = append(ids, id)
		rows = append(rows, fmt.Sprintf("(%d, %d)", id, ((id%3)+3)%3))
		if len(rows) == 500 || i == n-1 {
			db.Exec(t, "INSERT INTO items (id, grp) VALUES "+strings.Join(rows, ", "))
			rows = rows[:0]
		}
	}
	return ids
}

func spec(name string, mod func(*batches.Spec)) batches.Spec {
	s := batches.Spec{Name: name, Target: "main", Kind: batches.KindSQL, Table: "items", Args: json.RawMessage(`{"set": "n = n + 1"}`)}
	if mod != nil {
		mod(&s)
	}
	return s
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// requireExactCover checks the migration's batches are contiguous, cover
// its key range, hold batch_size rows each but the last, and were each
// executed once.
func (b *testBundle) requireExactCover(t *testing.T, name string, wantRows int64) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	m, err := b.client.Status(ctx, name)
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
	bs, err := b.client.Batches(ctx, name)
	require.NoError(t, err)
	require.Len(t, bs, int(m.Cursor.NextSeq))
	var sum int64
	for i, bt := range bs {
		require.Equal(t, int64(i), bt.Seq)
		require.Equal(t, batches.BatchSucceeded, bt.Status)
		if i == 0 {
			require.True(t, bt.LoInclusive, "the first batch includes the minimum")
			require.Equal(t, m.Min, bt.Lo)
		} else {
			require.False(t, bt.LoInclusive)
			require.Equal(t, bs[i-1].Hi, bt.Lo, "batch %d starts where batch %d ends: no gap, no overlap", i, i-1)
		}
		if i < len(bs)-1 {
			require.Equal(t, int64(m.Spec.BatchSize), bt.RowsAffected, "batch %d holds batch_size rows", i)
		}
		sum += bt.RowsAffected
	}
	require.Equal(t, m.Max, bs[len(bs)-1].Hi, "the last batch ends at the maximum")
	require.Equal(t, wantRows, sum, "every row in exactly one batch")
	require.Equal(t, wantRows, m.Counters.RowsAffected)
	require.Equal(t, float64(100), m.Progress.Percent)

	seen := map[int64]int{}
	for _, d := range b.exec.delivered(name) {
		seen[d.Seq]++
	}
	for seq, n := range seen {
		require.Equal(t, 1, n, "batch %d executed %d times", seq, n)
	}
	require.Len(t, seen, len(bs))
}

func TestPlansCoverKeyRange(t *testing.T) {
	t.Parallel()
	testenv.ForEachDialect(t, func(t *testing.T, db *testenv.Database) {
		t.Parallel()
		b := setup(t, db)
		ids := createItems(t, db, 2500)
		b.exec.start(t)
		b.startPlanner(t, "p1", nil)
		ctx := ctxFor(t, 60*time.Second)

		_, err := b.client.Enqueue(ctx, spec("all_rows", func(s *batches.Spec) { s.BatchSize = 130; s.Parallelism = 3 }))
		require.NoError(t, err)
		_, err = b.client.Enqueue(ctx, spec("filtered", func(s *batches.Spec) {
			s.BatchSize = 77
			s.Where = "grp <> 1"
			s.Table = "items"
		}))
		require.NoError(t, err)
		for _, name := range []string{"all_rows", "filtered"} {
			m, err := b.client.Wait(ctx, name)
			require.NoError(t, err)
			require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
		}
		b.requireExactCover(t, "all_rows", int64(len(ids)))
		b.requireExactCover(t, "filtered", db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE grp <> 1"))

		// The key range is the data's: min and max of the filtered rows.
		m, err := b.client.Status(ctx, "filtered")
		require.NoError(t, err)
		require.Equal(t, batches.IntKey(db.QueryInt(t, "SELECT MIN(id) FROM items WHERE grp <> 1")), m.Min)
		require.Equal(t, batches.IntKey(db.QueryInt(t, "SELECT MAX(id) FROM items WHERE grp <> 1")), m.Max)
	})
}

func TestPlansTextKeys(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	b := setup(t, db)
	db.Exec(t, "CREATE TABLE docs (k TEXT PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	db.Exec(t, "INSERT INTO docs (k) SELECT md5(i::text) FROM generate_series(1, 1000) AS i")
	b.exec.start(t)
	b.startPlanner(t, "p1", nil)
	ctx := ctxFor(t, 60*time.Second)
	_, err := b.client.Enqueue(ctx, spec("docs", func(s *batches.Spec) { s.Table = "docs"; s.BatchSize = 90 }))
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "docs")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
	require.True(t, m.Min.IsString())
	b.requireExactCover(t, "docs", 1000)
}

// TestPlannerCrashes kills the planner at each crash point of planning, over
// and over, and restarts it: the batches still cover the range exactly.
func TestPlannerCrashes(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	ids := createItems(t, db, 1200)
	b.exec.start(t)
	ctx := ctxFor(t, 90*time.Second)

	var mu sync.Mutex
	crashes := 0
	crashAt := func(point string) func(string, int64) error {
		return func(_ string, seq int64) error {
			mu.Lock()
			defer mu.Unlock()
			// Crash at each point for some batches, leaving others alone.
			if (point == "record" && seq%3 == 1) || (point == "cursor" && seq%3 == 2) {
				if crashes < 12 {
					crashes++
					return planner.ErrCrash
				}
			}
			return nil
		}
	}
	for i := range 3 {
		p, _, _ := b.startPlanner(t, fmt.Sprintf("p%d", i), nil)
		p.SetCrashHooks(crashAt("record"), crashAt("cursor"))
	}
	_, err := b.client.Enqueue(ctx, spec("crashy", func(s *batches.Spec) { s.BatchSize = 40; s.Parallelism = 2 }))
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "crashy")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
	mu.Lock()
	require.Equal(t, 12, crashes, "the planners crashed at both points")
	mu.Unlock()
	b.requireExactCover(t, "crashy", int64(len(ids)))
}

// TestRejectsBadInput sends every kind of bad spec: each is rejected with
// a reason on the migration.rejected event, removed from the queue, and
// changes nothing; a good spec afterwards still runs.
func TestRejectsBadInput(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	b := setup(t, db)
	createItems(t, db, 100)
	b.exec.start(t)
	b.startPlanner(t, "p1", nil)
	ctx := ctxFor(t, 60*time.Second)

	// A live migration whose name a different spec then tries to take.
	_, err := b.client.Enqueue(ctx, spec("taken", func(s *batches.Spec) { s.After = []string{"never_enqueued"} }))
	require.NoError(t, err)

	cases := []struct {
		name, spec, reason, token string
	}{
		{"not json", `this is not json`, "malformed JSON", events.InvalidToken},
		{"unknown field", `{"name": "m1", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = 1"}, "batchsize": 10}`, `batchsize: unknown field (did you mean "batch_size"?)`, "m1"},
		{"unknown kind", `{"name": "m2", "target": "main", "kind": "frobnicate", "table": "items"}`, `kind: unknown kind "frobnicate"`, "m2"},
		{"unknown target", `{"name": "m3", "target": "billing", "kind": "sql", "table": "items", "args": {"set": "n = 1"}}`, `target: unknown target "billing"; this planner knows main`, "m3"},
		{"missing table", `{"name": "m4", "target": "main", "kind": "sql", "table": "itemz", "args": {"set": "n = 1"}}`, `table: table "itemz" does not exist on target main`, "m4"},
		{"missing column", `{"name": "m5", "target": "main", "kind": "sql", "table": "items", "batch_column": "nope", "args": {"set": "n = 1"}}`, `batch_column: table items has no column "nope"`, "m5"},
		{"bad sizes", `{"name": "m6", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = 1"}, "batch_size": 0, "sub_batch_size": -3}`, "batch_size: must be at least 1, got 0", "m6"},
		{"sql in identifier", `{"name": "m7", "target": "main", "kind": "sql", "table": "items; DROP TABLE items", "args": {"set": "n = 1"}}`, "is not a plain table name", "m7"},
		{"name not a token", `{"name": "a.b", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = 1"}}`, `name: "a.b" is not a valid name`, events.InvalidToken},
		{"wrong key type", `{"name": "m8", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = 1"}, "min_value": "abc"}`, `min_value: "abc" does not fit column id`, "m8"},
		{"set names a missing column", `{"name": "m9", "target": "main", "kind": "sql", "table": "items", "args": {"set": "no_such_column = 1"}}`, "args: the database refuses the statement", "m9"},
		{"where does not parse", `{"name": "m10", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = 1"}, "where": "grp === 1"}`, "args, where: the database refuses the statement", "m10"},
		{"throttle query broken", `{"name": "m11", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = 1"}, "throttle": {"query": "SELECT busy FROM nowhere"}}`, "throttle.query: the database refuses the query", "m11"},
		{"different spec, live name", `{"name": "taken", "target": "main", "kind": "sql", "table": "items", "args": {"set": "n = 2"}}`, `a different migration named "taken" exists (enqueued)`, "taken"},
	}
	for _, tc := range cases {
		_, err := b.client.EnqueueJSON(ctx, []byte(tc.spec))
		var rejected *client.RejectedError
		require.True(t, errors.As(err, &rejected), "%s: want a rejection, got %v", tc.name, err)
		require.Contains(t, rejected.Reason, tc.reason, tc.name)

		// The event is where an outside subscriber sees it.
		msg, err := b.res.EventStream.GetLastMsgForSubject(ctx, "batchflow.events."+tc.token+".migration.rejected")
		require.NoError(t, err, tc.name)
		ev, err := events.Decode(msg.Data)
		require.NoError(t, err)
		require.Contains(t, ev.Data.Reason, tc.reason, tc.name)
	}

	// Nothing else changed: only the live migration is recorded, the queue is empty.
	list, err := b.client.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "taken", list[0].Spec.Name)
	require.Equal(t, "n = n + 1", mustSet(t, list[0].Spec))
	// The planner acknowledges a message right after reporting on it.
	require.Eventually(t, func() bool {
		info, err := b.res.EnqueueStream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 5*time.Second, 10*time.Millisecond, "rejected specs are removed from the queue")

	// The same spec again is a no-op reporting the existing migration.
	again, err := b.client.Enqueue(ctx, spec("taken", func(s *batches.Spec) { s.After = []string{"never_enqueued"} }))
	require.NoError(t, err)
	require.Equal(t, batches.MigrationEnqueued, again.Status)

	// And a good spec still runs.
	_, err = b.client.Enqueue(ctx, spec("good", nil))
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "good")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
}

func mustSet(t *testing.T, s batches.Spec) string {
	args, err := batches.DecodeArgs[batches.SQLArgs](s)
	require.NoError(t, err)
	return args.Set
}

func TestPauseResumeCancel(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	ids := createItems(t, db, 1000)
	b.exec.start(t)
	b.startPlanner(t, "p1", nil)
	ctx := ctxFor(t, 60*time.Second)

	b.exec.setHeld(true)
	_, err := b.client.Enqueue(ctx, spec("pausable", func(s *batches.Spec) { s.BatchSize = 50; s.Parallelism = 2 }))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, err := b.client.Status(ctx, "pausable")
		return err == nil && m.Cursor.NextSeq == 2
	}, 10*time.Second, 20*time.Millisecond, "two batches in flight")

	m, err := b.client.Pause(ctx, "pausable", "")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationPaused, m.Status)
	b.exec.setHeld(false)
	// The two batches in flight finish; no new batch is planned while paused.
	time.Sleep(time.Second)
	m, err = b.client.Status(ctx, "pausable")
	require.NoError(t, err)
	require.Equal(t, int64(2), m.Cursor.NextSeq, "no batch planned while paused")
	require.Equal(t, batches.MigrationPaused, m.Status)

	_, err = b.client.Pause(ctx, "pausable", "")
	require.ErrorIs(t, err, client.ErrInvalidState, "pausing twice is refused")

	_, err = b.client.Resume(ctx, "pausable", "")
	require.NoError(t, err)
	m, err = b.client.Wait(ctx, "pausable")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status)
	require.Equal(t, int64(len(ids)), m.Counters.RowsAffected)

	// Cancel: queued batches are purged, nothing more is planned.
	b.exec.setHeld(true)
	_, err = b.client.Enqueue(ctx, spec("cancellable", func(s *batches.Spec) { s.BatchSize = 50; s.Parallelism = 3 }))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, err := b.client.Status(ctx, "cancellable")
		return err == nil && m.Cursor.NextSeq == 3
	}, 10*time.Second, 20*time.Millisecond)
	m, err = b.client.Cancel(ctx, "cancellable", "wrong table")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationCancelled, m.Status)
	require.Equal(t, "wrong table", m.Reason)
	info, err := b.res.BatchStream.Info(ctx, jetstream.WithSubjectFilter("batchflow.batches.cancellable"))
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "queued batches purged")
	b.exec.setHeld(false)
	time.Sleep(500 * time.Millisecond)
	m, err = b.client.Status(ctx, "cancellable")
	require.NoError(t, err)
	require.Equal(t, int64(3), m.Cursor.NextSeq, "nothing planned after cancel")
	require.Empty(t, b.exec.delivered("cancellable"))

	_, err = b.client.Resume(ctx, "cancellable", "")
	require.ErrorIs(t, err, client.ErrInvalidState)
	_, err = b.client.Pause(ctx, "nope", "")
	require.ErrorIs(t, err, client.ErrNotFound)

	// Set changes the sizes of the next batches.
	b.exec.setHeld(true)
	_, err = b.client.Enqueue(ctx, spec("resized", func(s *batches.Spec) { s.BatchSize = 100; s.Parallelism = 1 }))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, err := b.client.Status(ctx, "resized")
		return err == nil && m.Cursor.NextSeq == 1
	}, 10*time.Second, 20*time.Millisecond)
	size := 250
	m, err = b.client.Set(ctx, "resized", client.Settings{BatchSize: &size})
	require.NoError(t, err)
	require.Equal(t, 250, m.Spec.BatchSize)
	bad := 0
	_, err = b.client.Set(ctx, "resized", client.Settings{Parallelism: &bad})
	require.ErrorIs(t, err, client.ErrInvalid)
	b.exec.setHeld(false)
	_, err = b.client.Wait(ctx, "resized")
	require.NoError(t, err)
	bs, err := b.client.Batches(ctx, "resized")
	require.NoError(t, err)
	require.Equal(t, int64(100), bs[0].RowsAffected)
	require.Equal(t, int64(250), bs[1].RowsAffected, "the new size applies to the next batch")
}

// TestAfterOrdering: a migration waits for its predecessors; a failed
// predecessor holds it until a retry succeeds.
func TestAfterOrdering(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	createItems(t, db, 300)
	db.Exec(t, "CREATE TABLE others (id INTEGER PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	db.Exec(t, "INSERT INTO others (id) VALUES (1), (2), (3)")
	b.exec.start(t)
	b.startPlanner(t, "p1", nil)
	ctx := ctxFor(t, 60*time.Second)

	b.exec.setFailing("first", true)
	_, err := b.client.Enqueue(ctx, spec("second", func(s *batches.Spec) { s.After = []string{"first"} }))
	require.NoError(t, err)
	_, err = b.client.Enqueue(ctx, spec("first", func(s *batches.Spec) { s.BatchSize = 100; s.MaxAttempts = 1 }))
	require.NoError(t, err)
	_, err = b.client.Enqueue(ctx, spec("unrelated", func(s *batches.Spec) { s.Table = "others" }))
	require.NoError(t, err)

	m, err := b.client.Wait(ctx, "first")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationFailed, m.Status)
	require.Contains(t, m.Reason, "told to fail")
	u, err := b.client.Wait(ctx, "unrelated")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, u.Status, "a migration without predecessors is not held")

	time.Sleep(300 * time.Millisecond)
	second, err := b.client.Status(ctx, "second")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationEnqueued, second.Status, "a failed predecessor holds the queue")
	require.Contains(t, second.Reason, "waiting for first to succeed (it is failed)")
	require.Nil(t, second.StartedAt)

	// Fixed and retried, the predecessor succeeds and releases the queue.
	b.exec.setFailing("first", false)
	_, err = b.client.Retry(ctx, "first", "")
	require.NoError(t, err)
	m, err = b.client.Wait(ctx, "first")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
	s2, err := b.client.Wait(ctx, "second")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, s2.Status)
	require.True(t, s2.StartedAt.After(*m.FinishedAt) || s2.StartedAt.Equal(*m.FinishedAt), "second started after first finished")
}

// TestLeaderFailover kills the leading planner without a goodbye (its
// connection dropped mid-migration); a standby takes over within 15 s and
// finishes with no batch planned or executed twice.
func TestLeaderFailover(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, db)
	ids := createItems(t, db, 1500)
	b.exec.start(t)
	ctx := ctxFor(t, 60*time.Second)

	// Default lease TTL (10 s): the takeover bound is the product's, not a test's.
	defaults := func(c *planner.Config) { c.LeaseTTL = 0 }
	_, _, leaderConn := b.startPlanner(t, "leader", defaults)
	require.Eventually(t, func() bool { return leaseHolder(t, b) == "leader" }, 10*time.Second, 20*time.Millisecond)
	b.startPlanner(t, "standby", defaults)

	b.exec.setHeld(true)
	_, err := b.client.Enqueue(ctx, spec("failover", func(s *batches.Spec) { s.BatchSize = 100; s.Parallelism = 2 }))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, err := b.client.Status(ctx, "failover")
		return err == nil && m.Cursor.NextSeq == 2
	}, 10*time.Second, 20*time.Millisecond)

	killed := time.Now()
	leaderConn.Close() // the leader is gone: no lease release, no goodbye
	require.Eventually(t, func() bool { return leaseHolder(t, b) == "standby" }, 20*time.Second, 50*time.Millisecond)
	takeover := time.Since(killed)
	t.Logf("standby took over %s after the leader died", takeover.Round(time.Millisecond))
	require.Less(t, takeover, 15*time.Second)

	b.exec.setHeld(false)
	m, err := b.client.Wait(ctx, "failover")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
	b.requireExactCover(t, "failover", int64(len(ids)))
}

func leaseHolder(t *testing.T, b *testBundle) string {
	entry, err := b.res.LeasesKV.Get(context.Background(), "planner")
	if err != nil {
		return ""
	}
	var v struct {
		Holder string `json:"holder"`
	}
	_ = json.Unmarshal(entry.Value(), &v)
	return v.Holder
}
