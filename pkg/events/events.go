// Package events is batchflow's lifecycle event contract (DESIGN.md §4):
// the CloudEvents 1.0 envelope, the subject scheme
// <prefix>.events.<migration>.<scope>.<event>, a publisher for the planner,
// executors and watchdog, and Subscribe for the programs that alert on them.
//
// Alerting on failed migrations and retried batches:
//
//	sub, err := events.Subscribe(ctx, js, events.SubscribeOptions{
//		Types:   []events.Type{events.MigrationFailed, events.BatchRetried},
//		Durable: "pager",
//	}, func(ctx context.Context, ev events.Event) error {
//		return page(ev.Data.Migration, ev.Data.Error)
//	})
package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/batchflow/batchflow/pkg/batches"
)

// Scope says whether an event is about a whole migration or one batch.
type Scope string

const (
	ScopeMigration Scope = "migration"
	ScopeBatch     Scope = "batch"
)

// Type is the CloudEvents type of an event, "batchflow.<scope>.<event>".
type Type string

// Batch events, emitted by executors and the watchdog.
const (
	// BatchStarted: an executor claimed the batch and begins (or resumes) it.
	BatchStarted Type = "batchflow.batch.started"
	// BatchProcessBatch: one sub-batch committed, with its rows and duration.
	BatchProcessBatch Type = "batchflow.batch.process_batch"
	// BatchCompleted: every sub-batch of the batch committed.
	BatchCompleted Type = "batchflow.batch.completed"
	// BatchRetried: an attempt failed and the batch will be retried.
	BatchRetried Type = "batchflow.batch.retried"
	// BatchThrottled: the executor entered (Data.Throttled true, with a
	// reason) or left (false) a throttled state.
	BatchThrottled Type = "batchflow.batch.throttled"
	// BatchFailed: the batch exhausted its attempts or hit a fatal error.
	BatchFailed Type = "batchflow.batch.failed"
	// BatchStalled: the watchdog republished a batch that made no progress.
	BatchStalled Type = "batchflow.batch.stalled"
	// BatchSubBatchResized: the adaptive sub-batch size changed.
	BatchSubBatchResized Type = "batchflow.batch.sub_batch_resized"
)

// Migration events, emitted by the planner.
const (
	MigrationEnqueued  Type = "batchflow.migration.enqueued"
	MigrationRejected  Type = "batchflow.migration.rejected"
	MigrationStarted   Type = "batchflow.migration.started"
	MigrationPaused    Type = "batchflow.migration.paused"
	MigrationResumed   Type = "batchflow.migration.resumed"
	MigrationCancelled Type = "batchflow.migration.cancelled"
	MigrationSucceeded Type = "batchflow.migration.succeeded"
	MigrationFailed    Type = "batchflow.migration.failed"
	// MigrationProgress is emitted at most every 5 s while a migration runs.
	MigrationProgress Type = "batchflow.migration.progress"
)

// Types lists every event type of the contract.
func Types() []Type {
	return []Type{
		BatchStarted, BatchProcessBatch, BatchCompleted, BatchRetried, BatchThrottled,
		BatchFailed, BatchStalled, BatchSubBatchResized,
		MigrationEnqueued, MigrationRejected, MigrationStarted, MigrationPaused, MigrationResumed,
		MigrationCancelled, MigrationSucceeded, MigrationFailed, MigrationProgress,
	}
}

// NewType builds the type of event name in scope.
func NewType(scope Scope, name string) Type {
	return Type("batchflow." + string(scope) + "." + name)
}

// Scope returns the type's scope.
func (t Type) Scope() Scope {
	scope, _, _ := t.split()
	return scope
}

// Name returns the type's event name: "completed" for BatchCompleted.
func (t Type) Name() string {
	_, name, _ := t.split()
	return name
}

// Valid reports whether t has the form batchflow.<migration|batch>.<name>
// with a name usable as a subject token.
func (t Type) Valid() bool {
	_, _, ok := t.split()
	return ok
}

func (t Type) split() (Scope, string, bool) {
	rest, ok := strings.CutPrefix(string(t), "batchflow.")
	if !ok {
		return "", "", false
	}
	scope, name, ok := strings.Cut(rest, ".")
	if !ok || (scope != string(ScopeMigration) && scope != string(ScopeBatch)) || !validToken(name) {
		return "", "", false
	}
	return Scope(scope), name, true
}

// SpecVersion is the CloudEvents version of the envelope.
const SpecVersion = "1.0"

