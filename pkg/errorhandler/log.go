package errorhandler

import (
	"context"
	"errors"
	"log/slog"

	"github.com/batchflow/batchflow/pkg/batches"
)

// Log returns a Handler that writes each report as one structured line on
// logger (slog.Default() when nil). The level is Error when the batch or
// migration failed for good or the error is fatal, Warn for what will be
// retried, so alerting on Error lines does not page for a deadlock.
func Log(logger *slog.Logger) Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return logHandler{logger: logger}
}

type logHandler struct{ logger *slog.Logger }

func (h logHandler) HandleError(ctx context.Context, r Report) {
	level := Level(r)
	if !h.logger.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs, slog.String("migration", r.Migration))
	if r.IsBatch() {
		attrs = append(attrs,
			slog.Int64("batch", r.Seq),
			slog.Int("attempt", r.Attempt),
			// Keys log as their JSON value (number, string or null).
			slog.Any("lo", r.Lo),
			slog.Any("hi", r.Hi),
			slog.String("range", r.Range()),
		)
	}
	attrs = append(attrs,
		slog.String("class", string(r.Class)),
		slog.Bool("final", r.Final),
	)
	if r.Component != "" {
		attrs = append(attrs, slog.String("component", r.Component))
	}
	if r.Executor != "" {
		attrs = append(attrs, slog.String("executor", r.Executor))
	}
	if id := TraceID(ctx); id != "" {
		attrs = append(attrs, slog.String("trace_id", id))
	}
	attrs = append(attrs, slog.Any("err", r.Err))
	h.logger.LogAttrs(ctx, level, message(r), attrs...)
}

// Level is the slog level a report deserves: Error when the batch (or
// migration) failed for good, the error is fatal or an error handler
// panicked (a bug), Warn otherwise.
func Level(r Report) slog.Level {
	if r.Final || r.Class == batches.ClassFatal || isHandlerPanic(r.Err) {
		return slog.LevelError
	}
	return slog.LevelWarn
}

// message is constant per kind of report, so log queries can match it; the
// details are in the attributes.
func message(r Report) string {
	var msg string
	switch {
	case isHandlerPanic(r.Err):
		msg = "error handler panicked"
	case r.IsBatch() && r.Final:
		msg = "batch failed"
	case r.IsBatch():
		msg = "batch attempt failed, will retry"
	case r.Final:
		msg = "migration failed"
	default:
		msg = "migration error, will retry"
	}
	if r.Component != "" {
		msg = r.Component + ": " + msg
	}
	return msg
}

func isHandlerPanic(err error) bool {
	var p *HandlerPanicError
	return errors.As(err, &p)
}
