// Package batches holds batchflow's contracts as Go types: the migration spec
// that services publish to enqueue a migration (DESIGN.md §2), the typed
// arguments of the stock kinds, the key values that bound batches, and the
// migration and batch state machines (§7) with the records the planner,
// executors and watchdog keep in JetStream key-value buckets (§3).
//
// A spec arrives as JSON from outside the process, so decoding is strict: an
// unknown field (a typo such as "batchsize") is an error rather than a silent
// default, and every problem is reported at once:
//
//	spec, err := batches.ParseSpec(data)
//	var invalid *batches.ValidationError
//	if errors.As(err, &invalid) {
//		for _, p := range invalid.Problems { fmt.Println(p) }
//	}
//
// Specs built in Go follow the usual convention instead: a zero field means
// its documented default.
package batches
