package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/targets"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

// retryDelay is how long the planner waits before touching a migration
// again after a transient failure (the target unreachable, a lock timeout).
const retryDelay = 5 * time.Second

// reconcile moves every migration forward as far as it can go now.
func (l *leader) reconcile(ctx context.Context) error {
	now := time.Now()
	for _, m := range l.ordered() {
		if now.Before(m.retryAt) {
			continue
		}
		var err error
		switch m.rec.Status {
		case batches.MigrationEnqueued:
			err = l.maybeStart(ctx, m)
		case batches.MigrationRunning:
			err = l.advance(ctx, m)
		}
		if errors.Is(err, errLostOwnership) || errors.Is(err, errCrash) {
			return err
		}
		if err != nil {
			m.retryAt = now.Add(retryDelay)
			l.p.log.Warn("planner: migration step failed, retrying later", "migration", m.name(), "err", err, "retry_in", retryDelay)
		}
		if m.rec.Status == batches.MigrationRunning {
			l.maybeProgress(ctx, m, now)
		}
		if m.dirty && now.Sub(m.lastSave) >= time.Second {
			if err := l.save(ctx, m); err != nil {
				return err
			}
		}
	}
	return nil
}

// maybeStart starts an enqueued migration once its predecessors succeeded
// and its target and table have room.
func (l *leader) maybeStart(ctx context.Context, m *migration) error {
	spec := m.rec.Spec
	reason := ""
	for _, name := range spec.After {
		pred := l.migrations[name]
		switch {
		case pred == nil:
			reason = fmt.Sprintf("waiting for %s, which is not enqueued yet", name)
		case pred.rec.Status != batches.MigrationSucceeded:
			reason = fmt.Sprintf("waiting for %s to succeed (it is %s)", name, pred.rec.Status)
		}
		if reason != "" {
			break
		}
	}
	if reason == "" {
		var onTarget, onTable int
		for _, o := range l.migrations {
			if o == m || (o.rec.Status != batches.MigrationRunning && o.rec.Status != batches.MigrationPaused) {
				continue
			}
			if o.rec.Spec.Target == spec.Target {
				onTarget++
				if o.rec.Spec.Table == spec.Table {
					onTable++
				}
			}
		}
		switch {
		case onTable >= l.p.cfg.MaxRunningPerTable:
			reason = fmt.Sprintf("waiting: %d migration(s) already running on %s.%s", onTable, spec.Target, spec.Table)
		case onTarget >= l.p.cfg.MaxRunningPerTarget:
			reason = fmt.Sprintf("waiting: %d migration(s) already running on target %s", onTarget, spec.Target)
		}
	}
	if reason != "" {
		if m.rec.Reason != reason {
			// Saved at once: an operator asking why it waits should see why.
			m.rec.Reason = reason
			return l.save(ctx, m)
		}
		return nil
	}
	return l.start(ctx, m)
}

// relation resolves m's table and batch column on its target, once.
func (l *leader) relation(ctx context.Context, m *migration) (sink.Sink, sink.Relation, error) {
	if m.rel != nil {
		return m.sink, *m.rel, nil
	}
	s, err := l.p.targets.Sink(ctx, m.rec.Spec.Target)
	if err != nil {
		return nil, sink.Relation{}, err
	}
	rel, err := resolveRelation(ctx, s, m.rec.Spec)
	if err != nil {
		return s, sink.Relation{}, err
	}
	m.sink, m.rel = s, &rel
	return s, rel, nil
}

func resolveRelation(ctx context.Context, s sink.Sink, spec batches.Spec) (sink.Relation, error) {
	tbl, err := s.Table(ctx, spec.Table)
	if err != nil {
		return sink.Relation{}, err
	}
	col, err := tbl.BatchColumn(spec.BatchColumn)
	if err != nil {
		return sink.Relation{}, err
	}
	return kinds.Relation(spec, sink.Relation{Table: tbl, Column: col.Name, Key: col.Key, Where: spec.Where}), nil
}

