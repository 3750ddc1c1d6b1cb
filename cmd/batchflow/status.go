package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/jedib0t/go-pretty/v6/table"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
	"github.com/batchflow/batchflow/pkg/events"
)

func statusCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show migrations: status, progress, rows, batches, rate, ETA, throttling, last error",
		ArgsUsage: "[NAME]",
		Description: "Without NAME, every migration as a table (oldest first); with NAME, that one in detail.\n" +
			"--json prints one object for NAME, an array otherwise (schema in docs/cli.md).\n" +
			"--watch redraws with progress bars until every migration shown has succeeded, failed or\n" +
			"been cancelled (without NAME: those running when it starts, and any enqueued meanwhile);\n" +
			"it then exits as `batchflow wait` does: 0 all succeeded, 1 one failed or was cancelled.\n" +
			"Exit status otherwise: 0, or 2 for an unknown NAME or NATS unreachable.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON for programs"},
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "keep redrawing until the migrations shown settle"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "with --watch, look again every `DURATION`"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			var name string
			switch cmd.NArg() {
			case 0:
			case 1:
				name = cmd.Args().First()
			default:
				return usageError(cmd, fmt.Errorf("at most one migration NAME, got %d arguments", cmd.NArg()))
			}
			s, err := dial(ctx, cmd, cmd.Root().ErrWriter)
			if err != nil {
				return err
			}
			defer s.Close()
			st := &statusReader{s: s}
			if cmd.Bool("watch") {
				return watch(ctx, st, name, cmd.Bool("json"), max(cmd.Duration("interval"), 100*time.Millisecond), stdout)
			}
			views, err := st.read(ctx, name)
			if err != nil {
				return err
			}
			switch {
			case cmd.Bool("json"):
				return printJSONViews(stdout, name, views)
			case name != "":
				printDetail(stdout, views[0])
			case len(views) == 0:
				fmt.Fprintln(stdout, "no migrations yet: enqueue one with `batchflow enqueue --file spec.json`")
			default:
				printTable(stdout, views)
			}
			return nil
		},
	}
}

// migrationView is what `batchflow status` shows of a migration, and the
// schema of --json (docs/cli.md). Its fields only grow.
type migrationView struct {
	Name   string                  `json:"name"`
	Status batches.MigrationStatus `json:"status"`
	Target string                  `json:"target"`
	Kind   string                  `json:"kind"`
	Table  string                  `json:"table"`
	// Progress is the percentage of the key range done, 0 to 100.
	Progress         float64 `json:"progress"`
	RowsAffected     int64   `json:"rows_affected"`
	EstimatedRows    int64   `json:"estimated_rows"`
	BatchesTotal     int64   `json:"batches_total"`
	BatchesSucceeded int64   `json:"batches_succeeded"`
	BatchesFailed    int64   `json:"batches_failed"`
	BatchesInFlight  int64   `json:"batches_in_flight"`
	Retries          int64   `json:"retries"`
	// FailedKeys are the keys of rows skipped under on_row_error skip.
	FailedKeys    []batches.Key `json:"failed_keys"`
	RowsPerSecond float64       `json:"rows_per_second"`
	// ETASeconds is the estimate of the time left: 0 once settled, -1 unknown.
	ETASeconds int64 `json:"eta_seconds"`
	// Throttled is set while the executors hold off for the database's health.
	Throttled *throttleView `json:"throttled"`
	// Reason explains the latest status change: why it waits, was paused,
	// cancelled or failed.
	Reason     string               `json:"reason,omitempty"`
	LastError  *batches.ErrorRecord `json:"last_error"`
	CreatedAt  time.Time            `json:"created_at"`
	StartedAt  *time.Time           `json:"started_at"`
	FinishedAt *time.Time           `json:"finished_at"`
}

type throttleView struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// statusReader builds views from the migration records (KV), the batch
// records for failed keys, and the last throttle event of each migration.
type statusReader struct {
	s      *session
	events jetstream.Stream
	// samples, kept by --watch, give a rate and ETA fresher than the
	// planner's, which it refreshes every few seconds.
	samples map[string][]progressSample
}

type progressSample struct {
	at      time.Time
	rows    int64
	percent float64
}

// sampleWindow is how far back --watch's own rate looks.
const sampleWindow = 15 * time.Second

// read returns the view of migration name, or of every migration.
func (r *statusReader) read(ctx context.Context, name string) ([]migrationView, error) {
	var ms []batches.Migration
	if name != "" {
		m, err := r.s.client.Status(ctx, name)
		if errors.Is(err, client.ErrNotFound) {
			return nil, unknownMigration(name)
		}
		if err != nil {
			return nil, withCode(exitRefused, err)
		}
		ms = []batches.Migration{*m}
	} else {
		var err error
		if ms, err = r.s.client.List(ctx); err != nil {
			return nil, withCode(exitRefused, err)
		}
	}
	views := make([]migrationView, 0, len(ms))
	for i := range ms {
		v, err := r.view(ctx, &ms[i])
		if err != nil {
			return nil, err
		}
		views = append(views, v)
	}
	return views, nil
}

