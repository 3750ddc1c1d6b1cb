package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/term"

	"github.com/batchflow/batchflow/pkg/batches"
)

// isTerminal reports whether w is a terminal that can show animation: a
// progress bar redrawn in place. Anything else (a pipe, a file, CI logs,
// TERM=dumb) gets plain lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}

// count writes n with thousands separators: 1,000,000.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3+1)
	if neg {
		out = append(out, '-')
	}
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// perSecond writes a rate of rows: "85,210 rows/s".
func perSecond(r float64) string {
	return count(int64(r+0.5)) + " rows/s"
}

// eta writes a migration's estimate of the time left; "?" while unknown.
func eta(seconds int64) string {
	if seconds < 0 {
		return "?"
	}
	return roundDuration(time.Duration(seconds) * time.Second).String()
}

// roundDuration keeps durations readable: 12.3s, 4m10s, 2h5m.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	case d < time.Hour:
		return d.Round(time.Second)
	default:
		return d.Round(time.Minute)
	}
}

// elapsed is how long a migration has run: to its end once settled.
func elapsed(m *batches.Migration, now time.Time) time.Duration {
	if m.StartedAt == nil {
		return 0
	}
	end := now
	if m.FinishedAt != nil {
		end = *m.FinishedAt
	}
	return end.Sub(*m.StartedAt)
}

// outcomeLine says how a settled migration ended, in one line.
func outcomeLine(m *batches.Migration) string {
	name := m.Spec.Name
	switch m.Status {
	case batches.MigrationSucceeded:
		d := elapsed(m, time.Now())
		line := fmt.Sprintf("%s succeeded: %s rows in %s, %s batches", name, count(m.Counters.RowsAffected),
			roundDuration(d), count(m.Counters.BatchesSucceeded))
		if m.Counters.FailedKeys > 0 {
			line += fmt.Sprintf(", %s rows skipped (failed_keys in `batchflow status %s --json`)", count(m.Counters.FailedKeys), name)
		}
		return line
	case batches.MigrationFailed:
		line := name + " failed"
		if m.Reason != "" {
			line += ": " + m.Reason
		}
		return line
	case batches.MigrationCancelled:
		line := name + " was cancelled"
		if m.Reason != "" {
			line += ": " + m.Reason
		}
		return line
	}
	return fmt.Sprintf("%s is %s", name, m.Status)
}

// printOutcome prints a settled migration's outcome, and for a failure its
// last error and what to do next.
func printOutcome(w io.Writer, m *batches.Migration) {
	fmt.Fprintln(w, outcomeLine(m))
	if m.Status == batches.MigrationFailed {
		if e := m.LastError; e != nil {
			fmt.Fprintf(w, "  last error: %s\n", errorLine(e))
		}
		fmt.Fprintf(w, "  fix the cause, then `batchflow retry %s` (or `batchflow cancel %s`)\n", m.Spec.Name, m.Spec.Name)
	}
}

// errorLine writes an error record: class, where, message.
func errorLine(e *batches.ErrorRecord) string {
	where := ""
	if e.Seq > 0 || e.Attempt > 0 {
		where = fmt.Sprintf(" in batch #%d", e.Seq)
		if e.Attempt > 0 {
			where += fmt.Sprintf(" attempt %d", e.Attempt)
		}
	}
	class := string(e.Class)
	if class == "" {
		class = "error"
	}
	return fmt.Sprintf("%s%s: %s", class, where, e.Message)
}
