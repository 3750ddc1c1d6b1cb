package planner

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// lease elects one leader through a key in the leases bucket. The holder
// renews it every ttl/3 with a compare-and-set on the key's revision; a
// standby that sees the same revision for longer than ttl, by its own
// clock, takes the key over with a compare-and-set. No clocks are compared
// between machines, so skew cannot elect two leaders; a leader that cannot
// renew for ttl gives up before a standby can take over.
type lease struct {
	kv     jetstream.KeyValue
	key    string
	holder string
	ttl    time.Duration
	log    *slog.Logger

	mu     sync.Mutex
	rev    uint64
	cancel context.CancelFunc
	done   chan struct{}
}

type leaseValue struct {
	Holder     string    `json:"holder"`
	AcquiredAt time.Time `json:"acquired_at"`
	RenewedAt  time.Time `json:"renewed_at"`
}

func newLease(kv jetstream.KeyValue, key, holder string, ttl time.Duration, log *slog.Logger) *lease {
	return &lease{kv: kv, key: key, holder: holder, ttl: ttl, log: log}
}

// acquire blocks until this process holds the lease or ctx ends. The
// returned context is cancelled when the lease is lost or released.
func (l *lease) acquire(ctx context.Context) (context.Context, error) {
	poll := max(l.ttl/5, 50*time.Millisecond)
	var seenRev uint64
	var seenAt time.Time
	for {
		now := time.Now()
		entry, err := l.kv.Get(ctx, l.key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if rev, err := l.kv.Create(ctx, l.key, l.value(now, now)); err == nil {
				return l.hold(ctx, rev, now), nil
			}
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, nats.ErrConnectionClosed) {
				return nil, err // closed for good: nothing to campaign with
			}
			l.log.Warn("planner: read lease", "err", err)
		case entry.Operation() != jetstream.KeyValuePut:
			// Released (deleted) by its holder: take it at once.
			if rev, err := l.kv.Update(ctx, l.key, l.value(now, now), entry.Revision()); err == nil {
				return l.hold(ctx, rev, now), nil
			}
		case entry.Revision() != seenRev:
			seenRev, seenAt = entry.Revision(), now
		case now.Sub(seenAt) > l.ttl:
			var v leaseValue
			_ = json.Unmarshal(entry.Value(), &v)
			if rev, err := l.kv.Update(ctx, l.key, l.value(now, now), entry.Revision()); err == nil {
				l.log.Warn("planner: took over an expired lease", "previous", v.Holder, "silent_for", now.Sub(seenAt).Round(time.Millisecond))
				return l.hold(ctx, rev, now), nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

func (l *lease) value(acquired, renewed time.Time) []byte {
	v, _ := json.Marshal(leaseValue{Holder: l.holder, AcquiredAt: acquired.UTC(), RenewedAt: renewed.UTC()})
	return v
}

// hold starts renewing the lease and returns the leader's context.
func (l *lease) hold(parent context.Context, rev uint64, acquired time.Time) context.Context {
	ctx, cancel := context.WithCancel(parent)
	l.mu.Lock()
	l.rev, l.cancel, l.done = rev, cancel, make(chan struct{})
	done := l.done
	l.mu.Unlock()
	go func() {
		defer close(done)
		defer cancel()
		renewed := time.Now()
		ticker := time.NewTicker(l.ttl / 3)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			now := time.Now()
			l.mu.Lock()
			rctx, rcancel := context.WithTimeout(ctx, l.ttl/3)
			newRev, err := l.kv.Update(rctx, l.key, l.value(acquired, now), l.rev)
			rcancel()
			if err == nil {
				l.rev, renewed = newRev, now
			}
			l.mu.Unlock()
			switch {
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
				l.log.Warn("planner: lease taken by another planner")
				return
			case err != nil && time.Since(renewed) > l.ttl*2/3:
				// Unable to renew for most of the TTL: stop leading before
				// a standby may take over, so two never lead at once.
				l.log.Warn("planner: cannot renew lease, stepping down", "err", err)
				return
			case err != nil:
				l.log.Warn("planner: renew lease", "err", err)
			}
		}
	}()
	return ctx
}

// release stops renewing and deletes the lease, so a standby takes over
// at once instead of after the TTL.
func (l *lease) release() {
	l.mu.Lock()
	cancel, done, rev := l.cancel, l.done, l.rev
	l.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	ctx, stop := context.WithTimeout(context.Background(), 2*time.Second)
	defer stop()
	l.mu.Lock()
	rev = l.rev
	l.mu.Unlock()
	_ = l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
}