func (r *statusReader) view(ctx context.Context, m *batches.Migration) (migrationView, error) {
	c, p := m.Counters, m.Progress
	v := migrationView{
		Name: m.Spec.Name, Status: m.Status, Target: m.Spec.Target, Kind: m.Spec.Kind, Table: m.Spec.Table,
		Progress: p.Percent, RowsAffected: c.RowsAffected, EstimatedRows: m.EstimatedRows,
		// The counters are fresher than the progress, refreshed every few seconds.
		BatchesTotal:     max(p.BatchesTotal, c.BatchesPlanned),
		BatchesSucceeded: c.BatchesSucceeded, BatchesFailed: c.BatchesFailed,
		BatchesInFlight: max(0, c.BatchesPlanned-c.BatchesSucceeded-c.BatchesFailed),
		Retries:         c.Retries, FailedKeys: []batches.Key{},
		RowsPerSecond: p.RowsPerSecond, ETASeconds: p.ETASeconds,
		Reason: m.Reason, LastError: m.LastError,
		CreatedAt: m.CreatedAt, StartedAt: m.StartedAt, FinishedAt: m.FinishedAt,
	}
	// The planner refreshes the percentage every few seconds; the batch
	// counters are fresher. Both are lower bounds: take the larger.
	if v.BatchesTotal > 0 && m.Status != batches.MigrationSucceeded {
		byBatches := math.Floor(float64(v.BatchesSucceeded)/float64(v.BatchesTotal)*1000) / 10
		v.Progress = min(max(v.Progress, byBatches), 99.9)
	}
	switch {
	case m.Status.Settled():
		v.BatchesInFlight, v.ETASeconds = 0, 0
		if d := elapsed(m, time.Now()).Seconds(); d > 0 {
			v.RowsPerSecond = math.Round(float64(c.RowsAffected)/d*10) / 10 // the average
		}
	case m.Status != batches.MigrationRunning:
		v.RowsPerSecond, v.ETASeconds = 0, -1
	}
	if m.Status == batches.MigrationRunning {
		v.Throttled = r.throttle(ctx, m.Spec.Name)
		r.sample(&v)
	}
	if c.FailedKeys > 0 {
		bs, err := r.s.client.Batches(ctx, m.Spec.Name)
		if err != nil {
			return v, withCode(exitRefused, err)
		}
		for _, b := range bs {
			v.FailedKeys = append(v.FailedKeys, b.FailedKeys...)
		}
	}
	return v, nil
}

// sample records the view's numbers when --watch keeps samples, and
// replaces the planner's rate and ETA with ones over the samples.
func (r *statusReader) sample(v *migrationView) {
	if r.samples == nil {
		return
	}
	now := time.Now()
	ss := append(r.samples[v.Name], progressSample{at: now, rows: v.RowsAffected, percent: v.Progress})
	for len(ss) > 2 && now.Sub(ss[1].at) > sampleWindow {
		ss = ss[1:]
	}
	r.samples[v.Name] = ss
	first := ss[0]
	dt := now.Sub(first.at).Seconds()
	if dt < 1 || v.RowsAffected == first.rows {
		return // too soon to tell: keep the planner's
	}
	v.RowsPerSecond = math.Round(float64(v.RowsAffected-first.rows)/dt*10) / 10
	if perSec := (v.Progress - first.percent) / dt; perSec > 0 {
		v.ETASeconds = int64(math.Ceil((100 - v.Progress) / perSec))
	}
}

// throttle reads the migration's last throttle event: executors report
// entering and leaving a throttled state there, and nowhere else.
func (r *statusReader) throttle(ctx context.Context, name string) *throttleView {
	if r.events == nil {
		st, err := r.s.js.Stream(ctx, r.s.names.EventStream)
		if err != nil {
			return nil
		}
		r.events = st
	}
	msg, err := r.events.GetLastMsgForSubject(ctx, events.Subject(r.s.names.Prefix, name, events.BatchThrottled))
	if err != nil {
		return nil // never throttled (or events expired)
	}
	ev, err := events.Decode(msg.Data)
	if err != nil || ev.Data.Throttled == nil || !*ev.Data.Throttled {
		return nil
	}
	return &throttleView{Reason: ev.Data.Reason, Since: ev.Time}
}

func printJSONViews(w io.Writer, name string, views []migrationView) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if name != "" {
		return enc.Encode(views[0])
	}
	return enc.Encode(views)
}

