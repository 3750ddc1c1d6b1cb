package deployments_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/embeddednats"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
)

// The users of nats/batchflow.conf and the passwords the test gives them.
// The server reads each password from an environment variable; the
// observer's variable holds a bcrypt hash of its password, as a
// production server should (`nats server passwd` makes one; cost 4 here
// to keep the test fast, 11 there).
const (
	daemonUser     = "batchflow_daemon"
	daemonPassword = "daemon-7c1e94d0a3b85f26"

	enqueuerUser     = "batchflow_enqueuer"
	enqueuerPassword = "enqueuer-52ab0e6f19d7c834"

	observerUser         = "batchflow_observer"
	observerPassword     = "observer-3fd1c0a7be9e4b52"
	observerPasswordHash = "$2a$04$ZZ1k9Cj8NypvLwfHdBPLfup5irMdP9Yj3UJMz0kB8X83lXis9bhNm"

	account = "BATCHFLOW"
)

var confPath = filepath.Join("nats", "batchflow.conf")

// TestMain sets the password variables the configuration refers to once,
// for every test (t.Setenv would forbid parallel tests).
func TestMain(m *testing.M) {
	for name, value := range map[string]string{
		"BATCHFLOW_DAEMON_PASSWORD":   daemonPassword,
		"BATCHFLOW_ENQUEUER_PASSWORD": enqueuerPassword,
		"BATCHFLOW_OBSERVER_PASSWORD": observerPasswordHash,
	} {
		if err := os.Setenv(name, value); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

var names = bus.MustNames(bus.DefaultPrefix)

// startServer runs nats/batchflow.conf, as loaded by nats-server itself, on
// a free port of 127.0.0.1 with its store in a temporary directory; adjust
// may change the loaded options further.
func startServer(t *testing.T, adjust ...func(*server.Options)) *embeddednats.Server {
	t.Helper()
	loaded, err := server.ProcessConfigFile(confPath)
	require.NoError(t, err)
	dir := t.TempDir()
	srv, err := embeddednats.Start(embeddednats.Config{
		StoreDir: dir,
		Listen:   "127.0.0.1:0",
		Customize: func(o *server.Options) {
			*o = *loaded
			o.StoreDir = dir
			o.Host, o.Port = "127.0.0.1", server.RANDOM_PORT
			o.NoSigs, o.NoLog = true, true
			for _, f := range adjust {
				f(o)
			}
		},
	})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	return srv
}

// streamCount is the number of streams of batchflow's account, seen from
// the server (no user may list streams).
func streamCount(t *testing.T, srv *embeddednats.Server) int {
	t.Helper()
	acc, err := srv.NATSServer().LookupAccount(account)
	require.NoError(t, err)
	return acc.JetStreamUsage().Streams
}

// client is one user's connection over TCP, made the way the batchflow
// commands make theirs (bus.Connect with --nats-user/--nats-password).
type client struct {
	user string
	nc   *nats.Conn
	js   jetstream.JetStream
	// violations receives the permission violations the server reports to
	// this connection, as bus.Connect logs them ("nats: async error").
	violations chan error
}

func connect(t *testing.T, srv *embeddednats.Server, user, password string) *client {
	t.Helper()
	c := &client{user: user, violations: make(chan error, 100)}
	nc, err := bus.Connect(t.Context(), bus.ConnectOptions{
		URL:      srv.ClientURL(),
		User:     user,
		Password: password,
		Name:     "deployments-test-" + user,
		Logger:   slog.New(asyncErrors{c.violations}),
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(nc.ConnectedUrl(), "nats://127.0.0.1:"), "a TCP connection")
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, err = jetstream.New(nc)
	require.NoError(t, err)
	return c
}

// asyncErrors is a slog handler that passes on the permission violations
// bus.Connect logs.
type asyncErrors struct{ ch chan<- error }

func (h asyncErrors) Enabled(context.Context, slog.Level) bool { return true }
func (h asyncErrors) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h asyncErrors) WithGroup(string) slog.Handler            { return h }
func (h asyncErrors) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "nats: async error" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && errors.Is(err, nats.ErrPermissionViolation) {
			select {
			case h.ch <- err:
			default:
			}
		}
		return true
	})
	return nil
}

