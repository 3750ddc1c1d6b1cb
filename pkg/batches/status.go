package batches

import (
	"errors"
	"fmt"
)

// ErrInvalidTransition is returned (wrapped) for a state change the state
// machines of DESIGN.md §7 do not allow.
var ErrInvalidTransition = errors.New("invalid state transition")

// MigrationStatus is where a migration is in its life:
//
//	enqueued → running → succeeded | failed | cancelled
//	running ⇄ paused
//	enqueued | running | paused → cancelled
//	failed → running (retry)
//
// A migration waiting for its `after` predecessors stays enqueued.
type MigrationStatus string

const (
	MigrationEnqueued  MigrationStatus = "enqueued"
	MigrationRunning   MigrationStatus = "running"
	MigrationPaused    MigrationStatus = "paused"
	MigrationSucceeded MigrationStatus = "succeeded"
	MigrationFailed    MigrationStatus = "failed"
	MigrationCancelled MigrationStatus = "cancelled"
)

var migrationTransitions = map[MigrationStatus][]MigrationStatus{
	MigrationEnqueued: {MigrationRunning, MigrationCancelled},
	MigrationRunning:  {MigrationPaused, MigrationSucceeded, MigrationFailed, MigrationCancelled},
	MigrationPaused:   {MigrationRunning, MigrationCancelled},
	MigrationFailed:   {MigrationRunning},
}

// Valid reports whether s is one of the statuses above.
func (s MigrationStatus) Valid() bool {
	switch s {
	case MigrationEnqueued, MigrationRunning, MigrationPaused,
		MigrationSucceeded, MigrationFailed, MigrationCancelled:
		return true
	}
	return false
}

// Final reports whether the migration has stopped for good: succeeded or
// cancelled. A failed migration can still be retried.
func (s MigrationStatus) Final() bool {
	return s == MigrationSucceeded || s == MigrationCancelled
}

// Settled reports whether nothing more happens without an operator:
// succeeded, failed or cancelled. `batchflow wait` returns on these.
func (s MigrationStatus) Settled() bool {
	return s.Final() || s == MigrationFailed
}

// Live reports whether the name is taken by a migration still in play, so
// that a different spec under the same name is rejected.
func (s MigrationStatus) Live() bool { return s != "" && s != MigrationCancelled }

// CanTransitionTo reports whether s may change to next.
func (s MigrationStatus) CanTransitionTo(next MigrationStatus) bool {
	for _, allowed := range migrationTransitions[s] {
		if allowed == next {
			return true
		}
	}
	return false
}

// TransitionTo returns next if the change is allowed, or an error wrapping
// ErrInvalidTransition that names both states.
func (s MigrationStatus) TransitionTo(next MigrationStatus) (MigrationStatus, error) {
	if !s.CanTransitionTo(next) {
		return s, fmt.Errorf("migration %s → %s: %w", s, next, ErrInvalidTransition)
	}
	return next, nil
}

// BatchStatus is where a batch is in its life:
//
//	pending → running → succeeded | failed
//	running → pending   (retriable error: attempts+1; stall: epoch+1;
//	                     graceful executor shutdown: neither)
//	pending → failed    (dead letter: the message reached max deliveries
//	                     without ever being claimed)
//	failed → pending    (operator retry: fresh attempts)
type BatchStatus string

const (
	BatchPending   BatchStatus = "pending"
	BatchRunning   BatchStatus = "running"
	BatchSucceeded BatchStatus = "succeeded"
	BatchFailed    BatchStatus = "failed"
)

var batchTransitions = map[BatchStatus][]BatchStatus{
	BatchPending: {BatchRunning, BatchFailed},
	BatchRunning: {BatchSucceeded, BatchFailed, BatchPending},
	BatchFailed:  {BatchPending},
}

// Valid reports whether s is one of the statuses above.
func (s BatchStatus) Valid() bool {
	switch s {
	case BatchPending, BatchRunning, BatchSucceeded, BatchFailed:
		return true
	}
	return false
}

// CanTransitionTo reports whether s may change to next.
func (s BatchStatus) CanTransitionTo(next BatchStatus) bool {
	for _, allowed := range batchTransitions[s] {
		if allowed == next {
			return true
		}
	}
	return false
}

// TransitionTo returns next if the change is allowed, or an error wrapping
// ErrInvalidTransition that names both states.
func (s BatchStatus) TransitionTo(next BatchStatus) (BatchStatus, error) {
	if !s.CanTransitionTo(next) {
		return s, fmt.Errorf("batch %s → %s: %w", s, next, ErrInvalidTransition)
	}
	return next, nil
}
