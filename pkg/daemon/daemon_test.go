package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
	"github.com/batchflow/batchflow/pkg/events"
)

// daemonUnderTest is one daemon's command running in the test process, as
// its binary would, on --http-addr 127.0.0.1:0.
type daemonUnderTest struct {
	name string
	url  string // http://127.0.0.1:<port>

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs cmd with args after the NATS URL, the HTTP address and a
// debug log, and returns once it serves HTTP. The daemon stops at cleanup
// if the test has not stopped it.
func start(t *testing.T, cmd *cli.Command, natsURL string, args ...string) *daemonUnderTest {
	t.Helper()
	listening := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), listeningKey{}, func(a net.Addr) { listening <- a }))
	d := &daemonUnderTest{name: cmd.Name, cancel: cancel, done: make(chan error, 1)}
	cmd.ErrWriter = &testLog{t: t}
	cmd.Writer = cmd.ErrWriter
	argv := append([]string{cmd.Name, "--nats-url", natsURL, "--http-addr", "127.0.0.1:0", "--log-level", "debug"}, args...)
	go func() { d.done <- cmd.Run(ctx, argv) }()
	t.Cleanup(func() { _ = d.stop() })
	select {
	case a := <-listening:
		d.url = "http://" + a.String()
	case err := <-d.done:
		t.Fatalf("%s exited before serving HTTP: %v", cmd.Name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s does not serve HTTP after 30s", cmd.Name)
	}
	return d
}

// stop does what SIGTERM does and waits for the command to return.
func (d *daemonUnderTest) stop() error {
	d.once.Do(func() {
		d.cancel()
		d.err = <-d.done
	})
	return d.err
}

// get fetches path and returns the status and the body.
func (d *daemonUnderTest) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(d.url + path)
	require.NoError(t, err, "%s %s", d.name, path)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

func (d *daemonUnderTest) health(t *testing.T) (int, healthReport) {
	t.Helper()
	code, body := d.get(t, "/healthz")
	var r healthReport
	require.NoError(t, json.Unmarshal(body, &r), "%s", body)
	return code, r
}

// metrics scrapes /metrics and parses the Prometheus text format.
func (d *daemonUnderTest) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := d.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code, "%s", body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	require.NoError(t, err, "%s", body)
	return families
}