// refused runs op and requires the server to refuse its publish on subject
// with a permission violation. A refused publish is dropped without an
// answer, so a request would only time out: op's context is cancelled as
// soon as the violation arrives, and op must then have failed.
func (c *client) refused(t *testing.T, subject string, op func(ctx context.Context) error) {
	t.Helper()
	for len(c.violations) > 0 {
		<-c.violations // left over from an earlier step
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()

	want := fmt.Sprintf("Permissions Violation for Publish to %q", subject)
	var seen []string
wait:
	for {
		select {
		case err := <-c.violations:
			if strings.Contains(err.Error(), want) {
				break wait
			}
			seen = append(seen, err.Error())
		case err := <-done:
			require.Failf(t, "not refused", "%s: the operation ended (error %v) without a violation on %s; other violations: %q", c.user, err, subject, seen)
		case <-time.After(5 * time.Second):
			require.Failf(t, "not refused", "%s: no violation on %s after 5s; other violations: %q", c.user, subject, seen)
		}
	}
	cancel()
	select {
	case err := <-done:
		require.Error(t, err, "%s: an operation refused on %s must fail", c.user, subject)
	case <-time.After(5 * time.Second):
		require.Fail(t, "the refused operation did not return after its context ended")
	}
}

// msgs is a stream's message count as its owner sees it.
func msgs(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.Msgs
}

// bootstrap prepares the topology as the daemons do at start.
func bootstrap(t *testing.T, daemon *client) *bus.Resources {
	t.Helper()
	res, err := bus.Bootstrap(t.Context(), daemon.js, names, bus.Topology{})
	require.NoError(t, err)
	return res
}

func publishBatch(t *testing.T, c *client, migration string, seq int64) {
	t.Helper()
	msg := nats.NewMsg(names.BatchSubject(migration))
	msg.Data = fmt.Appendf(nil, `{"migration":%q,"seq":%d}`, migration, seq)
	ack, err := c.js.PublishMsg(t.Context(), msg, jetstream.WithMsgID(bus.BatchMsgID(migration, seq, 1)))
	require.NoError(t, err)
	require.Equal(t, names.BatchStream, ack.Stream)
}

const spec = `{"name":"backfill_users_admin","target":"main","kind":"sql","table":"users","args":{"set":"admin = false"},"where":"created_at < '2026-01-01'"}`

func TestConfigLoads(t *testing.T) {
	t.Parallel()
	opts, err := server.ProcessConfigFile(confPath)
	require.NoError(t, err)
	require.True(t, opts.JetStream)
	got := map[string]string{}
	for _, u := range opts.Users {
		require.NotNil(t, u.Account, u.Username)
		require.Equal(t, account, u.Account.Name, u.Username)
		require.NotNil(t, u.Permissions, "%s has permissions", u.Username)
		got[u.Username] = u.Password
	}
	require.Equal(t, map[string]string{
		daemonUser:   daemonPassword,
		enqueuerUser: enqueuerPassword,
		observerUser: observerPasswordHash,
	}, got, "every password comes from its environment variable")
}

func TestWrongPasswordIsRejected(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	for _, user := range []string{daemonUser, observerUser, "nobody"} {
		_, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: srv.ClientURL(), User: user, Password: "wrong"})
		require.ErrorIs(t, err, nats.ErrAuthorization, user)
	}
	_, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: srv.ClientURL()})
	require.ErrorIs(t, err, nats.ErrAuthorization, "no anonymous access")
}

