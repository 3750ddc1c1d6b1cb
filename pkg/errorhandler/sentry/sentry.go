// Package sentry sends batchflow's error reports to Sentry. It is the only
// package that links the Sentry SDK, so binaries that do not report to
// Sentry do not carry it.
package sentry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"time"

	sentrygo "github.com/getsentry/sentry-go"
	sentryotel "github.com/getsentry/sentry-go/otel"

	"github.com/batchflow/batchflow/pkg/errorhandler"
)

// Options configure a Handler.
type Options struct {
	// DSN is the project's Sentry DSN. Empty disables the Handler: New
	// deliberately does not fall back to SENTRY_DSN as the SDK would, so a
	// config that says "no Sentry" means it; use FromEnv to read the
	// environment.
	DSN string
	// Environment and Release tag every event. When empty the SDK fills
	// them from SENTRY_ENVIRONMENT and SENTRY_RELEASE (Release also from the
	// binary's VCS revision).
	Environment string
	Release     string
	// SampleRate is the share of reports sent, in [0, 1]; 0 means 1 (all),
	// the SDK's convention. Lowering it thins out retried-error noise.
	SampleRate float64
	// Transport replaces the SDK's HTTP transport; for tests
	// (sentrygo.MockTransport).
	Transport sentrygo.Transport
	// Debug writes the SDK's diagnostics to stderr. The SDK's debug output
	// is process-wide: it stays on for all clients once one enables it.
	Debug bool
}

// Handler turns each errorhandler.Report into one Sentry event. It has its own
// client and does not touch the SDK's global hub, so a program (or a test) can
// hold several. It is safe for concurrent use.
type Handler struct {
	// client is the SDK's no-op client when the Handler is disabled.
	client *sentrygo.Client
}

var _ errorhandler.Handler = (*Handler)(nil)

// New returns a Handler for opts; with an empty DSN, a disabled Handler that
// drops every report.
func New(opts Options) (*Handler, error) {
	if opts.DSN == "" {
		return &Handler{client: sentrygo.NewNoopClient()}, nil
	}
	if opts.SampleRate < 0 || opts.SampleRate > 1 {
		return nil, fmt.Errorf("sentry: sample rate %v is not between 0 and 1", opts.SampleRate)
	}
	client, err := sentrygo.NewClient(sentrygo.ClientOptions{
		Dsn:         opts.DSN,
		Environment: opts.Environment,
		Release:     opts.Release,
		SampleRate:  opts.SampleRate,
		Transport:   opts.Transport,
		Debug:       opts.Debug,
		// The OTel integration puts the trace and span ids of the span in
		// EventHint.Context into the event's trace context, so Sentry links
		// the event to the batch's trace.
		Integrations: func(defaults []sentrygo.Integration) []sentrygo.Integration {
			return append(defaults, sentryotel.NewOtelIntegration())
		},
	})
	if err != nil {
		return nil, fmt.Errorf("sentry: new client: %w", err)
	}
	return &Handler{client: client}, nil
}

// FromEnv returns a Handler configured from SENTRY_DSN, SENTRY_ENVIRONMENT
// and SENTRY_RELEASE. When SENTRY_DSN is empty, ok is false and the Handler
// is disabled but usable, so callers may add it to a Multi unconditionally.
func FromEnv() (h *Handler, ok bool, err error) {
	dsn := os.Getenv("SENTRY_DSN")
	h, err = New(Options{
		DSN:         dsn,
		Environment: os.Getenv("SENTRY_ENVIRONMENT"),
		Release:     os.Getenv("SENTRY_RELEASE"),
	})
	if err != nil {
		return nil, false, fmt.Errorf("SENTRY_DSN: %w", err)
	}
	return h, dsn != "", nil
}

// Enabled reports whether the Handler sends reports anywhere.
func (h *Handler) Enabled() bool { return h.client.IsEnabled() }

// errNoError stands in for a Report without an error, a caller's bug that
// should still be visible rather than dropped.
var errNoError = errors.New("errorhandler: report without an error")

// HandleError captures r as one event. The event is built on a scope of its
// own: nothing is shared between calls, so concurrent reports cannot mix
// tags. A fresh scope also gets a fresh Sentry trace id, where a clone of a
// long-lived hub would give all span-less events of the process one trace.
// It does not block on the network: the transport sends in the background.
func (h *Handler) HandleError(ctx context.Context, r errorhandler.Report) {
	if !h.client.IsEnabled() {
		return
	}
	err := r.Err
	if err == nil {
		err = errNoError
	}
	scope := sentrygo.NewScope()
	scope.SetLevel(level(r))
	scope.SetTags(tags(ctx, r))
	scope.SetContext("batch", batchContext(r))
	scope.SetFingerprint(Fingerprint(r))
	scope.AddEventProcessor(titleFromCause)
	h.client.CaptureException(err, &sentrygo.EventHint{Context: ctx, OriginalException: err}, scope)
}