// printDetail prints one migration, a line per aspect.
func printDetail(w io.Writer, v migrationView) {
	fmt.Fprintf(w, "%s  %s  %.1f%%\n", v.Name, v.Status, v.Progress)
	fmt.Fprintf(w, "  what       %s on %s.%s\n", v.Kind, v.Target, v.Table)
	rows := count(v.RowsAffected) + " rows"
	if v.EstimatedRows > 0 && !v.Status.Settled() {
		rows += " of about " + count(v.EstimatedRows)
	}
	fmt.Fprintf(w, "  rows       %s\n", rows)
	fmt.Fprintf(w, "  batches    %s succeeded, %s failed, %s in flight, %s in all",
		count(v.BatchesSucceeded), count(v.BatchesFailed), count(v.BatchesInFlight), count(v.BatchesTotal))
	if v.Retries > 0 {
		fmt.Fprintf(w, " (%s retries)", count(v.Retries))
	}
	fmt.Fprintln(w)
	switch {
	case v.Status.Settled():
		fmt.Fprintf(w, "  rate       %s on average\n", perSecond(v.RowsPerSecond))
	case v.Status == batches.MigrationRunning:
		fmt.Fprintf(w, "  rate       %s, ETA %s\n", perSecond(v.RowsPerSecond), eta(v.ETASeconds))
	}
	if v.Throttled != nil {
		fmt.Fprintf(w, "  throttled  %s (since %s)\n", v.Throttled.Reason, v.Throttled.Since.Local().Format(time.TimeOnly))
	}
	if v.Reason != "" {
		fmt.Fprintf(w, "  reason     %s\n", v.Reason)
	}
	if v.LastError != nil {
		fmt.Fprintf(w, "  last error %s (%s)\n", errorLine(v.LastError), v.LastError.Time.Local().Format(time.DateTime))
	}
	if len(v.FailedKeys) > 0 {
		keys := make([]string, 0, min(len(v.FailedKeys), 10))
		for _, k := range v.FailedKeys[:min(len(v.FailedKeys), 10)] {
			keys = append(keys, k.String())
		}
		more := ""
		if len(v.FailedKeys) > 10 {
			more = fmt.Sprintf(" and %d more (--json lists them all)", len(v.FailedKeys)-10)
		}
		fmt.Fprintf(w, "  skipped    %s%s\n", strings.Join(keys, ", "), more)
	}
	if v.StartedAt != nil {
		line := "  started    " + v.StartedAt.Local().Format(time.DateTime)
		if v.FinishedAt != nil {
			line += ", finished " + v.FinishedAt.Local().Format(time.DateTime) +
				" (" + roundDuration(v.FinishedAt.Sub(*v.StartedAt)).String() + ")"
		}
		fmt.Fprintln(w, line)
	}
}

// printTable prints migrations one per row.
func printTable(w io.Writer, views []migrationView) {
	t := table.NewWriter()
	t.SetStyle(plainTableStyle())
	t.AppendHeader(table.Row{"NAME", "STATUS", "PROGRESS", "ROWS", "BATCHES", "RATE", "ETA", "NOTE"})
	for _, v := range views {
		t.AppendRow(tableRow(v))
	}
	for line := range strings.Lines(t.Render()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
}

func tableRow(v migrationView) table.Row {
	batchesCol := count(v.BatchesSucceeded) + "/" + count(v.BatchesTotal)
	if v.BatchesFailed > 0 {
		batchesCol += fmt.Sprintf(" (%s failed)", count(v.BatchesFailed))
	}
	rate, left := "", ""
	switch {
	case v.Status == batches.MigrationRunning:
		rate, left = perSecond(v.RowsPerSecond), eta(v.ETASeconds)
	case v.Status.Settled() && v.RowsPerSecond > 0:
		rate = perSecond(v.RowsPerSecond)
	}
	return table.Row{v.Name, string(v.Status), fmt.Sprintf("%.1f%%", v.Progress), count(v.RowsAffected), batchesCol, rate, left, note(v)}
}

// note is the one thing worth knowing beyond the numbers.
func note(v migrationView) string {
	switch {
	case v.Throttled != nil:
		return "throttled: " + v.Throttled.Reason
	case v.Status == batches.MigrationFailed && v.LastError != nil:
		return errorLine(v.LastError)
	case v.Reason != "":
		return v.Reason
	case v.LastError != nil && !v.Status.Settled():
		return "last error: " + errorLine(v.LastError)
	}
	return ""
}

// plainTableStyle draws no boxes: the output reads like `kubectl get` and
// survives grep, cut and narrow terminals.
func plainTableStyle() table.Style {
	s := table.StyleDefault
	s.Options = table.Options{}
	s.Box.PaddingLeft, s.Box.PaddingRight = "", "  "
	return s
}