// TestDaemon: the planner, executors and watchdog can do all their work.
func TestDaemon(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	daemon := connect(t, srv, daemonUser, daemonPassword)
	ctx := t.Context()
	require.Zero(t, streamCount(t, srv))

	first := bootstrap(t, daemon)
	streams := streamCount(t, srv)
	require.GreaterOrEqual(t, streams, 6, "4 streams and the buckets' streams")
	res := bootstrap(t, daemon) // every process at start: a no-op the second time
	require.Equal(t, streams, streamCount(t, srv))
	require.Equal(t, first.BatchStream.CachedInfo().Created, res.BatchStream.CachedInfo().Created)
	_, err := bus.Ensure(ctx, daemon.js, names)
	require.NoError(t, err, "the look-up components embedded in programs do")

	t.Run("batch through the executors consumer", func(t *testing.T) {
		publishBatch(t, daemon, "m1", 1)
		require.EqualValues(t, 1, msgs(t, res.BatchStream))

		msg, err := res.ExecutorsConsumer.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		require.Equal(t, "batchflow.batches.m1", msg.Subject())
		require.NoError(t, msg.InProgress(), "the executor's heartbeat")
		require.NoError(t, msg.DoubleAck(ctx))
		require.Zero(t, msgs(t, res.BatchStream), "an acked batch leaves the work queue")
	})

	t.Run("spec through the planner consumer", func(t *testing.T) {
		ack, err := daemon.js.Publish(ctx, names.EnqueueSubject, []byte(spec))
		require.NoError(t, err, "batchflow run / enqueue")
		require.Equal(t, names.EnqueueStream, ack.Stream)
		msg, err := res.PlannerConsumer.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		require.JSONEq(t, spec, string(msg.Data()))
		require.NoError(t, msg.DoubleAck(ctx))
		require.Zero(t, msgs(t, res.EnqueueStream))
	})

	t.Run("KV records in every bucket", func(t *testing.T) {
		for _, kv := range []jetstream.KeyValue{res.MigrationsKV, res.BatchesKV, res.LeasesKV} {
			key := "m1"
			switch kv {
			case res.BatchesKV:
				key = bus.BatchKey("m1", 1)
			case res.LeasesKV:
				key = "planner"
			}
			rev, err := kv.Create(ctx, key, []byte(`{"status":"pending"}`))
			require.NoError(t, err, kv.Bucket())
			_, err = kv.Update(ctx, key, []byte(`{"status":"running"}`), rev)
			require.NoError(t, err, kv.Bucket())
			e, err := kv.Get(ctx, key)
			require.NoError(t, err, kv.Bucket())
			require.JSONEq(t, `{"status":"running"}`, string(e.Value()))
		}
		// A new handle, as another process opens the bucket.
		kv, err := daemon.js.KeyValue(ctx, names.MigrationsKV)
		require.NoError(t, err)
		e, err := kv.Get(ctx, "m1")
		require.NoError(t, err)
		require.EqualValues(t, 2, e.Revision())

		// A cancelled migration's batch records are purged.
		require.NoError(t, res.BatchesKV.Purge(ctx, bus.BatchKey("m1", 9)))
	})

	t.Run("KV watch", func(t *testing.T) {
		// The planner and watchdog follow records with watchers: push
		// consumers on the buckets' streams.
		w, err := res.BatchesKV.Watch(ctx, "m1.*", jetstream.IgnoreDeletes())
		require.NoError(t, err)
		defer func() { require.NoError(t, w.Stop()) }()
		var got []string
		for e := range w.Updates() {
			if e == nil {
				break // the current values are delivered
			}
			got = append(got, e.Key())
		}
		require.Equal(t, []string{"m1.1"}, got)
	})

	t.Run("events", func(t *testing.T) {
		before := msgs(t, res.EventStream)
		pub := events.NewPublisher(daemon.js, "", "planner")
		sent, err := pub.Publish(ctx, events.MigrationSucceeded, events.Data{Migration: "m1"})
		require.NoError(t, err)
		require.Equal(t, before+1, msgs(t, res.EventStream))

		// `batchflow events`: an ordered consumer reading what is stored.
		var got []events.Event
		sub, err := events.Subscribe(ctx, daemon.js, events.SubscribeOptions{FromStart: true, UntilCaughtUp: true},
			func(_ context.Context, ev events.Event) error { got = append(got, ev); return nil })
		require.NoError(t, err)
		select {
		case <-sub.Done():
		case <-time.After(5 * time.Second):
			require.Fail(t, "the event subscription did not catch up")
		}
		require.NotEmpty(t, got)
		require.Equal(t, sent.ID, got[len(got)-1].ID)
	})

	t.Run("advisories for the watchdog", func(t *testing.T) {
		live, err := daemon.nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.*.BATCHFLOW_BATCHES.executors")
		require.NoError(t, err)
		require.NoError(t, daemon.nc.Flush())

		publishBatch(t, daemon, "m1", 2)
		msg, err := res.ExecutorsConsumer.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		require.NoError(t, msg.TermWithReason("test: batch terminated"))

		adv, err := live.NextMsg(5 * time.Second)
		require.NoError(t, err, "the advisory reaches a live subscriber")
		require.Equal(t, "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.BATCHFLOW_BATCHES.executors", adv.Subject)

		// And the advisory stream captured it: read it, act, delete it.
		require.Eventually(t, func() bool { return msgs(t, res.AdvisoryStream) == 1 }, 5*time.Second, 20*time.Millisecond)
		info, err := res.AdvisoryStream.Info(ctx)
		require.NoError(t, err)
		stored, err := res.AdvisoryStream.GetMsg(ctx, info.State.LastSeq)
		require.NoError(t, err)
		require.Contains(t, string(stored.Data), `"reason":"test: batch terminated"`)
		require.NoError(t, res.AdvisoryStream.DeleteMsg(ctx, stored.Sequence))
		require.Zero(t, msgs(t, res.AdvisoryStream))
	})

	t.Run("cancel purges queued batches", func(t *testing.T) {
		publishBatch(t, daemon, "m2", 1)
		publishBatch(t, daemon, "m2", 2)
		require.EqualValues(t, 2, msgs(t, res.BatchStream))
		require.NoError(t, res.BatchStream.Purge(ctx, jetstream.WithPurgeSubject(names.BatchSubject("m2"))))
		require.Zero(t, msgs(t, res.BatchStream))
	})

	t.Run("control requests", func(t *testing.T) {
		// The leading planner answers batchflow.api.<verb> on the
		// requester's inbox (allow_responses), the CLI asks.
		planner := connect(t, srv, daemonUser, daemonPassword)
		sub, err := planner.nc.QueueSubscribe(names.Prefix+".api.*", "planners", func(m *nats.Msg) {
			_ = m.Respond([]byte(`{"ok":true,"verb":"` + m.Subject[len(names.Prefix+".api."):] + `"}`))
		})
		require.NoError(t, err)
		defer func() { _ = sub.Unsubscribe() }()
		require.NoError(t, planner.nc.Flush())

		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		reply, err := daemon.nc.RequestWithContext(rctx, names.Prefix+".api.pause", []byte(`{"migration":"m1"}`))
		require.NoError(t, err)
		require.JSONEq(t, `{"ok":true,"verb":"pause"}`, string(reply.Data))
		// allow_responses is no blanket right on inboxes: only answers.
		planner.refused(t, "_INBOX.not-a-reply", func(ctx context.Context) error {
			if err := planner.nc.Publish("_INBOX.not-a-reply", nil); err != nil {
				return err
			}
			<-ctx.Done() // a core publish is not answered: wait for the verdict
			return ctx.Err()
		})
	})

	t.Run("nothing outside batchflow", func(t *testing.T) {
		streams := streamCount(t, srv)
		daemon.refused(t, "$JS.API.STREAM.CREATE.ORDERS", func(ctx context.Context) error {
			_, err := daemon.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}})
			return err
		})
		require.Equal(t, streams, streamCount(t, srv), "no stream created")

		daemon.refused(t, "$JS.API.STREAM.DELETE.BATCHFLOW_BATCHES", func(ctx context.Context) error {
			return daemon.js.DeleteStream(ctx, names.BatchStream)
		})
		_, err := daemon.js.Stream(ctx, names.BatchStream)
		require.NoError(t, err, "the batch stream is still there")
		require.Equal(t, streams, streamCount(t, srv))
	})
}

