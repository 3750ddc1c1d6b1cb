package batches_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
)

func TestMigrationTransitions(t *testing.T) {
	t.Parallel()
	all := []batches.MigrationStatus{
		batches.MigrationEnqueued, batches.MigrationRunning, batches.MigrationPaused,
		batches.MigrationSucceeded, batches.MigrationFailed, batches.MigrationCancelled,
	}
	// Exactly the transitions of DESIGN.md §7.
	allowed := map[[2]batches.MigrationStatus]bool{
		{batches.MigrationEnqueued, batches.MigrationRunning}:   true,
		{batches.MigrationEnqueued, batches.MigrationCancelled}: true,
		{batches.MigrationRunning, batches.MigrationPaused}:     true,
		{batches.MigrationRunning, batches.MigrationSucceeded}:  true,
		{batches.MigrationRunning, batches.MigrationFailed}:     true,
		{batches.MigrationRunning, batches.MigrationCancelled}:  true,
		{batches.MigrationPaused, batches.MigrationRunning}:     true,
		{batches.MigrationPaused, batches.MigrationCancelled}:   true,
		{batches.MigrationFailed, batches.MigrationRunning}:     true,
	}
	for _, from := range all {
		require.True(t, from.Valid())
		for _, to := range all {
			want := allowed[[2]batches.MigrationStatus{from, to}]
			require.Equal(t, want, from.CanTransitionTo(to), "%s → %s", from, to)
			got, err := from.TransitionTo(to)
			if want {
				require.NoError(t, err)
				require.Equal(t, to, got)
			} else {
				require.True(t, errors.Is(err, batches.ErrInvalidTransition))
				require.ErrorContains(t, err, string(from)+" → "+string(to))
				require.Equal(t, from, got, "a refused transition leaves the status as it was")
			}
		}
	}
	require.False(t, batches.MigrationStatus("done").Valid())
	require.True(t, batches.MigrationFailed.Settled())
	require.False(t, batches.MigrationFailed.Final(), "a failed migration can be retried")
	require.False(t, batches.MigrationCancelled.Live(), "a cancelled migration frees its name")
	require.True(t, batches.MigrationSucceeded.Live(), "a succeeded migration keeps its name: enqueueing it again is a no-op")
}

func TestBatchTransitions(t *testing.T) {
	t.Parallel()
	all := []batches.BatchStatus{batches.BatchPending, batches.BatchRunning, batches.BatchSucceeded, batches.BatchFailed}
	allowed := map[[2]batches.BatchStatus]bool{
		{batches.BatchPending, batches.BatchRunning}:   true,
		{batches.BatchPending, batches.BatchFailed}:    true,
		{batches.BatchRunning, batches.BatchSucceeded}: true,
		{batches.BatchRunning, batches.BatchFailed}:    true,
		{batches.BatchRunning, batches.BatchPending}:   true,
		{batches.BatchFailed, batches.BatchPending}:    true,
	}
	for _, from := range all {
		require.True(t, from.Valid())
		for _, to := range all {
			want := allowed[[2]batches.BatchStatus{from, to}]
			require.Equal(t, want, from.CanTransitionTo(to), "%s → %s", from, to)
			_, err := from.TransitionTo(to)
			require.Equal(t, want, err == nil, "%s → %s: %v", from, to, err)
		}
	}
	_, err := batches.BatchSucceeded.TransitionTo(batches.BatchPending)
	require.ErrorIs(t, err, batches.ErrInvalidTransition, "a succeeded batch is never redone")
}

func TestAppendErrorKeepsRecent(t *testing.T) {
	t.Parallel()
	var h []batches.ErrorRecord
	for i := 1; i <= 25; i++ {
		h = batches.AppendError(h, batches.ErrorRecord{Attempt: i})
	}
	require.Len(t, h, batches.MaxErrorHistory)
	require.Equal(t, 16, h[0].Attempt)
	require.Equal(t, 25, h[len(h)-1].Attempt)
}
