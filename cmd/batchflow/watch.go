package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/jedib0t/go-pretty/v6/progress"

	"github.com/batchflow/batchflow/pkg/batches"
)

// watchDisplay shows the migrations of `status --watch` as they change.
type watchDisplay interface {
	update(views []migrationView)
	// finish shows the final state; the display is done afterwards.
	finish(views []migrationView)
}

// watch redraws the migrations shown until every one has settled: the one
// named, or (name empty) those not settled when it starts and any enqueued
// meanwhile. It exits as `batchflow wait` does.
func watch(ctx context.Context, r *statusReader, name string, asJSON bool, interval time.Duration, w io.Writer) error {
	var d watchDisplay
	switch {
	case asJSON:
		d = &jsonWatch{w: w, single: name != ""}
	case isTerminal(w):
		d = newBarWatch(w)
	default:
		d = &lineWatch{w: w, last: map[string]string{}}
	}
	r.samples = map[string][]progressSample{}
	tracked := map[string]bool{}
	for first := true; ; first = false {
		all, err := r.read(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return withCode(exitSignal, fmt.Errorf("interrupted"))
			}
			return err
		}
		var shown []migrationView
		for _, v := range all {
			if name != "" || tracked[v.Name] || !v.Status.Settled() {
				tracked[v.Name] = true
				shown = append(shown, v)
			}
		}
		if first && len(shown) == 0 {
			fmt.Fprintln(w, "nothing to watch: no migration is enqueued, running or paused (`batchflow status` lists them all)")
			return nil
		}
		settled := true
		for _, v := range shown {
			settled = settled && v.Status.Settled()
		}
		if settled {
			d.finish(shown)
			for _, v := range shown {
				if v.Status != batches.MigrationSucceeded {
					return outcome(exitFailed)
				}
			}
			return nil
		}
		d.update(shown)
		select {
		case <-ctx.Done():
			d.finish(shown)
			return withCode(exitSignal, fmt.Errorf("interrupted"))
		case <-time.After(interval):
		}
	}
}

// jsonWatch prints the views as JSON, one document per line, each time
// they change: an object for one migration, an array otherwise.
type jsonWatch struct {
	w      io.Writer
	single bool
	last   []byte
}

func (j *jsonWatch) update(views []migrationView) {
	var v any = views
	if j.single {
		v = views[0]
	}
	data, err := json.Marshal(v)
	if err != nil || bytes.Equal(data, j.last) {
		return
	}
	j.last = data
	fmt.Fprintf(j.w, "%s\n", data)
}

func (j *jsonWatch) finish(views []migrationView) { j.update(views) }

// lineWatch prints a plain line for each migration whose numbers changed:
// for logs and pipes, where a redrawn bar would be noise.
type lineWatch struct {
	w    io.Writer
	last map[string]string
}

func (l *lineWatch) update(views []migrationView) {
	for _, v := range views {
		line := watchLine(v)
		if l.last[v.Name] == line {
			continue
		}
		l.last[v.Name] = line
		fmt.Fprintf(l.w, "%s  %s\n", time.Now().Format(time.TimeOnly), line)
	}
}

func (l *lineWatch) finish(views []migrationView) {
	l.update(views)
	printFinal(l.w, views)
}

// watchLine is one migration's state in one line.
func watchLine(v migrationView) string {
	line := fmt.Sprintf("%s %s %.1f%% %s rows, %s/%s batches", v.Name, v.Status, v.Progress,
		count(v.RowsAffected), count(v.BatchesSucceeded), count(v.BatchesTotal))
	if v.Status == batches.MigrationRunning {
		line += fmt.Sprintf(", %s, ETA %s", perSecond(v.RowsPerSecond), eta(v.ETASeconds))
	}
	if n := note(v); n != "" {
		line += " — " + n
	}
	return line
}

// printFinal prints how each migration ended.
func printFinal(w io.Writer, views []migrationView) {
	for _, v := range views {
		if !v.Status.Settled() {
			continue
		}
		line := fmt.Sprintf("%s %s: %s rows, %s batches", v.Name, v.Status, count(v.RowsAffected), count(v.BatchesSucceeded))
		if v.Status == batches.MigrationSucceeded && v.FinishedAt != nil && v.StartedAt != nil {
			line += " in " + roundDuration(v.FinishedAt.Sub(*v.StartedAt)).String()
		}
		if n := note(v); n != "" {
			line += " — " + n
		}
		fmt.Fprintln(w, line)
	}
}

// barWatch draws a progress bar per migration, redrawn in place.
type barWatch struct {
	w        io.Writer
	pw       progress.Writer
	trackers map[string]*progress.Tracker
	nameLen  int
}

func newBarWatch(w io.Writer) *barWatch {
	pw := progress.NewWriter()
	pw.SetOutputWriter(w)
	pw.SetAutoStop(false)
	pw.SetUpdateFrequency(200 * time.Millisecond)
	pw.SetTrackerLength(30)
	pw.SetMessageLength(80)
	pw.SetStyle(progress.StyleBlocks)
	pw.SetTrackerPosition(progress.PositionRight)
	vis := &pw.Style().Visibility
	vis.ETA, vis.Speed, vis.Time, vis.Value, vis.ETAOverall = false, false, false, false, false
	pw.Style().Options.PercentFormat = "%5.1f%%"
	pw.Style().Options.Separator = "  "
	pw.Style().Options.DoneString = "settled"
	pw.Style().Options.ErrorString = "settled"
	go pw.Render()
	return &barWatch{w: w, pw: pw, trackers: map[string]*progress.Tracker{}}
}

// permille is the bar's scale: the planner's percentage has one decimal.
const permille = 1000

func (b *barWatch) update(views []migrationView) {
	for _, v := range views {
		b.nameLen = max(b.nameLen, len(v.Name))
	}
	for _, v := range views {
		t, ok := b.trackers[v.Name]
		if !ok {
			t = &progress.Tracker{Total: permille, AutoStopDisabled: true}
			b.trackers[v.Name] = t
			b.pw.AppendTracker(t)
		}
		t.UpdateMessage(b.message(v))
		t.SetValue(int64(v.Progress * permille / 100))
		switch {
		case t.IsDone():
		case v.Status == batches.MigrationSucceeded:
			t.MarkAsDone()
		case v.Status.Settled():
			t.MarkAsErrored()
		}
	}
}

func (b *barWatch) message(v migrationView) string {
	msg := fmt.Sprintf("%-*s %-9s %11s rows", b.nameLen, v.Name, v.Status, count(v.RowsAffected))
	switch {
	case v.Throttled != nil:
		msg += "  throttled: " + v.Throttled.Reason
	case v.Status == batches.MigrationRunning:
		msg += fmt.Sprintf("  %s  ETA %s", perSecond(v.RowsPerSecond), eta(v.ETASeconds))
	case v.Reason != "":
		msg += "  " + v.Reason
	}
	return msg
}

func (b *barWatch) finish(views []migrationView) {
	b.update(views)
	stopProgress(b.pw)
	printFinal(b.w, views)
}

// stopProgress stops a progress writer and waits for its last frame.
func stopProgress(pw progress.Writer) {
	time.Sleep(250 * time.Millisecond) // one more frame, with the final values
	pw.Stop()
	for deadline := time.Now().Add(2 * time.Second); pw.IsRenderInProgress() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}
