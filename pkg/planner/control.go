package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
	"github.com/batchflow/batchflow/pkg/events"
)

// controlError is a refused control request.
type controlError struct{ code, msg string }

func (e *controlError) Error() string { return e.msg }

// handleControl answers one control request on <prefix>.api.<verb>.
func (l *leader) handleControl(ctx context.Context, msg *nats.Msg) error {
	verb := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	var req client.ControlRequest
	var reply client.ControlReply
	err := json.Unmarshal(msg.Data, &req)
	if err != nil {
		err = &controlError{client.CodeInvalid, "malformed request: " + err.Error()}
	} else {
		var m *migration
		m, err = l.control(ctx, verb, req)
		if m != nil {
			rec := m.rec
			reply.Migration = &rec
		}
	}
	var cerr *controlError
	switch {
	case errors.As(err, &cerr):
		reply.Error = &client.ReplyError{Code: cerr.code, Message: cerr.msg}
		err = nil
	case err != nil:
		reply.Error = &client.ReplyError{Code: client.CodeInternal, Message: err.Error()}
	}
	data, _ := json.Marshal(reply)
	if rerr := msg.Respond(data); rerr != nil {
		l.p.log.Warn("planner: answer control request", "verb", verb, "err", rerr)
	}
	return err
}

func (l *leader) control(ctx context.Context, verb string, req client.ControlRequest) (*migration, error) {
	m := l.migrations[req.Migration]
	if m == nil {
		return nil, &controlError{client.CodeNotFound, fmt.Sprintf("no migration named %q", req.Migration)}
	}
	transition := func(to batches.MigrationStatus, what string) error {
		if _, err := m.rec.Status.TransitionTo(to); err != nil {
			return &controlError{client.CodeInvalidState, fmt.Sprintf("cannot %s %s: it is %s", what, m.name(), m.rec.Status)}
		}
		m.rec.Status = to
		return nil
	}
	reason := req.Reason
	switch verb {
	case client.VerbPause:
		if err := transition(batches.MigrationPaused, "pause"); err != nil {
			return m, err
		}
		m.rec.Reason = orDefault(reason, "paused by operator")
		if err := l.save(ctx, m); err != nil {
			return m, err
		}
		l.emit(ctx, events.MigrationPaused, events.Data{Migration: m.name(), Status: m.rec.Status, Reason: m.rec.Reason})

	case client.VerbResume:
		if err := transition(batches.MigrationRunning, "resume"); err != nil {
			return m, err
		}
		m.rec.Reason = orDefault(reason, "resumed by operator")
		if err := l.save(ctx, m); err != nil {
			return m, err
		}
		l.emit(ctx, events.MigrationResumed, events.Data{Migration: m.name(), Status: m.rec.Status, Reason: m.rec.Reason})

	case client.VerbCancel:
		if err := transition(batches.MigrationCancelled, "cancel"); err != nil {
			return m, err
		}
		now := time.Now().UTC()
		m.rec.Reason, m.rec.FinishedAt = orDefault(reason, "cancelled by operator"), &now
		if err := l.save(ctx, m); err != nil {
			return m, err
		}
		// Queued batches go; a batch being applied stops after its
		// current sub-batch, when its executor sees the status.
		if err := l.res.BatchStream.Purge(ctx, jetstream.WithPurgeSubject(l.p.names.BatchSubject(m.name()))); err != nil {
			l.p.log.Warn("planner: purge queued batches of cancelled migration", "migration", m.name(), "err", err)
		}
		l.unwatch(m)
		l.emit(ctx, events.MigrationCancelled, events.Data{Migration: m.name(), Status: m.rec.Status, Reason: m.rec.Reason})

	case client.VerbRetry:
		if err := transition(batches.MigrationRunning, "retry"); err != nil {
			return m, err
		}
		if err := l.retryFailedBatches(ctx, m); err != nil {
			return m, err
		}
		m.rec.Reason, m.rec.FinishedAt, m.rec.LastError = orDefault(reason, "retried by operator"), nil, nil
		if err := l.save(ctx, m); err != nil {
			return m, err
		}
		l.emit(ctx, events.MigrationResumed, events.Data{Migration: m.name(), Status: m.rec.Status, Reason: m.rec.Reason})

	case client.VerbSet:
		if req.Settings == nil || req.Settings.Empty() {
			return m, &controlError{client.CodeInvalid, "nothing to set: give a batch size, sub-batch size, pause or parallelism"}
		}
		if m.rec.Status.Settled() {
			return m, &controlError{client.CodeInvalidState, fmt.Sprintf("cannot change %s: it is %s", m.name(), m.rec.Status)}
		}
		if err := req.Settings.Validate(); err != nil {
			return m, &controlError{client.CodeInvalid, err.Error()}
		}
		spec := req.Settings.Apply(m.rec.Spec)
		if err := spec.Validate(); err != nil {
			return m, &controlError{client.CodeInvalid, err.Error()}
		}
		m.rec.Spec = spec.WithDefaults()
		if err := l.save(ctx, m); err != nil {
			return m, err
		}
		l.p.log.Info("planner: settings changed", "migration", m.name(), "batch_size", spec.BatchSize, "sub_batch_size", spec.SubBatchSize, "parallelism", spec.Parallelism)

	default:
		return m, &controlError{client.CodeInvalid, fmt.Sprintf("unknown request %q", verb)}
	}
	return m, nil
}

// retryFailedBatches gives every failed batch of m fresh attempts and
// publishes it again under a new epoch (a new message id, so the stream's
// duplicate window does not swallow it).
func (l *leader) retryFailedBatches(ctx context.Context, m *migration) error {
	for seq, b := range m.batches {
		if b.Status != batches.BatchFailed {
			continue
		}
		err := l.reissue(ctx, m, seq, func(cur *batches.Batch) bool {
			if cur.Status != batches.BatchFailed {
				return false
			}
			cur.Status, cur.Attempts, cur.Owner, cur.FinishedAt = batches.BatchPending, 0, "", nil
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