// start computes the key range and moves m to running.
func (l *leader) start(ctx context.Context, m *migration) error {
	s, rel, err := l.relation(ctx, m)
	if err != nil {
		return l.failOrRetry(ctx, m, s, err)
	}
	spec := m.rec.Spec
	lo, hi, ok, err := s.Bounds(ctx, rel, sink.Range{Lo: spec.MinValue, LoInclusive: true, Hi: spec.MaxValue})
	if err != nil {
		return l.failOrRetry(ctx, m, s, fmt.Errorf("find the key range of %s.%s: %w", rel.Table.Name, rel.Column, err))
	}
	estimate, err := s.EstimateRows(ctx, spec.Table)
	if err != nil {
		l.p.log.Warn("planner: estimate rows", "migration", m.name(), "err", err)
	}
	now := time.Now().UTC()
	if m.rec.Status == batches.MigrationEnqueued {
		m.rec.Status = batches.MigrationRunning
	}
	m.rec.BatchColumn, m.rec.Min, m.rec.Max, m.rec.EstimatedRows = rel.Column, lo, hi, estimate
	m.rec.StartedAt, m.rec.Reason = &now, ""
	m.rec.Cursor = batches.Cursor{}
	m.progress.reset(now)
	if !ok {
		// Nothing matches: done before it began.
		m.rec.Cursor.Done = true
	}
	if err := l.save(ctx, m); err != nil {
		return err
	}
	l.p.log.Info("planner: migration started", "migration", m.name(), "min", lo.String(), "max", hi.String(), "estimated_rows", estimate)
	l.emit(ctx, events.MigrationStarted, events.Data{Migration: m.name(), Status: batches.MigrationRunning})
	l.watch(ctx, m)
	return nil
}

// failOrRetry fails m for an error retrying cannot fix (a missing table)
// and leaves it for a later attempt otherwise (the database unreachable).
func (l *leader) failOrRetry(ctx context.Context, m *migration, s sink.Sink, err error) error {
	var transient bool
	if s == nil {
		// The target could not be opened: unreachable for now, unless it is
		// not configured (any more) or its scheme is unknown.
		transient = !errors.Is(err, targets.ErrUnknownTarget) && !errors.Is(err, sink.ErrUnknownScheme)
	} else {
		transient = s.Classify(err) != batches.ClassFatal
	}
	if transient {
		m.rec.Reason, m.dirty = "retrying: "+err.Error(), true
		return err
	}
	return l.finish(ctx, m, batches.MigrationFailed, err.Error(), &batches.ErrorRecord{Time: time.Now().UTC(), Class: batches.ClassFatal, Message: err.Error()})
}

// advance plans batches up to the migration's parallelism and decides its end.
func (l *leader) advance(ctx context.Context, m *migration) error {
	if m.rec.StartedAt == nil {
		// Retried after failing to start: find the key range first.
		return l.start(ctx, m)
	}
	if !m.synced {
		return nil // the batch records are not all known yet
	}
	if !m.republished {
		m.republished = true
		if err := l.republishPending(ctx, m); err != nil {
			return err
		}
	}
	if err := l.republishReleased(ctx, m); err != nil {
		return err
	}
	inFlight, failed := m.inFlight()
	if failed > 0 {
		// A batch exhausted its attempts: plan no more, let the batches in
		// flight finish, then fail.
		if inFlight == 0 {
			reason := fmt.Sprintf("%d batch(es) failed", failed)
			if e := m.rec.LastError; e != nil {
				reason = fmt.Sprintf("batch %d failed after %d attempt(s): %s", e.Seq, e.Attempt, e.Message)
			}
			return l.finish(ctx, m, batches.MigrationFailed, reason, m.rec.LastError)
		}
		return nil
	}
	if m.rec.Cursor.Done {
		if inFlight == 0 && int64(len(m.batches)) >= m.rec.Cursor.NextSeq {
			return l.finish(ctx, m, batches.MigrationSucceeded, "", nil)
		}
		return nil
	}
	for inFlight < m.rec.Spec.Parallelism && !m.rec.Cursor.Done {
		if err := l.planOne(ctx, m); err != nil {
			return err
		}
		inFlight++
	}
	return nil
}

