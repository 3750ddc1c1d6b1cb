package testenv

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchflow/batchflow/pkg/events"
)

// EventLog records every lifecycle event published from the moment it
// starts, for tests to assert what a subscriber would have seen.
type EventLog struct {
	mu  sync.Mutex
	all []events.Event
}

// Events starts an EventLog on js (default prefix), stopped at cleanup.
func Events(t testing.TB, js jetstream.JetStream) *EventLog {
	t.Helper()
	l := &EventLog{}
	sub, err := events.Subscribe(context.Background(), js, events.SubscribeOptions{}, func(_ context.Context, ev events.Event) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.all = append(l.all, ev)
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: subscribe to events: %v", err)
	}
	t.Cleanup(sub.Stop)
	return l
}

// Of returns the events of a migration of type typ, in order.
func (l *EventLog) Of(migration string, typ events.Type) []events.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []events.Event
	for _, ev := range l.all {
		if ev.Data.Migration == migration && ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// WaitFor waits up to within for at least n such events and returns them all.
func (l *EventLog) WaitFor(t testing.TB, migration string, typ events.Type, n int, within time.Duration) []events.Event {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if got := l.Of(migration, typ); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: waited %s for %d %s events of %s, got %d", within, n, typ, migration, len(l.Of(migration, typ)))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
