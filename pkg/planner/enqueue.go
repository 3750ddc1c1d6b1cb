package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

// enqueueTries is how many deliveries of one enqueue message the planner
// waits through an unreachable target before it rejects the spec, about
// half a minute with the retry delay.
const enqueueTries = 6

// handleEnqueue validates one enqueued spec and records the migration, or
// rejects it with reasons. The message is removed from the queue either way,
// except while the target is unreachable.
func (l *leader) handleEnqueue(ctx context.Context, msg jetstream.Msg) error {
	reqID := msg.Headers().Get(jetstream.MsgIDHeader)
	spec, err := batches.ParseSpec(msg.Data())
	if err != nil {
		l.reject(ctx, spec.Name, reqID, err)
		return ack(ctx, msg)
	}
	name := spec.Name
	if !l.p.targets.Has(spec.Target) {
		l.reject(ctx, name, reqID, &batches.ValidationError{Problems: []batches.Problem{{
			Field: "target", Message: fmt.Sprintf("unknown target %q; this planner knows %s", spec.Target, knownTargets(l.p.targets.Names())),
		}}})
		return ack(ctx, msg)
	}
	existing := l.migrations[name]
	if existing != nil && existing.rec.Status.Live() {
		if existing.rec.Spec.Same(spec) {
			l.p.log.Info("planner: spec enqueued again, nothing to do", "migration", name, "status", string(existing.rec.Status))
			l.emit(ctx, events.MigrationEnqueued, events.Data{Migration: name, Status: existing.rec.Status, Reason: "already enqueued", RequestID: reqID})
			return ack(ctx, msg)
		}
		l.reject(ctx, name, reqID, &batches.ValidationError{Problems: []batches.Problem{{
			Field:   "name",
			Message: fmt.Sprintf("a different migration named %q exists (%s); choose another name, or cancel that one first", name, existing.rec.Status),
		}}})
		return ack(ctx, msg)
	}

	_ = msg.InProgress() // the schema checks below talk to the database
	problems, err := l.checkSchema(ctx, spec)
	if err != nil {
		tries := uint64(1)
		if md, mdErr := msg.Metadata(); mdErr == nil {
			tries = md.NumDelivered
		}
		if tries < enqueueTries {
			l.p.log.Warn("planner: cannot check spec against its target, retrying", "migration", name, "err", err, "try", tries)
			return msg.NakWithDelay(retryDelay)
		}
		problems = []batches.Problem{{Field: "target", Message: fmt.Sprintf("cannot check the spec against target %s: %v", spec.Target, err)}}
	}
	if len(problems) > 0 {
		l.reject(ctx, name, reqID, &batches.ValidationError{Problems: problems})
		return ack(ctx, msg)
	}

	if existing != nil {
		// A cancelled migration's name is free again: forget its batches
		// and its ledger rows, or the new one would resume from them.
		if err := l.forget(ctx, existing); err != nil {
			return fmt.Errorf("reuse the name of cancelled %s: %w", name, err)
		}
	}
	now := time.Now().UTC()
	m := &migration{
		rec:     batches.Migration{Spec: spec, Status: batches.MigrationEnqueued, CreatedAt: now, UpdatedAt: now},
		batches: map[int64]*batches.Batch{},
	}
	data, err := json.Marshal(m.rec)
	if err != nil {
		return err
	}
	if existing != nil {
		m.rev, err = l.res.MigrationsKV.Update(ctx, name, data, existing.rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return errLostOwnership
		}
	} else {
		m.rev, err = l.res.MigrationsKV.Create(ctx, name, data)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return errLostOwnership // another leader recorded it
		}
	}
	if err != nil {
		return fmt.Errorf("record migration %s: %w", name, err)
	}
	m.lastSave = time.Now()
	l.migrations[name] = m
	l.p.log.Info("planner: migration enqueued", "migration", name, "kind", spec.Kind, "target", spec.Target, "table", spec.Table)
	l.emit(ctx, events.MigrationEnqueued, events.Data{Migration: name, Status: batches.MigrationEnqueued, RequestID: reqID})
	return ack(ctx, msg)
}

func ack(ctx context.Context, msg jetstream.Msg) error {
	if err := msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("ack enqueue message: %w", err)
	}
	return nil
}

func knownTargets(names []string) string {
	if len(names) == 0 {
		return "no targets (start it with --target NAME=DSN)"
	}
	return strings.Join(names, ", ")
}

// reject publishes a migration.rejected event with every problem.
func (l *leader) reject(ctx context.Context, name, reqID string, err error) {
	var problems []batches.Problem
	var verr *batches.ValidationError
	if errors.As(err, &verr) {
		problems = verr.Problems
	}
	if len(name) > 200 {
		name = name[:200]
	}
	l.p.log.Info("planner: spec rejected", "migration", name, "reason", err.Error())
	l.emit(ctx, events.MigrationRejected, events.Data{Migration: name, Reason: err.Error(), Problems: problems, RequestID: reqID})
}