// Event is one lifecycle event: a CloudEvents 1.0 structured JSON envelope
// with typed data. It is what travels on the event subjects, byte for byte.
type Event struct {
	SpecVersion string `json:"specversion"`
	// ID is unique per event; JetStream also uses it to drop duplicate publishes.
	ID string `json:"id"`
	// Source is the emitting process: batchflow/<component>/<host>/<pid>.
	Source string `json:"source"`
	Type   Type   `json:"type"`
	// Subject is "<migration>" for migration events and "<migration>/<seq>"
	// for batch events.
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	// TraceParent is the W3C trace context of the work the event is about,
	// so an alert links to its trace.
	TraceParent string `json:"traceparent,omitempty"`
	Data        Data   `json:"data"`
}

// Data is the payload of every event type. Fields that do not apply to a
// type are left out of its JSON.
type Data struct {
	Migration string `json:"migration"`
	// Batch identifies the batch and its key range (Lo exclusive, Hi
	// inclusive); nil for migration events.
	Batch        *BatchRef `json:"batch,omitempty"`
	Attempt      int       `json:"attempt,omitempty"`
	Epoch        int64     `json:"epoch,omitempty"`
	RowsAffected int64     `json:"rows_affected,omitempty"`
	DurationMS   int64     `json:"duration_ms,omitempty"`
	Executor     string    `json:"executor,omitempty"`
	Error        *Error    `json:"error,omitempty"`
	// Status is the migration's status after the event (migration events).
	Status batches.MigrationStatus `json:"status,omitempty"`
	// Reason says why: a rejection, a pause or cancel, a throttle, a failure.
	Reason string `json:"reason,omitempty"`
	// Problems lists every problem of a rejected spec.
	Problems []batches.Problem `json:"problems,omitempty"`
	// Throttled is true on entering a throttled state and false on leaving it.
	Throttled *bool `json:"throttled,omitempty"`
	// SubBatch describes the committed sub-batch (process_batch).
	SubBatch *SubBatch `json:"sub_batch,omitempty"`
	// SubBatchSize and PreviousSubBatchSize describe a resize.
	SubBatchSize         int `json:"sub_batch_size,omitempty"`
	PreviousSubBatchSize int `json:"previous_sub_batch_size,omitempty"`
	// Checkpoint is the last key applied in the batch.
	Checkpoint *batches.Key `json:"checkpoint,omitempty"`
	// FailedKeys are rows skipped under on_row_error skip.
	FailedKeys []batches.Key `json:"failed_keys,omitempty"`
	// RetryInMS is the backoff before the next attempt (retried).
	RetryInMS int64 `json:"retry_in_ms,omitempty"`
	// PreviousOwner and StalledForMS describe a stall (stalled).
	PreviousOwner string `json:"previous_owner,omitempty"`
	StalledForMS  int64  `json:"stalled_for_ms,omitempty"`
	// Progress summarises the migration (progress, succeeded, failed).
	Progress *Progress `json:"progress,omitempty"`
	// RequestID is the message id of the enqueue message an enqueued or
	// rejected event answers, so the publisher can find its outcome.
	RequestID string `json:"request_id,omitempty"`
}

// BatchRef identifies a batch and its keys: (Lo, Hi] of the batch column,
// or [Lo, Hi] when LoInclusive is set (the first batch).
type BatchRef struct {
	Seq         int64       `json:"seq"`
	Lo          batches.Key `json:"lo"`
	LoInclusive bool        `json:"lo_inclusive,omitempty"`
	Hi          batches.Key `json:"hi"`
}

// SubBatch describes one committed sub-batch.
type SubBatch struct {
	Lo   batches.Key `json:"lo"`
	Hi   batches.Key `json:"hi"`
	Size int         `json:"size"`
}

// Error is an error as reported in events: its class and message.
type Error struct {
	Class   batches.ErrorClass `json:"class"`
	Message string             `json:"message"`
}

// Progress summarises a migration's advance.
type Progress = batches.Progress

// Scope returns the event's scope.
func (e Event) Scope() Scope { return e.Type.Scope() }

// Name returns the event's name within its scope ("completed").
func (e Event) Name() string { return e.Type.Name() }

// Decode parses an event envelope and checks it is one of batchflow's.
func Decode(data []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("decode event: %w", err)
	}
	switch {
	case e.SpecVersion != SpecVersion:
		return e, fmt.Errorf("decode event: specversion %q, want %q", e.SpecVersion, SpecVersion)
	case !e.Type.Valid():
		return e, fmt.Errorf("decode event: type %q is not a batchflow event type", e.Type)
	case e.ID == "":
		return e, fmt.Errorf("decode event: no id")
	}
	return e, nil
}

// eventSubject is the envelope's subject attribute for an event.
func eventSubject(t Type, d Data) string {
	if t.Scope() == ScopeBatch && d.Batch != nil {
		return fmt.Sprintf("%s/%d", d.Migration, d.Batch.Seq)
	}
	return d.Migration
}
