package events

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/propagation"

	"github.com/batchflow/batchflow/internal/bus"
)

// DefaultPrefix is the NATS prefix when none is configured.
const DefaultPrefix = bus.DefaultPrefix

// Publisher publishes lifecycle events on the event stream. It is safe for
// concurrent use.
type Publisher struct {
	js     jetstream.JetStream
	prefix string
	source string
	now    func() time.Time

	// OnAsyncError, when set, receives the events Emit could not store.
	OnAsyncError func(Event, error)
}

// NewPublisher returns a publisher for component ("planner", "executor",
// "watchdog", …) under prefix ("" for the default).
func NewPublisher(js jetstream.JetStream, prefix, component string) *Publisher {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Publisher{js: js, prefix: prefix, source: Source(component), now: time.Now}
}

// Source names the emitting process: batchflow/<component>/<host>/<pid>.
func Source(component string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return fmt.Sprintf("batchflow/%s/%s/%d", component, host, os.Getpid())
}

// New builds the event of type t with data d: a fresh id, the current time,
// the envelope subject, and the trace context of ctx's span.
func (p *Publisher) New(ctx context.Context, t Type, d Data) Event {
	tc := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, tc)
	return Event{
		SpecVersion:     SpecVersion,
		ID:              nuid.Next(),
		Source:          p.source,
		Type:            t,
		Subject:         eventSubject(t, d),
		Time:            p.now().UTC(),
		DataContentType: "application/json",
		TraceParent:     tc.Get("traceparent"),
		Data:            d,
	}
}

// Publish builds and publishes an event, waiting for the stream to store it.
func (p *Publisher) Publish(ctx context.Context, t Type, d Data) (Event, error) {
	ev := p.New(ctx, t, d)
	return ev, p.PublishEvent(ctx, ev)
}

// PublishEvent publishes a built event. The event id is the JetStream
// message id, so a publish retried after a lost acknowledgement is stored once.
func (p *Publisher) PublishEvent(ctx context.Context, ev Event) error {
	if !ev.Type.Valid() {
		return fmt.Errorf("publish event: invalid type %q", ev.Type)
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("publish event %s: %w", ev.Type, err)
	}
	msg := nats.NewMsg(Subject(p.prefix, ev.Data.Migration, ev.Type))
	msg.Data = payload
	bus.InjectTrace(ctx, msg.Header)
	if _, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID)); err != nil {
		return fmt.Errorf("publish event %s on %s: %w", ev.Type, msg.Subject, err)
	}
	return nil
}

// Emit publishes an event without waiting for the stream to store it, for
// the hot path (an event per sub-batch must not add a round trip to every
// transaction). A failure reaches OnAsyncError. Flush waits for the
// outstanding ones.
func (p *Publisher) Emit(ctx context.Context, t Type, d Data) Event {
	ev := p.New(ctx, t, d)
	fail := func(err error) {
		if p.OnAsyncError != nil {
			p.OnAsyncError(ev, err)
		}
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		fail(err)
		return ev
	}
	msg := nats.NewMsg(Subject(p.prefix, ev.Data.Migration, ev.Type))
	msg.Data = payload
	bus.InjectTrace(ctx, msg.Header)
	future, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(ev.ID))
	if err != nil {
		fail(fmt.Errorf("publish event %s: %w", ev.Type, err))
		return ev
	}
	go func() {
		select {
		case <-future.Ok():
		case err := <-future.Err():
			fail(fmt.Errorf("publish event %s: %w", ev.Type, err))
		}
	}()
	return ev
}

// Flush waits until every event Emit sent is stored, or ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
