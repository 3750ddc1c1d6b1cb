package events

import (
	"fmt"
	"strings"
	"time"
)

// Summary renders the event on one line for people: the CLI's event list,
// a log line, a chat alert. Programs should read the fields instead.
//
//	backfill_users batch.completed #12 (240000, 260000] attempt 1: 20000 rows in 812ms
func (e Event) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s.%s", e.Data.Migration, e.Scope(), e.Name())
	d := e.Data
	if d.Batch != nil {
		open := "("
		if d.Batch.LoInclusive {
			open = "["
		}
		fmt.Fprintf(&b, " #%d %s%s, %s]", d.Batch.Seq, open, d.Batch.Lo, d.Batch.Hi)
	}
	if d.Attempt > 0 {
		fmt.Fprintf(&b, " attempt %d", d.Attempt)
	}
	var details []string
	switch {
	case d.Progress != nil:
		p := d.Progress
		s := fmt.Sprintf("%.1f%%, %d rows, %d/%d batches", p.Percent, p.RowsAffected, p.BatchesSucceeded, p.BatchesTotal)
		if p.RowsPerSecond > 0 {
			s += fmt.Sprintf(", %.0f rows/s", p.RowsPerSecond)
		}
		if p.ETASeconds > 0 {
			s += ", ETA " + (time.Duration(p.ETASeconds) * time.Second).String()
		}
		details = append(details, s)
	case d.RowsAffected > 0 || d.DurationMS > 0:
		s := fmt.Sprintf("%d rows", d.RowsAffected)
		if d.DurationMS > 0 {
			s += " in " + (time.Duration(d.DurationMS) * time.Millisecond).String()
		}
		details = append(details, s)
	}
	if d.Throttled != nil {
		if *d.Throttled {
			details = append(details, "throttled")
		} else {
			details = append(details, "throttle lifted")
		}
	}
	if d.PreviousSubBatchSize > 0 {
		details = append(details, fmt.Sprintf("sub-batch %d → %d rows", d.PreviousSubBatchSize, d.SubBatchSize))
	}
	if d.PreviousOwner != "" {
		details = append(details, fmt.Sprintf("no progress for %s from %s", time.Duration(d.StalledForMS)*time.Millisecond, d.PreviousOwner))
	}
	if len(d.FailedKeys) > 0 {
		details = append(details, fmt.Sprintf("%d failed keys", len(d.FailedKeys)))
	}
	if d.RetryInMS > 0 {
		details = append(details, "retry in "+(time.Duration(d.RetryInMS)*time.Millisecond).String())
	}
	if d.Reason != "" {
		details = append(details, d.Reason)
	}
	if d.Error != nil {
		details = append(details, fmt.Sprintf("%s error: %s", d.Error.Class, d.Error.Message))
	}
	if len(details) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(details, "; "))
	}
	return b.String()
}
