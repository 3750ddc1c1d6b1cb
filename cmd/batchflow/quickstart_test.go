package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
)

// TestQuickstartProgressBar runs the quickstart in-process as on a
// terminal: a bar redrawn in place, with rows, time and rate, and the
// event lines above it.
func TestQuickstartProgressBar(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	q := &quickstart{rows: 50_000, out: &out, log: testenv.Logger(t), animate: true}
	require.NoError(t, q.run(testenv.ContextFor(t, 2*time.Minute)))
	t.Log(out.String())
	text := out.String()
	require.Contains(t, text, "\x1b[", "redrawn in place")
	require.Regexp(t, `backfilled 20 batches +done! \[50,000 rows in [0-9.]+m?s; [0-9,]+ rows/s\]`, text)
	require.Contains(t, text, "backfill_users_plan migration.succeeded")
	require.NotContains(t, text, "migration.progress", "the bar shows progress, not lines")
	require.Contains(t, text, "rows         50,000 backfilled (plan = 'free'), checked in SQL")
}

// TestQuickstartAsNewUser runs the quickstart as someone who just cloned
// the repository would: the binary, a fresh HOME, an empty working
// directory, no NATS, no database, no BATCHFLOW_* settings. It must
// succeed, say what happened, and leave nothing behind.
func TestQuickstartAsNewUser(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "./cmd/batchflow")
	home, work, tmp := t.TempDir(), t.TempDir(), t.TempDir()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "quickstart", "--rows", "100000")
	cmd.Dir = work
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TMPDIR=" + tmp}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	started := time.Now()
	err := cmd.Run()
	took := time.Since(started)
	t.Logf("quickstart --rows 100000 took %s\nstdout:\n%s\nstderr:\n%s", took, stdout.String(), stderr.String())
	require.NoError(t, err)

	out := stdout.String()
	for _, want := range []string{
		"1. Created users(id, email, signed_up_at, plan) with 100,000 rows",
		`"kind": "backfill_column"`,
		"backfill_users_plan migration.enqueued",
		"backfill_users_plan migration.started",
		"backfill_users_plan migration.succeeded: 100.0%, 100000 rows",
		"Summary",
		"rows         100,000 backfilled (plan = 'free'), checked in SQL: none left behind",
		"throughput ",
		"batches      20 of up to 5,000 rows",
		"Next steps",
		"batchflow run --target main=postgres://",
		"batchflow enqueue --file backfill.json",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, "\x1b[", "not a terminal: plain lines, no animation")
	require.NotContains(t, out, "batch.process_batch", "sub-batches are summarised, not listed")
	require.Empty(t, stderr.String(), "nothing worth a warning happened")

	for _, dir := range []string{work, home, tmp} {
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		require.Empty(t, names, "left behind in %s: %s", dir, strings.Join(names, ", "))
	}
}
