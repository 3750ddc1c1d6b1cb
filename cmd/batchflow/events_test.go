package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
)

// syncBuffer is a bytes.Buffer safe to read while the command writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func setupEvents(t *testing.T) (*testenv.JS, *events.Publisher) {
	t.Helper()
	js := testenv.JetStreamListening(t)
	_, err := bus.Bootstrap(context.Background(), js.JetStream, bus.MustNames(""), bus.Topology{})
	require.NoError(t, err)
	return js, events.NewPublisher(js.JetStream, "", "planner")
}

func TestEventsCommandPrintsHistory(t *testing.T) {
	t.Parallel()
	js, pub := setupEvents(t)
	ctx := context.Background()
	_, err := pub.Publish(ctx, events.MigrationStarted, events.Data{Migration: "backfill_users", Status: batches.MigrationRunning})
	require.NoError(t, err)
	_, err = pub.Publish(ctx, events.BatchCompleted, events.Data{Migration: "backfill_users", Batch: &events.BatchRef{Seq: 3, Lo: batches.IntKey(10), Hi: batches.IntKey(20)}, RowsAffected: 10, DurationMS: 5})
	require.NoError(t, err)
	_, err = pub.Publish(ctx, events.MigrationStarted, events.Data{Migration: "other", Status: batches.MigrationRunning})
	require.NoError(t, err)

	var out, errOut syncBuffer
	err = newApp(&out, &errOut).Run(ctx, []string{"batchflow", "--nats-url", js.URL, "events", "--migration", "backfill_users"})
	require.NoError(t, err, errOut.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2, out.String())
	require.Contains(t, lines[0], "backfill_users migration.started")
	require.Contains(t, lines[1], "backfill_users batch.completed #3 (10, 20]: 10 rows in 5ms")
}

func TestEventsCommandFollowsJSON(t *testing.T) {
	t.Parallel()
	js, pub := setupEvents(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- newApp(&out, &errOut).Run(ctx, []string{"batchflow", "--nats-url", js.URL, "events", "--follow", "--json"})
	}()

	// The command may subscribe after the first publish; keep publishing
	// until one shows up, as a person watching would see.
	require.Eventually(t, func() bool {
		_, err := pub.Publish(context.Background(), events.MigrationFailed, events.Data{Migration: "m1", Reason: "batch 2 failed"})
		require.NoError(t, err)
		return strings.Contains(out.String(), "batchflow.migration.failed")
	}, 10*time.Second, 100*time.Millisecond, errOut.String())
	cancel()
	require.NoError(t, <-done)

	first := strings.SplitN(out.String(), "\n", 2)[0]
	ev, err := events.Decode([]byte(first))
	require.NoError(t, err, first)
	require.Equal(t, events.MigrationFailed, ev.Type)
	require.Equal(t, "batch 2 failed", ev.Data.Reason)
	var raw map[string]any
	require.NoError(t, json.Unmarshal([]byte(first), &raw))
	require.Equal(t, "1.0", raw["specversion"])
}

func TestEventsCommandUnreachable(t *testing.T) {
	t.Parallel()
	var out, errOut syncBuffer
	err := newApp(&out, &errOut).Run(context.Background(), []string{"batchflow", "--nats-url", "nats://alice:s3cret@127.0.0.1:1", "events"})
	require.Error(t, err)
	require.Contains(t, err.Error(), "cannot reach NATS at nats://alice:xxxxx@127.0.0.1:1")
	require.NotContains(t, err.Error(), "s3cret")
}