// TestDaemonAckFormatV2: acks keep working when the server sends the
// longer v2 reply subjects ($JS.ACK.<domain>.<account hash>.<stream>...),
// announced to become the default.
func TestDaemonAckFormatV2(t *testing.T) {
	t.Parallel()
	srv := startServer(t, func(o *server.Options) {
		o.FeatureFlags = map[string]bool{"js_ack_fc_v2": true}
	})
	daemon := connect(t, srv, daemonUser, daemonPassword)
	res := bootstrap(t, daemon)

	publishBatch(t, daemon, "m1", 1)
	msg, err := res.ExecutorsConsumer.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(msg.Reply(), "$JS.ACK._."), "a v2 reply subject: %s", msg.Reply())
	require.NoError(t, msg.InProgress())
	require.NoError(t, msg.DoubleAck(t.Context()))
	require.Zero(t, msgs(t, res.BatchStream))
}

// TestEnqueuer: a service can enqueue specs and nothing else. The spec's
// where/set/statement are SQL the executors run: this user is the only
// one besides the daemons that can get one to them.
func TestEnqueuer(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	daemon := connect(t, srv, daemonUser, daemonPassword)
	res := bootstrap(t, daemon)
	enq := connect(t, srv, enqueuerUser, enqueuerPassword)
	ctx := t.Context()

	ack, err := enq.js.Publish(ctx, names.EnqueueSubject, []byte(spec))
	require.NoError(t, err, "a JetStream publish with its ack")
	require.Equal(t, names.EnqueueStream, ack.Stream)
	require.EqualValues(t, 1, msgs(t, res.EnqueueStream), "the spec is stored for the planner")

	t.Run("no batches", func(t *testing.T) {
		enq.refused(t, "batchflow.batches.m1", func(ctx context.Context) error {
			_, err := enq.js.Publish(ctx, "batchflow.batches.m1", []byte(`{"seq":1}`))
			return err
		})
		require.Zero(t, msgs(t, res.BatchStream))
	})

	t.Run("no events", func(t *testing.T) {
		enq.refused(t, "batchflow.events.m1.migration.succeeded", func(ctx context.Context) error {
			_, err := events.NewPublisher(enq.js, "", "forger").Publish(ctx, events.MigrationSucceeded, events.Data{Migration: "m1"})
			return err
		})
		require.Zero(t, msgs(t, res.EventStream))
	})

	t.Run("no KV writes", func(t *testing.T) {
		// What kv.Put publishes, without the bucket look-up a KV handle
		// needs (refused as well).
		enq.refused(t, "$KV.batchflow_migrations.m1", func(ctx context.Context) error {
			_, err := enq.js.Publish(ctx, "$KV.batchflow_migrations.m1", []byte(`{"status":"succeeded"}`))
			return err
		})
		enq.refused(t, "$JS.API.STREAM.INFO.KV_batchflow_migrations", func(ctx context.Context) error {
			_, err := enq.js.KeyValue(ctx, names.MigrationsKV)
			return err
		})
		_, err := res.MigrationsKV.Get(ctx, "m1")
		require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	})

	t.Run("no reads", func(t *testing.T) {
		_, err := res.MigrationsKV.Put(ctx, "m1", []byte(`{"status":"running"}`))
		require.NoError(t, err)
		enq.refused(t, "$JS.API.DIRECT.GET.KV_batchflow_migrations.$KV.batchflow_migrations.m1", func(ctx context.Context) error {
			_, err := enq.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_batchflow_migrations.$KV.batchflow_migrations.m1", nil)
			return err
		})
	})

	t.Run("no control requests", func(t *testing.T) {
		enq.refused(t, "batchflow.api.retry", func(ctx context.Context) error {
			_, err := enq.nc.RequestWithContext(ctx, "batchflow.api.retry", []byte(`{"migration":"m1"}`))
			return err
		})
	})

	t.Run("no stream deletion", func(t *testing.T) {
		enq.refused(t, "$JS.API.STREAM.DELETE.BATCHFLOW_ENQUEUE", func(ctx context.Context) error {
			return enq.js.DeleteStream(ctx, names.EnqueueStream)
		})
		require.EqualValues(t, 1, msgs(t, res.EnqueueStream), "the stream and its spec are still there")
	})

	t.Run("no consumers", func(t *testing.T) {
		// A consumer on the enqueue work queue would take specs away from
		// the planners.
		enq.refused(t, "$JS.API.CONSUMER.CREATE.BATCHFLOW_ENQUEUE.thief", func(ctx context.Context) error {
			_, err := enq.js.CreateConsumer(ctx, names.EnqueueStream, jetstream.ConsumerConfig{Durable: "thief"})
			return err
		})
		info, err := res.EnqueueStream.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, info.State.Consumers, "only the planners' durable")
	})

	// The spec is still there for the planner, untouched.
	msg, err := res.PlannerConsumer.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err)
	require.JSONEq(t, spec, string(msg.Data()))
	require.NoError(t, msg.DoubleAck(ctx))
}