// planOne cuts the next batch, records it, advances the cursor and
// publishes the batch, in that order: a crash between any two steps leaves
// a state the next leader completes without a gap or an overlap.
func (l *leader) planOne(ctx context.Context, m *migration) error {
	s, rel, err := l.relation(ctx, m)
	if err != nil {
		return err
	}
	spec, cur := m.rec.Spec, m.rec.Cursor
	r := sink.Range{Lo: cur.After, Hi: m.rec.Max}
	if cur.After.IsNull() {
		r = sink.Range{Lo: m.rec.Min, LoInclusive: true, Hi: m.rec.Max}
	}
	hi, found, err := s.NextKey(ctx, rel, r, spec.BatchSize)
	if err != nil {
		return fmt.Errorf("plan batch %d of %s: %w", cur.NextSeq, m.name(), err)
	}
	last := !found || hi.Equal(m.rec.Max)
	if !found {
		hi = m.rec.Max
	}
	now := time.Now().UTC()
	b := batches.Batch{
		Migration: m.name(), Seq: cur.NextSeq, Lo: r.Lo, LoInclusive: r.LoInclusive, Hi: hi,
		PlannedRows: spec.BatchSize, Status: batches.BatchPending, Epoch: 1, CreatedAt: now, UpdatedAt: now,
	}
	key := bus.BatchKey(m.name(), b.Seq)
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if _, err := l.res.BatchesKV.Create(ctx, key, data); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("record batch %d of %s: %w", b.Seq, m.name(), err)
		}
		// Recorded by a leader that died before moving the cursor: keep
		// that record, which may already be running, and move on from it.
		entry, err := l.res.BatchesKV.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read batch %d of %s: %w", b.Seq, m.name(), err)
		}
		var existing batches.Batch
		if err := json.Unmarshal(entry.Value(), &existing); err != nil {
			return fmt.Errorf("read batch %d of %s: %w", b.Seq, m.name(), err)
		}
		if !existing.Hi.Equal(b.Hi) || !existing.Lo.Equal(b.Lo) {
			l.p.log.Warn("planner: batch recorded before with other bounds; keeping the record",
				"migration", m.name(), "batch", b.Seq, "recorded_hi", existing.Hi.String(), "planned_hi", b.Hi.String())
		}
		b = existing
		last = b.Hi.Equal(m.rec.Max)
	} else {
		l.p.metrics.batchPlanned(ctx, m.name())
	}
	if err := l.p.hooks.afterRecord(m.name(), b.Seq); err != nil {
		return err
	}
	m.rec.Cursor = batches.Cursor{NextSeq: b.Seq + 1, After: b.Hi, Done: last}
	if err := l.save(ctx, m); err != nil {
		return err
	}
	if err := l.p.hooks.afterCursor(m.name(), b.Seq); err != nil {
		return err
	}
	if _, seen := m.batches[b.Seq]; !seen {
		m.batches[b.Seq] = &b
	}
	if b.Status == batches.BatchPending {
		return l.publishBatch(ctx, b)
	}
	return nil
}

// republishPending publishes again the batches a previous leader recorded
// as pending. Within the stream's duplicate window the same message id makes
// this a no-op for batches that were published; after it, a duplicate is
// harmless: executors claim a batch in KV before working, and the ledger
// refuses a second application.
func (l *leader) republishPending(ctx context.Context, m *migration) error {
	for _, b := range m.batches {
		if b.Status != batches.BatchPending || b.Released {
			continue // released batches get a new epoch: republishReleased
		}
		if err := l.publishBatch(ctx, *b); err != nil {
			return err
		}
	}
	return nil
}

