package daemon_test

import (
	"context"

	"github.com/batchflow/batchflow/pkg/daemon"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/sink"
)

// hashEmails stands for a team's Go kind (see examples/custom-executor).
type hashEmails struct{}

func (hashEmails) ProcessBatch(ctx context.Context, tx sink.Tx, b executor.SubBatch) (int64, error) {
	return 0, nil
}

// A team's executor binary: the stock executor's flags, environment,
// /healthz and /metrics, Sentry, traces and graceful stop, with its own kind.
// Run the stock planner with --kind hash_emails next to it.
func ExampleExecutor() {
	cmd := daemon.Executor(map[string]executor.Kind{"hash_emails": hashEmails{}})
	cmd.Name = "my-executor"
	daemon.Main(cmd) // until SIGINT or SIGTERM
}

// The stock daemons' mains, whole.
func ExampleMain() {
	daemon.Main(daemon.Planner()) // cmd/planner
	// daemon.Main(daemon.Executor(nil)) in cmd/executor, daemon.Main(daemon.Watchdog()) in cmd/watchdog
}
