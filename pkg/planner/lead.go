package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
	"github.com/batchflow/batchflow/pkg/sink"
)

// errLostOwnership: a migration record changed under the leader, so another
// planner leads now. The term ends at once.
var errLostOwnership = errors.New("a migration record changed under this planner: another planner leads")

// errCrash is what the test hooks return to simulate a crash.
var errCrash = errors.New("simulated crash")

// leader is one leadership term. Only the loop goroutine touches its state;
// watchers and fetchers feed it through channels.
type leader struct {
	p          *Planner
	res        *bus.Resources
	migrations map[string]*migration
	updates    chan batchUpdate
}

// migration is the leader's view of one migration.
type migration struct {
	rec batches.Migration
	rev uint64
	// batches holds the records of the migration's batches, from its watch.
	batches map[int64]*batches.Batch
	// synced is set once the watch has delivered every existing record.
	synced bool
	// republished is set once pending batches were published again after a
	// leadership change, in case the previous leader died before publishing.
	republished bool
	watchStop   context.CancelFunc
	sink        sink.Sink
	rel         *sink.Relation
	retryAt     time.Time
	dirty       bool
	lastSave    time.Time
	progress    progressTracker
}

func (m *migration) name() string { return m.rec.Spec.Name }

type batchUpdate struct {
	migration string
	entry     jetstream.KeyValueEntry // nil: the watch has delivered every existing record
}

// lead runs one leadership term until ctx ends or the term is lost.
func (p *Planner) lead(ctx context.Context, res *bus.Resources) error {
	l := &leader{p: p, res: res, migrations: map[string]*migration{}, updates: make(chan batchUpdate, 256)}
	if err := l.load(ctx); err != nil {
		return err
	}
	l.publishCounts()

	enqueued := make(chan jetstream.Msg)
	it, err := res.PlannerConsumer.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		return fmt.Errorf("consume %s: %w", p.names.EnqueueSubject, err)
	}
	defer it.Stop()
	go func() {
		for {
			msg, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
					return
				}
				p.log.Warn("planner: fetch enqueue message", "err", err)
				continue
			}
			select {
			case enqueued <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()

	requests := make(chan *nats.Msg)
	sub, err := p.cfg.Conn.QueueSubscribe(p.names.APISubject("*"), "planners", func(m *nats.Msg) {
		select {
		case requests <- m:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe to control requests: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	ticker := time.NewTicker(p.cfg.Tick)
	defer ticker.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			l.stopWatches()
			return nil
		case u := <-l.updates:
			l.applyBatch(u)
		case msg := <-enqueued:
			err = l.handleEnqueue(ctx, msg)
		case req := <-requests:
			err = l.handleControl(ctx, req)
		case <-ticker.C:
			err = l.reconcile(ctx)
			l.publishCounts()
		}
		if errors.Is(err, errLostOwnership) || errors.Is(err, errCrash) {
			l.stopWatches()
			return err
		}
		if err != nil && ctx.Err() == nil {
			p.log.Error("planner: step failed", "err", err)
		}
	}
}

// load reads every migration record and watches the batches of those in flight.
func (l *leader) load(ctx context.Context) error {
	lister, err := l.res.MigrationsKV.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		entry, err := l.res.MigrationsKV.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read migration %s: %w", k, err)
		}
		var rec batches.Migration
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			l.p.log.Error("planner: unreadable migration record, skipped", "migration", k, "err", err)
			continue
		}
		m := &migration{rec: rec, rev: entry.Revision(), batches: map[int64]*batches.Batch{}}
		l.migrations[k] = m
		switch rec.Status {
		case batches.MigrationRunning, batches.MigrationPaused, batches.MigrationFailed:
			l.watch(ctx, m)
		}
	}
	l.p.log.Info("planner: loaded migrations", "count", len(l.migrations))
	return nil
}

