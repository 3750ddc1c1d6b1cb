package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/pkg/events"
)

func eventsCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "print the lifecycle events of migrations, stored and (with --follow) new",
		Description: "Prints the events kept in the event stream (7 days by default), oldest first,\n" +
			"one per line, then exits; --follow keeps printing new events until interrupted.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "migration", Usage: "only the events of migration `NAME`"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new events"},
			&cli.BoolFlag{Name: "json", Usage: "print each event's CloudEvents JSON envelope"},
			&cli.DurationFlag{Name: "since", Usage: "start with events of the last `DURATION` (default: all stored)"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			s, err := dial(ctx, cmd, cmd.Root().ErrWriter)
			if err != nil {
				return err
			}
			defer s.Close()

			opts := events.SubscribeOptions{
				Prefix:        s.cfg.Prefix,
				Migration:     cmd.String("migration"),
				FromStart:     true,
				UntilCaughtUp: !cmd.Bool("follow"),
				OnError: func(err error) {
					s.log.Warn("events: skipped", "err", err)
				},
			}
			if since := cmd.Duration("since"); since > 0 {
				opts.FromStart, opts.Since = false, time.Now().Add(-since)
			}
			show := printSummary
			if cmd.Bool("json") {
				show = printJSON
			}
			sub, err := events.Subscribe(ctx, s.js, opts, func(_ context.Context, ev events.Event) error {
				return show(stdout, ev)
			})
			if err != nil {
				return err
			}
			select {
			case <-sub.Done():
			case <-ctx.Done():
				sub.Stop()
			}
			return nil
		},
	}
}

func printSummary(w io.Writer, ev events.Event) error {
	_, err := fmt.Fprintf(w, "%s  %s\n", ev.Time.Local().Format("2006-01-02 15:04:05.000"), ev.Summary())
	return err
}

func printJSON(w io.Writer, ev events.Event) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(ev)
}
