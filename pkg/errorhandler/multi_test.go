package errorhandler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/errorhandler"
)

// recorder is a Handler that keeps what it receives.
type recorder struct {
	mu      sync.Mutex
	reports []errorhandler.Report
}

func (r *recorder) HandleError(_ context.Context, rep errorhandler.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, rep)
}

func (r *recorder) got() []errorhandler.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]errorhandler.Report(nil), r.reports...)
}

func TestMultiCallsAllHandlers(t *testing.T) {
	t.Parallel()
	var a, b recorder
	h := errorhandler.Multi(&a, nil, &b)
	r := batchReport()
	h.HandleError(context.Background(), r)

	require.Equal(t, []errorhandler.Report{r}, a.got())
	require.Equal(t, []errorhandler.Report{r}, b.got())
}

var errBoom = errors.New("sentry transport exploded")

func TestMultiSurvivesPanickingHandler(t *testing.T) {
	t.Parallel()
	var before, after recorder
	panicky := errorhandler.HandlerFunc(func(context.Context, errorhandler.Report) { panic(errBoom) })
	h := errorhandler.Multi(&before, panicky, &after)
	r := batchReport()

	require.NotPanics(t, func() { h.HandleError(context.Background(), r) })

	// Both others got the report and the panic, each exactly once.
	for name, rec := range map[string]*recorder{"before": &before, "after": &after} {
		got := rec.got()
		require.Len(t, got, 2, name)
		var original, panicReport errorhandler.Report
		for _, g := range got {
			if g.Component == "errorhandler" {
				panicReport = g
			} else {
				original = g
			}
		}
		require.Equal(t, r, original, name)

		var perr *errorhandler.HandlerPanicError
		require.ErrorAs(t, panicReport.Err, &perr, name)
		require.Equal(t, "errorhandler.HandlerFunc", perr.Handler)
		require.ErrorIs(t, panicReport.Err, errBoom, "the panic value is in the chain")
		require.ErrorIs(t, perr.Report, errDeadlock, "the interrupted report's error is kept")
		require.NotEmpty(t, perr.Stack)
		require.Equal(t, r.Migration, panicReport.Migration, "the panic is filed next to the report")
		require.Equal(t, r.Seq, panicReport.Seq)
	}
}

func TestMultiPanicIsLoggedAsError(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	panicky := errorhandler.HandlerFunc(func(context.Context, errorhandler.Report) { panic("nil map") })
	errorhandler.Multi(panicky, errorhandler.Log(logger)).HandleError(context.Background(), batchReport())

	dec := json.NewDecoder(&buf)
	var panicLine, reportLine map[string]any
	require.NoError(t, dec.Decode(&panicLine))
	require.NoError(t, dec.Decode(&reportLine))
	require.Equal(t, "ERROR", panicLine["level"], "a handler panic is a bug, whatever the report's class")
	require.Equal(t, "errorhandler: error handler panicked", panicLine["msg"])
	require.Contains(t, panicLine["err"], "nil map")
	require.Equal(t, "WARN", reportLine["level"])
	require.Equal(t, "executor: batch attempt failed, will retry", reportLine["msg"])
}

func TestMultiAloneSurvivesPanic(t *testing.T) {
	t.Parallel()
	h := errorhandler.Multi(errorhandler.HandlerFunc(func(context.Context, errorhandler.Report) { panic("nil map") }))
	require.NotPanics(t, func() { h.HandleError(context.Background(), batchReport()) })
}

func TestMultiEmptyAndNop(t *testing.T) {
	t.Parallel()
	require.NotPanics(t, func() {
		errorhandler.Multi().HandleError(context.Background(), batchReport())
		errorhandler.Multi(nil, nil).HandleError(context.Background(), batchReport())
		errorhandler.Nop().HandleError(context.Background(), batchReport())
	})
}
