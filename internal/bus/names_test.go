package bus_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/bus"
)

func TestTermReasonRoundTrip(t *testing.T) {
	t.Parallel()
	reason := bus.TermReason("backfill-users_2", 41, 3, "failed after 5 attempt(s): ERROR: value too long: x")
	m, seq, epoch, why, ok := bus.ParseTermReason(reason)
	require.True(t, ok)
	require.Equal(t, "backfill-users_2", m)
	require.Equal(t, int64(41), seq)
	require.Equal(t, int64(3), epoch)
	require.Equal(t, "failed after 5 attempt(s): ERROR: value too long: x", why)
	for _, bad := range []string{"", "unreadable batch message", "batch m epoch 1: x", "batch m.x epoch 1: x", "batch m.1 epoch: x"} {
		_, _, _, _, ok := bus.ParseTermReason(bad)
		require.False(t, ok, bad)
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	n := bus.MustNames("acme")
	require.Equal(t, "ACME_BATCHES", n.BatchStream)
	require.Equal(t, "acme.batches.m1", n.BatchSubject("m1"))
	require.Equal(t, "acme.api.pause", n.APISubject("pause"))
	require.Equal(t, "acme_leases", n.LeasesKV)
	require.Equal(t, "m1.7.2", bus.BatchMsgID("m1", 7, 2))
	for _, bad := range []string{"ACME", "a.b", "a*", "-x", "this-prefix-is-far-too-long-to-be-a-prefix"} {
		_, err := bus.NewNames(bad)
		require.Error(t, err, bad)
	}
}
