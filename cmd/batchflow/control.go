package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
)

// The control verbs, with what each does, for help and output.
type verb struct {
	name, usage, done string
	call              func(c *client.Client, ctx context.Context, name, reason string) (*batches.Migration, error)
}

var (
	verbPause = verb{"pause", "stop a running migration from starting new batches and sub-batches", "paused",
		(*client.Client).Pause}
	verbResume = verb{"resume", "continue a paused migration", "resumed",
		(*client.Client).Resume}
	verbCancel = verb{"cancel", "end a migration for good (its name may be reused afterwards)", "cancelled",
		(*client.Client).Cancel}
	verbRetry = verb{"retry", "run a failed migration again; its failed batches get fresh attempts", "retried",
		(*client.Client).Retry}
)

func controlCommand(stdout io.Writer, v verb) *cli.Command {
	return &cli.Command{
		Name:      v.name,
		Usage:     v.usage,
		ArgsUsage: "NAME",
		Description: "Asks the leading planner. Exit status: 0 done, 2 no such migration, not allowed in its\n" +
			"status, or NATS or a planner cannot be reached.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "reason", Usage: "`TEXT` recorded with the change and shown by status and events"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			name, err := needName(cmd)
			if err != nil {
				return err
			}
			s, err := dial(ctx, cmd, cmd.Root().ErrWriter)
			if err != nil {
				return err
			}
			defer s.Close()
			m, err := v.call(s.client, ctx, name, cmd.String("reason"))
			if err != nil {
				return controlFailure(v.name, name, err)
			}
			fmt.Fprintf(stdout, "%s %s: now %s\n", v.done, name, m.Status)
			return nil
		},
	}
}

// controlFailure words a refused control request.
func controlFailure(verb, name string, err error) error {
	switch {
	case errors.Is(err, client.ErrNoPlanner):
		return refused("%s", noPlannerAdvice)
	case errors.Is(err, client.ErrNotFound):
		return unknownMigration(name)
	case errors.Is(err, client.ErrInvalidState), errors.Is(err, client.ErrInvalid):
		return withCode(exitRefused, err) // the planner's words name the migration
	}
	return withCode(exitRefused, fmt.Errorf("%s %s: %w", verb, name, err))
}

func setCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "set",
		Usage:     "change sizes, pauses or parallelism of a migration that has not settled",
		ArgsUsage: "NAME",
		Description: "Sizes and pauses take effect on the next batch or sub-batch, parallelism on the next\n" +
			"planning step. Give at least one flag. Exit status as for pause.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "batch-size", Usage: "`N` rows per batch"},
			&cli.IntFlag{Name: "sub-batch-size", Usage: "`N` rows per sub-batch transaction (the starting size when sub_batch_target adapts it)"},
			&cli.DurationFlag{Name: "sub-batch-pause", Usage: "sleep `DURATION` after each sub-batch"},
			&cli.DurationFlag{Name: "batch-pause", Usage: "sleep `DURATION` after each batch"},
			&cli.IntFlag{Name: "parallelism", Usage: "`N` batches of the migration in flight at most"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			name, err := needName(cmd)
			if err != nil {
				return err
			}
			var st client.Settings
			var changed []string
			intSetting := func(flag string, dst **int) {
				if cmd.IsSet(flag) {
					v := cmd.Int(flag)
					*dst = &v
					changed = append(changed, fmt.Sprintf("%s %d", flag, v))
				}
			}
			durSetting := func(flag string, dst **batches.Duration) {
				if cmd.IsSet(flag) {
					v := batches.Duration(cmd.Duration(flag))
					*dst = &v
					changed = append(changed, fmt.Sprintf("%s %s", flag, v))
				}
			}
			intSetting("batch-size", &st.BatchSize)
			intSetting("sub-batch-size", &st.SubBatchSize)
			durSetting("sub-batch-pause", &st.SubBatchPause)
			durSetting("batch-pause", &st.BatchPause)
			intSetting("parallelism", &st.Parallelism)
			if st.Empty() {
				return usageError(cmd, errors.New("nothing to change: give --batch-size, --sub-batch-size, --sub-batch-pause, --batch-pause or --parallelism"))
			}
			if err := st.Validate(); err != nil {
				return withCode(exitRefused, err)
			}
			s, err := dial(ctx, cmd, cmd.Root().ErrWriter)
			if err != nil {
				return err
			}
			defer s.Close()
			m, err := s.client.Set(ctx, name, st)
			if err != nil {
				return controlFailure("set", name, err)
			}
			fmt.Fprintf(stdout, "set %s on %s (%s): batch_size %d, sub_batch_size %d, sub_batch_pause %s, batch_pause %s, parallelism %d\n",
				strings.Join(changed, ", "), name, m.Status, m.Spec.BatchSize, m.Spec.SubBatchSize, m.Spec.SubBatchPause, m.Spec.BatchPause, m.Spec.Parallelism)
			return nil
		},
	}
}
