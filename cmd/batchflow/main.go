// Command batchflow is the operator's tool for batchflow (DESIGN.md §5):
// try the whole pipeline with no setup (quickstart), run it in one process
// (run), enqueue migrations, wait for them, watch and steer them, prepare
// target databases and follow the lifecycle events. docs/cli.md lists every
// command, flag and exit code.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/internal/config"
	_ "github.com/batchflow/batchflow/pkg/sink/all"
)

func main() {
	ctx, stop := signalContext(os.Stderr)
	defer stop()
	code := execute(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// execute runs the command line args and returns the exit status, having
// printed any error to stderr once, as advice, without usage text.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := newApp(stdout, stderr).Run(ctx, args)
	code := exitCode(err)
	if err != nil && !isSilent(err) {
		fmt.Fprintln(stderr, "batchflow:", err)
	}
	return code
}

// newApp builds the command tree writing to stdout and stderr, so tests can
// run it in-process.
func newApp(stdout, stderr io.Writer) *cli.Command {
	app := &cli.Command{
		Name:      "batchflow",
		Usage:     "run and watch background data migrations on large SQL tables",
		Flags:     config.CommonFlagsWithoutTargets(),
		Writer:    stdout,
		ErrWriter: stderr,
		Commands: []*cli.Command{
			quickstartCommand(stdout),
			runCommand(stdout),
			enqueueCommand(stdout),
			waitCommand(stdout),
			statusCommand(stdout),
			controlCommand(stdout, verbPause),
			controlCommand(stdout, verbResume),
			controlCommand(stdout, verbCancel),
			controlCommand(stdout, verbRetry),
			setCommand(stdout),
			initCommand(stdout),
			eventsCommand(stdout),
		},
		// Exit codes are ours (exitCode): urfave/cli must not call os.Exit.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
	}
	// Errors are printed once, by execute, without the usage text, and a
	// usage error exits 2 from every command.
	var markUsage func(*cli.Command)
	markUsage = func(c *cli.Command) {
		c.OnUsageError = func(_ context.Context, c *cli.Command, err error, _ bool) error {
			return usageError(c, err)
		}
		for _, sub := range c.Commands {
			markUsage(sub)
		}
	}
	markUsage(app)
	return app
}

// signalContext is cancelled by the first SIGINT or SIGTERM, which starts a
// graceful shutdown; a second one ends the process at once, for the
// operator whose shutdown is taking too long.
func signalContext(stderr io.Writer) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-done:
			return
		}
		select {
		case <-sigs:
			fmt.Fprintln(stderr, "batchflow: second signal: exiting without finishing the shutdown")
			os.Exit(exitSignal)
		case <-done:
		}
	}()
	stopped := false
	return ctx, func() {
		if !stopped {
			stopped = true
			signal.Stop(sigs)
			close(done)
		}
		cancel()
	}
}
