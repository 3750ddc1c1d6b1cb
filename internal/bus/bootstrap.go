package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Topology sizes the JetStream resources of DESIGN.md §3. The zero value is
// a valid single-server topology; each field's default is in its comment.
type Topology struct {
	// Replicas is the replication factor of every stream, consumer and
	// bucket: 1 for a single server, 3 (or 5) on a cluster. Default 1.
	// Raising it on an existing deployment scales the resources up.
	Replicas int
	// EventMaxAge is how long lifecycle events stay readable by
	// `batchflow events` and late subscribers. Default 7 days.
	EventMaxAge time.Duration
	// BatchAckWait is how long a batch may go without an ack or an
	// InProgress heartbeat before JetStream redelivers it. Default 30s.
	BatchAckWait time.Duration
	// BatchMaxDeliver caps deliveries of one batch message. It is a backstop
	// far above a spec's max_attempts: executors count attempts in KV and
	// stalls republish with a new message, so reaching it means executors
	// keep dying on that batch; the watchdog turns the advisory into a
	// failed batch. Default 50.
	BatchMaxDeliver int
	// EnqueueMaxDeliver caps deliveries of one enqueue message to the
	// planners, so a spec that keeps crashing them stops being retried (it
	// stays in the stream, undelivered). Default 10.
	EnqueueMaxDeliver int
	// BatchDuplicates is the batch stream's deduplication window: a batch
	// published twice with the same message id inside it is stored once.
	// The contract requires at least 2 minutes. Default 5 minutes.
	BatchDuplicates time.Duration
	// AdvisoryMaxAge is how long captured max-delivery and termination
	// advisories wait for the watchdog. Default 7 days.
	AdvisoryMaxAge time.Duration
}

// Defaults of Topology's fields.
const (
	defaultEventMaxAge       = 7 * 24 * time.Hour
	defaultBatchAckWait      = 30 * time.Second
	defaultBatchMaxDeliver   = 50
	defaultEnqueueMaxDeliver = 10
	defaultBatchDuplicates   = 5 * time.Minute
	defaultAdvisoryMaxAge    = 7 * 24 * time.Hour

	// minBatchDuplicates is the contract's floor for the dedup window: it
	// must cover a planner restart, so a batch published again after a crash
	// (same message id) is dropped instead of queued twice.
	minBatchDuplicates = 2 * time.Minute
)

// executorsMaxAckPending bounds batches in flight across all executors; the
// planner's per-migration parallelism is the real limit, so this only has
// to stay out of its way (the server default, 1000, is within reach of many
// concurrent migrations).
const executorsMaxAckPending = 10000

// bootstrapTimeout bounds Bootstrap when ctx has no deadline. Placing a
// replicated stream on a busy cluster can take longer than the 5 s the
// jetstream package otherwise allows each request.
const bootstrapTimeout = 30 * time.Second

func (t Topology) withDefaults() Topology {
	if t.Replicas == 0 {
		t.Replicas = 1
	}
	if t.EventMaxAge == 0 {
		t.EventMaxAge = defaultEventMaxAge
	}
	if t.BatchAckWait == 0 {
		t.BatchAckWait = defaultBatchAckWait
	}
	if t.BatchMaxDeliver == 0 {
		t.BatchMaxDeliver = defaultBatchMaxDeliver
	}
	if t.EnqueueMaxDeliver == 0 {
		t.EnqueueMaxDeliver = defaultEnqueueMaxDeliver
	}
	if t.BatchDuplicates == 0 {
		t.BatchDuplicates = defaultBatchDuplicates
	}
	if t.AdvisoryMaxAge == 0 {
		t.AdvisoryMaxAge = defaultAdvisoryMaxAge
	}
	return t
}

