package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/errorhandler"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

// errSuperseded: the batch record shows another epoch or owner: the
// watchdog republished the batch and someone else owns it now. The old
// owner stops without acking, naking or writing over the new one.
var errSuperseded = errors.New("batch superseded: another executor owns it now")

// run is one worker's work on one delivery of a batch.
type run struct {
	e      *Executor
	worker string
	msg    jetstream.Msg
	key    string

	rec batches.Batch // the batch record as this run last wrote or read it
	rev uint64
	mig batches.Migration

	sink    sink.Sink
	rel     sink.Relation
	change  sink.Change
	attempt int

	from       batches.Key
	rows       int64
	failedKeys []batches.Key
	size       *sizer
	sizeSpec   int // the spec's sub_batch_size the sizer started from
	started    time.Time
	lastBeat   time.Time
	throttled  bool
	lastCheck  time.Time
	ctx        context.Context // the batch's trace context; not cancelled by shutdown

	throttleMark time.Time // throttled time is counted up to here
	outcome      string    // how the attempt ended, for the batch duration metric
	attrs        runAttrs  // the batch's metric attributes, from its claim
}

// handle takes one delivery of a batch from claim to ack.
func (e *Executor) handle(ctx context.Context, worker string, msg jetstream.Msg) {
	var hint batches.Batch
	if err := json.Unmarshal(msg.Data(), &hint); err != nil || !batches.ValidName(hint.Migration) {
		e.log.Error("executor: unreadable batch message, dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	// Work outlives a shutdown request: the current sub-batch finishes and
	// the batch is handed back. Cancellation is checked between sub-batches.
	work := context.WithoutCancel(ctx)
	msgID := msg.Headers().Get(jetstream.MsgIDHeader)
	work, span := bus.StartProcessSpan(work, e.tracer, msg.Subject(), msg.Headers(), bus.ExecutorsConsumer, msgID,
		attribute.String("batchflow.migration", hint.Migration), attribute.Int64("batchflow.batch.seq", hint.Seq))
	defer span.End()

	r := &run{e: e, worker: worker, msg: msg, key: bus.BatchKey(hint.Migration, hint.Seq), ctx: work}
	err := r.execute(ctx, hint)
	e.batchEnded(r, err)
	if err != nil && !errors.Is(err, errSuperseded) {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// execute claims the batch and applies it. A nil error means the batch was
// settled, handed back or dropped as a duplicate; the message is dealt with.
func (r *run) execute(ctx context.Context, hint batches.Batch) error {
	e := r.e
	ok, err := r.claim(hint)
	if err != nil || !ok {
		return err
	}
	r.started = time.Now()
	e.batchStarted(r)

	if err := r.prepare(); err != nil {
		return r.failAttempt(err, r.classify(err))
	}
	cp, err := r.sink.BeginBatch(r.ctx, r.rec.Migration, r.rec.Seq, r.rel.Key)
	if err != nil {
		return r.failAttempt(err, r.classify(err))
	}
	r.from, r.rows, r.failedKeys = cp.Key, cp.RowsAffected, cp.FailedKeys
	r.sizeSpec = r.mig.Spec.SubBatchSize
	r.size = r.newSizer()
	r.emit(events.BatchStarted, events.Data{Checkpoint: keyPtr(r.from)})

	stopBeats := r.keepAlive()
	defer stopBeats()

	transientTries := 0
	bisect := 0 // > 0: isolating failing rows with sub-batches of this many rows
	for {
		if ctx.Err() != nil {
			return r.handBack(false)
		}
		if stop, err := r.checkControl(); stop {
			return err
		}
		if wait, err := r.checkThrottle(ctx); wait {
			continue
		} else if err != nil {
			return err
		}

		sb := r.nextSubBatch(bisect)
		size := sb.Limit
		t0 := time.Now()
		res, err := r.applySubBatch(sb)
		took := time.Since(t0)
		if err != nil {
			e.metrics.subBatch(r.ctx, r.attrs, took, size, 0, true)
			class := r.classify(err)
			switch {
			case class == batches.ClassCheckpointMoved:
				e.log.Info("executor: checkpoint moved, another executor owns the batch", "migration", r.rec.Migration, "batch", r.rec.Seq, "worker", r.worker)
				return errSuperseded
			case class == batches.ClassTransient && transientTries < e.cfg.TransientRetries:
				transientTries++
				e.log.Warn("executor: transient error, retrying the sub-batch", "migration", r.rec.Migration, "batch", r.rec.Seq, "try", transientTries, "err", err)
				r.sleep(ctx, time.Duration(transientTries*transientTries)*200*time.Millisecond)
				continue
			case class == batches.ClassData && r.mig.Spec.OnRowError == batches.RowErrorSkip:
				if size <= 1 && bisect > 0 {
					if err := r.skipFailingRow(sb); err != nil {
						return r.failAttempt(err, r.classify(err))
					}
					continue
				}
				if size <= 0 { // an explicit-range sub-batch: switch to counted rows
					size = r.size.size
				}
				bisect = max(1, size/2)
				continue
			default:
				return r.failAttempt(err, class)
			}
		}
		transientTries = 0
		r.rows += res.Rows
		r.from = res.Checkpoint
		if size == 0 {
			size = r.size.size
		}
		e.metrics.subBatch(r.ctx, r.attrs, took, size, res.Rows, false)
		r.emit(events.BatchProcessBatch, events.Data{
			RowsAffected: res.Rows, DurationMS: took.Milliseconds(),
			SubBatch: &events.SubBatch{Lo: res.Lo, Hi: res.Hi, Size: size},
		})
		if bisect > 0 {
			// Past the bad rows: grow back toward the normal size.
			if bisect *= 2; bisect >= r.size.size {
				bisect = 0
			}
		} else if newSize, changed := r.size.observe(took); changed {
			r.e.sizes.put(r.rec.Migration, r.sizeSpec, newSize)
			r.emit(events.BatchSubBatchResized, events.Data{SubBatchSize: newSize, PreviousSubBatchSize: size})
		}
		if res.Done {
			return r.complete(ctx)
		}
		if ctx.Err() != nil {
			return r.handBack(false) // it writes the checkpoint: no heartbeat first
		}
		if err := r.heartbeat(false); err != nil {
			return err
		}
		r.sleep(ctx, r.mig.Spec.SubBatchPause.D())
	}
}

// claim reads the batch record and takes it for this worker, or drops the
// delivery when it is stale, a duplicate, or its migration is gone.
func (r *run) claim(hint batches.Batch) (bool, error) {
	e := r.e
	entry, err := e.res.BatchesKV.Get(r.ctx, r.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		e.log.Warn("executor: batch has no record, dropped", "batch", r.key)
		return false, r.msg.Ack()
	}
	if err != nil {
		_ = r.msg.NakWithDelay(time.Second)
		return false, fmt.Errorf("read batch %s: %w", r.key, err)
	}
	if err := json.Unmarshal(entry.Value(), &r.rec); err != nil {
		_ = r.msg.Term()
		return false, fmt.Errorf("read batch %s: %w", r.key, err)
	}
	r.rev = entry.Revision()
	mig, ok := e.migrations.get(r.rec.Migration)
	if !ok {
		e.log.Warn("executor: batch of an unknown migration, dropped", "batch", r.key)
		return false, r.msg.Ack()
	}
	r.mig = mig
	switch {
	case r.rec.Status == batches.BatchSucceeded || r.rec.Status == batches.BatchFailed:
		return false, r.msg.Ack() // settled already: a duplicate delivery
	case r.rec.Epoch != hint.Epoch:
		return false, r.msg.Ack() // a message of an earlier (or later) publish
	case r.rec.Status == batches.BatchRunning && r.rec.Owner != "" && r.rec.Owner != r.worker &&
		firstDelivery(r.msg) && r.rec.Heartbeat != nil && time.Since(*r.rec.Heartbeat) < mig.Spec.HealthCheck.Timeout.D():
		// A second message for a batch someone is working on (a planner
		// republished it): drop it. A redelivery is different: the holder
		// of this very message stopped keeping it alive, so take over; the
		// ledger keeps a holder that is merely slow from applying twice.
		return false, r.msg.Ack()
	}
	switch mig.Status {
	case batches.MigrationCancelled:
		return false, r.msg.Ack()
	case batches.MigrationPaused:
		r.rec.Released = true
		if err := r.write(func(b *batches.Batch) { b.Released = true }); err != nil {
			return false, err
		}
		return false, r.msg.Ack()
	case batches.MigrationRunning:
	default:
		_ = r.msg.NakWithDelay(time.Second)
		return false, nil
	}
	now := time.Now().UTC()
	r.attempt = r.rec.Attempts + 1
	if err := r.write(func(b *batches.Batch) {
		b.Status, b.Owner, b.Released, b.Heartbeat = batches.BatchRunning, r.worker, false, &now
		if b.StartedAt == nil {
			b.StartedAt = &now
		}
	}); err != nil {
		if errors.Is(err, errSuperseded) {
			return false, r.msg.Ack()
		}
		return false, err
	}
	return true, nil
}

// prepare opens the target and builds the change of the migration's kind.
func (r *run) prepare() error {
	s, err := r.e.targets.Sink(r.ctx, r.mig.Spec.Target)
	if err != nil {
		return err
	}
	r.sink = s
	tbl, err := s.Table(r.ctx, r.mig.Spec.Table)
	if err != nil {
		return err
	}
	column := r.mig.BatchColumn
	if column == "" {
		column = r.mig.Spec.BatchColumn
	}
	col, err := tbl.BatchColumn(column)
	if err != nil {
		return err
	}
	r.rel = kinds.Relation(r.mig.Spec, sink.Relation{Table: tbl, Column: col.Name, Key: col.Key, Where: r.mig.Spec.Where})
	if kind, ok := r.e.cfg.Kinds[r.mig.Spec.Kind]; ok {
		r.change = customChange(kind, &r.mig, r.rel, r.rec.Seq, r.attempt)
		return nil
	}
	r.change, err = kinds.Build(r.mig.Spec, r.rel)
	if errors.Is(err, kinds.ErrNotStock) {
		return Fail(fmt.Errorf("this executor has no kind %q (register it in executor.Config.Kinds)", r.mig.Spec.Kind))
	}
	return err
}

// newSizer starts the sub-batch size where this executor's last batch of
// the migration left it, or at the spec's sub_batch_size.
func (r *run) newSizer() *sizer {
	size := r.sizeSpec
	if remembered, ok := r.e.sizes.get(r.rec.Migration, r.sizeSpec); ok {
		size = remembered
	}
	return newSizer(size, r.mig.Spec.SubBatchTargetOrDefault())
}

// batchRange is the batch's key range.
func (r *run) batchRange() sink.Range {
	return sink.Range{Lo: r.rec.Lo, LoInclusive: r.rec.LoInclusive, Hi: r.rec.Hi}
}

// nextSubBatch chooses the next sub-batch. For integer keys the upper key
// is chosen by key span, from the batch's density (the planner cut it at
// batch_size rows), so the sink needs no scan to find where the rows end;
// text keys, and the isolation of failing rows, count rows instead.
func (r *run) nextSubBatch(bisect int) sink.SubBatch {
	if r.mig.Spec.SubBatchSize != r.sizeSpec { // changed with `batchflow set`
		r.sizeSpec = r.mig.Spec.SubBatchSize
		r.size = r.newSizer()
	}
	sb := sink.SubBatch{Migration: r.rec.Migration, Seq: r.rec.Seq, Relation: r.rel, Batch: r.batchRange(), From: r.from}
	if bisect > 0 || r.rel.Key != sink.KeyInt || !r.rec.Hi.IsInt() || !r.rec.Lo.IsInt() {
		sb.Limit = max(bisect, 0)
		if sb.Limit == 0 {
			sb.Limit = r.size.size
		}
		return sb
	}
	lo := float64(r.rec.Lo.Int())
	if r.rec.LoInclusive {
		lo--
	}
	rows := r.rec.PlannedRows
	if rows <= 0 {
		rows = r.mig.Spec.BatchSize
	}
	keysPerRow := (float64(r.rec.Hi.Int()) - lo) / float64(max(rows, 1))
	start := lo
	if !r.from.IsNull() {
		start = float64(r.from.Int())
	}
	hi := start + math.Max(1, math.Round(keysPerRow*float64(r.size.size)))
	if hi >= float64(r.rec.Hi.Int()) {
		sb.Hi = r.rec.Hi
	} else {
		sb.Hi = batches.IntKey(int64(hi))
	}
	return sb
}

// applySubBatch runs one sub-batch under its own span.
func (r *run) applySubBatch(sb sink.SubBatch) (sink.Result, error) {
	ctx, span := r.e.tracer.Start(r.ctx, "sub-batch", trace.WithAttributes(
		attribute.String("batchflow.migration", sb.Migration), attribute.Int64("batchflow.batch.seq", sb.Seq),
		attribute.String("batchflow.sub_batch.from", sb.From.String()), attribute.Int("batchflow.sub_batch.limit", sb.Limit),
		attribute.String("batchflow.sub_batch.hi", sb.Hi.String()),
	))
	defer span.End()
	res, err := r.sink.ApplySubBatch(ctx, sb, r.change)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return res, err
	}
	span.SetAttributes(attribute.Int64("batchflow.rows_affected", res.Rows))
	return res, nil
}

// skipFailingRow records the single row at the front of sb as failed and
// moves the checkpoint past it (on_row_error skip).
func (r *run) skipFailingRow(sb sink.SubBatch) error {
	key, ok, err := r.sink.NextKey(r.ctx, r.rel, sb.Rows(), 1)
	if err != nil {
		return err
	}
	if !ok {
		return Fail(errors.New("a sub-batch failed on its own, but no row is left to skip"))
	}
	cp, err := r.sink.SkipKey(r.ctx, sb, key)
	if err != nil {
		return err
	}
	r.from, r.failedKeys = cp.Key, cp.FailedKeys
	r.e.log.Warn("executor: row skipped after a data error", "migration", r.rec.Migration, "batch", r.rec.Seq, "key", key.String())
	return nil
}

// checkControl reacts to a paused or cancelled migration: the batch is
// handed back after the sub-batch that just finished.
func (r *run) checkControl() (stop bool, err error) {
	if mig, ok := r.e.migrations.get(r.rec.Migration); ok {
		r.mig = mig
	}
	switch r.mig.Status {
	case batches.MigrationPaused, batches.MigrationCancelled:
		return true, r.handBack(true)
	}
	return false, nil
}

// checkThrottle holds the batch while the database is unhealthy: it reports
// entering and leaving a throttled state, keeps the batch alive, and checks
// again every ThrottleInterval.
func (r *run) checkThrottle(ctx context.Context) (wait bool, err error) {
	t := r.mig.Spec.Throttle
	if t == nil || (t.MaxReplicationLag == 0 && t.Query == "") {
		return false, nil
	}
	if !r.throttled && time.Since(r.lastCheck) < r.e.cfg.ThrottleInterval {
		return false, nil
	}
	r.lastCheck = time.Now()
	r.countThrottled(r.lastCheck)
	// The checks are reads: a shutdown may cut them short.
	qctx, cancel := context.WithCancel(r.ctx)
	stop := context.AfterFunc(ctx, cancel)
	reason := r.throttleReason(qctx, t)
	stop()
	cancel()
	if ctx.Err() != nil {
		return true, nil // the loop hands the batch back
	}
	switch {
	case reason == "" && r.throttled:
		r.throttled = false
		r.emit(events.BatchThrottled, events.Data{Throttled: boolPtr(false), Reason: "throttle lifted"})
		return false, nil
	case reason == "":
		return false, nil
	case !r.throttled:
		r.throttled, r.throttleMark = true, r.lastCheck
		r.e.log.Info("executor: throttled", "migration", r.rec.Migration, "batch", r.rec.Seq, "reason", reason)
		r.emit(events.BatchThrottled, events.Data{Throttled: boolPtr(true), Reason: reason})
	}
	// Throttled: waiting is the job now. The heartbeat shows the watchdog
	// the batch is alive and waiting on purpose.
	if err := r.heartbeat(true); err != nil {
		return false, err
	}
	r.sleep(ctx, r.e.cfg.ThrottleInterval)
	return true, nil
}

// throttleReason says why the database is unhealthy, or "" when it is not.
// A throttle check that fails counts as unhealthy: better to wait than to
// load a database whose health cannot be read.
func (r *run) throttleReason(ctx context.Context, t *batches.Throttle) string {
	if t.MaxReplicationLag > 0 {
		lag, err := r.sink.ReplicationLag(ctx)
		switch {
		case err != nil:
			return "replication lag unknown: " + err.Error()
		case lag > t.MaxReplicationLag.D():
			return fmt.Sprintf("replication lag %s over the %s limit", lag.Round(time.Millisecond), t.MaxReplicationLag)
		}
	}
	if t.Query != "" {
		yes, err := r.sink.Throttled(ctx, t.Query)
		switch {
		case err != nil:
			return "throttle query failed: " + err.Error()
		case yes:
			return "throttle query returned true"
		}
	}
	return ""
}

// heartbeat writes the checkpoint and the time of progress to KV, at most
// every HeartbeatInterval unless forced.
func (r *run) heartbeat(force bool) error {
	if !force && time.Since(r.lastBeat) < r.e.cfg.HeartbeatInterval {
		return nil
	}
	now := time.Now().UTC()
	err := r.write(func(b *batches.Batch) {
		b.Heartbeat, b.Checkpoint, b.RowsAffected, b.FailedKeys = &now, r.from, r.rows, r.failedKeys
	})
	if err == nil {
		r.lastBeat = time.Now()
	}
	return err
}

// keepAlive tells JetStream the batch is still being worked on, so its
// message is not redelivered while a long sub-batch or a throttle runs.
func (r *run) keepAlive() (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(r.e.cfg.InProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = r.msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// complete records the batch as succeeded and acknowledges its message,
// then waits the spec's batch_pause unless ctx ends.
func (r *run) complete(ctx context.Context) error {
	now := time.Now().UTC()
	if err := r.write(func(b *batches.Batch) {
		b.Status, b.Checkpoint, b.RowsAffected, b.FailedKeys = batches.BatchSucceeded, r.from, r.rows, r.failedKeys
		b.Heartbeat, b.FinishedAt, b.Owner = &now, &now, ""
	}); err != nil {
		return err
	}
	r.outcome = outcomeSucceeded
	r.emit(events.BatchCompleted, events.Data{RowsAffected: r.rows, DurationMS: time.Since(r.started).Milliseconds(), FailedKeys: r.failedKeys})
	if err := r.msg.DoubleAck(r.ctx); err != nil {
		r.e.log.Warn("executor: ack batch", "batch", r.key, "err", err)
	}
	r.sleep(ctx, r.mig.Spec.BatchPause.D())
	return nil
}

// handBack returns the batch without using an attempt: on shutdown its
// message goes back to the queue at once; on a pause or cancel it is
// acknowledged and marked released, for the planner to publish again when
// the migration runs.
func (r *run) handBack(released bool) error {
	r.outcome = outcomeHandedBack
	if !released {
		// Shutting down: an unreachable NATS must not hold the exit. The
		// run ends here, so its context may as well carry the deadline.
		ctx, cancel := context.WithTimeout(r.ctx, handBackTimeout)
		defer cancel()
		r.ctx = ctx
	}
	err := r.write(func(b *batches.Batch) {
		b.Status, b.Owner, b.Released = batches.BatchPending, "", released
		b.Checkpoint, b.RowsAffected, b.FailedKeys = r.from, r.rows, r.failedKeys
	})
	if err != nil {
		return err
	}
	r.e.log.Info("executor: batch handed back", "migration", r.rec.Migration, "batch", r.rec.Seq, "checkpoint", r.from.String(), "released", released)
	if released {
		return r.msg.Ack()
	}
	return r.msg.Nak()
}

// failAttempt ends this attempt: the batch is retried after a backoff, or
// fails for good once its attempts are used up or the error is fatal.
func (r *run) failAttempt(cause error, class batches.ErrorClass) error {
	if errors.Is(cause, errSuperseded) {
		return cause
	}
	now := time.Now().UTC()
	attempts := r.rec.Attempts + 1
	final := (class == batches.ClassFatal && !unmarkedKindError(cause)) || attempts >= r.mig.Spec.MaxAttempts
	record := batches.ErrorRecord{Time: now, Class: class, Message: cause.Error(), Attempt: attempts, Seq: r.rec.Seq, Executor: r.worker}
	err := r.write(func(b *batches.Batch) {
		b.Attempts, b.Errors = attempts, batches.AppendError(b.Errors, record)
		b.Checkpoint, b.RowsAffected, b.FailedKeys, b.Owner = r.from, r.rows, r.failedKeys, ""
		b.Status = batches.BatchPending
		if final {
			b.Status, b.FinishedAt = batches.BatchFailed, &now
		}
	})
	if err != nil {
		return err
	}
	r.e.metrics.attemptFailed(r.ctx, r.rec.Migration, class)
	r.outcome = outcomeRetried
	if final {
		r.outcome = outcomeFailed
	}
	r.e.cfg.ErrorHandler.HandleError(r.ctx, errorhandler.Report{
		Err: cause, Class: class, Component: "executor", Migration: r.rec.Migration, Seq: r.rec.Seq,
		Attempt: attempts, Lo: r.rec.Lo, Hi: r.rec.Hi, LoInclusive: r.rec.LoInclusive, Executor: r.worker, Final: final,
	})
	evErr := &events.Error{Class: class, Message: cause.Error()}
	if final {
		r.emit(events.BatchFailed, events.Data{Attempt: attempts, Error: evErr, RowsAffected: r.rows})
		return r.msg.TermWithReason(bus.TermReason(r.rec.Migration, r.rec.Seq, r.rec.Epoch, fmt.Sprintf("failed after %d attempt(s): %s", attempts, cause)))
	}
	backoff := r.e.cfg.RetryBackoff[min(attempts-1, len(r.e.cfg.RetryBackoff)-1)]
	r.emit(events.BatchRetried, events.Data{Attempt: attempts, Error: evErr, RetryInMS: backoff.Milliseconds()})
	return r.msg.NakWithDelay(backoff)
}

// write changes the batch record with a compare-and-set. A record whose
// epoch or owner changed belongs to someone else: errSuperseded, nothing written.
func (r *run) write(change func(*batches.Batch)) error {
	for tries := 0; ; tries++ {
		next := r.rec
		change(&next)
		next.UpdatedAt = time.Now().UTC()
		data, err := json.Marshal(next)
		if err != nil {
			return err
		}
		rev, err := r.e.res.BatchesKV.Update(r.ctx, r.key, data, r.rev)
		if err == nil {
			r.rec, r.rev = next, rev
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || tries >= 3 {
			return fmt.Errorf("write batch %s: %w", r.key, err)
		}
		// Someone else wrote: only the planner's harmless fields may have
		// changed; a new epoch or owner means the batch is not ours.
		entry, err := r.e.res.BatchesKV.Get(r.ctx, r.key)
		if err != nil {
			return fmt.Errorf("write batch %s: %w", r.key, err)
		}
		var cur batches.Batch
		if err := json.Unmarshal(entry.Value(), &cur); err != nil {
			return fmt.Errorf("write batch %s: %w", r.key, err)
		}
		if cur.Epoch != r.rec.Epoch || (r.rec.Owner != "" && cur.Owner != r.rec.Owner) {
			return errSuperseded
		}
		r.rec, r.rev = cur, entry.Revision()
	}
}

// classify says what err means: the kind's own word first, then the sink's.
func (r *run) classify(err error) batches.ErrorClass {
	if c, ok := ClassOf(err); ok {
		return c
	}
	if errors.Is(err, sink.ErrCheckpointMoved) {
		return batches.ClassCheckpointMoved
	}
	if r.sink == nil {
		return batches.ClassTransient // the target could not be opened
	}
	return r.sink.Classify(err)
}

// emit publishes a batch event without waiting.
func (r *run) emit(t events.Type, d events.Data) {
	d.Migration = r.rec.Migration
	d.Batch = &events.BatchRef{Seq: r.rec.Seq, Lo: r.rec.Lo, LoInclusive: r.rec.LoInclusive, Hi: r.rec.Hi}
	d.Executor = r.worker
	if d.Attempt == 0 {
		d.Attempt = r.attempt
	}
	if d.Epoch == 0 {
		d.Epoch = r.rec.Epoch
	}
	r.e.pub.Emit(r.ctx, t, d)
}

// sleep waits d, or less if ctx ends.
func (r *run) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// unmarkedKindError reports an error a custom kind returned without saying
// what it means: it fails the attempt, not the batch (see Kind).
func unmarkedKindError(err error) bool {
	var ke *kindError
	if !errors.As(err, &ke) {
		return false
	}
	_, marked := ClassOf(err)
	return !marked
}

// firstDelivery reports whether msg is delivered for the first time.
func firstDelivery(msg jetstream.Msg) bool {
	md, err := msg.Metadata()
	return err == nil && md.NumDelivered <= 1
}

func keyPtr(k batches.Key) *batches.Key { return &k }
func boolPtr(b bool) *bool              { return &b }