// checkSchema checks spec against the target's live schema. Problems are the
// spec's fault; an error means the check could not be made (the database
// unreachable) and may succeed later.
func (l *leader) checkSchema(ctx context.Context, spec batches.Spec) ([]batches.Problem, error) {
	s, err := l.p.targets.Sink(ctx, spec.Target)
	if err != nil {
		return nil, err
	}
	problem := func(field string, err error) ([]batches.Problem, error) {
		if s.Classify(err) == batches.ClassFatal {
			return []batches.Problem{{Field: field, Message: err.Error()}}, nil
		}
		return nil, err
	}
	tbl, err := s.Table(ctx, spec.Table)
	if err != nil {
		if errors.Is(err, sink.ErrTableNotFound) {
			return []batches.Problem{{Field: "table", Message: fmt.Sprintf("table %q does not exist on target %s", spec.Table, spec.Target)}}, nil
		}
		return problem("table", err)
	}
	col, err := tbl.BatchColumn(spec.BatchColumn)
	if err != nil {
		field := "batch_column"
		if spec.BatchColumn == "" {
			field = "table"
		}
		return []batches.Problem{{Field: field, Message: err.Error()}}, nil
	}
	var problems []batches.Problem
	for _, bound := range []struct {
		field string
		key   batches.Key
	}{{"min_value", spec.MinValue}, {"max_value", spec.MaxValue}} {
		if bound.key.IsNull() {
			continue
		}
		if bound.key.IsInt() != (col.Key == sink.KeyInt) {
			problems = append(problems, batches.Problem{Field: bound.field, Message: fmt.Sprintf("%s does not fit column %s, which is %s", bound.key, col.Name, col.Type)})
		}
	}
	rel := kinds.Relation(spec, sink.Relation{Table: tbl, Column: col.Name, Key: col.Key, Where: spec.Where})
	argProblems := kinds.Check(ctx, s, spec, tbl)
	problems = append(problems, argProblems...)
	change, err := kinds.Build(spec, rel)
	switch {
	case errors.Is(err, kinds.ErrNotStock):
		// A custom kind: its executor owns its arguments.
	case err != nil:
		problems = append(problems, batches.Problem{Field: "args", Message: err.Error()})
	case change.Statement != nil && len(argProblems) == 0:
		// Have the database parse the statement a sub-batch will run, with
		// the spec's where and set: a typo is rejected now, not at batch 1.
		q := sink.NewBuilder(s.Dialect())
		sample := batches.IntKey(0)
		if col.Key == sink.KeyString {
			sample = batches.StringKey("")
		}
		bound := func(b *sink.Builder) { b.Arg(sample.Value()) }
		change.Statement(q, sink.Scope{Relation: rel, Rows: rel.Rows(sink.Range{Lo: sample, Hi: sample}), Lo: bound, Hi: bound})
		if err := s.CheckStatement(ctx, q.String()); err != nil {
			if s.Classify(err) != batches.ClassFatal {
				return nil, err
			}
			problems = append(problems, batches.Problem{Field: statementField(spec), Message: "the database refuses the statement: " + err.Error()})
		}
	}
	if t := spec.Throttle; t != nil && t.Query != "" {
		if err := s.CheckStatement(ctx, t.Query); err != nil {
			if s.Classify(err) != batches.ClassFatal {
				return nil, err
			}
			problems = append(problems, batches.Problem{Field: "throttle.query", Message: "the database refuses the query: " + err.Error()})
		}
	}
	return problems, nil
}

// statementField names the spec field whose SQL the statement check covers.
func statementField(spec batches.Spec) string {
	if spec.Where != "" {
		return "args, where"
	}
	return "args"
}

// forget deletes what a cancelled migration left behind, before its name
// is reused: its batch records, and its ledger rows on the target.
func (l *leader) forget(ctx context.Context, m *migration) error {
	l.unwatch(m)
	lister, err := l.res.BatchesKV.ListKeysFiltered(ctx, m.name()+".*")
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return err
	}
	if lister != nil {
		for key := range lister.Keys() {
			if err := l.res.BatchesKV.Purge(ctx, key); err != nil {
				return err
			}
		}
	}
	s, err := l.p.targets.Sink(ctx, m.rec.Spec.Target)
	if err != nil {
		return err
	}
	resetter, ok := s.(interface {
		ResetLedger(ctx context.Context, migration string) error
	})
	if !ok {
		return fmt.Errorf("the %s sink cannot reset a migration's ledger rows", s.Dialect().Name())
	}
	return resetter.ResetLedger(ctx, m.name())
}
