package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/allinone"
	"github.com/batchflow/batchflow/internal/testenv"
)

// cliResult is what a batchflow command printed and how it exited.
type cliResult struct {
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// runCLI runs batchflow in-process, as main would, against natsURL.
func runCLI(t *testing.T, natsURL string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut syncBuffer
	full := append([]string{"batchflow", "--nats-url", natsURL}, args...)
	code := execute(ctx, full, &out, &errOut)
	r := cliResult{stdout: out.String(), stderr: errOut.String(), code: code}
	t.Logf("batchflow %s → %s", strings.Join(args, " "), r)
	return r
}

// runBinary runs a built batchflow binary to its end, as a user would.
func runBinary(t *testing.T, bin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errOut.String(), code: cmd.ProcessState.ExitCode()}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("run %s: %v", bin, err)
	}
	t.Logf("%s %s → %s", filepath.Base(bin), strings.Join(args, " "), r)
	return r
}

// freePort returns a TCP port nothing listens on at the moment. The
// machine's own NATS may hold 4222: tests never use the default.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// writeSpec writes a spec file in a fresh directory and returns its path.
func writeSpec(t *testing.T, spec string) string {
	t.Helper()
	require.True(t, json.Valid([]byte(spec)), spec)
	path := filepath.Join(t.TempDir(), "spec.json")
	require.NoError(t, os.WriteFile(path, []byte(spec), 0o600))
	return path
}

// startStack runs a planner, executors and a watchdog in the test process
// on js, with target main at dsn, until the test ends.
func startStack(t *testing.T, js *testenv.JS, dsn string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- allinone.Run(ctx, allinone.Config{
			Connect:   func(name string) (*nats.Conn, error) { return js.Server.Connect(nats.Name(name)) },
			Targets:   map[string]string{"main": dsn},
			Executors: 2,
			Logger:    testenv.Logger(t),
		})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

// statusJSON runs `batchflow status NAME --json` and decodes it.
func statusJSON(t *testing.T, natsURL, name string) map[string]any {
	t.Helper()
	r := runCLI(t, natsURL, "status", name, "--json")
	require.Equal(t, 0, r.code, r)
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), r.stdout)
	return v
}

// waitReachable waits until a NATS server accepts connections at url.
func waitReachable(t *testing.T, url string, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		nc.Close()
		return true
	}, within, 100*time.Millisecond, "nothing accepts connections at %s", url)
}
