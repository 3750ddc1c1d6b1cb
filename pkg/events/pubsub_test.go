package events_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
)

type testBundle struct {
	js  *testenv.JS
	pub *events.Publisher
	res *bus.Resources
}

func setup(t *testing.T) testBundle {
	t.Helper()
	js := testenv.JetStream(t)
	res, err := bus.Bootstrap(context.Background(), js.JetStream, bus.MustNames(""), bus.Topology{})
	require.NoError(t, err)
	return testBundle{js: js, pub: events.NewPublisher(js.JetStream, "", "executor"), res: res}
}

// collector gathers delivered events for assertions.
type collector struct {
	mu     sync.Mutex
	events []events.Event
	errs   []error
}

func (c *collector) handle(_ context.Context, ev events.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, ev)
	return nil
}

func (c *collector) onError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, err)
}

func (c *collector) types() []events.Type {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]events.Type, len(c.events))
	for i, ev := range c.events {
		out[i] = ev.Type
	}
	return out
}

func (c *collector) waitFor(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.events) >= n
	}, 10*time.Second, 10*time.Millisecond, "waiting for %d events", n)
}

func (b testBundle) publish(t *testing.T, migration string, typ events.Type) events.Event {
	t.Helper()
	ev, err := b.pub.Publish(context.Background(), typ, events.Data{Migration: migration, Batch: &events.BatchRef{Seq: 1, Hi: batches.IntKey(100)}})
	require.NoError(t, err)
	return ev
}

func TestSubscribeFilters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	var all, failures, oneMigration, batchScope collector
	subs := []struct {
		opts events.SubscribeOptions
		c    *collector
	}{
		{events.SubscribeOptions{}, &all},
		{events.SubscribeOptions{Types: []events.Type{events.MigrationFailed, events.BatchRetried}}, &failures},
		{events.SubscribeOptions{Migration: "m2"}, &oneMigration},
		{events.SubscribeOptions{Scope: events.ScopeBatch}, &batchScope},
	}
	for _, s := range subs {
		sub, err := events.Subscribe(ctx, b.js.JetStream, s.opts, s.c.handle)
		require.NoError(t, err)
		t.Cleanup(sub.Stop)
	}

	b.publish(t, "m1", events.BatchStarted)
	b.publish(t, "m1", events.BatchRetried)
	b.publish(t, "m2", events.MigrationStarted)
	b.publish(t, "m2", events.MigrationFailed)
	b.publish(t, "m3", events.BatchCompleted)

	all.waitFor(t, 5)
	failures.waitFor(t, 2)
	oneMigration.waitFor(t, 2)
	batchScope.waitFor(t, 3)
	// A last event that every subscriber sees marks the end of the stream.
	b.publish(t, "m2", events.BatchRetried)
	all.waitFor(t, 6)
	failures.waitFor(t, 3)
	oneMigration.waitFor(t, 3)
	batchScope.waitFor(t, 4)

	require.Equal(t, []events.Type{events.BatchStarted, events.BatchRetried, events.MigrationStarted, events.MigrationFailed, events.BatchCompleted, events.BatchRetried}, all.types(), "in publish order")
	require.Equal(t, []events.Type{events.BatchRetried, events.MigrationFailed, events.BatchRetried}, failures.types())
	require.Equal(t, []events.Type{events.MigrationStarted, events.MigrationFailed, events.BatchRetried}, oneMigration.types())
	require.Equal(t, []events.Type{events.BatchStarted, events.BatchRetried, events.BatchCompleted, events.BatchRetried}, batchScope.types())
}

func TestSubscribeHistoryAndFromNow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.publish(t, "m1", events.MigrationEnqueued)
	b.publish(t, "m1", events.MigrationStarted)

	// UntilCaughtUp: the history, then the subscription ends by itself.
	var history collector
	sub, err := events.Subscribe(ctx, b.js.JetStream, events.SubscribeOptions{FromStart: true, UntilCaughtUp: true}, history.handle)
	require.NoError(t, err)
	select {
	case <-sub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("subscription did not end after the stored events")
	}
	require.Equal(t, []events.Type{events.MigrationEnqueued, events.MigrationStarted}, history.types())

	// With nothing stored for the filter, UntilCaughtUp ends at once.
	var none collector
	sub, err = events.Subscribe(ctx, b.js.JetStream, events.SubscribeOptions{Migration: "nothing_here", UntilCaughtUp: true, FromStart: true}, none.handle)
	require.NoError(t, err)
	<-sub.Done()
	require.Empty(t, none.types())

	// The default starts from now: stored events are not replayed.
	var fresh collector
	sub, err = events.Subscribe(ctx, b.js.JetStream, events.SubscribeOptions{}, fresh.handle)
	require.NoError(t, err)
	t.Cleanup(sub.Stop)
	b.publish(t, "m1", events.MigrationSucceeded)
	fresh.waitFor(t, 1)
	require.Equal(t, []events.Type{events.MigrationSucceeded}, fresh.types())
}