// TestObserver: alerting and dashboards read events and migration records.
func TestObserver(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	daemon := connect(t, srv, daemonUser, daemonPassword)
	obs := connect(t, srv, observerUser, observerPassword) // against the bcrypt hash
	ctx := t.Context()

	// Commands that prepare the topology at start (`batchflow events`)
	// cannot create it as the observer...
	obs.refused(t, "$JS.API.STREAM.UPDATE.BATCHFLOW_ENQUEUE", func(ctx context.Context) error {
		_, err := bus.Bootstrap(ctx, obs.js, names, bus.Topology{})
		return err
	})
	require.Zero(t, streamCount(t, srv))
	// ...but find it in place once a daemon has run, and change nothing.
	res := bootstrap(t, daemon)
	_, err := bus.Bootstrap(ctx, obs.js, names, bus.Topology{})
	require.NoError(t, err, "a read-only bootstrap")
	_, err = bus.Ensure(ctx, obs.js, names)
	require.NoError(t, err, "a look-up")

	pub := events.NewPublisher(daemon.js, "", "planner")
	before, err := pub.Publish(ctx, events.MigrationStarted, events.Data{Migration: "m1"})
	require.NoError(t, err)

	t.Run("ordered subscription", func(t *testing.T) {
		got := make(chan events.Event, 10)
		sub, err := events.Subscribe(ctx, obs.js, events.SubscribeOptions{FromStart: true},
			func(_ context.Context, ev events.Event) error { got <- ev; return nil })
		require.NoError(t, err)
		defer sub.Stop()
		require.Equal(t, before.ID, receive(t, got).ID)
		after, err := pub.Publish(ctx, events.BatchRetried, events.Data{Migration: "m1", Batch: &events.BatchRef{Seq: 1}, Attempt: 2})
		require.NoError(t, err)
		require.Equal(t, after.ID, receive(t, got).ID)
	})

	t.Run("batchflow events", func(t *testing.T) {
		// What `batchflow events` does: everything stored, then stop.
		var got []events.Event
		sub, err := events.Subscribe(ctx, obs.js, events.SubscribeOptions{FromStart: true, UntilCaughtUp: true},
			func(_ context.Context, ev events.Event) error { got = append(got, ev); return nil })
		require.NoError(t, err)
		select {
		case <-sub.Done():
		case <-time.After(5 * time.Second):
			require.Fail(t, "the event subscription did not catch up")
		}
		require.NotEmpty(t, got)
		require.Equal(t, before.ID, got[0].ID)
	})

	t.Run("durable subscription", func(t *testing.T) {
		got := make(chan events.Event, 10)
		sub, err := events.Subscribe(ctx, obs.js, events.SubscribeOptions{
			Durable: "pager",
			Types:   []events.Type{events.MigrationFailed, events.BatchRetried},
		}, func(_ context.Context, ev events.Event) error { got <- ev; return nil })
		require.NoError(t, err)
		defer sub.Stop()
		_, err = pub.Publish(ctx, events.MigrationProgress, events.Data{Migration: "m1"})
		require.NoError(t, err)
		failed, err := pub.Publish(ctx, events.MigrationFailed, events.Data{Migration: "m1", Reason: "batch 1 failed"})
		require.NoError(t, err)
		require.Equal(t, failed.ID, receive(t, got).ID, "only the types asked for")

		// The handler's success was acknowledged to the server.
		cons, err := obs.js.Consumer(ctx, names.EventStream, "pager")
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			info, err := cons.Info(ctx)
			return err == nil && info.AckFloor.Consumer == 1 && info.NumAckPending == 0
		}, 5*time.Second, 20*time.Millisecond)
	})

	t.Run("migration records", func(t *testing.T) {
		_, err := res.MigrationsKV.Put(ctx, "m1", []byte(`{"status":"running"}`))
		require.NoError(t, err)
		kv, err := obs.js.KeyValue(ctx, names.MigrationsKV)
		require.NoError(t, err)
		e, err := kv.Get(ctx, "m1")
		require.NoError(t, err)
		require.JSONEq(t, `{"status":"running"}`, string(e.Value()))

		obs.refused(t, "$KV.batchflow_migrations.m1", func(ctx context.Context) error {
			_, err := kv.Put(ctx, "m1", []byte(`{"status":"succeeded"}`))
			return err
		})
		e, err = res.MigrationsKV.Get(ctx, "m1")
		require.NoError(t, err)
		require.JSONEq(t, `{"status":"running"}`, string(e.Value()), "unchanged")
	})

	t.Run("no batch records", func(t *testing.T) {
		_, err := res.BatchesKV.Put(ctx, "m1.1", []byte(`{"status":"running"}`))
		require.NoError(t, err)
		kv, err := obs.js.KeyValue(ctx, names.BatchesKV)
		require.NoError(t, err, "looking the bucket up is allowed")
		obs.refused(t, "$JS.API.DIRECT.GET.KV_batchflow_batches.$KV.batchflow_batches.m1.1", func(ctx context.Context) error {
			_, err := kv.Get(ctx, "m1.1")
			return err
		})
	})

	t.Run("no enqueue", func(t *testing.T) {
		obs.refused(t, "batchflow.enqueue", func(ctx context.Context) error {
			_, err := obs.js.Publish(ctx, names.EnqueueSubject, []byte(spec))
			return err
		})
		require.Zero(t, msgs(t, res.EnqueueStream))
	})

	t.Run("no events", func(t *testing.T) {
		n := msgs(t, res.EventStream)
		obs.refused(t, "batchflow.events.m1.migration.succeeded", func(ctx context.Context) error {
			_, err := events.NewPublisher(obs.js, "", "forger").Publish(ctx, events.MigrationSucceeded, events.Data{Migration: "m1"})
			return err
		})
		require.Equal(t, n, msgs(t, res.EventStream))
	})

	t.Run("no control requests", func(t *testing.T) {
		obs.refused(t, "batchflow.api.cancel", func(ctx context.Context) error {
			_, err := obs.nc.RequestWithContext(ctx, "batchflow.api.cancel", []byte(`{"migration":"m1"}`))
			return err
		})
	})

	t.Run("no batch consumers", func(t *testing.T) {
		// A consumer on the batch work queue would take batches away from
		// the executors.
		obs.refused(t, "$JS.API.CONSUMER.CREATE.BATCHFLOW_BATCHES.thief", func(ctx context.Context) error {
			_, err := obs.js.CreateConsumer(ctx, names.BatchStream, jetstream.ConsumerConfig{Durable: "thief"})
			return err
		})
		info, err := res.BatchStream.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, info.State.Consumers, "only the executors' durable")
	})
}