func (t Topology) validate() error {
	switch {
	case t.Replicas < 1 || t.Replicas > 5:
		return fmt.Errorf("topology: replicas %d: JetStream allows 1 to 5", t.Replicas)
	case t.EventMaxAge < 0, t.AdvisoryMaxAge < 0:
		return errors.New("topology: max ages must not be negative")
	case t.BatchAckWait < time.Second:
		return fmt.Errorf("topology: batch ack wait %s: use at least 1s", t.BatchAckWait)
	case t.BatchMaxDeliver < 1, t.EnqueueMaxDeliver < 1:
		return errors.New("topology: max deliver must be at least 1")
	case t.BatchDuplicates < minBatchDuplicates:
		return fmt.Errorf("topology: batch duplicates window %s: the contract requires at least %s", t.BatchDuplicates, minBatchDuplicates)
	}
	return nil
}

// Resources are the handles Bootstrap created or found, so components need
// not look them up again. Field names follow Names.
type Resources struct {
	EnqueueStream  jetstream.Stream
	BatchStream    jetstream.Stream
	EventStream    jetstream.Stream
	AdvisoryStream jetstream.Stream

	// ExecutorsConsumer is the one durable every executor pulls batches from.
	ExecutorsConsumer jetstream.Consumer
	// PlannerConsumer is the durable the planners pull enqueued specs from.
	PlannerConsumer jetstream.Consumer

	MigrationsKV jetstream.KeyValue
	BatchesKV    jetstream.KeyValue
	LeasesKV     jetstream.KeyValue
}

// Bootstrap creates, or updates to t, every stream, consumer and bucket of
// DESIGN.md §3 and returns their handles. Every process calls it at start,
// which is why any start order works: whoever comes first creates
// everything, executors included, so nobody waits for a resource another
// component owns. A repeated call with the same configuration writes
// nothing (same Created times, messages kept), a changed Topology updates in
// place, and processes racing on a fresh server all succeed. Processes
// started with different Topologies each rewrite the shared settings to
// their own, so run them all with the same one.
//
// Without a deadline on ctx, Bootstrap gives up after 30 seconds.
func Bootstrap(ctx context.Context, js jetstream.JetStream, names Names, t Topology) (*Resources, error) {
	t = t.withDefaults()
	if err := t.validate(); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, bootstrapTimeout)
		defer cancel()
	}
	var (
		r   Resources
		err error
	)
	streams := []struct {
		handle *jetstream.Stream
		cfg    jetstream.StreamConfig
	}{
		{&r.EnqueueStream, jetstream.StreamConfig{
			Name:        names.EnqueueStream,
			Description: "batchflow: migration specs waiting for a planner",
			Subjects:    []string{names.EnqueueSubject},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
		}},
		{&r.BatchStream, jetstream.StreamConfig{
			Name:        names.BatchStream,
			Description: "batchflow: planned batches waiting for an executor",
			Subjects:    []string{names.BatchSubjects},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			Duplicates:  t.BatchDuplicates,
		}},
		{&r.EventStream, jetstream.StreamConfig{
			Name:        names.EventStream,
			Description: "batchflow: migration and batch lifecycle events",
			Subjects:    []string{names.EventSubjects},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			MaxAge:      t.EventMaxAge,
		}},
		{&r.AdvisoryStream, jetstream.StreamConfig{
			Name:        names.AdvisoryStream,
			Description: "batchflow: JetStream advisories of the executors consumer, for the watchdog",
			Subjects:    names.AdvisorySubjects(),
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			MaxAge:      t.AdvisoryMaxAge,
		}},
	}
	for _, s := range streams {
		if *s.handle, err = ensureStream(ctx, js, s.cfg); err != nil {
			return nil, fmt.Errorf("bootstrap stream %s: %w", s.cfg.Name, err)
		}
	}

	// Consumers come after their streams, which this very call guarantees.
	consumers := []struct {
		handle *jetstream.Consumer
		stream string
		cfg    jetstream.ConsumerConfig
	}{
		{&r.ExecutorsConsumer, names.BatchStream, jetstream.ConsumerConfig{
			Durable:       ExecutorsConsumer,
			Description:   "batchflow executors",
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       t.BatchAckWait,
			MaxDeliver:    t.BatchMaxDeliver,
			MaxAckPending: executorsMaxAckPending,
		}},
		{&r.PlannerConsumer, names.EnqueueStream, jetstream.ConsumerConfig{
			Durable:       PlannerConsumer,
			Description:   "batchflow planners",
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			MaxDeliver:    t.EnqueueMaxDeliver,
		}},
	}
	for _, c := range consumers {
		if *c.handle, err = ensureConsumer(ctx, js, c.stream, c.cfg); err != nil {
			return nil, fmt.Errorf("bootstrap consumer %s on %s: %w", c.cfg.Durable, c.stream, err)
		}
	}

	buckets := []struct {
		handle *jetstream.KeyValue
		cfg    jetstream.KeyValueConfig
	}{
		{&r.MigrationsKV, jetstream.KeyValueConfig{
			Bucket:      names.MigrationsKV,
			Description: "batchflow: migration specs, status and counters",
			History:     5,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
		}},
		{&r.BatchesKV, jetstream.KeyValueConfig{
			Bucket:      names.BatchesKV,
			Description: "batchflow: batch bounds, attempts, epochs and heartbeats",
			History:     5,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
		}},
		{&r.LeasesKV, jetstream.KeyValueConfig{
			Bucket:      names.LeasesKV,
			Description: "batchflow: leader leases of the planners and watchdogs",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
		}},
	}
	for _, b := range buckets {
		if *b.handle, err = ensureBucket(ctx, js, b.cfg); err != nil {
			return nil, fmt.Errorf("bootstrap bucket %s: %w", b.cfg.Bucket, err)
		}
	}
	return &r, nil
}