// republishReleased publishes again, under a new epoch, the batches an
// executor handed back and acknowledged while the migration was paused or
// being paused: their messages are gone, their records say so.
func (l *leader) republishReleased(ctx context.Context, m *migration) error {
	for seq, b := range m.batches {
		if b.Status != batches.BatchPending || !b.Released {
			continue
		}
		err := l.reissue(ctx, m, seq, func(cur *batches.Batch) bool {
			if cur.Status != batches.BatchPending || !cur.Released {
				return false
			}
			cur.Released = false
			return true
		})
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // changed meanwhile; the watch brings the news
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// reissue reads batch seq's record and, if change accepts and changes it
// (called on the stored record, not m's copy, which may be behind), writes
// it back under a new epoch, a new message id the stream's duplicate
// window does not swallow, and publishes it again. The write is a
// compare-and-set: a record changed meanwhile is left alone and the error
// wraps jetstream.ErrKeyRevisionMismatch.
func (l *leader) reissue(ctx context.Context, m *migration, seq int64, change func(*batches.Batch) bool) error {
	key := bus.BatchKey(m.name(), seq)
	entry, err := l.res.BatchesKV.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read batch %d: %w", seq, err)
	}
	var cur batches.Batch
	if err := json.Unmarshal(entry.Value(), &cur); err != nil {
		return fmt.Errorf("read batch %d: %w", seq, err)
	}
	if !change(&cur) {
		return nil
	}
	cur.Epoch, cur.UpdatedAt = cur.Epoch+1, time.Now().UTC()
	data, err := json.Marshal(cur)
	if err != nil {
		return err
	}
	if _, err := l.res.BatchesKV.Update(ctx, key, data, entry.Revision()); err != nil {
		return fmt.Errorf("reissue batch %d: %w", seq, err)
	}
	m.batches[seq] = &cur
	return l.publishBatch(ctx, cur)
}

// publishBatch publishes a batch on the batch stream under a PRODUCER span.
func (l *leader) publishBatch(ctx context.Context, b batches.Batch) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(l.p.names.BatchSubject(b.Migration))
	msg.Data = data
	id := bus.BatchMsgID(b.Migration, b.Seq, b.Epoch)
	ctx, span := bus.StartPublishSpan(ctx, l.p.tracer, msg, id,
		attribute.String("batchflow.migration", b.Migration), attribute.Int64("batchflow.batch.seq", b.Seq))
	defer span.End()
	if _, err := l.p.cfg.JetStream.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return fmt.Errorf("publish batch %d of %s: %w", b.Seq, b.Migration, err)
	}
	return nil
}

// finish settles m as succeeded or failed.
func (l *leader) finish(ctx context.Context, m *migration, status batches.MigrationStatus, reason string, cause *batches.ErrorRecord) error {
	if m.rec.Status == batches.MigrationEnqueued {
		m.rec.Status = batches.MigrationRunning // the state machine passes through running
	}
	next, err := m.rec.Status.TransitionTo(status)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	m.rec.Status, m.rec.Reason, m.rec.FinishedAt = next, reason, &now
	if cause != nil {
		m.rec.LastError = cause
	}
	m.rec.Progress = m.computeProgress(now)
	if status == batches.MigrationSucceeded {
		m.rec.Progress.Percent, m.rec.Progress.ETASeconds = 100, 0
	}
	if err := l.save(ctx, m); err != nil {
		return err
	}
	progress := m.rec.Progress
	d := events.Data{Migration: m.name(), Status: status, Reason: reason, RowsAffected: m.rec.Counters.RowsAffected, Progress: &progress}
	if m.rec.StartedAt != nil {
		d.DurationMS = now.Sub(*m.rec.StartedAt).Milliseconds()
	}
	if cause != nil {
		d.Error = &events.Error{Class: cause.Class, Message: cause.Message}
	}
	t := events.MigrationSucceeded
	if status == batches.MigrationFailed {
		t = events.MigrationFailed
	}
	l.p.log.Info("planner: migration "+string(status), "migration", m.name(), "rows", m.rec.Counters.RowsAffected, "reason", reason)
	l.emit(ctx, t, d)
	if status == batches.MigrationSucceeded {
		l.unwatch(m)
	}
	return nil
}

// maybeProgress refreshes m's progress and emits a progress event at most
// every ProgressInterval.
func (l *leader) maybeProgress(ctx context.Context, m *migration, now time.Time) {
	if now.Sub(m.progress.lastEvent) < l.p.cfg.ProgressInterval {
		return
	}
	m.progress.lastEvent = now
	m.rec.Progress = m.computeProgress(now)
	m.dirty = true
	p := m.rec.Progress
	l.emit(ctx, events.MigrationProgress, events.Data{Migration: m.name(), Status: m.rec.Status, Progress: &p})
}