// TestCaveats pins two limits of subject permissions that README.md
// describes, so that the README is revisited if NATS ever closes them.
func TestCaveats(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	daemon := connect(t, srv, daemonUser, daemonPassword)
	res := bootstrap(t, daemon)
	ctx := t.Context()

	// Whoever may create a consumer may give it a deliver subject, and
	// the server delivers there without checking the creator's publish
	// permissions (nats-server server/consumer.go, checkConsumerCfg checks
	// only that the subject is literal, valid and forms no cycle).
	// Delivery starts only when something subscribes to that exact
	// literal subject (server/sublist.go, registerNotification): streams
	// listening on wildcards (batches, buckets) are out of reach, the
	// enqueue stream's literal subject is not. The planner's strict spec
	// decoding rejects what arrives.
	t.Run("a consumer can push anywhere", func(t *testing.T) {
		obs := connect(t, srv, observerUser, observerPassword)
		_, err := events.NewPublisher(daemon.js, "", "planner").Publish(ctx, events.MigrationStarted, events.Data{Migration: "m1"})
		require.NoError(t, err)

		push := func(deliver string) jetstream.Consumer {
			c, err := obs.js.CreateConsumer(ctx, names.EventStream, jetstream.ConsumerConfig{
				DeliverSubject: deliver,
				DeliverPolicy:  jetstream.DeliverAllPolicy,
				AckPolicy:      jetstream.AckNonePolicy,
			})
			require.NoError(t, err, deliver)
			return c
		}
		unreachable := []jetstream.Consumer{push("batchflow.batches.m1"), push("$KV.batchflow_batches.m1.1")}
		push(names.EnqueueSubject)

		require.Eventually(t, func() bool { return msgs(t, res.EnqueueStream) == 1 }, 5*time.Second, 20*time.Millisecond,
			"the event is copied into the enqueue stream")
		msg, err := res.PlannerConsumer.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		_, err = batches.ParseSpec(msg.Data())
		require.Error(t, err, "an event is no spec: the planner rejects it")
		require.NoError(t, msg.DoubleAck(ctx))

		for _, c := range unreachable {
			info, err := c.Info(ctx)
			require.NoError(t, err)
			require.False(t, info.PushBound, "%s: no literal subscriber, no delivery", info.Config.DeliverSubject)
			require.Zero(t, info.Delivered.Stream, info.Config.DeliverSubject)
		}
		require.Zero(t, msgs(t, res.BatchStream))
		_, err = res.BatchesKV.Get(ctx, "m1.1")
		require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	})

	// Every user subscribes to _INBOX.> for its own replies, and so
	// receives replies addressed to other connections of the account.
	t.Run("inboxes are shared", func(t *testing.T) {
		enq := connect(t, srv, enqueuerUser, enqueuerPassword)
		snoop, err := enq.nc.SubscribeSync("_INBOX.>")
		require.NoError(t, err)
		require.NoError(t, enq.nc.Flush())

		_, err = res.MigrationsKV.Put(ctx, "m2", []byte(spec))
		require.NoError(t, err)
		_, err = res.MigrationsKV.Get(ctx, "m2") // the daemon reads a record
		require.NoError(t, err)
		for {
			msg, err := snoop.NextMsg(5 * time.Second)
			require.NoError(t, err, "the enqueuer sees the daemon's KV reply")
			if string(msg.Data) == spec {
				break
			}
		}
	})
}