// watch follows the batch records of m.
func (l *leader) watch(ctx context.Context, m *migration) {
	if m.watchStop != nil {
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	m.watchStop = cancel
	name := m.name()
	w, err := l.res.BatchesKV.Watch(wctx, name+".*")
	if err != nil {
		l.p.log.Error("planner: watch batches", "migration", name, "err", err)
		cancel()
		m.watchStop = nil
		return
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				select {
				case l.updates <- batchUpdate{migration: name, entry: e}:
				case <-wctx.Done():
					return
				}
			}
		}
	}()
}

func (l *leader) unwatch(m *migration) {
	if m.watchStop != nil {
		m.watchStop()
		m.watchStop = nil
	}
}

func (l *leader) stopWatches() {
	for _, m := range l.migrations {
		l.unwatch(m)
	}
}

// applyBatch records a batch update in the leader's view.
func (l *leader) applyBatch(u batchUpdate) {
	m := l.migrations[u.migration]
	if m == nil {
		return
	}
	if u.entry == nil {
		m.synced = true
		return
	}
	_, seqText, _ := strings.Cut(u.entry.Key(), ".")
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if err != nil {
		return
	}
	if u.entry.Operation() != jetstream.KeyValuePut {
		delete(m.batches, seq)
		return
	}
	var b batches.Batch
	if err := json.Unmarshal(u.entry.Value(), &b); err != nil {
		l.p.log.Error("planner: unreadable batch record", "migration", u.migration, "batch", seq, "err", err)
		return
	}
	if prev := m.batches[seq]; prev != nil && prev.Status != batches.BatchFailed && b.Status == batches.BatchFailed && len(b.Errors) > 0 {
		last := b.Errors[len(b.Errors)-1]
		last.Seq = seq
		m.rec.LastError = &last
		m.rec.Errors = batches.AppendError(m.rec.Errors, last)
	}
	m.batches[seq] = &b
	m.dirty = true
}

// save writes m's record with a compare-and-set on its revision.
func (l *leader) save(ctx context.Context, m *migration) error {
	m.rec.UpdatedAt = time.Now().UTC()
	m.rec.Counters = m.counters()
	data, err := json.Marshal(m.rec)
	if err != nil {
		return err
	}
	rev, err := l.res.MigrationsKV.Update(ctx, m.name(), data, m.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("save %s: %w", m.name(), errLostOwnership)
	}
	if err != nil {
		return fmt.Errorf("save %s: %w", m.name(), err)
	}
	m.rev, m.dirty, m.lastSave = rev, false, time.Now()
	return nil
}

// counters aggregates the batch records.
func (m *migration) counters() batches.Counters {
	c := batches.Counters{BatchesPlanned: m.rec.Cursor.NextSeq}
	for _, b := range m.batches {
		switch b.Status {
		case batches.BatchSucceeded:
			c.BatchesSucceeded++
		case batches.BatchFailed:
			c.BatchesFailed++
		}
		c.RowsAffected += b.RowsAffected
		c.FailedKeys += int64(len(b.FailedKeys))
		c.Retries += int64(b.Attempts)
	}
	return c
}

// inFlight counts batches planned but not settled.
func (m *migration) inFlight() (pending, failed int) {
	for _, b := range m.batches {
		switch b.Status {
		case batches.BatchPending, batches.BatchRunning:
			pending++
		case batches.BatchFailed:
			failed++
		}
	}
	return pending, failed
}

// emit publishes an event; a failure is logged, not fatal: events are for
// observers, and the KV records stay the truth.
func (l *leader) emit(ctx context.Context, t events.Type, d events.Data) {
	if _, err := l.p.pub.Publish(ctx, t, d); err != nil {
		l.p.log.Warn("planner: publish event", "type", string(t), "migration", d.Migration, "err", err)
	}
}

// ordered returns the migrations oldest first, the order the queue serves them.
func (l *leader) ordered() []*migration {
	out := make([]*migration, 0, len(l.migrations))
	for _, m := range l.migrations {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].rec.CreatedAt.Equal(out[j].rec.CreatedAt) {
			return out[i].rec.CreatedAt.Before(out[j].rec.CreatedAt)
		}
		return out[i].name() < out[j].name()
	})
	return out
}
