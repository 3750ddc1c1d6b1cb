package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v3"
)

// Exit statuses (DESIGN.md §5, docs/cli.md).
const (
	// exitOK: done; for enqueue, accepted (succeeded with --wait).
	exitOK = 0
	// exitFailed: the migration failed or was cancelled; any unexpected error.
	exitFailed = 1
	// exitRefused: nothing was done: the spec was rejected, the input or a
	// flag is wrong, the migration does not exist or does not allow the
	// request, or NATS or a planner cannot be reached.
	exitRefused = 2
	// exitTimeout: --timeout passed before the migration settled.
	exitTimeout = 3
	// exitSignal: a second SIGINT or SIGTERM cut the shutdown short.
	exitSignal = 130
)

// exitError is an error with the exit status it calls for.
type exitError struct {
	code int
	err  error
	// silent: the command has already said everything on stdout.
	silent bool
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withCode gives err an exit status; a nil err stays nil.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// refused is withCode(exitRefused, …) for a message built on the spot.
func refused(format string, args ...any) error {
	return &exitError{code: exitRefused, err: fmt.Errorf(format, args...)}
}

// outcome is a non-zero exit status whose reason the command has already
// printed.
func outcome(code int) error {
	return &exitError{code: code, err: fmt.Errorf("exit status %d", code), silent: true}
}

// exitCode is the process exit status for what a command returned.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitFailed
}

func isSilent(err error) bool {
	var e *exitError
	return errors.As(err, &e) && e.silent
}

// usageError words a flag or argument mistake with where to read more.
func usageError(cmd *cli.Command, err error) error {
	path := strings.Join(commandPath(cmd), " ")
	return withCode(exitRefused, fmt.Errorf("%w (see `%s --help`)", err, path))
}

func commandPath(cmd *cli.Command) []string {
	var names []string
	for _, c := range cmd.Lineage() {
		names = append([]string{c.Name}, names...)
	}
	return names
}

// needName returns the one NAME argument of cmd, or a usage error.
func needName(cmd *cli.Command) (string, error) {
	switch cmd.NArg() {
	case 1:
		return cmd.Args().First(), nil
	case 0:
		return "", usageError(cmd, errors.New("which migration? give its NAME (`batchflow status` lists them)"))
	default:
		return "", usageError(cmd, fmt.Errorf("one migration NAME expected, got %d arguments", cmd.NArg()))
	}
}