// Flush waits up to timeout for queued events to be sent and reports whether
// they were; call it before the process exits. A disabled Handler has nothing
// to send and returns true.
func (h *Handler) Flush(timeout time.Duration) bool {
	if !h.client.IsEnabled() {
		return true
	}
	return h.client.Flush(timeout)
}

// Close stops the client's background senders; call it after Flush. Reports
// after Close are lost.
func (h *Handler) Close() { h.client.Close() }

// level maps errorhandler.Level (the log's severity rule) onto Sentry's.
func level(r errorhandler.Report) sentrygo.Level {
	if errorhandler.Level(r) >= slog.LevelError {
		return sentrygo.LevelError
	}
	return sentrygo.LevelWarning
}

// tags are what Sentry can search and facet on. Empty values are left out:
// Sentry rejects empty tag values.
func tags(ctx context.Context, r errorhandler.Report) map[string]string {
	t := map[string]string{
		"migration": r.Migration,
		"class":     string(r.Class),
		"component": r.Component,
		"executor":  r.Executor,
		"trace_id":  errorhandler.TraceID(ctx),
		"final":     strconv.FormatBool(r.Final),
	}
	if r.IsBatch() {
		t["batch"] = strconv.FormatInt(r.Seq, 10)
		t["attempt"] = strconv.Itoa(r.Attempt)
	}
	for k, v := range t {
		if v == "" {
			delete(t, k)
		}
	}
	return t
}

// batchContext is the "batch" panel of the event: where the batch sits,
// with its keys as their JSON values.
func batchContext(r errorhandler.Report) sentrygo.Context {
	c := sentrygo.Context{"migration": r.Migration, "seq": r.Seq}
	if r.IsBatch() {
		c["attempt"] = r.Attempt
		c["lo"] = r.Lo.Value()
		c["hi"] = r.Hi.Value()
		c["range"] = r.Range()
	}
	return c
}

// Fingerprint groups events into Sentry issues by migration, error class and
// the innermost error's type, plus the SQLSTATE when an error in the chain
// has one (pgx's *pgconn.PgError does).
//
// Sentry's default grouping (stack trace and message) would open a new issue
// for every batch whose message names a different row or key, so one bad
// migration would flood the project; the innermost type says what went wrong
// without the values. The SQLSTATE keeps, say, "permission denied" and
// "relation does not exist" apart, which share the driver's error type; it is
// a bounded set, so it does not flood either.
//
// A panic of an error handler (reported by errorhandler.Multi) is a bug of
// the handler, not of the migration: it is one issue per handler type.
func Fingerprint(r errorhandler.Report) []string {
	if p, ok := errors.AsType[*errorhandler.HandlerPanicError](r.Err); ok {
		return []string{"batchflow", "errorhandler-panic", p.Handler}
	}
	fp := []string{"batchflow", r.Migration, string(r.Class), errorType(innermost(r.Err))}
	var coded interface{ SQLState() string }
	if errors.As(r.Err, &coded) {
		if code := coded.SQLState(); code != "" {
			fp = append(fp, code)
		}
	}
	return fp
}

// innermost follows the wrap chain to the error at its root; for a join it
// follows the first error. The depth bound guards against cyclic chains.
func innermost(err error) error {
	for range 100 {
		var next error
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			next = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if e != nil {
					next = e
					break
				}
			}
		}
		if next == nil {
			return err
		}
		err = next
	}
	return err
}

func errorType(err error) string {
	if err == nil {
		return "nil"
	}
	return reflect.TypeOf(err).String()
}

// genericWrappers are the error types of fmt.Errorf and errors.Join. The SDK
// titles an issue with the outermost error's type, which for batchflow's
// wrapped errors would make every issue read "*fmt.wrapError".
var genericWrappers = map[string]bool{
	"*fmt.wrapError":    true,
	"*fmt.wrapErrors":   true,
	"*errors.joinError": true,
}

// titleFromCause gives the outermost exception (the one Sentry titles the
// issue with; the SDK lists the chain innermost first) the type of the root
// cause when it is a generic wrapper, so the title says what failed.
func titleFromCause(event *sentrygo.Event, hint *sentrygo.EventHint) *sentrygo.Event {
	n := len(event.Exception)
	if n < 2 || !genericWrappers[event.Exception[n-1].Type] || hint == nil {
		return event
	}
	if err, ok := hint.OriginalException.(error); ok {
		event.Exception[n-1].Type = errorType(innermost(err))
	}
	return event
}
