package executor_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/sink"
)

// flakyKind fails its first calls with an error it does not classify, then
// doubles n on its rows.
type flakyKind struct {
	failures atomic.Int32
	err      func(error) error // how the failure is marked; nil: not at all
}

func (k *flakyKind) ProcessBatch(ctx context.Context, tx sink.Tx, b executor.SubBatch) (int64, error) {
	if k.failures.Add(-1) >= 0 {
		err := errors.New("upstream service unavailable")
		if k.err != nil {
			err = k.err(err)
		}
		return 0, err
	}
	q := b.Builder()
	q.SQL("UPDATE ").Ident(b.Table.QualifiedName()).SQL(" SET n = n + 10 WHERE ").Write(b.Rows)
	return tx.Exec(ctx, q.String(), q.Args()...)
}

func TestCustomKindErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		mark       func(error) error
		wantStatus batches.MigrationStatus
		attempts   int
	}{
		// An error the kind does not classify fails the attempt; the batch
		// is retried with backoff and succeeds.
		{"unmarked", nil, batches.MigrationSucceeded, 2},
		// Retry: in place first, so the second call already succeeds.
		{"retry", executor.Retry, batches.MigrationSucceeded, 0},
		// Fail: the batch fails at once, however many attempts remain.
		{"fail", executor.Fail, batches.MigrationFailed, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testenv.SQLite(t)
			b := setup(t, db)
			createItems(t, db, 100)
			b.startPlanner(t)
			kind := &flakyKind{err: tc.mark}
			kind.failures.Store(2)
			if tc.name == "retry" {
				kind.failures.Store(1)
			}
			b.startExecutor(t, "ex", func(c *executor.Config) {
				c.Kinds = map[string]executor.Kind{"flaky_" + tc.name: kind}
				c.RetryBackoff = []time.Duration{50 * time.Millisecond}
			})
			ctx := ctxFor(t, time.Minute)
			name := "custom_" + tc.name
			_, err := b.client.Enqueue(ctx, batches.Spec{Name: name, Target: "main", Kind: "flaky_" + tc.name, Table: "items", MaxAttempts: 5})
			require.NoError(t, err)
			m, err := b.client.Wait(ctx, name)
			require.NoError(t, err)
			require.Equal(t, tc.wantStatus, m.Status, m.Reason)
			require.Equal(t, tc.attempts, b.batchRecord(t, name, 0).Attempts)
			if tc.wantStatus == batches.MigrationSucceeded {
				require.Equal(t, int64(100), db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n = 10"), "applied once")
			} else {
				require.Contains(t, b.events.WaitFor(t, name, events.BatchFailed, 1, 30*time.Second)[0].Data.Error.Message, "upstream service unavailable")
				require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM items WHERE n <> 0"))
			}
		})
	}
	class, ok := executor.ClassOf(executor.SkipRows(errors.New("bad row")))
	require.True(t, ok)
	require.Equal(t, batches.ClassData, class)
	_, ok = executor.ClassOf(errors.New("plain"))
	require.False(t, ok)
}
