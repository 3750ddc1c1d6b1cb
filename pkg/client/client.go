// Package client is the Go API services and the batchflow CLI use to
// enqueue migrations, watch them and control them.
//
//	c, err := client.New(nc, client.Options{})
//	m, err := c.Enqueue(ctx, batches.Spec{Name: "backfill_users_admin", Target: "main",
//		Kind: batches.KindBackfillColumn, Table: "users", Args: json.RawMessage(`{"updates":{"admin":false}}`)})
//	m, err = c.Wait(ctx, "backfill_users_admin")
//
// Enqueue goes through the enqueue stream, so a spec published while no
// planner runs waits for one; control requests (Pause, Resume, Cancel,
// Retry, Set) are answered by the leading planner; Status, List, Batches
// and Wait read the migration records directly and need no planner.
package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
)

// Errors callers branch on.
var (
	// ErrNotFound: no migration has that name.
	ErrNotFound = errors.New("migration not found")
	// ErrNoPlanner: no planner answered; none runs, or none leads yet.
	ErrNoPlanner = errors.New("no planner answered: start one (batchflow run, or cmd/planner)")
	// ErrInvalidState: the migration's status does not allow the request.
	ErrInvalidState = errors.New("not allowed in the migration's status")
	// ErrInvalid: the request itself is wrong (bad settings).
	ErrInvalid = errors.New("invalid request")
)

// RejectedError is a spec the planner refused, with every problem.
type RejectedError struct {
	Migration string
	Reason    string
	Problems  []batches.Problem
}

func (e *RejectedError) Error() string { return "rejected: " + e.Reason }

// ControlError is a control request the planner refused or failed; it
// matches ErrNotFound, ErrInvalidState or ErrInvalid with errors.Is.
type ControlError struct {
	Code    string
	Message string
}

func (e *ControlError) Error() string { return e.Message }

// Is maps the reply code to the package's sentinel errors.
func (e *ControlError) Is(target error) bool {
	switch e.Code {
	case CodeNotFound:
		return target == ErrNotFound
	case CodeInvalidState:
		return target == ErrInvalidState
	case CodeInvalid:
		return target == ErrInvalid
	}
	return false
}

// Options configure a Client.
type Options struct {
	// Prefix is the NATS prefix. Default "batchflow".
	Prefix string
}

// Client talks to batchflow over NATS. It is safe for concurrent use.
type Client struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	names      bus.Names
	migrations jetstream.KeyValue
	batches    jetstream.KeyValue
}

// New returns a client on nc. It ensures batchflow's streams and buckets
// exist, so a service may enqueue before any planner has started.
func New(ctx context.Context, nc *nats.Conn, opts Options) (*Client, error) {
	names, err := bus.NewNames(opts.Prefix)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	res, err := bus.Ensure(ctx, js, names)
	if err != nil {
		return nil, err
	}
	return &Client{nc: nc, js: js, names: names, migrations: res.MigrationsKV, batches: res.BatchesKV}, nil
}

// Enqueue publishes spec and waits until the planner accepts it (the
// migration record is returned) or rejects it (*RejectedError). Give ctx a
// deadline: without a planner the spec waits in the queue, and Enqueue with it.
func (c *Client) Enqueue(ctx context.Context, spec batches.Spec) (*batches.Migration, error) {
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	return c.EnqueueJSON(ctx, data)
}

