package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
)

// acceptTimeout bounds the wait for a planner to accept or reject a spec
// when --timeout is not given: a running planner answers in milliseconds.
const acceptTimeout = 30 * time.Second

func enqueueCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "enqueue",
		Usage:     "enqueue a migration from its JSON spec and print the outcome",
		ArgsUsage: " ",
		Description: "Publishes the spec (docs/spec.md) on the enqueue stream and waits for the planner's answer.\n" +
			"Exit status: 0 accepted (with --wait: succeeded), 1 failed or cancelled (--wait),\n" +
			"2 rejected (every problem is printed, one per line), or NATS or a planner cannot be reached,\n" +
			"3 --timeout passed while waiting (--wait). Enqueueing the same spec again changes nothing.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Required: true, TakesFile: true,
				Usage: "the spec `FILE` (JSON); - reads it from standard input"},
			&cli.BoolFlag{Name: "wait", Usage: "wait until the migration succeeds, fails or is cancelled"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up after `DURATION` (default: 30s for the planner's answer; with --wait, no limit)"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() > 0 {
				return usageError(cmd, fmt.Errorf("unexpected argument %q: the spec is given with --file", cmd.Args().First()))
			}
			spec, err := readSpec(cmd.String("file"), cmd.Root().Reader)
			if err != nil {
				return err
			}
			s, err := dial(ctx, cmd, cmd.Root().ErrWriter)
			if err != nil {
				return err
			}
			defer s.Close()

			timeout := cmd.Duration("timeout")
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			acceptCtx := ctx
			if timeout <= 0 {
				var cancel context.CancelFunc
				acceptCtx, cancel = context.WithTimeout(ctx, acceptTimeout)
				defer cancel()
			}
			m, err := s.client.EnqueueJSON(acceptCtx, spec)
			var rejected *client.RejectedError
			switch {
			case errors.As(err, &rejected):
				return withCode(exitRefused, rejectionError(rejected))
			case err != nil && errors.Is(ctx.Err(), context.Canceled):
				return withCode(exitSignal, errors.New("interrupted before a planner answered; the spec may still be queued"))
			case err != nil && acceptCtx.Err() != nil:
				wait := acceptTimeout
				if timeout > 0 {
					wait = timeout
				}
				return refused("the spec is queued, but no planner took it within %s: start `batchflow run` or cmd/planner; it runs once one does", wait)
			case err != nil:
				return withCode(exitRefused, err)
			}

			name := m.Spec.Name
			if m.Status.Settled() {
				fmt.Fprintf(stdout, "%s was enqueued before with this spec; nothing changed\n", name)
			} else {
				fmt.Fprintf(stdout, "enqueued %s (%s, %s on %s.%s)\n", name, m.Status, m.Spec.Kind, m.Spec.Target, m.Spec.Table)
			}
			if !cmd.Bool("wait") {
				if m.Status.Settled() {
					printOutcome(stdout, m)
				} else {
					fmt.Fprintf(stdout, "follow it with `batchflow status %s --watch`, or wait for it with `batchflow wait %s`\n", name, name)
				}
				return nil
			}
			return waitFor(ctx, s, name, timeout, stdout)
		},
	}
}

// readSpec reads the spec file, or standard input for "-", and checks it
// is JSON at all: what the spec says is the planner's to judge, since it
// may accept custom kinds this tool does not know.
func readSpec(path string, stdin io.Reader) ([]byte, error) {
	var (
		data []byte
		err  error
		what = path
	)
	if path == "-" {
		what = "the spec on standard input"
		if stdin == nil {
			stdin = os.Stdin
		}
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, refused("spec file %s does not exist", path)
	case err != nil:
		return nil, refused("cannot read the spec: %v", err)
	case len(strings.TrimSpace(string(data))) == 0:
		return nil, refused("%s is empty: expected a JSON spec such as %s", what, exampleSpec)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, refused("%s is not valid JSON: %s", what, jsonErrorAt(data, err))
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, refused("%s is not a JSON object: expected a spec such as %s", what, exampleSpec)
	}
	return data, nil
}

const exampleSpec = `{"name": "backfill_users_plan", "target": "main", "kind": "backfill_column", "table": "users", "args": {"updates": {"plan": "free"}}}`

// jsonErrorAt places a JSON syntax error at its line and column.
func jsonErrorAt(data []byte, err error) string {
	var syntax *json.SyntaxError
	if !errors.As(err, &syntax) {
		return err.Error()
	}
	// Offset counts the bytes read, the offending one included.
	offset := min(max(int(syntax.Offset)-1, 0), len(data))
	line, col := 1, 1
	for _, b := range data[:offset] {
		if b == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return fmt.Sprintf("line %d, column %d: %s", line, col, strings.TrimPrefix(syntax.Error(), "json: "))
}

// rejectionError lists every problem of a rejected spec, one per line, or
// the reason when the planner gave no list (an unknown target, a table
// that does not exist).
func rejectionError(r *client.RejectedError) error {
	name := r.Migration
	if !batches.ValidName(name) {
		name = "the spec"
	}
	if len(r.Problems) == 0 {
		return fmt.Errorf("%s was rejected: %s", name, r.Reason)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s was rejected:", name)
	for _, p := range r.Problems {
		b.WriteString("\n  - " + p.String())
	}
	return errors.New(b.String())
}

func waitCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "wait",
		Usage:     "wait until a migration succeeds, fails or is cancelled",
		ArgsUsage: "NAME",
		Description: "The deploy-time \"ensure it succeeded\" check. Exit status: 0 succeeded, 1 failed or\n" +
			"cancelled, 2 no such migration or NATS unreachable, 3 --timeout passed first.",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "timeout", Usage: "give up after `DURATION`, with exit status 3 (default: wait as long as it takes)"},
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
			timeout := cmd.Duration("timeout")
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			return waitFor(ctx, s, name, timeout, stdout)
		},
	}
}

// waitFor waits for the migration to settle and prints how it ended; the
// error carries the exit status of `batchflow wait`.
func waitFor(ctx context.Context, s *session, name string, timeout time.Duration, stdout io.Writer) error {
	m, err := s.client.Wait(ctx, name)
	switch {
	case errors.Is(err, client.ErrNotFound):
		return unknownMigration(name)
	case errors.Is(err, context.DeadlineExceeded):
		// Status on a fresh context: ctx is spent.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if cur, serr := s.client.Status(sctx, name); serr == nil {
			return withCode(exitTimeout, fmt.Errorf("timed out after %s: %s is still %s (%.1f%%, %s rows)",
				timeout, name, cur.Status, cur.Progress.Percent, count(cur.Counters.RowsAffected)))
		}
		return withCode(exitTimeout, fmt.Errorf("timed out after %s waiting for %s", timeout, name))
	case errors.Is(err, context.Canceled):
		return withCode(exitSignal, fmt.Errorf("interrupted while waiting for %s", name))
	case err != nil:
		return withCode(exitRefused, err)
	}
	printOutcome(stdout, m)
	if m.Status != batches.MigrationSucceeded {
		return outcome(exitFailed)
	}
	return nil
}

// unknownMigration is the error for a name no migration has.
func unknownMigration(name string) error {
	return refused("no migration named %q (`batchflow status` lists them)", name)
}
