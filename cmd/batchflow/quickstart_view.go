package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jedib0t/go-pretty/v6/progress"

	"github.com/batchflow/batchflow/pkg/events"
)

// quickstartView shows the demo migration from its events: a live bar
// driven by the rows of each committed sub-batch (or, when the output is
// not a terminal, the planner's progress events as plain lines), and the
// lifecycle events worth a line. Sub-batch and routine batch events are
// counted, not printed.
type quickstartView struct {
	out     io.Writer
	animate bool
	began   time.Time

	mu      sync.Mutex
	t       quickstartTally
	pw      progress.Writer
	tracker *progress.Tracker
	settled chan struct{}
	once    sync.Once
	closed  bool
}

// quickstartTally is what the view counted from the events.
type quickstartTally struct {
	rows, subBatches, batchesDone, largestSubBatch int64
}

func newQuickstartView(out io.Writer, animate bool, rows int64) *quickstartView {
	v := &quickstartView{out: out, animate: animate, began: time.Now(), settled: make(chan struct{})}
	if animate {
		v.pw = progress.NewWriter()
		v.pw.SetOutputWriter(out)
		v.pw.SetAutoStop(false)
		v.pw.SetUpdateFrequency(100 * time.Millisecond)
		v.pw.SetTrackerLength(32)
		v.pw.SetMessageLength(24)
		v.pw.SetTrackerPosition(progress.PositionRight)
		v.pw.SetStyle(progress.StyleBlocks)
		s := v.pw.Style()
		s.Visibility.ETA, s.Visibility.Speed, s.Visibility.Value, s.Visibility.Time = true, true, true, true
		s.Visibility.ETAOverall = false
		s.Options.ETAString = "ETA"
		s.Options.Separator = " "
		s.Options.TimeInProgressPrecision = 100 * time.Millisecond
		s.Options.TimeDonePrecision = 100 * time.Millisecond
		s.Options.SpeedPrecision = 100 * time.Millisecond
		v.tracker = &progress.Tracker{
			Message: "backfilled 0 batches", Total: rows, AutoStopDisabled: true, DeferStart: true,
			Units: progress.Units{Formatter: count, Notation: " rows", NotationPosition: progress.UnitsNotationPositionAfter},
		}
		v.pw.AppendTracker(v.tracker)
		go v.pw.Render()
	}
	return v
}

// line prints one event line above the bar, stamped with the time since start.
func (v *quickstartView) line(text string) {
	stamped := fmt.Sprintf("  %6.1fs  %s", time.Since(v.began).Seconds(), text)
	if v.animate {
		v.pw.Log("%s", stamped)
		return
	}
	fmt.Fprintln(v.out, stamped)
}

// event is the events.Handler of the demo migration's events.
func (v *quickstartView) event(_ context.Context, ev events.Event) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	switch ev.Type {
	case events.BatchProcessBatch:
		v.t.rows += ev.Data.RowsAffected
		v.t.subBatches++
		if v.animate {
			v.tracker.SetValue(v.t.rows)
		}
		if ev.Data.SubBatch != nil {
			v.t.largestSubBatch = max(v.t.largestSubBatch, int64(ev.Data.SubBatch.Size))
		}
	case events.BatchCompleted:
		v.t.batchesDone++
		if v.animate {
			v.tracker.UpdateMessage(fmt.Sprintf("backfilled %d batches", v.t.batchesDone))
		}
	case events.BatchStarted, events.BatchSubBatchResized:
		// Routine: counted in the summary, not worth a line each.
	case events.MigrationProgress:
		if !v.animate { // the bar shows it otherwise
			v.line(ev.Summary())
		}
	default:
		v.line(ev.Summary())
	}
	switch ev.Type {
	case events.MigrationSucceeded, events.MigrationFailed, events.MigrationCancelled:
		v.once.Do(func() { close(v.settled) })
	}
	return nil
}

// settle waits up to d for the event that settles the migration and for
// the sub-batch events of all its rows: the executors publish their events
// without waiting, so they may trail the planner's, and the bar and the
// summary should end where the migration did.
func (v *quickstartView) settle(rows int64, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-v.settled:
			if v.tally().rows >= rows {
				return
			}
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the display; events arriving later are ignored.
func (v *quickstartView) stop() {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.closed = true
	if v.animate {
		v.tracker.MarkAsDone()
	}
	v.mu.Unlock()
	if v.animate {
		stopProgress(v.pw)
	}
}

func (v *quickstartView) tally() quickstartTally {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.t
}
