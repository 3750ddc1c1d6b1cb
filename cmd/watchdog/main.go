// Command watchdog is batchflow's watchdog daemon: it republishes batches
// that stopped making progress, fails batches their executors keep dying
// on, and republishes batches whose messages were lost. Several may run.
package main

import "github.com/batchflow/batchflow/pkg/daemon"

func main() { daemon.Main(daemon.Watchdog()) }
