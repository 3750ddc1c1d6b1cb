package bus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/embeddednats"
)

// startInProcess starts an in-process-only JetStream server and returns a
// JetStream client on it.
func startInProcess(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := embeddednats.Start(embeddednats.Config{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// topologySnapshot is what a repeated Bootstrap must not change: the stored
// configurations and creation times of every stream (buckets included, as
// their KV_ streams) and consumer.
type topologySnapshot struct {
	Streams   map[string]streamSnapshot
	Consumers map[string]consumerSnapshot
	History   map[string]int64
}

type streamSnapshot struct {
	Config  jetstream.StreamConfig
	Created time.Time
}

type consumerSnapshot struct {
	Config  jetstream.ConsumerConfig
	Created time.Time
}

func snapshot(ctx context.Context, t *testing.T, js jetstream.JetStream, n bus.Names) topologySnapshot {
	t.Helper()
	snap := topologySnapshot{
		Streams:   map[string]streamSnapshot{},
		Consumers: map[string]consumerSnapshot{},
		History:   map[string]int64{},
	}
	for _, name := range []string{n.EnqueueStream, n.BatchStream, n.EventStream, n.AdvisoryStream, "KV_" + n.MigrationsKV, "KV_" + n.BatchesKV, "KV_" + n.LeasesKV} {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err, name)
		info := s.CachedInfo()
		snap.Streams[name] = streamSnapshot{Config: info.Config, Created: info.Created}
	}
	for stream, consumer := range map[string]string{n.BatchStream: bus.ExecutorsConsumer, n.EnqueueStream: bus.PlannerConsumer} {
		c, err := js.Consumer(ctx, stream, consumer)
		require.NoError(t, err, consumer)
		info := c.CachedInfo()
		snap.Consumers[stream+"/"+consumer] = consumerSnapshot{Config: info.Config, Created: info.Created}
	}
	for _, bucket := range []string{n.MigrationsKV, n.BatchesKV, n.LeasesKV} {
		kv, err := js.KeyValue(ctx, bucket)
		require.NoError(t, err, bucket)
		status, err := kv.Status(ctx)
		require.NoError(t, err, bucket)
		snap.History[bucket] = status.History()
	}
	return snap
}

func TestBootstrapIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	js := startInProcess(t)
	names := bus.MustNames("")

	first, err := bus.Bootstrap(ctx, js, names, bus.Topology{})
	require.NoError(t, err)
	before := snapshot(ctx, t, js, names)

	// The documented defaults reach the server.
	require.Equal(t, jetstream.WorkQueuePolicy, before.Streams[names.EnqueueStream].Config.Retention)
	require.Equal(t, []string{names.EnqueueSubject}, before.Streams[names.EnqueueStream].Config.Subjects)
	batches := before.Streams[names.BatchStream].Config
	require.Equal(t, jetstream.WorkQueuePolicy, batches.Retention)
	require.Equal(t, []string{"batchflow.batches.>"}, batches.Subjects)
	require.Equal(t, 5*time.Minute, batches.Duplicates)
	events := before.Streams[names.EventStream].Config
	require.Equal(t, jetstream.LimitsPolicy, events.Retention)
	require.Equal(t, 7*24*time.Hour, events.MaxAge)
	require.Equal(t, names.AdvisorySubjects(), before.Streams[names.AdvisoryStream].Config.Subjects)
	for name, s := range before.Streams {
		require.Equal(t, jetstream.FileStorage, s.Config.Storage, name)
		require.Equal(t, 1, s.Config.Replicas, name)
	}
	executors := before.Consumers[names.BatchStream+"/executors"].Config
	require.Equal(t, jetstream.AckExplicitPolicy, executors.AckPolicy)
	require.Equal(t, 30*time.Second, executors.AckWait)
	require.Equal(t, 50, executors.MaxDeliver)
	require.Equal(t, 10000, executors.MaxAckPending)
	require.Equal(t, 10, before.Consumers[names.EnqueueStream+"/planner"].Config.MaxDeliver)
	require.Equal(t, map[string]int64{"batchflow_migrations": 5, "batchflow_batches": 5, "batchflow_leases": 1}, before.History)

	// The handles work without another lookup.
	_, err = first.MigrationsKV.Put(ctx, "m1", []byte(`{}`))
	require.NoError(t, err)

	// A spec waiting for a planner survives a second process starting.
	_, err = js.Publish(ctx, names.EnqueueSubject, []byte(`{"name":"m1"}`))
	require.NoError(t, err)

	second, err := bus.Bootstrap(ctx, js, names, bus.Topology{})
	require.NoError(t, err)
	require.Equal(t, before, snapshot(ctx, t, js, names))

	entry, err := second.MigrationsKV.Get(ctx, "m1")
	require.NoError(t, err)
	require.Equal(t, uint64(1), entry.Revision())

	msgs, err := second.PlannerConsumer.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	var got []string
	for m := range msgs.Messages() {
		got = append(got, string(m.Data()))
		require.NoError(t, m.DoubleAck(ctx))
	}
	require.NoError(t, msgs.Error())
	require.Equal(t, []string{`{"name":"m1"}`}, got)
}

func TestBootstrapPrefixesDoNotCollide(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	js := startInProcess(t)
	def, acme := bus.MustNames(""), bus.MustNames("acme")

	_, err := bus.Bootstrap(ctx, js, def, bus.Topology{})
	require.NoError(t, err)
	before := snapshot(ctx, t, js, def)

	acmeRes, err := bus.Bootstrap(ctx, js, acme, bus.Topology{})
	require.NoError(t, err)
	_, err = bus.Bootstrap(ctx, js, acme, bus.Topology{})
	require.NoError(t, err)

	require.Equal(t, before, snapshot(ctx, t, js, def), "acme changed the default prefix's resources")
	acmeSnap := snapshot(ctx, t, js, acme)
	require.Len(t, acmeSnap.Streams, 7)
	for name := range acmeSnap.Streams {
		require.True(t, strings.HasPrefix(name, "ACME_") || strings.HasPrefix(name, "KV_acme_"), name)
	}

	var streams []string
	for name := range js.StreamNames(ctx).Name() {
		streams = append(streams, name)
	}
	require.Len(t, streams, 14)

	_, err = js.Publish(ctx, acme.EnqueueSubject, []byte(`{"name":"a"}`))
	require.NoError(t, err)
	info, err := acmeRes.EnqueueStream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs)
	defEnqueue, err := js.Stream(ctx, def.EnqueueStream)
	require.NoError(t, err)
	require.Equal(t, uint64(0), defEnqueue.CachedInfo().State.Msgs)
}

