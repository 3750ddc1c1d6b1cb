package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchflow/batchflow/internal/bus"
)

// SubscribeOptions selects which events a subscription receives and from where.
type SubscribeOptions struct {
	// Prefix is the NATS prefix; empty means "batchflow".
	Prefix string
	// Migration restricts events to one migration; empty means all.
	Migration string
	// Types restricts events to these types; empty means all types (of
	// Scope, when set).
	Types []Type
	// Scope restricts events to migration or batch events when Types is empty.
	Scope Scope
	// Durable names a durable consumer: the subscription resumes where the
	// last one with this name stopped, and an event whose handler failed is
	// delivered again. Empty: an ephemeral subscription.
	Durable string
	// Since delivers stored events from this time on; zero means only new
	// events (for a new durable: from its creation). See FromStart.
	Since time.Time
	// FromStart delivers every stored event (7 days by default).
	FromStart bool
	// UntilCaughtUp ends the subscription once the events stored when it
	// started are handled, instead of following new ones.
	UntilCaughtUp bool
	// OnError receives events that cannot be decoded and handler errors;
	// nil ignores them. Malformed events are acknowledged and skipped.
	OnError func(error)
}

// Handler handles one event. For a durable subscription, returning an error
// redelivers the event after a short delay.
type Handler func(ctx context.Context, ev Event) error

// Subscription is a running subscription.
type Subscription struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// redeliverDelay is how long a durable subscription waits before an event
// whose handler failed comes back.
const redeliverDelay = 2 * time.Second

// Subscribe delivers events matching opts to handle, one at a time, in the
// order they were stored, until ctx ends, Stop is called or (UntilCaughtUp)
// the stored events are handled.
func Subscribe(ctx context.Context, js jetstream.JetStream, opts SubscribeOptions, handle Handler) (*Subscription, error) {
	names, err := bus.NewNames(opts.Prefix)
	if err != nil {
		return nil, err
	}
	filters, err := opts.filters(names.Prefix)
	if err != nil {
		return nil, err
	}
	deliver, startTime := jetstream.DeliverNewPolicy, (*time.Time)(nil)
	switch {
	case opts.FromStart:
		deliver = jetstream.DeliverAllPolicy
	case !opts.Since.IsZero():
		deliver, startTime = jetstream.DeliverByStartTimePolicy, &opts.Since
	}

	var cons jetstream.Consumer
	if opts.Durable != "" {
		cons, err = js.CreateOrUpdateConsumer(ctx, names.EventStream, jetstream.ConsumerConfig{
			Durable:        opts.Durable,
			Description:    "batchflow event subscriber",
			FilterSubjects: filters,
			DeliverPolicy:  deliver,
			OptStartTime:   startTime,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        30 * time.Second,
		})
	} else {
		cons, err = js.OrderedConsumer(ctx, names.EventStream, jetstream.OrderedConsumerConfig{
			FilterSubjects: filters,
			DeliverPolicy:  deliver,
			OptStartTime:   startTime,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("subscribe to events on %s: %w", names.EventStream, err)
	}

	ctx, cancel := context.WithCancel(ctx)
	s := &Subscription{cancel: cancel, done: make(chan struct{})}

	if opts.UntilCaughtUp {
		info, err := cons.Info(ctx)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("subscribe to events: %w", err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			cancel()
			close(s.done)
			return s, nil
		}
	}

	report := func(err error) {
		if opts.OnError != nil {
			opts.OnError(err)
		}
	}
	durable := opts.Durable != ""
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		ev, err := Decode(msg.Data())
		if err != nil {
			report(fmt.Errorf("event on %s: %w", msg.Subject(), err))
			if durable {
				_ = msg.Term()
			}
		} else if err := handle(ctx, ev); err != nil {
			report(fmt.Errorf("handle event %s %s: %w", ev.Type, ev.ID, err))
			if durable {
				_ = msg.NakWithDelay(redeliverDelay)
				return
			}
		} else if durable {
			if err := msg.DoubleAck(ctx); err != nil && !errors.Is(err, context.Canceled) {
				report(fmt.Errorf("ack event %s: %w", ev.ID, err))
			}
		}
		if opts.UntilCaughtUp {
			if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
				cancel()
			}
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		report(fmt.Errorf("event subscription: %w", err))
	}))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to events: %w", err)
	}
	go func() {
		<-ctx.Done()
		cc.Stop()
		<-cc.Closed()
		close(s.done)
	}()
	return s, nil
}

// Stop ends the subscription and waits until the handler has returned.
func (s *Subscription) Stop() {
	s.cancel()
	<-s.done
}

// Done is closed when the subscription has ended.
func (s *Subscription) Done() <-chan struct{} { return s.done }

func (o SubscribeOptions) filters(prefix string) ([]string, error) {
	if o.Migration != "" && MigrationToken(o.Migration) != o.Migration {
		return nil, fmt.Errorf("subscribe to events: %q cannot be a migration name", o.Migration)
	}
	if len(o.Types) == 0 {
		if o.Scope == "" {
			return []string{FilterSubject(prefix, o.Migration, "")}, nil
		}
		if o.Scope != ScopeMigration && o.Scope != ScopeBatch {
			return nil, fmt.Errorf("subscribe to events: scope %q is neither migration nor batch", o.Scope)
		}
		m := "*"
		if o.Migration != "" {
			m = o.Migration
		}
		return []string{fmt.Sprintf("%s.events.%s.%s.*", prefix, m, o.Scope)}, nil
	}
	filters := make([]string, 0, len(o.Types))
	seen := map[Type]bool{}
	for _, t := range o.Types {
		if !t.Valid() {
			return nil, fmt.Errorf("subscribe to events: %q is not an event type", t)
		}
		if !seen[t] {
			filters = append(filters, FilterSubject(prefix, o.Migration, t))
			seen[t] = true
		}
	}
	return filters, nil
}
