package client

import (
	"fmt"

	"github.com/batchflow/batchflow/pkg/batches"
)

// Control verbs: a request on <prefix>.api.<verb>, answered by the leading
// planner. Request/reply, rather than desired state in KV, so the caller
// learns at once whether the change was allowed, and "no planner is
// running" is an immediate, clear error (NATS reports no responders).
const (
	VerbPause  = "pause"
	VerbResume = "resume"
	VerbCancel = "cancel"
	VerbRetry  = "retry"
	VerbSet    = "set"
)

// ControlRequest is the body of a control request.
type ControlRequest struct {
	Migration string `json:"migration"`
	// Reason is recorded with the status change (pause, cancel).
	Reason string `json:"reason,omitempty"`
	// Settings are the changes of a set request.
	Settings *Settings `json:"settings,omitempty"`
}

// Settings are the spec fields an operator may change while a migration
// runs. Nil fields stay as they are. Sizes and pauses take effect on the
// next batch or sub-batch; parallelism on the next planning step.
type Settings struct {
	BatchSize     *int              `json:"batch_size,omitempty"`
	SubBatchSize  *int              `json:"sub_batch_size,omitempty"`
	SubBatchPause *batches.Duration `json:"sub_batch_pause,omitempty"`
	BatchPause    *batches.Duration `json:"batch_pause,omitempty"`
	Parallelism   *int              `json:"parallelism,omitempty"`
}

// Empty reports whether s changes nothing.
func (s Settings) Empty() bool {
	return s.BatchSize == nil && s.SubBatchSize == nil && s.SubBatchPause == nil && s.BatchPause == nil && s.Parallelism == nil
}

// Validate refuses explicit values that are not settings: a zero or
// negative size or parallelism (which in a spec would mean "default"), a
// negative pause. The result of applying them is then checked as a spec.
func (s Settings) Validate() error {
	var problems []batches.Problem
	positive := func(field string, v *int) {
		if v != nil && *v < 1 {
			problems = append(problems, batches.Problem{Field: field, Message: fmt.Sprintf("must be at least 1, got %d", *v)})
		}
	}
	positive("batch_size", s.BatchSize)
	positive("sub_batch_size", s.SubBatchSize)
	positive("parallelism", s.Parallelism)
	for _, d := range []struct {
		field string
		v     *batches.Duration
	}{{"sub_batch_pause", s.SubBatchPause}, {"batch_pause", s.BatchPause}} {
		if d.v != nil && *d.v < 0 {
			problems = append(problems, batches.Problem{Field: d.field, Message: fmt.Sprintf("must not be negative, got %s", *d.v)})
		}
	}
	if len(problems) > 0 {
		return &batches.ValidationError{Problems: problems}
	}
	return nil
}

// Apply returns spec with the settings applied.
func (s Settings) Apply(spec batches.Spec) batches.Spec {
	if s.BatchSize != nil {
		spec.BatchSize = *s.BatchSize
	}
	if s.SubBatchSize != nil {
		spec.SubBatchSize = *s.SubBatchSize
	}
	if s.SubBatchPause != nil {
		spec.SubBatchPause = *s.SubBatchPause
	}
	if s.BatchPause != nil {
		spec.BatchPause = *s.BatchPause
	}
	if s.Parallelism != nil {
		spec.Parallelism = *s.Parallelism
	}
	return spec
}

// ControlReply answers a control request: the migration after the change,
// or an error.
type ControlReply struct {
	Migration *batches.Migration `json:"migration,omitempty"`
	Error     *ReplyError        `json:"error,omitempty"`
}

// Error codes of a ReplyError.
const (
	CodeNotFound     = "not_found"
	CodeInvalidState = "invalid_state"
	CodeInvalid      = "invalid"
	CodeInternal     = "internal"
)

// ReplyError is a refused or failed control request.
type ReplyError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