// A changed Topology updates the resources in place: same streams, same
// consumers, same messages.
func TestBootstrapConvergesChangedTopology(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	js := startInProcess(t)
	names := bus.MustNames("")
	_, err := bus.Bootstrap(ctx, js, names, bus.Topology{})
	require.NoError(t, err)
	before := snapshot(ctx, t, js, names)
	_, err = js.Publish(ctx, names.Prefix+".events.m1.migration.enqueued", []byte(`{}`))
	require.NoError(t, err)

	changed := bus.Topology{EventMaxAge: time.Hour, BatchAckWait: 45 * time.Second, BatchDuplicates: 10 * time.Minute, EnqueueMaxDeliver: 3}
	_, err = bus.Bootstrap(ctx, js, names, changed)
	require.NoError(t, err)
	after := snapshot(ctx, t, js, names)

	require.Equal(t, time.Hour, after.Streams[names.EventStream].Config.MaxAge)
	require.Equal(t, 10*time.Minute, after.Streams[names.BatchStream].Config.Duplicates)
	require.Equal(t, 45*time.Second, after.Consumers[names.BatchStream+"/executors"].Config.AckWait)
	require.Equal(t, 3, after.Consumers[names.EnqueueStream+"/planner"].Config.MaxDeliver)
	for name, s := range before.Streams {
		require.Equal(t, s.Created, after.Streams[name].Created, name)
	}
	for name, c := range before.Consumers {
		require.Equal(t, c.Created, after.Consumers[name].Created, name)
	}
	events, err := js.Stream(ctx, names.EventStream)
	require.NoError(t, err)
	require.Equal(t, uint64(1), events.CachedInfo().State.Msgs)

	// And back.
	_, err = bus.Bootstrap(ctx, js, names, bus.Topology{})
	require.NoError(t, err)
	require.Equal(t, before, snapshot(ctx, t, js, names))
}

