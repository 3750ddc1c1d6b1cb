// Command executor is batchflow's stock executor: it pulls batches from
// JetStream and applies them to the target databases, exactly once, with
// the stock kinds. Run as many as the databases can take, on any machines.
package main

import "github.com/batchflow/batchflow/pkg/daemon"

func main() { daemon.Main(daemon.Executor(nil)) }
