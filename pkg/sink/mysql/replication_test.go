package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/mysql"
)

// privateServer is a MariaDB server of the test's own, in a temporary
// directory on a loopback port: replication is server-wide state that a
// shared test server must not get.
type privateServer struct {
	port int
	db   *sql.DB
}

func (p *privateServer) dsn(database string) string {
	return fmt.Sprintf("mysql://root@127.0.0.1:%d/%s", p.port, database)
}

func (p *privateServer) exec(t *testing.T, query string) {
	t.Helper()
	_, err := p.db.ExecContext(testCtx(t), query)
	require.NoError(t, err, query)
}

// startPrivateServer initialises and starts mariadbd with extra options,
// and stops it at cleanup. It skips when MariaDB's binaries are missing.
func startPrivateServer(t *testing.T, name string, options ...string) *privateServer {
	t.Helper()
	daemon, err := exec.LookPath("mariadbd")
	if err != nil {
		if daemon, err = exec.LookPath("/usr/sbin/mariadbd"); err != nil {
			t.Skip("mariadbd is not installed: no private server for replication")
		}
	}
	install, err := exec.LookPath("mariadb-install-db")
	if err != nil {
		t.Skip("mariadb-install-db is not installed")
	}
	dir := filepath.Join(t.TempDir(), name)
	data := filepath.Join(dir, "data")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	out, err := exec.Command(install, "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	require.NoError(t, err, "%s", out)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	args := append([]string{"--no-defaults", "--datadir=" + data, "--socket=" + filepath.Join(dir, "sock"),
		fmt.Sprintf("--port=%d", port), "--bind-address=127.0.0.1", "--user=root",
		"--pid-file=" + filepath.Join(dir, "pid"), "--innodb-buffer-pool-size=16M",
		"--log-error=" + filepath.Join(dir, "error.log")}, options...)
	cmd := exec.Command(daemon, args...)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	cfg, err := mysql.ParseURL(fmt.Sprintf("mysql://root@127.0.0.1:%d/", port))
	require.NoError(t, err)
	connector, err := gomysql.NewConnector(cfg)
	require.NoError(t, err)
	db := sql.OpenDB(connector)
	t.Cleanup(func() { db.Close() })
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return db.PingContext(ctx) == nil
	}, 30*time.Second, 100*time.Millisecond, "mariadbd %s did not start", name)
	return &privateServer{port: port, db: db}
}

// TestReplicationLag runs a primary and a replica of the test's own: the
// primary reports 0, the replica its lag while replication runs, and an
// error naming the stopped source once one stops.
func TestReplicationLag(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts two MariaDB servers")
	}
	primary := startPrivateServer(t, "primary", "--server-id=1", "--log-bin=primary-bin")
	replica := startPrivateServer(t, "replica", "--server-id=2")

	primary.exec(t, "CREATE DATABASE app")
	replica.exec(t, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %d, MASTER_USER = 'root', MASTER_USE_GTID = no", primary.port))
	replica.exec(t, "START SLAVE")
	require.Eventually(t, func() bool {
		var n int
		return replica.db.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app'").Scan(&n) == nil && n == 1
	}, 30*time.Second, 100*time.Millisecond, "the replica did not catch up")

	onPrimary := openSink(t, primary.dsn("app"), sink.Options{})
	lag, err := onPrimary.ReplicationLag(testCtx(t))
	require.NoError(t, err)
	require.Zero(t, lag, "a primary cannot see its replicas' lag")

	onReplica := openSink(t, replica.dsn("app"), sink.Options{})
	lag, err = onReplica.ReplicationLag(testCtx(t))
	require.NoError(t, err, "replication runs")
	require.Less(t, lag, 5*time.Second)

	// A second source that never connects: multi-source status covers it.
	replica.exec(t, "CHANGE MASTER 'side' TO MASTER_HOST = '127.0.0.1', MASTER_PORT = 1, MASTER_USER = 'root', MASTER_CONNECT_RETRY = 1")
	replica.exec(t, "START SLAVE 'side'")
	_, err = onReplica.ReplicationLag(testCtx(t))
	require.ErrorIs(t, err, mysql.ErrReplicationStopped)
	require.ErrorContains(t, err, `"side"`)
	replica.exec(t, "STOP SLAVE 'side'")
	replica.exec(t, "RESET SLAVE 'side' ALL")
	lag, err = onReplica.ReplicationLag(testCtx(t))
	require.NoError(t, err)
	require.Less(t, lag, 5*time.Second)

	replica.exec(t, "STOP SLAVE SQL_THREAD")
	_, err = onReplica.ReplicationLag(testCtx(t))
	require.ErrorIs(t, err, mysql.ErrReplicationStopped, "a stopped replica's lag is unknown, not zero")
}
