package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Ensure returns the handles of every stream, consumer and bucket, creating
// them with the default Topology only if one is missing. Unlike Bootstrap it
// never changes a resource that exists, so a component embedded in a
// program (a planner, an executor) cannot undo what the operator's
// bootstrap configured, such as three replicas on a cluster.
func Ensure(ctx context.Context, js jetstream.JetStream, names Names) (*Resources, error) {
	r, err := lookup(ctx, js, names)
	if err == nil {
		return r, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrConsumerNotFound) &&
		!errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, err
	}
	return Bootstrap(ctx, js, names, Topology{})
}

func lookup(ctx context.Context, js jetstream.JetStream, names Names) (*Resources, error) {
	var r Resources
	var err error
	for _, s := range []struct {
		handle *jetstream.Stream
		name   string
	}{
		{&r.EnqueueStream, names.EnqueueStream},
		{&r.BatchStream, names.BatchStream},
		{&r.EventStream, names.EventStream},
		{&r.AdvisoryStream, names.AdvisoryStream},
	} {
		if *s.handle, err = js.Stream(ctx, s.name); err != nil {
			return nil, fmt.Errorf("stream %s: %w", s.name, err)
		}
	}
	if r.ExecutorsConsumer, err = r.BatchStream.Consumer(ctx, ExecutorsConsumer); err != nil {
		return nil, fmt.Errorf("consumer %s: %w", ExecutorsConsumer, err)
	}
	if r.PlannerConsumer, err = r.EnqueueStream.Consumer(ctx, PlannerConsumer); err != nil {
		return nil, fmt.Errorf("consumer %s: %w", PlannerConsumer, err)
	}
	for _, b := range []struct {
		handle *jetstream.KeyValue
		name   string
	}{
		{&r.MigrationsKV, names.MigrationsKV},
		{&r.BatchesKV, names.BatchesKV},
		{&r.LeasesKV, names.LeasesKV},
	} {
		if *b.handle, err = js.KeyValue(ctx, b.name); err != nil {
			return nil, fmt.Errorf("bucket %s: %w", b.name, err)
		}
	}
	return &r, nil
}