// The ensure functions read a resource first and leave it alone when it
// already has every setting Bootstrap manages. CreateOrUpdate with an equal
// configuration changes nothing visible either, but it still rewrites the
// stream's metadata (a meta-group proposal on a cluster) at every process
// start, and nats-server v2.15.2 races with itself when such an update meets
// a consumer being created on the same stream (see bootstrap_test.go).
// Settings Bootstrap does not manage are reset to the server's defaults
// whenever an update is needed: Topology is the only place to tune them.

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, want.Name)
	switch {
	case err == nil && streamMatches(s.CachedInfo().Config, want):
		return s, nil
	case err != nil && !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, err
	}
	s, err = js.CreateOrUpdateStream(ctx, want)
	// CreateOrUpdateStream updates and, on "not found", creates: a process
	// that loses the race to create, against a different configuration,
	// gets "name already in use"; updating once more converges.
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err = js.UpdateStream(ctx, want)
	}
	return s, err
}

func streamMatches(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) &&
		have.Description == want.Description &&
		have.Retention == want.Retention &&
		have.Storage == want.Storage &&
		have.Replicas == want.Replicas &&
		have.MaxAge == want.MaxAge &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates)
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, stream string, want jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := js.Consumer(ctx, stream, want.Durable)
	switch {
	case err == nil && consumerMatches(c.CachedInfo().Config, want):
		return c, nil
	case err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, err
	}
	// Create-or-update is one server-side action: no race to handle.
	return js.CreateOrUpdateConsumer(ctx, stream, want)
}

func consumerMatches(have, want jetstream.ConsumerConfig) bool {
	return have.Description == want.Description &&
		have.DeliverPolicy == want.DeliverPolicy &&
		have.AckPolicy == want.AckPolicy &&
		(want.AckWait == 0 || have.AckWait == want.AckWait) &&
		have.MaxDeliver == want.MaxDeliver &&
		(want.MaxAckPending == 0 || have.MaxAckPending == want.MaxAckPending)
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	// "KV_<bucket>" is the backing stream's name in every client (ADR-8).
	s, err := js.Stream(ctx, "KV_"+want.Bucket)
	switch {
	case err == nil && bucketMatches(s.CachedInfo().Config, want):
		return js.KeyValue(ctx, want.Bucket)
	case err != nil && !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, want)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		kv, err = js.UpdateKeyValue(ctx, want)
	}
	return kv, err
}

func bucketMatches(have jetstream.StreamConfig, want jetstream.KeyValueConfig) bool {
	return have.MaxMsgsPerSubject == int64(want.History) &&
		have.Description == want.Description &&
		have.Storage == want.Storage &&
		have.Replicas == want.Replicas
}
