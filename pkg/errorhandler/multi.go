package errorhandler

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
)

// Multi returns a Handler that passes each report to every handler in order;
// nil handlers are skipped.
//
// A handler that panics must not take down the executor that reported, nor
// keep the report from the other handlers: Multi recovers, and reports the
// panic as a *HandlerPanicError to the other handlers, so it reaches the log
// or Sentry the operators already watch. When no other handler can take it
// (a single handler, or they panic too), it goes to slog.Default().
func Multi(handlers ...Handler) Handler {
	m := make(multi, 0, len(handlers))
	for _, h := range handlers {
		if h != nil {
			m = append(m, h)
		}
	}
	return m
}

type multi []Handler

func (m multi) HandleError(ctx context.Context, r Report) {
	for i, h := range m {
		p := call(ctx, h, r)
		if p == nil {
			continue
		}
		m.reportPanic(ctx, i, r, p)
	}
}

// reportPanic hands the panic of handler i to the others, copying the
// interrupted report's fields so the panic can be found next to it.
func (m multi) reportPanic(ctx context.Context, i int, r Report, p *HandlerPanicError) {
	pr := r
	pr.Err = p
	pr.Component = "errorhandler"
	delivered := false
	for j, h := range m {
		if j == i {
			continue
		}
		if call(ctx, h, pr) == nil {
			delivered = true
		}
	}
	if !delivered {
		slog.Default().LogAttrs(ctx, slog.LevelError, "errorhandler: handler panicked",
			slog.String("handler", p.Handler),
			slog.String("migration", r.Migration),
			slog.Int64("batch", r.Seq),
			slog.Any("panic", p.Value),
			slog.Any("report_err", r.Err),
			slog.String("stack", string(p.Stack)),
		)
	}
}

// call runs h and turns a panic into an error, nil when h returned normally.
func call(ctx context.Context, h Handler, r Report) (perr *HandlerPanicError) {
	defer func() {
		if v := recover(); v != nil {
			perr = &HandlerPanicError{
				Handler: fmt.Sprintf("%T", h),
				Value:   v,
				Report:  r.Err,
				Stack:   debug.Stack(),
			}
		}
	}()
	h.HandleError(ctx, r)
	return nil
}

// HandlerPanicError is the error Multi reports when one of its handlers
// panics while handling a report.
type HandlerPanicError struct {
	Handler string // the panicking handler's type, e.g. "*sentry.Handler"
	Value   any    // what it panicked with
	Report  error  // the error it was handling
	Stack   []byte // the panicking goroutine's stack
}

func (e *HandlerPanicError) Error() string {
	return fmt.Sprintf("error handler %s panicked: %v (handling: %v)", e.Handler, e.Value, e.Report)
}

// Unwrap returns the panic value when it is an error, so errors.Is and
// errors.As see through to it.
func (e *HandlerPanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