// Processes started together on a fresh server all get through, even with
// different topologies: the last writer's settings win.
func TestBootstrapConcurrentStarts(t *testing.T) {
	t.Parallel()
	if raceEnabled {
		// The server itself races there: filestore.go:757 (UpdateConfig)
		// writes fs.cfg under fs.mu while :13552 (ConsumerStore) reads
		// fs.cfg.Name without it, when one client updates a stream as
		// another adds a consumer to it. Benign (the name never changes),
		// but the detector fails every test running at that moment.
		t.Skip("nats-server v2.15.2 has a data race on concurrent stream update and consumer create; run without -race")
	}
	ctx := t.Context()
	srv, err := embeddednats.Start(embeddednats.Config{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	names := bus.MustNames("")

	const processes = 8
	errs := make(chan error, processes)
	for i := range processes {
		nc, err := srv.Connect()
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		topology := bus.Topology{}
		if i%2 == 1 {
			topology.EventMaxAge = time.Hour
		}
		go func() {
			_, err := bus.Bootstrap(ctx, js, names, topology)
			errs <- err
		}()
	}
	for range processes {
		require.NoError(t, <-errs)
	}

	nc, err := srv.Connect()
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	snap := snapshot(ctx, t, js, names)
	require.Len(t, snap.Streams, 7)
	require.Contains(t, []time.Duration{time.Hour, 7 * 24 * time.Hour}, snap.Streams[names.EventStream].Config.MaxAge)
}

func TestBootstrapRejectsBadTopology(t *testing.T) {
	t.Parallel()
	js := startInProcess(t)
	for _, tc := range []struct {
		name string
		t    bus.Topology
		want string
	}{
		{"short dedup window", bus.Topology{BatchDuplicates: time.Minute}, "at least 2m0s"},
		{"too many replicas", bus.Topology{Replicas: 7}, "replicas 7"},
		{"negative max deliver", bus.Topology{BatchMaxDeliver: -1}, "max deliver"},
		{"tiny ack wait", bus.Topology{BatchAckWait: time.Millisecond}, "ack wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bus.Bootstrap(t.Context(), js, bus.MustNames(""), tc.t)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// Nothing was created by a rejected topology.
	var streams []string
	for name := range js.StreamNames(t.Context()).Name() {
		streams = append(streams, name)
	}
	require.Empty(t, streams)
}

// TestBootstrapCapturesAdvisories proves the advisory stream's subjects match
// what the server sends for the executors consumer, which the watchdog
// depends on and nothing else would notice.
func TestBootstrapCapturesAdvisories(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	js := startInProcess(t)
	names := bus.MustNames("")
	res, err := bus.Bootstrap(ctx, js, names, bus.Topology{BatchMaxDeliver: 2})
	require.NoError(t, err)

	poisoned, err := js.Publish(ctx, names.BatchSubject("m1"), []byte("batch 1"), jetstream.WithMsgID(bus.BatchMsgID("m1", 1, 0)))
	require.NoError(t, err)
	// Nak until the consumer gives up; the pull after the last delivery
	// makes the server notice and advise.
	for range 3 {
		msgs, err := res.ExecutorsConsumer.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
		require.NoError(t, err)
		for m := range msgs.Messages() {
			require.NoError(t, m.Nak())
		}
	}
	maxDeliveries := names.AdvisorySubjects()[0]
	var advisory struct {
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries int    `json:"deliveries"`
	}
	require.Eventually(t, func() bool {
		m, err := res.AdvisoryStream.GetLastMsgForSubject(ctx, maxDeliveries)
		if err != nil {
			return false
		}
		require.NoError(t, json.Unmarshal(m.Data, &advisory))
		return true
	}, 5*time.Second, 50*time.Millisecond)
	require.Equal(t, poisoned.Sequence, advisory.StreamSeq)
	require.Equal(t, 2, advisory.Deliveries)

	terminated, err := js.Publish(ctx, names.BatchSubject("m1"), []byte("batch 2"))
	require.NoError(t, err)
	msgs, err := res.ExecutorsConsumer.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	for m := range msgs.Messages() {
		require.NoError(t, m.TermWithReason("bad batch"))
	}
	require.Eventually(t, func() bool {
		m, err := res.AdvisoryStream.GetLastMsgForSubject(ctx, names.AdvisorySubjects()[1])
		if err != nil {
			return false
		}
		require.NoError(t, json.Unmarshal(m.Data, &advisory))
		return true
	}, 5*time.Second, 50*time.Millisecond)
	require.Equal(t, terminated.Sequence, advisory.StreamSeq)
}

// startCluster starts a 3-node JetStream cluster of in-process servers, each
// listening on a random 127.0.0.1 port, with user/password client auth. It
// returns their client URLs as one comma-separated list once the meta group
// has a leader that sees all three peers.
func startCluster(t *testing.T, user, password string) string {
	t.Helper()
	// Routes must name every node before it starts (that sizes the meta
	// group), so reserve the cluster ports first.
	ports := make([]int, 3)
	var listeners []net.Listener
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		listeners = append(listeners, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	var routes []string
	for _, l := range listeners {
		routes = append(routes, "nats-route://"+l.Addr().String())
		require.NoError(t, l.Close())
	}

	servers := make([]*embeddednats.Server, 3)
	var urls []string
	for i := range servers {
		srv, err := embeddednats.Start(embeddednats.Config{
			StoreDir:   t.TempDir(),
			Listen:     "127.0.0.1:0",
			ServerName: fmt.Sprintf("n%d", i+1),
			User:       user,
			Password:   password,
			Customize: func(o *server.Options) {
				o.Cluster = server.ClusterOpts{Name: "bf", Host: "127.0.0.1", Port: ports[i]}
				o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
			},
		})
		require.NoError(t, err)
		t.Cleanup(srv.Shutdown)
		servers[i] = srv
		urls = append(urls, srv.ClientURL())
	}
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if len(s.NATSServer().JetStreamClusterPeers()) == 3 {
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond, "no JetStream meta leader with 3 peers")
	return strings.Join(urls, ",")
}

func TestBootstrapClusterReplicas(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	urls := startCluster(t, "bf", "cluster-secret")

	nc, err := bus.Connect(ctx, bus.ConnectOptions{URL: urls, User: "bf", Password: "cluster-secret"})
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := js.AccountInfo(ctx)
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)

	names := bus.MustNames("")
	res, err := bus.Bootstrap(ctx, js, names, bus.Topology{Replicas: 3})
	require.NoError(t, err)
	before := snapshot(ctx, t, js, names)

	_, err = js.Publish(ctx, names.EnqueueSubject, []byte(`{"name":"m1"}`))
	require.NoError(t, err)

	_, err = bus.Bootstrap(ctx, js, names, bus.Topology{Replicas: 3})
	require.NoError(t, err)
	require.Equal(t, before, snapshot(ctx, t, js, names))

	for name := range before.Streams {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info := s.CachedInfo()
		require.Equal(t, 3, info.Config.Replicas, name)
		require.NotNil(t, info.Cluster, name)
		require.NotEmpty(t, info.Cluster.Leader, name)
		require.Len(t, info.Cluster.Replicas, 2, name) // the peers besides the leader
	}
	executors, err := res.ExecutorsConsumer.Info(ctx)
	require.NoError(t, err)
	require.NotNil(t, executors.Cluster)
	require.Len(t, executors.Cluster.Replicas, 2)

	info, err := res.EnqueueStream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs)
}
