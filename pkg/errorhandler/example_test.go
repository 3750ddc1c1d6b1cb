package errorhandler_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/errorhandler"
)

// An executor reports a batch that failed for good to its log and to a
// second handler (in production, errorhandler/sentry's Handler).
func Example() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		// Drop the time so the output is stable.
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	pager := errorhandler.HandlerFunc(func(_ context.Context, r errorhandler.Report) {
		if r.Final {
			fmt.Printf("page on-call: %s batch %d %s\n", r.Migration, r.Seq, r.Range())
		}
	})
	handler := errorhandler.Multi(errorhandler.Log(logger), pager)

	handler.HandleError(context.Background(), errorhandler.Report{
		Err:       fmt.Errorf("apply batch 7: %w", fmt.Errorf("invalid input syntax for type integer: %q", "n/a")),
		Class:     batches.ClassData,
		Component: "executor",
		Migration: "backfill-orders",
		Seq:       7,
		Attempt:   5,
		Lo:        batches.IntKey(10),
		Hi:        batches.IntKey(20),
		Executor:  "exec-1",
		Final:     true,
	})
	// Output:
	// level=ERROR msg="executor: batch failed" migration=backfill-orders batch=7 attempt=5 lo=10 hi=20 range="(10, 20]" class=data final=true component=executor executor=exec-1 err="apply batch 7: invalid input syntax for type integer: \"n/a\""
	// page on-call: backfill-orders batch 7 (10, 20]
}
