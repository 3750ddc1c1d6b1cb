package events_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
)

var update = flag.Bool("update", false, "rewrite golden files")

func ptr[T any](v T) *T { return &v }

// sampleEvents has one event of every type, filled as its emitter fills it.
func sampleEvents() map[events.Type]events.Data {
	batch := &events.BatchRef{Seq: 12, Lo: batches.IntKey(240000), Hi: batches.IntKey(260000)}
	progress := &events.Progress{Percent: 42.5, RowsAffected: 212500, BatchesTotal: 25, BatchesSucceeded: 10, RowsPerSecond: 15320.4, ETASeconds: 19}
	return map[events.Type]events.Data{
		events.BatchStarted:      {Migration: "backfill_users", Batch: batch, Attempt: 1, Epoch: 1, Executor: "executor/host-a/4242/2", Checkpoint: ptr(batches.IntKey(240000))},
		events.BatchProcessBatch: {Migration: "backfill_users", Batch: batch, Attempt: 1, RowsAffected: 1000, DurationMS: 212, Executor: "executor/host-a/4242/2", SubBatch: &events.SubBatch{Lo: batches.IntKey(240000), Hi: batches.IntKey(241000), Size: 1000}},
		events.BatchCompleted:    {Migration: "backfill_users", Batch: batch, Attempt: 1, RowsAffected: 20000, DurationMS: 812, Executor: "executor/host-a/4242/2"},
		events.BatchRetried: {Migration: "backfill_users", Batch: batch, Attempt: 2, RetryInMS: 30000, Executor: "executor/host-a/4242/2",
			Error: &events.Error{Class: batches.ClassData, Message: `ERROR: invalid input syntax for type integer: "abc" (SQLSTATE 22P02)`}},
		events.BatchThrottled:       {Migration: "backfill_users", Batch: batch, Throttled: ptr(true), Reason: "replication lag 7.2s over the 5s limit", Executor: "executor/host-a/4242/2"},
		events.BatchFailed:          {Migration: "backfill_users", Batch: batch, Attempt: 5, Error: &events.Error{Class: batches.ClassFatal, Message: "permission denied for table users"}},
		events.BatchStalled:         {Migration: "backfill_users", Batch: batch, Epoch: 2, PreviousOwner: "executor/host-b/17/0", StalledForMS: 46012, Checkpoint: ptr(batches.IntKey(251000))},
		events.BatchSubBatchResized: {Migration: "backfill_users", Batch: batch, SubBatchSize: 1500, PreviousSubBatchSize: 1000},
		events.MigrationEnqueued:    {Migration: "backfill_users", Status: batches.MigrationEnqueued},
		events.MigrationRejected: {Migration: "_invalid", Reason: "invalid migration spec: name: required",
			Problems: []batches.Problem{{Field: "name", Message: "required"}}},
		events.MigrationStarted:   {Migration: "backfill_users", Status: batches.MigrationRunning},
		events.MigrationPaused:    {Migration: "backfill_users", Status: batches.MigrationPaused, Reason: "paused by operator"},
		events.MigrationResumed:   {Migration: "backfill_users", Status: batches.MigrationRunning},
		events.MigrationCancelled: {Migration: "backfill_users", Status: batches.MigrationCancelled, Reason: "cancelled by operator"},
		events.MigrationSucceeded: {Migration: "backfill_users", Status: batches.MigrationSucceeded, RowsAffected: 500000, DurationMS: 33120, Progress: &events.Progress{Percent: 100, RowsAffected: 500000, BatchesTotal: 25, BatchesSucceeded: 25, ETASeconds: 0}},
		events.MigrationFailed:    {Migration: "backfill_users", Status: batches.MigrationFailed, Reason: "batch 12 failed after 5 attempts", Error: &events.Error{Class: batches.ClassData, Message: "value too long"}},
		events.MigrationProgress:  {Migration: "backfill_users", Status: batches.MigrationRunning, Progress: progress},
	}
}

// TestEnvelopeGolden pins the JSON of every event type: it is a contract
// for the programs that consume events.
func TestEnvelopeGolden(t *testing.T) {
	t.Parallel()
	for typ, data := range sampleEvents() {
		t.Run(typ.Name()+"_"+string(typ.Scope()), func(t *testing.T) {
			t.Parallel()
			ev := events.Event{
				SpecVersion: events.SpecVersion, ID: "Qp3m2bHqrn6dGvQ1k4ZVfA", Source: "batchflow/executor/host-a/4242",
				Type: typ, Subject: data.Migration, Time: time.Date(2026, 11, 21, 9, 30, 0, 0, time.UTC),
				DataContentType: "application/json", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				Data: data,
			}
			if typ.Scope() == events.ScopeBatch {
				ev.Subject = "backfill_users/12"
			}
			got, err := json.MarshalIndent(ev, "", "  ")
			require.NoError(t, err)
			got = append(got, '\n')
			golden := filepath.Join("testdata", string(typ)+".json")
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test -update to create it")
			require.Equal(t, string(want), string(got))

			back, err := events.Decode(want)
			require.NoError(t, err)
			require.Equal(t, ev, back)
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	for name, data := range map[string]string{
		"not json":     `{`,
		"wrong spec":   `{"specversion":"0.3","id":"x","type":"batchflow.batch.started"}`,
		"foreign type": `{"specversion":"1.0","id":"x","type":"com.example.order.created"}`,
		"no id":        `{"specversion":"1.0","type":"batchflow.batch.started"}`,
	} {
		_, err := events.Decode([]byte(data))
		require.Error(t, err, name)
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	samples := sampleEvents()
	cases := map[events.Type]string{
		events.BatchCompleted:       "backfill_users batch.completed #12 (240000, 260000] attempt 1: 20000 rows in 812ms",
		events.BatchRetried:         `backfill_users batch.retried #12 (240000, 260000] attempt 2: retry in 30s; data error: ERROR: invalid input syntax for type integer: "abc" (SQLSTATE 22P02)`,
		events.BatchThrottled:       "backfill_users batch.throttled #12 (240000, 260000]: throttled; replication lag 7.2s over the 5s limit",
		events.BatchStalled:         "backfill_users batch.stalled #12 (240000, 260000]: no progress for 46.012s from executor/host-b/17/0",
		events.BatchSubBatchResized: "backfill_users batch.sub_batch_resized #12 (240000, 260000]: sub-batch 1000 → 1500 rows",
		events.MigrationProgress:    "backfill_users migration.progress: 42.5%, 212500 rows, 10/25 batches, 15320 rows/s, ETA 19s",
		events.MigrationRejected:    "_invalid migration.rejected: invalid migration spec: name: required",
	}
	for typ, want := range cases {
		ev := events.Event{Type: typ, Data: samples[typ]}
		require.Equal(t, want, ev.Summary())
	}
	first := events.Event{Type: events.BatchStarted, Data: events.Data{Migration: "m", Batch: &events.BatchRef{Seq: 0, Lo: batches.StringKey("a"), LoInclusive: true, Hi: batches.StringKey("k")}}}
	require.Equal(t, `m batch.started #0 ["a", "k"]`, first.Summary(), "the first batch includes the minimum")
}