func TestSubscribeDurableResumes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	opts := events.SubscribeOptions{Durable: "pager", Types: []events.Type{events.MigrationFailed}}

	var first collector
	sub, err := events.Subscribe(ctx, b.js.JetStream, opts, first.handle)
	require.NoError(t, err)
	b.publish(t, "m1", events.MigrationFailed)
	first.waitFor(t, 1)
	sub.Stop()

	// Published while no subscriber runs: the durable keeps it.
	b.publish(t, "m2", events.MigrationFailed)
	b.publish(t, "m3", events.MigrationFailed)

	// The handler fails once: the event comes back instead of being lost.
	var mu sync.Mutex
	var got []string
	failedOnce := false
	sub, err = events.Subscribe(ctx, b.js.JetStream, opts, func(_ context.Context, ev events.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if ev.Data.Migration == "m2" && !failedOnce {
			failedOnce = true
			return errors.New("pager unreachable")
		}
		got = append(got, ev.Data.Migration)
		return nil
	})
	require.NoError(t, err)
	t.Cleanup(sub.Stop)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2
	}, 15*time.Second, 20*time.Millisecond)
	mu.Lock()
	require.ElementsMatch(t, []string{"m2", "m3"}, got, "m1 was acknowledged by the first subscriber and is not redelivered")
	mu.Unlock()
}

func TestPublishCarriesTraceAndDeduplicates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "batch")
	defer span.End()

	ev, err := b.pub.Publish(ctx, events.BatchCompleted, events.Data{Migration: "m1", Batch: &events.BatchRef{Seq: 7}})
	require.NoError(t, err)
	require.Equal(t, "m1/7", ev.Subject)
	require.Contains(t, ev.Source, "batchflow/executor/")
	require.Contains(t, ev.TraceParent, span.SpanContext().TraceID().String())

	// The same event published again (a retry after a lost ack) is stored once.
	require.NoError(t, b.pub.PublishEvent(ctx, ev))
	info, err := b.res.EventStream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs)

	msg, err := b.res.EventStream.GetLastMsgForSubject(ctx, "batchflow.events.m1.batch.completed")
	require.NoError(t, err)
	require.Equal(t, ev.TraceParent, msg.Header.Get("traceparent"), "the header uses the lowercase W3C name")
	back, err := events.Decode(msg.Data)
	require.NoError(t, err)
	require.Equal(t, ev.ID, back.ID)
	require.True(t, ev.Time.Equal(back.Time))
}

func TestSubscribeSkipsMalformed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var c collector
	sub, err := events.Subscribe(ctx, b.js.JetStream, events.SubscribeOptions{Durable: "audit", OnError: c.onError}, c.handle)
	require.NoError(t, err)
	t.Cleanup(sub.Stop)

	_, err = b.js.JetStream.Publish(ctx, "batchflow.events.m1.batch.completed", []byte(`not an event`))
	require.NoError(t, err)
	b.publish(t, "m1", events.BatchCompleted)
	c.waitFor(t, 1)
	require.Equal(t, []events.Type{events.BatchCompleted}, c.types())
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Len(t, c.errs, 1)
	require.ErrorContains(t, c.errs[0], "decode event")
}

func TestSubscribeRejectsBadOptions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	noop := func(context.Context, events.Event) error { return nil }
	for _, opts := range []events.SubscribeOptions{
		{Migration: "a.b"},
		{Types: []events.Type{"batchflow.batch.*"}},
		{Scope: "job"},
		{Prefix: "Bad Prefix"},
	} {
		_, err := events.Subscribe(ctx, b.js.JetStream, opts, noop)
		require.Error(t, err, "%+v", opts)
	}
}

func TestEmitStoresWithoutWaiting(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var mu sync.Mutex
	var failed []error
	b.pub.OnAsyncError = func(_ events.Event, err error) {
		mu.Lock()
		defer mu.Unlock()
		failed = append(failed, err)
	}
	for i := range 200 {
		b.pub.Emit(ctx, events.BatchProcessBatch, events.Data{Migration: "m1", Batch: &events.BatchRef{Seq: int64(i)}, RowsAffected: 1000})
	}
	require.NoError(t, b.pub.Flush(ctx))
	info, err := b.res.EventStream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(200), info.State.Msgs, "every emitted event is stored")
	mu.Lock()
	require.Empty(t, failed)
	mu.Unlock()

	// An event the stream cannot take reaches the error callback.
	require.NoError(t, b.js.JetStream.DeleteStream(ctx, "BATCHFLOW_EVENTS"))
	b.pub.Emit(ctx, events.BatchCompleted, events.Data{Migration: "m1"})
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(failed) == 1
	}, 10*time.Second, 10*time.Millisecond)
}