// EnqueueJSON is Enqueue for a spec already in JSON, passed on as is: the
// planner, not the client, decides whether it is valid.
func (c *Client) EnqueueJSON(ctx context.Context, spec []byte) (*batches.Migration, error) {
	id := nuid.Next()
	outcome := make(chan events.Event, 1)
	sub, err := events.Subscribe(ctx, c.js, events.SubscribeOptions{
		Prefix: c.names.Prefix,
		Types:  []events.Type{events.MigrationEnqueued, events.MigrationRejected},
	}, func(_ context.Context, ev events.Event) error {
		if ev.Data.RequestID == id {
			select {
			case outcome <- ev:
			default:
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer sub.Stop()

	msg := nats.NewMsg(c.names.EnqueueSubject)
	msg.Data = spec
	if _, err := c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		return nil, fmt.Errorf("publish the spec on %s: %w", c.names.EnqueueSubject, err)
	}
	select {
	case ev := <-outcome:
		if ev.Type == events.MigrationRejected {
			return nil, &RejectedError{Migration: ev.Data.Migration, Reason: ev.Data.Reason, Problems: ev.Data.Problems}
		}
		return c.Status(ctx, ev.Data.Migration)
	case <-ctx.Done():
		return nil, fmt.Errorf("the spec is queued, but no planner took it in time (is a planner running?): %w", ctx.Err())
	}
}

// Status returns the migration's record: status, counters, progress.
func (c *Client) Status(ctx context.Context, name string) (*batches.Migration, error) {
	entry, err := c.migrations.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, err
	}
	return decodeMigration(entry)
}

// List returns every migration, oldest first.
func (c *Client) List(ctx context.Context) ([]batches.Migration, error) {
	lister, err := c.migrations.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []batches.Migration
	for key := range lister.Keys() {
		m, err := c.Status(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *m)
	}
	sortMigrations(out)
	return out, nil
}

// Batches returns the records of a migration's batches, by sequence.
func (c *Client) Batches(ctx context.Context, name string) ([]batches.Batch, error) {
	if !batches.ValidName(name) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	lister, err := c.batches.ListKeysFiltered(ctx, name+".*")
	if err != nil {
		return nil, err
	}
	var out []batches.Batch
	for key := range lister.Keys() {
		entry, err := c.batches.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var b batches.Batch
		if err := json.Unmarshal(entry.Value(), &b); err != nil {
			return nil, fmt.Errorf("batch record %s: %w", key, err)
		}
		out = append(out, b)
	}
	sortBatches(out)
	return out, nil
}

// Wait blocks until the migration has settled (succeeded, failed or
// cancelled) or ctx ends, and returns its record.
func (c *Client) Wait(ctx context.Context, name string) (*batches.Migration, error) {
	if _, err := c.Status(ctx, name); err != nil {
		return nil, err
	}
	w, err := c.migrations.Watch(ctx, name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case entry, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watch ended")
			}
			if entry == nil || entry.Operation() != jetstream.KeyValuePut {
				continue
			}
			m, err := decodeMigration(entry)
			if err != nil {
				return nil, err
			}
			if m.Status.Settled() {
				return m, nil
			}
		}
	}
}

// Pause stops a running migration from starting new batches and
// sub-batches; Resume continues it.
func (c *Client) Pause(ctx context.Context, name, reason string) (*batches.Migration, error) {
	return c.control(ctx, VerbPause, ControlRequest{Migration: name, Reason: reason})
}

// Resume continues a paused migration.
func (c *Client) Resume(ctx context.Context, name, reason string) (*batches.Migration, error) {
	return c.control(ctx, VerbResume, ControlRequest{Migration: name, Reason: reason})
}

// Cancel ends a migration for good; its name may be reused afterwards.
func (c *Client) Cancel(ctx context.Context, name, reason string) (*batches.Migration, error) {
	return c.control(ctx, VerbCancel, ControlRequest{Migration: name, Reason: reason})
}

// Retry runs a failed migration again; its failed batches get fresh attempts.
func (c *Client) Retry(ctx context.Context, name, reason string) (*batches.Migration, error) {
	return c.control(ctx, VerbRetry, ControlRequest{Migration: name, Reason: reason})
}

// Set changes sizes, pauses or parallelism of a migration that has not settled.
func (c *Client) Set(ctx context.Context, name string, s Settings) (*batches.Migration, error) {
	return c.control(ctx, VerbSet, ControlRequest{Migration: name, Settings: &s})
}

// controlTimeout bounds a control request when ctx has no deadline.
const controlTimeout = 10 * time.Second

func (c *Client) control(ctx context.Context, verb string, req ControlRequest) (*batches.Migration, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, controlTimeout)
		defer cancel()
	}
	msg, err := c.nc.RequestWithContext(ctx, c.names.APISubject(verb), data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, ErrNoPlanner
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", verb, req.Migration, err)
	}
	var reply ControlReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return nil, fmt.Errorf("%s %s: unreadable reply: %w", verb, req.Migration, err)
	}
	if reply.Error != nil {
		return reply.Migration, &ControlError{Code: reply.Error.Code, Message: reply.Error.Message}
	}
	return reply.Migration, nil
}

func decodeMigration(entry jetstream.KeyValueEntry) (*batches.Migration, error) {
	var m batches.Migration
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		return nil, fmt.Errorf("migration record %s: %w", entry.Key(), err)
	}
	return &m, nil
}

func sortMigrations(ms []batches.Migration) {
	slices.SortFunc(ms, func(a, b batches.Migration) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Spec.Name, b.Spec.Name)
	})
}

func sortBatches(bs []batches.Batch) {
	slices.SortFunc(bs, func(a, b batches.Batch) int { return cmp.Compare(a.Seq, b.Seq) })
}
