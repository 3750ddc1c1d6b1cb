package sentry_test

import (
	"log/slog"
	"os"
	"time"

	"github.com/batchflow/batchflow/pkg/errorhandler"
	"github.com/batchflow/batchflow/pkg/errorhandler/sentry"
)

// A binary reports to its log always and to Sentry when SENTRY_DSN is set,
// and flushes Sentry's queue before it exits.
func ExampleFromEnv() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	sentryHandler, ok, err := sentry.FromEnv()
	if err != nil {
		logger.Error("executor: sentry", slog.Any("err", err))
		os.Exit(1)
	}
	defer func() {
		if !sentryHandler.Flush(2 * time.Second) {
			logger.Warn("executor: sentry events not sent before exit")
		}
		sentryHandler.Close()
	}()
	logger.Info("executor: error reporting", slog.Bool("sentry", ok))

	handler := errorhandler.Multi(errorhandler.Log(logger), sentryHandler)
	_ = handler // the executor's config takes it
}
