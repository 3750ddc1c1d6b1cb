package postgres

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/sink"
)

// cluster is a Postgres server of the test's own: replication is
// server-wide state the shared test server must not get.
type cluster struct {
	bin, dir string
	port     int
	asUser   []string // runuser prefix when the test runs as root
}

func (c *cluster) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

func (c *cluster) run(t *testing.T, name string, args ...string) {
	t.Helper()
	argv := append(append(append([]string{}, c.asUser...), filepath.Join(c.bin, name)), args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	require.NoError(t, err, "%s: %s", name, out)
}

// start starts the cluster in dir with extra settings, stopped at cleanup.
func (c *cluster) start(t *testing.T, settings ...string) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c fsync=off", c.port, filepath.Dir(c.dir))
	for _, s := range settings {
		opts += " -c " + s
	}
	c.run(t, "pg_ctl", "-D", c.dir, "-o", opts, "-l", c.dir+".log", "-w", "-t", "60", "start")
	t.Cleanup(func() {
		argv := append(append(append([]string{}, c.asUser...), filepath.Join(c.bin, "pg_ctl")), "-D", c.dir, "-m", "immediate", "-w", "stop")
		_ = exec.Command(argv[0], argv[1:]...).Run()
	})
}

// replicatedClusters starts a primary and a streaming standby that
// applies commits applyDelay late, or skips when Postgres' server binaries
// are missing or cannot run here.
func replicatedClusters(t *testing.T, applyDelay time.Duration) (primary, standby *cluster) {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	var bin string
	for _, d := range dirs {
		if complete(d, "initdb", "pg_ctl", "pg_basebackup", "postgres") {
			bin = d
			break
		}
	}
	if bin == "" {
		t.Skip("Postgres' server binaries (initdb, pg_ctl, pg_basebackup) are not installed")
	}
	var asUser []string
	base, err := os.MkdirTemp("", "batchflow-pg-replication-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	if os.Geteuid() == 0 {
		// Postgres refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root without a postgres user to run a server as")
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			t.Skip("running as root without runuser")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		require.NoError(t, os.Chown(base, uid, gid))
		asUser = []string{runuser, "-u", "postgres", "--"}
	}
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	primary = &cluster{bin: bin, dir: filepath.Join(base, "primary"), port: port(), asUser: asUser}
	primary.run(t, "initdb", "-D", primary.dir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	primary.start(t, "wal_level=replica", "max_wal_senders=4")

	standby = &cluster{bin: bin, dir: filepath.Join(base, "standby"), port: port(), asUser: asUser}
	standby.run(t, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.port), "-U", "postgres",
		"-D", standby.dir, "-R", "-X", "stream", "--no-sync")
	standby.start(t, "hot_standby=on", "wal_receiver_status_interval=1s",
		fmt.Sprintf("recovery_min_apply_delay=%dms", applyDelay.Milliseconds()))
	return primary, standby
}

// TestReplicationLag measures lag for real, on a standby that applies
// commits late: the standby reports its own delay while a commit waits,
// and nothing once it has replayed all it received; the primary reports
// its standby's replay_lag.
func TestReplicationLag(t *testing.T) {
	t.Parallel()
	const delay = 2 * time.Second
	primary, standby := replicatedClusters(t, delay)
	ctx := t.Context()
	onPrimary := openSink(t, primary.dsn(), sink.Options{MaxConns: 2})
	onStandby := openSink(t, standby.dsn(), sink.Options{MaxConns: 2})
	lag := func(s *Sink) time.Duration {
		d, err := s.ReplicationLag(ctx)
		require.NoError(t, err)
		return d
	}
	commit := func() {
		_, err := onPrimary.pool.Exec(ctx, "INSERT INTO beats VALUES (now())")
		require.NoError(t, err)
	}

	_, err := onPrimary.pool.Exec(ctx, "CREATE TABLE beats (at timestamptz)")
	require.NoError(t, err)
	commit()
	// Once the standby replayed everything, nothing is pending: no lag,
	// however old its last replayed commit is.
	require.Eventually(t, func() bool {
		var n int64
		err := onStandby.pool.QueryRow(ctx, "SELECT count(*) FROM beats").Scan(&n)
		return err == nil && n == 1
	}, 30*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool { return lag(onStandby) == 0 }, 10*time.Second, 50*time.Millisecond)
	time.Sleep(time.Second)
	require.Zero(t, lag(onStandby))

	// A commit the standby received but holds back: it is behind by at
	// least the time since the last commit it replayed.
	commit()
	require.Eventually(t, func() bool { return lag(onStandby) >= time.Second }, delay, 20*time.Millisecond)
	require.Eventually(t, func() bool { return lag(onStandby) == 0 }, 30*time.Second, 50*time.Millisecond)

	// The primary sees the delayed replay in pg_stat_replication.
	require.Eventually(t, func() bool {
		commit()
		return lag(onPrimary) >= delay/2
	}, 30*time.Second, 200*time.Millisecond)
	_ = context.Background
}

func complete(dir string, names ...string) bool {
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			return false
		}
	}
	return true
}
