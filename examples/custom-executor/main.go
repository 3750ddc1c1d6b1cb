// Command custom-executor is a team's own batchflow executor: the stock
// executor, with the same flags and environment as cmd/executor and every
// stock kind, plus one Go kind, normalize_email (normalize.go). Run it in
// place of the stock executor, next to a stock planner told the kind's name:
//
//	planner         --target main=postgres://… --kind normalize_email
//	custom-executor --target main=postgres://…
package main

import (
	"github.com/batchflow/batchflow/pkg/daemon"
	"github.com/batchflow/batchflow/pkg/executor"
)

// kinds are the Go kinds this executor adds to the stock ones, by the name
// specs give in "kind".
var kinds = map[string]executor.Kind{
	normalizeEmailKind: normalizeEmail{},
}

// main is cmd/executor with kinds: the same flags, environment, metrics,
// health check and graceful stop, and the stock kinds besides these.
func main() {
	cmd := daemon.Executor(kinds)
	cmd.Name = "custom-executor"
	daemon.Main(cmd)
}
