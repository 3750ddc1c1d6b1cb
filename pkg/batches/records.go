package batches

import "time"

// ErrorClass says what an error means for the batch that hit it.
type ErrorClass string

const (
	// ClassTransient errors (deadlock, serialization failure, lock wait
	// timeout, lost connection) are retried in place.
	ClassTransient ErrorClass = "transient"
	// ClassData errors (bad cast, constraint violation) are the rows' fault:
	// bisected with on_row_error skip, otherwise the attempt fails.
	ClassData ErrorClass = "data"
	// ClassFatal errors (permissions, missing table) fail the batch.
	ClassFatal ErrorClass = "fatal"
	// ClassCheckpointMoved means another executor owns the batch now.
	ClassCheckpointMoved ErrorClass = "checkpoint_moved"
)

// ErrorRecord is one error kept in a migration's or batch's history.
type ErrorRecord struct {
	Time     time.Time  `json:"time"`
	Class    ErrorClass `json:"class"`
	Message  string     `json:"message"`
	Attempt  int        `json:"attempt,omitempty"`
	Seq      int64      `json:"seq,omitempty"`
	Executor string     `json:"executor,omitempty"`
}

// MaxErrorHistory bounds the error history kept in a record, so a batch
// failing for hours does not grow its KV value without limit.
const MaxErrorHistory = 10

// AppendError adds e to history, keeping the most recent MaxErrorHistory.
func AppendError(history []ErrorRecord, e ErrorRecord) []ErrorRecord {
	history = append(history, e)
	if n := len(history); n > MaxErrorHistory {
		history = append([]ErrorRecord(nil), history[n-MaxErrorHistory:]...)
	}
	return history
}

// Migration is the record of one migration in the KV bucket
// batchflow_migrations, key <name>.
type Migration struct {
	// Spec is the spec as enqueued, with defaults applied.
	Spec   Spec            `json:"spec"`
	Status MigrationStatus `json:"status"`
	// BatchColumn, Min and Max are resolved when the migration starts: the
	// spec's values, or the primary key and its MIN/MAX over the filter.
	BatchColumn string `json:"batch_column,omitempty"`
	Min         Key    `json:"min"`
	Max         Key    `json:"max"`
	// EstimatedRows is the planner's estimate of rows in [Min, Max].
	EstimatedRows int64 `json:"estimated_rows,omitempty"`
	// Cursor is how far planning has gone.
	Cursor Cursor `json:"cursor"`
	// Counters are kept up to date by the planner from batch outcomes.
	Counters Counters `json:"counters"`
	// Progress is the planner's latest estimate of how far the migration is.
	Progress Progress `json:"progress"`
	// Reason explains the latest status change (pause, cancel, failure).
	Reason    string        `json:"reason,omitempty"`
	LastError *ErrorRecord  `json:"last_error,omitempty"`
	Errors    []ErrorRecord `json:"errors,omitempty"`

	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Cursor records planning progress so a restarted planner continues with no
// gap and no overlap: the next batch is NextSeq and starts after After.
type Cursor struct {
	NextSeq int64 `json:"next_seq"`
	// After is the exclusive lower bound of the next batch; null before the first.
	After Key `json:"after"`
	// Done is set once the last batch (reaching Max) is planned.
	Done bool `json:"done"`
}

// Counters aggregate a migration's batches.
type Counters struct {
	BatchesPlanned   int64 `json:"batches_planned"`
	BatchesSucceeded int64 `json:"batches_succeeded"`
	BatchesFailed    int64 `json:"batches_failed"`
	RowsAffected     int64 `json:"rows_affected"`
	FailedKeys       int64 `json:"failed_keys"`
	Retries          int64 `json:"retries"`
}

// Progress summarises a migration's advance, in the migration record and
// in progress events.
type Progress struct {
	// Percent of the key span done, 0 to 100.
	Percent          float64 `json:"percent"`
	RowsAffected     int64   `json:"rows_affected"`
	BatchesTotal     int64   `json:"batches_total"`
	BatchesSucceeded int64   `json:"batches_succeeded"`
	BatchesFailed    int64   `json:"batches_failed"`
	// RowsPerSecond is the recent rate; ETASeconds is the estimate of the
	// time left, -1 when unknown.
	RowsPerSecond float64 `json:"rows_per_second"`
	ETASeconds    int64   `json:"eta_seconds"`
}

// Batch is the record of one batch in the KV bucket batchflow_batches, key
// <migration>.<seq>. It is written before the batch is published.
type Batch struct {
	Migration string `json:"migration"`
	Seq       int64  `json:"seq"`
	// Lo and Hi bound the batch's keys: (Lo, Hi], or [Lo, Hi] when
	// LoInclusive is set, as for the first batch, which starts at the
	// migration's Min.
	Lo          Key  `json:"lo"`
	LoInclusive bool `json:"lo_inclusive,omitempty"`
	Hi          Key  `json:"hi"`
	// PlannedRows is about how many rows the batch holds: the batch_size it
	// was cut with (the last batch may hold fewer). Executors size
	// sub-batches by key span from it.
	PlannedRows int         `json:"planned_rows,omitempty"`
	Status      BatchStatus `json:"status"`
	// Attempts counts failed attempts; a stall or a graceful hand-back uses none.
	Attempts int `json:"attempts"`
	// Epoch increases on each republish; only the holder of the current
	// epoch may ack the message or write this record.
	Epoch int64 `json:"epoch"`
	// Owner names the executor working on the batch, when running.
	Owner string `json:"owner,omitempty"`
	// Released is set by an executor that handed the batch back and
	// acknowledged its message (the migration was paused or cancelled): the
	// planner publishes it again, under a new epoch, once it runs.
	Released bool `json:"released,omitempty"`
	// Heartbeat is when the owner last committed a sub-batch: the watchdog
	// judges progress by it, not by liveness.
	Heartbeat *time.Time `json:"heartbeat,omitempty"`
	// Checkpoint is the last key applied (mirrors the ledger, which is the
	// authority); null before the first sub-batch.
	Checkpoint   Key           `json:"checkpoint"`
	RowsAffected int64         `json:"rows_affected"`
	FailedKeys   []Key         `json:"failed_keys,omitempty"`
	Errors       []ErrorRecord `json:"errors,omitempty"`

	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}
