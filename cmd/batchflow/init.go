package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/internal/config"
	"github.com/batchflow/batchflow/pkg/sink"
)

func initCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "create the ledger table (" + sink.LedgerTable + ") on each target database",
		ArgsUsage: " ",
		Description: "Executors create it on first use; run this ahead of time when they will connect as a\n" +
			"user that may not create tables. NATS is not needed. Exit status: 0 every target is ready,\n" +
			"1 a target failed, 2 no --target given.",
		Flags: []cli.Flag{config.TargetFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			cfg, err := config.FromCommand(cmd)
			if err != nil {
				return withCode(exitRefused, err)
			}
			if len(cfg.Targets) == 0 {
				return usageError(cmd, errors.New("no target: give --target NAME=DSN (or BATCHFLOW_TARGETS)"))
			}
			var failed []error
			for _, t := range cfg.Targets {
				if err := ensureLedger(ctx, t.DSN()); err != nil {
					// The sink's errors name the database without its password.
					failed = append(failed, fmt.Errorf("%s: %w", t.Name, err))
					continue
				}
				fmt.Fprintf(stdout, "%s (%s): %s ready\n", t.Name, t.RedactedDSN(), sink.LedgerTable)
			}
			if len(failed) > 0 {
				return withCode(exitFailed, errors.Join(failed...))
			}
			return nil
		},
	}
}

func ensureLedger(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := sink.Open(ctx, dsn, sink.Options{MaxConns: 1})
	if err != nil {
		return err
	}
	defer s.Close()
	return s.EnsureLedger(ctx)
}