func receive(t *testing.T, ch <-chan events.Event) events.Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(5 * time.Second):
		require.FailNow(t, "no event within 5s")
		return events.Event{}
	}
}

// TestCluster: the same configuration on a three-server JetStream cluster,
// with everything replicated three times (--nats-replicas 3).
func TestCluster(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("forms a three-server cluster")
	}
	// Every server of a JetStream cluster needs its routes configured from
	// the start, so the route ports are chosen before any server starts.
	ports := make([]int, 3)
	routes := make([]*url.URL, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ports[i] = l.Addr().(*net.TCPAddr).Port
		require.NoError(t, l.Close())
		routes[i] = &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])}
	}
	servers := make([]*embeddednats.Server, 3)
	for i := range servers {
		servers[i] = startServer(t, func(o *server.Options) {
			o.ServerName = fmt.Sprintf("nats-%d", i+1)
			o.Cluster.Name = "batchflow"
			o.Cluster.Host, o.Cluster.Port = "127.0.0.1", ports[i]
			o.Routes = routes
		})
	}
	require.Eventually(t, func() bool {
		for _, s := range servers {
			// Only the meta leader answers: every server online, with JetStream.
			if len(s.NATSServer().JetStreamClusterPeers()) == len(servers) {
				return true
			}
		}
		return false
	}, 15*time.Second, 20*time.Millisecond, "the cluster forms and its meta leader sees every server")

	ctx := t.Context()
	daemon := connect(t, servers[0], daemonUser, daemonPassword)
	res, err := bus.Bootstrap(ctx, daemon.js, names, bus.Topology{Replicas: 3})
	require.NoError(t, err)
	require.Equal(t, 3, res.BatchStream.CachedInfo().Config.Replicas)
	kv, err := res.MigrationsKV.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, kv.Config().Replicas)

	enq := connect(t, servers[1], enqueuerUser, enqueuerPassword)
	ack, err := enq.js.Publish(ctx, names.EnqueueSubject, []byte(spec))
	require.NoError(t, err)
	require.Equal(t, names.EnqueueStream, ack.Stream)
	enq.refused(t, "batchflow.batches.m1", func(ctx context.Context) error {
		_, err := enq.js.Publish(ctx, "batchflow.batches.m1", []byte(`{"seq":1}`))
		return err
	})

	_, err = res.MigrationsKV.Put(ctx, "m1", []byte(`{"status":"enqueued"}`))
	require.NoError(t, err)
	obs := connect(t, servers[2], observerUser, observerPassword)
	okv, err := obs.js.KeyValue(ctx, names.MigrationsKV)
	require.NoError(t, err)
	e, err := okv.Get(ctx, "m1")
	require.NoError(t, err)
	require.JSONEq(t, `{"status":"enqueued"}`, string(e.Value()))

	msg, err := res.PlannerConsumer.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err)
	require.JSONEq(t, spec, string(msg.Data()))
	require.NoError(t, msg.DoubleAck(ctx))
}