// sample finds the series of family with the given labels (others may
// be present), or nil.
func sample(families map[string]*dto.MetricFamily, family string, labels ...string) *dto.Metric {
	f := families[family]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is a counter's, gauge's or untyped series' value; -1 when absent.
func value(families map[string]*dto.MetricFamily, family string, labels ...string) float64 {
	m := sample(families, family, labels...)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return m.GetUntyped().GetValue()
}

// histogramCount is a histogram series' count; 0 when absent.
func histogramCount(families map[string]*dto.MetricFamily, family string, labels ...string) uint64 {
	return sample(families, family, labels...).GetHistogram().GetSampleCount()
}

// TestHealthAndMetrics runs the three daemons' commands against a
// listening JetStream and a SQLite target, runs a migration, reads their
// /healthz and /metrics, and shuts the NATS server down under them.
func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	js := testenv.JetStreamListening(t)
	db := testenv.SQLite(t)
	db.Exec(t, "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	var values []string
	for i := 1; i <= 300; i++ {
		values = append(values, fmt.Sprintf("(%d)", i))
	}
	db.Exec(t, "INSERT INTO items (id) VALUES "+strings.Join(values, ", "))
	target := "main=" + db.DSN

	planner := start(t, Planner(), js.URL, "--target", target)
	executor := start(t, Executor(nil), js.URL, "--target", target, "--concurrency", "2")
	watchdog := start(t, Watchdog(), js.URL)

	c, err := client.New(context.Background(), js.Conn, client.Options{})
	require.NoError(t, err)
	ctx := testenv.ContextFor(t, time.Minute)
	_, err = c.Enqueue(ctx, batches.Spec{Name: "bump", Target: "main", Kind: batches.KindSQL, Table: "items",
		Args: json.RawMessage(`{"set": "n = n + 1"}`), BatchSize: 100, SubBatchSize: 25})
	require.NoError(t, err)
	m, err := c.Wait(ctx, "bump")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
	require.Equal(t, int64(300), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 1"))
	planned := float64(m.Counters.BatchesPlanned)
	require.Positive(t, planned)

	// The executor's account of the migration. A batch is over for the
	// metrics once its worker is done with it, just after its record says
	// succeeded, which is what Wait sees.
	require.Eventually(t, func() bool {
		em := executor.metrics(t)
		return histogramCount(em, "batchflow_batch_duration_seconds", "migration", "bump", "outcome", "succeeded") == uint64(planned) &&
			value(em, "batchflow_batches_in_flight", "migration", "bump") == 0
	}, 10*time.Second, 20*time.Millisecond, "every batch settled")
	em := executor.metrics(t)
	require.Equal(t, float64(300), value(em, "batchflow_rows_applied_total", "migration", "bump"))
	require.Positive(t, histogramCount(em, "batchflow_sub_batch_duration_seconds", "migration", "bump", "outcome", "committed"))
	require.Equal(t, histogramCount(em, "batchflow_sub_batch_duration_seconds", "migration", "bump", "outcome", "committed"),
		histogramCount(em, "batchflow_sub_batch_size", "migration", "bump"), "one size per committed sub-batch")
	require.Positive(t, value(em, "go_goroutines"), "the Go runtime's metrics are there too")

	// The planner's: it leads, planned every batch, and counts the
	// migration as succeeded within a tick.
	require.Eventually(t, func() bool {
		pm := planner.metrics(t)
		return value(pm, "batchflow_migrations", "status", "succeeded") == 1 &&
			value(pm, "batchflow_planner_leader") == 1 &&
			value(pm, "batchflow_batches_planned_total", "migration", "bump") == planned
	}, 10*time.Second, 50*time.Millisecond, "planner metrics")
	pm := planner.metrics(t)
	require.Zero(t, value(pm, "batchflow_migrations", "status", "failed"), "zeros are reported")

	// The watchdog's: nothing stalled, nothing dead, but it serves.
	wm := watchdog.metrics(t)
	require.Positive(t, value(wm, "go_goroutines"))
	require.Nil(t, sample(wm, "batchflow_batches_republished_total"))

	code, h := planner.health(t)
	require.Equal(t, http.StatusOK, code, "%+v", h)
	require.Equal(t, healthReport{Status: "ok", Component: "planner", NATS: "connected", Running: true, Leader: new(true)}, h)
	code, h = executor.health(t)
	require.Equal(t, http.StatusOK, code, "%+v", h)
	require.Equal(t, healthReport{Status: "ok", Component: "executor", NATS: "connected", Running: true, Workers: new(2), Batches: new(0)}, h)
	code, h = watchdog.health(t)
	require.Equal(t, http.StatusOK, code, "%+v", h)
	require.Equal(t, healthReport{Status: "ok", Component: "watchdog", NATS: "connected", Running: true}, h)

	// NATS goes away: every daemon says it is unavailable, and still
	// serves its metrics.
	js.Server.Shutdown()
	for _, d := range []*daemonUnderTest{planner, executor, watchdog} {
		require.Eventually(t, func() bool {
			code, h := d.health(t)
			return code == http.StatusServiceUnavailable && h.Status == "unavailable" && strings.Contains(h.Reason, "NATS")
		}, 10*time.Second, 20*time.Millisecond, "%s /healthz", d.name)
		d.metrics(t)
	}

	// SIGTERM with NATS unreachable: each stops within its budget.
	var wg sync.WaitGroup
	for _, d := range []*daemonUnderTest{planner, executor, watchdog} {
		wg.Go(func() {
			began := time.Now()
			err := d.stop()
			took := time.Since(began)
			t.Logf("%s stopped in %s with NATS down: %v", d.name, took.Round(time.Millisecond), err)
			require.Less(t, took, 10*time.Second, d.name)
		})
	}
	wg.Wait()
	_, err = http.Get(executor.url + "/healthz")
	require.Error(t, err, "the HTTP server is shut down with the daemon")
}

// TestExecutorStopsPromptly: SIGTERM while the executor waits (the spec's
// batch_pause after a batch, its sub_batch_pause, a throttle that does not
// lift) ends it within 10 seconds, however long the wait.
func TestExecutorStopsPromptly(t *testing.T) {
	t.Parallel()
	throttled := func(s *batches.Spec) { s.Throttle = &batches.Throttle{Query: "SELECT 1 = 1"} }
	for _, tc := range []struct {
		name     string
		spec     func(*batches.Spec)
		event    events.Type // what the executor is waiting after
		natsDown bool        // the NATS server is shut down first
	}{
		{"batch pause", func(s *batches.Spec) { s.BatchPause = batches.Duration(time.Hour) }, events.BatchCompleted, false},
		{"sub-batch pause", func(s *batches.Spec) {
			s.SubBatchPause = batches.Duration(time.Hour)
			s.HealthCheck = batches.HealthCheck{Frequency: batches.Duration(time.Minute), Timeout: batches.Duration(2 * time.Hour)}
		}, events.BatchProcessBatch, false},
		{"throttled", throttled, events.BatchThrottled, false},
		{"throttled with NATS down", throttled, events.BatchThrottled, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js := testenv.JetStreamListening(t)
			db := testenv.SQLite(t)
			db.Exec(t, "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
			db.Exec(t, "INSERT INTO items (id) VALUES (1), (2), (3), (4), (5), (6), (7), (8)")
			target := "main=" + db.DSN
			start(t, Planner(), js.URL, "--target", target)
			executor := start(t, Executor(nil), js.URL, "--target", target, "--concurrency", "1")
			log := testenv.Events(t, js.JetStream) // the daemons made the streams

			c, err := client.New(context.Background(), js.Conn, client.Options{})
			require.NoError(t, err)
			ctx := testenv.ContextFor(t, time.Minute)
			spec := batches.Spec{Name: "waiting", Target: "main", Kind: batches.KindSQL, Table: "items",
				Args: json.RawMessage(`{"set": "n = n + 1"}`), BatchSize: 4, SubBatchSize: 2, Parallelism: 1}
			tc.spec(&spec)
			_, err = c.Enqueue(ctx, spec)
			require.NoError(t, err)
			log.WaitFor(t, "waiting", tc.event, 1, 30*time.Second)
			if tc.natsDown {
				js.Server.Shutdown() // the hand-back and the drain cannot reach it
			}

			began := time.Now()
			require.NoError(t, executor.stop())
			took := time.Since(began)
			t.Logf("executor stopped in %s", took.Round(time.Millisecond))
			require.Less(t, took, 10*time.Second)
			require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n > 1"), "nothing applied twice")
		})
	}
}

// TestHealthWhileStopping: a daemon whose shutdown has begun answers 503
// even while NATS is still connected and its component finishing.
func TestHealthWhileStopping(t *testing.T) {
	t.Parallel()
	js := testenv.JetStream(t)
	stopping := false
	h := &healthHandler{component: "watchdog", conn: js.Conn, stopping: func() bool { return stopping },
		check: func(r *healthReport) string { r.Running = true; return "" }}
	serve := func() (int, healthReport) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		var r healthReport
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &r))
		require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		return rec.Code, r
	}
	code, r := serve()
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", r.Status)
	stopping = true
	code, r = serve()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, healthReport{Status: "unavailable", Component: "watchdog", NATS: "connected", Reason: "shutting down", Running: true}, r)
}

// TestBadHTTPAddr: a malformed or taken address stops the daemon at once,
// naming the flag.
func TestBadHTTPAddr(t *testing.T) {
	t.Parallel()
	js := testenv.JetStreamListening(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	for addr, want := range map[string]string{
		"9090":                    "--http-addr (BATCHFLOW_HTTP_ADDR) wants HOST:PORT or :PORT",
		"127.0.0.1:http-ish":      "is not a number",
		taken.Addr().String():     "--http-addr: listen tcp",
		"256.256.256.256:0":       "--http-addr: listen tcp",
		":" + fmt.Sprint(1<<16+1): "is not a number from 0 to 65535",
	} {
		cmd := Watchdog()
		cmd.ErrWriter = &testLog{t: t}
		err := cmd.Run(context.Background(), []string{"watchdog", "--nats-url", js.URL, "--http-addr", addr})
		require.ErrorContains(t, err, want, addr)
	}
}

// testLog writes a daemon's log lines to the test's log.
type testLog struct{ t *testing.T }

func (l *testLog) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a line after the test ended is dropped
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
