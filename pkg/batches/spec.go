package batches

import (
	"bytes"
	"encoding/json"
	"time"
)

// Defaults of the spec fields (DESIGN.md §2).
const (
	DefaultBatchSize            = 20000
	DefaultSubBatchSize         = 1000
	DefaultSubBatchTarget       = 250 * time.Millisecond
	DefaultParallelism          = 4
	DefaultMaxAttempts          = 5
	DefaultHealthCheckFrequency = 30 * time.Second
	DefaultHealthCheckTimeout   = 45 * time.Second
)

// Limits enforced by Validate. The sub-batch bounds are also the bounds the
// executor's adaptive sizing stays within.
const (
	MinSubBatchSize = 10
	MaxSubBatchSize = 100_000
	MaxBatchSize    = 10_000_000
	MaxParallelism  = 256
	MaxMaxAttempts  = 100
	MinHealthCheck  = time.Second
)

// RowErrorPolicy says what a data error in a sub-batch does.
type RowErrorPolicy string

const (
	// RowErrorFail fails the attempt; the batch is retried with backoff.
	RowErrorFail RowErrorPolicy = "fail"
	// RowErrorSkip isolates the failing rows by bisection, records their
	// keys as failed_keys and applies the rest of the batch.
	RowErrorSkip RowErrorPolicy = "skip"
)

// Spec is a migration as enqueued (DESIGN.md §2). Only Name, Target, Kind
// and Table (and the kind's Args) are required; a zero value elsewhere means
// the default written in the field's comment. WithDefaults fills them in.
type Spec struct {
	// Name identifies the migration: ^[a-z0-9][a-z0-9_-]{0,99}$, unique.
	Name string `json:"name"`
	// Target names the database, configured on the planner and executors
	// with --target NAME=DSN. Specs never carry credentials.
	Target string `json:"target"`
	// Kind selects what each sub-batch does: a stock kind (KindSQL, …) or a
	// kind registered by a custom executor.
	Kind string `json:"kind"`
	// Table is the table to migrate, optionally schema-qualified.
	Table string `json:"table"`
	// BatchColumn is the column whose key range is split into batches.
	// Default: the table's single-column primary key, resolved by the planner.
	BatchColumn string `json:"batch_column,omitempty"`
	// Args are the kind's arguments; see the *Args types of the stock kinds.
	Args json.RawMessage `json:"args,omitempty"`
	// Where restricts the migration to matching rows. Trusted SQL.
	Where string `json:"where,omitempty"`
	// MinValue and MaxValue bound the key range. Default (null): the
	// column's MIN and MAX over the filtered rows when the migration starts.
	MinValue Key `json:"min_value"`
	MaxValue Key `json:"max_value"`
	// BatchSize is the number of rows per batch (one JetStream message). Default 20000.
	BatchSize int `json:"batch_size"`
	// SubBatchSize is the starting number of rows per transaction.
	// Default 1000, or BatchSize when that is smaller.
	SubBatchSize int `json:"sub_batch_size"`
	// SubBatchTarget is the duration the executor adapts sub-batches
	// toward. Nil means the default 250ms; a zero duration keeps the size fixed.
	SubBatchTarget *Duration `json:"sub_batch_target"`
	// SubBatchPause is slept after each sub-batch. Default 0.
	SubBatchPause Duration `json:"sub_batch_pause"`
	// BatchPause is slept after each batch. Default 0.
	BatchPause Duration `json:"batch_pause"`
	// Parallelism is the most batches of this migration in flight. Default 4.
	Parallelism int `json:"parallelism"`
	// MaxAttempts is how many times a batch may fail before the migration
	// fails. Default 5.
	MaxAttempts int `json:"max_attempts"`
	// After names migrations that must succeed before this one starts.
	After []string `json:"after,omitempty"`
	// Throttle pauses work while the database is unhealthy. Default: none.
	Throttle *Throttle `json:"throttle,omitempty"`
	// HealthCheck says when a running batch counts as stalled.
	HealthCheck HealthCheck `json:"health_check"`
	// OnRowError is RowErrorFail (default) or RowErrorSkip.
	OnRowError RowErrorPolicy `json:"on_row_error"`
}

// Throttle holds the database-health limits checked before each sub-batch.
type Throttle struct {
	// MaxReplicationLag throttles while replica lag exceeds it. Zero: not checked.
	MaxReplicationLag Duration `json:"max_replication_lag,omitempty"`
	// Query throttles while it returns true (one row, one boolean column).
	// Trusted SQL.
	Query string `json:"query,omitempty"`
}

// HealthCheck configures stall detection by the watchdog.
type HealthCheck struct {
	// Frequency is how often the watchdog looks. Default 30s.
	Frequency Duration `json:"frequency"`
	// Timeout is how long a running batch may go without committing a
	// sub-batch before it is republished. Default 45s.
	Timeout Duration `json:"timeout"`
}

// WithDefaults returns a copy of s with every unset field at its default.
func (s Spec) WithDefaults() Spec {
	if s.BatchSize == 0 {
		s.BatchSize = DefaultBatchSize
	}
	if s.SubBatchSize == 0 {
		s.SubBatchSize = DefaultSubBatchSize
		if s.BatchSize > 0 {
			s.SubBatchSize = min(DefaultSubBatchSize, s.BatchSize)
		}
	}
	if s.SubBatchTarget == nil {
		d := Duration(DefaultSubBatchTarget)
		s.SubBatchTarget = &d
	} else {
		d := *s.SubBatchTarget // copy: the result must not alias s
		s.SubBatchTarget = &d
	}
	if s.Parallelism == 0 {
		s.Parallelism = DefaultParallelism
	}
	if s.MaxAttempts == 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	if s.HealthCheck.Frequency == 0 {
		s.HealthCheck.Frequency = Duration(DefaultHealthCheckFrequency)
	}
	if s.HealthCheck.Timeout == 0 {
		s.HealthCheck.Timeout = Duration(DefaultHealthCheckTimeout)
	}
	if s.OnRowError == "" {
		s.OnRowError = RowErrorFail
	}
	if s.Throttle != nil {
		t := *s.Throttle
		s.Throttle = &t
	}
	s.After = append([]string(nil), s.After...)
	s.Args = canonicalArgs(s.Args)
	return s
}

// MarshalJSON writes the spec with its defaults filled in: a spec built in
// Go with zero fields (meaning "default") becomes JSON that decodes back to
// the same migration, where an explicit 0 would be refused.
func (s Spec) MarshalJSON() ([]byte, error) {
	type plain Spec
	return json.Marshal(plain(s.WithDefaults()))
}

// SubBatchTargetOrDefault returns the adaptive target; zero means fixed size.
func (s Spec) SubBatchTargetOrDefault() time.Duration {
	if s.SubBatchTarget == nil {
		return DefaultSubBatchTarget
	}
	return s.SubBatchTarget.D()
}

// Same reports whether two specs describe the same migration once defaults
// are applied: enqueueing the same spec twice is a no-op, a different spec
// under a live name is rejected.
func (s Spec) Same(o Spec) bool {
	a, errA := json.Marshal(s.WithDefaults())
	b, errB := json.Marshal(o.WithDefaults())
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// canonicalArgs re-encodes args with sorted object keys and no insignificant
// space, so equal arguments compare equal byte for byte. Args that are not
// valid JSON are returned unchanged for Validate to report.
func canonicalArgs(args json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(args)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return args
	}
	if v == nil {
		return nil
	}
	out, err := json.Marshal(v)
	if err != nil {
		return args
	}
	return out
}
