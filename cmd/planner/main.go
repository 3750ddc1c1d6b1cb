// Command planner is batchflow's planner daemon: it takes enqueued
// migrations, splits each table's key range into batches on JetStream, and
// decides when a migration has succeeded or failed. Run one or more: one
// leads, the others stand by and take over within seconds.
package main

import "github.com/batchflow/batchflow/pkg/daemon"

func main() { daemon.Main(daemon.Planner()) }
