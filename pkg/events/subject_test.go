package events_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/events"
)

func TestSubject(t *testing.T) {
	t.Parallel()
	cases := []struct {
		migration string
		typ       events.Type
		want      string
	}{
		{"backfill_users", events.BatchCompleted, "batchflow.events.backfill_users.batch.completed"},
		{"m-1", events.MigrationProgress, "batchflow.events.m-1.migration.progress"},
		{"m1", events.BatchSubBatchResized, "batchflow.events.m1.batch.sub_batch_resized"},
		// Names that cannot be a single subject token are reported under _invalid.
		{"a.b", events.MigrationRejected, "batchflow.events._invalid.migration.rejected"},
		{"*", events.MigrationRejected, "batchflow.events._invalid.migration.rejected"},
		{">", events.MigrationRejected, "batchflow.events._invalid.migration.rejected"},
		{"has space", events.MigrationRejected, "batchflow.events._invalid.migration.rejected"},
		{"", events.MigrationRejected, "batchflow.events._invalid.migration.rejected"},
		{"tab\there", events.MigrationRejected, "batchflow.events._invalid.migration.rejected"},
		{"ünïcode", events.MigrationRejected, "batchflow.events._invalid.migration.rejected"},
	}
	for _, tc := range cases {
		got := events.Subject("batchflow", tc.migration, tc.typ)
		require.Equal(t, tc.want, got, "migration %q", tc.migration)

		m, typ, err := events.ParseSubject("batchflow", got)
		require.NoError(t, err)
		require.Equal(t, tc.typ, typ)
		require.Equal(t, events.MigrationToken(tc.migration), m)
	}
}

func TestParseSubjectRejects(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"batchflow.enqueue",
		"other.events.m.batch.completed",
		"batchflow.events.m.batch",
		"batchflow.events.m.batch.completed.extra",
		"batchflow.events.m.job.completed",
		"batchflow.events.*.batch.completed",
	} {
		_, _, err := events.ParseSubject("batchflow", s)
		require.Error(t, err, s)
	}
}

func TestFilterSubject(t *testing.T) {
	t.Parallel()
	require.Equal(t, "batchflow.events.*.*.*", events.FilterSubject("batchflow", "", ""))
	require.Equal(t, "acme.events.m1.*.*", events.FilterSubject("acme", "m1", ""))
	require.Equal(t, "batchflow.events.*.migration.failed", events.FilterSubject("batchflow", "", events.MigrationFailed))
	require.Equal(t, "batchflow.events.m1.batch.retried", events.FilterSubject("batchflow", "m1", events.BatchRetried))
}

func TestTypes(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, typ := range events.Types() {
		require.True(t, typ.Valid(), typ)
		require.Equal(t, typ, events.NewType(typ.Scope(), typ.Name()))
		require.False(t, seen[typ.Name()+string(typ.Scope())], "duplicate %s", typ)
		seen[typ.Name()+string(typ.Scope())] = true
	}
	require.Len(t, events.Types(), 17)
	require.Equal(t, events.ScopeBatch, events.BatchProcessBatch.Scope())
	require.Equal(t, "process_batch", events.BatchProcessBatch.Name())
	for _, bad := range []events.Type{"", "batchflow.batch", "batchflow.job.started", "other.batch.started", "batchflow.batch.a.b", "batchflow.batch.*"} {
		require.False(t, bad.Valid(), bad)
	}
}
