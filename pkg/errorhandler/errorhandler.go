// Package errorhandler carries the errors batchflow's components meet while
// working on a batch to the people who must act on them: a log line, a
// Sentry event, or both (DESIGN.md §9).
//
// Components hold a Handler and never know what is behind it, so heavy
// dependencies (the Sentry SDK) stay in sub-packages a binary links only when
// it wants them: see package errorhandler/sentry.
package errorhandler

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/pkg/batches"
)

// Report is an error met while working on a batch, with what an on-call
// engineer needs to find it.
type Report struct {
	Err   error
	Class batches.ErrorClass // transient, data, fatal, …
	// Component is the reporting component: "executor", "planner",
	// "watchdog".
	Component string
	Migration string
	// Seq is the batch sequence; -1 when the error is about the migration as
	// a whole, and then Attempt, Lo, Hi and LoInclusive mean nothing.
	Seq     int64
	Attempt int
	// Lo, Hi and LoInclusive are the batch's key range: (Lo, Hi], or
	// [Lo, Hi] when LoInclusive. A null bound is open.
	Lo, Hi      batches.Key
	LoInclusive bool
	Executor    string // worker id
	// Final is set when the batch (or migration) failed for good; false means
	// it will be retried, which on-call may ignore unless it keeps happening.
	Final bool
}

// IsBatch reports whether the report is about one batch rather than the
// whole migration.
func (r Report) IsBatch() bool { return r.Seq >= 0 }

// Range formats the batch's key range in interval notation, "(10, 20]" or
// ["a", "k"], so a reader knows whether the low bound is in the batch; an
// open bound reads -inf or +inf.
func (r Report) Range() string {
	var b strings.Builder
	switch {
	case r.Lo.IsNull():
		b.WriteString("(-inf")
	case r.LoInclusive:
		b.WriteString("[" + r.Lo.String())
	default:
		b.WriteString("(" + r.Lo.String())
	}
	b.WriteString(", ")
	if r.Hi.IsNull() {
		b.WriteString("+inf)")
	} else {
		b.WriteString(r.Hi.String() + "]")
	}
	return b.String()
}

// Handler receives the errors of a component. HandleError must not block for
// long (it runs on the batch's goroutine) and must be safe for concurrent use:
// an executor reports from all its workers at once.
type Handler interface {
	HandleError(ctx context.Context, r Report)
}

// HandlerFunc lets a function be a Handler, for tests and small adapters.
type HandlerFunc func(ctx context.Context, r Report)

// HandleError calls f.
func (f HandlerFunc) HandleError(ctx context.Context, r Report) { f(ctx, r) }

// Nop returns a Handler that drops every report, so components need no nil
// checks when nobody listens.
func Nop() Handler { return HandlerFunc(func(context.Context, Report) {}) }

// TraceID returns the hex trace id of the OpenTelemetry span in ctx, or ""
// when ctx carries no valid span. Reports carry it so a log line or a Sentry
// event leads to the batch's trace.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.TraceID().IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
