package config_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v3"

	"github.com/batchflow/batchflow/internal/config"
)

// The environment twins of DESIGN.md §5, spelled out: they are a contract.
var batchflowEnv = []string{
	"BATCHFLOW_NATS_URL", "BATCHFLOW_NATS_CREDS", "BATCHFLOW_NATS_NKEY",
	"BATCHFLOW_NATS_USER", "BATCHFLOW_NATS_PASSWORD",
	"BATCHFLOW_NATS_TLS_CA", "BATCHFLOW_NATS_TLS_CERT", "BATCHFLOW_NATS_TLS_KEY",
	"BATCHFLOW_NATS_REPLICAS", "BATCHFLOW_PREFIX", "BATCHFLOW_TARGETS",
	"BATCHFLOW_LOG_FORMAT", "BATCHFLOW_LOG_LEVEL",
}

// setEnv unsets every BATCHFLOW_* variable for the test, so the machine's
// environment cannot leak in, then sets env. Tests that call it cannot be
// parallel.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range batchflowEnv {
		t.Setenv(k, "") // restores the original value after the test
		require.NoError(t, os.Unsetenv(k))
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// runResult is what running a command produced.
type runResult struct {
	common config.Common
	ran    bool   // the action ran and FromCommand was called
	output string // everything the command wrote, help and errors included
}

// run runs a real command built with flags, as a binary's main would,
// with FromCommand in its action.
func run(t *testing.T, flags []cli.Flag, args ...string) (runResult, error) {
	t.Helper()
	var res runResult
	var out bytes.Buffer
	cmd := &cli.Command{
		Name:      "planner",
		Flags:     flags,
		Writer:    &out,
		ErrWriter: &out,
		Action: func(_ context.Context, cmd *cli.Command) error {
			res.ran = true
			c, err := config.FromCommand(cmd)
			res.common = c
			return err
		},
	}
	err := cmd.Run(t.Context(), append([]string{"planner"}, args...))
	res.output = out.String()
	return res, err
}

// tempFile creates a file in a test directory and returns its path.
func tempFile(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte("test"), 0o600))
	return path
}

func TestFromCommandDefaults(t *testing.T) {
	setEnv(t, nil)
	res, err := run(t, config.CommonFlags())
	require.NoError(t, err)
	require.Equal(t, config.Common{
		NATSURL:      "nats://127.0.0.1:4222",
		NATSReplicas: 1,
		Prefix:       "batchflow",
		LogFormat:    "text",
		LogLevel:     "info",
	}, res.common)
}

func TestFromCommandReadsEveryFlag(t *testing.T) {
	setEnv(t, nil)
	ca, cert, key := tempFile(t, "ca.pem"), tempFile(t, "cert.pem"), tempFile(t, "key.pem")
	res, err := run(t, config.CommonFlags(),
		"--nats-url", "nats://n1:4222,nats://n2:4222",
		"--nats-user", "batchflow",
		"--nats-password", secret,
		"--nats-tls-ca", ca,
		"--nats-tls-cert", cert,
		"--nats-tls-key", key,
		"--nats-replicas", "3",
		"--prefix", "bf_test-1",
		"--target", "main=postgres://app:"+secret+"@h1:5432,h2:5432/app",
		"--target", "demo=sqlite:///tmp/demo.db",
		"--log-format", "JSON",
		"--log-level", " Debug ",
	)
	require.NoError(t, err)
	c := res.common
	require.Equal(t, "nats://n1:4222,nats://n2:4222", c.NATSURL)
	require.True(t, c.NATSURLExplicit)
	require.Equal(t, "batchflow", c.NATSUser)
	require.Equal(t, secret, c.NATSPassword)
	require.Equal(t, ca, c.NATSTLSCA)
	require.Equal(t, cert, c.NATSTLSCert)
	require.Equal(t, key, c.NATSTLSKey)
	require.Equal(t, 3, c.NATSReplicas)
	require.Equal(t, "bf_test-1", c.Prefix)
	require.Equal(t, []string{"main", "demo"}, c.Targets.Names())
	main, _ := c.Targets.Get("main")
	require.Equal(t, "postgres://app:"+secret+"@h1:5432,h2:5432/app", main.DSN(), "the comma of a multi-host DSN is not a separator")
	require.Equal(t, "json", c.LogFormat, "lowercased")
	require.Equal(t, "debug", c.LogLevel, "trimmed and lowercased")
}

func TestFromCommandReadsEveryEnvTwin(t *testing.T) {
	creds, nkey := tempFile(t, "user.creds"), tempFile(t, "user.nk")
	ca, cert, key := tempFile(t, "ca.pem"), tempFile(t, "cert.pem"), tempFile(t, "key.pem")
	setEnv(t, map[string]string{
		"BATCHFLOW_NATS_URL":      "tls://n1:4222",
		"BATCHFLOW_NATS_USER":     "batchflow",
		"BATCHFLOW_NATS_PASSWORD": secret,
		"BATCHFLOW_NATS_TLS_CA":   ca,
		"BATCHFLOW_NATS_TLS_CERT": cert,
		"BATCHFLOW_NATS_TLS_KEY":  key,
		"BATCHFLOW_NATS_REPLICAS": "5",
		"BATCHFLOW_PREFIX":        "bf",
		"BATCHFLOW_TARGETS":       "main=postgres://app:" + secret + "@db/app;demo=sqlite://demo.db;",
		"BATCHFLOW_LOG_FORMAT":    "json",
		"BATCHFLOW_LOG_LEVEL":     "warn",
	})
	res, err := run(t, config.CommonFlags())
	require.NoError(t, err)
	c := res.common
	require.Equal(t, "tls://n1:4222", c.NATSURL)
	require.True(t, c.NATSURLExplicit)
	require.Equal(t, "batchflow", c.NATSUser)
	require.Equal(t, secret, c.NATSPassword)
	require.Equal(t, ca, c.NATSTLSCA)
	require.Equal(t, cert, c.NATSTLSCert)
	require.Equal(t, key, c.NATSTLSKey)
	require.Equal(t, 5, c.NATSReplicas)
	require.Equal(t, "bf", c.Prefix)
	require.Equal(t, []string{"main", "demo"}, c.Targets.Names())
	require.Equal(t, "json", c.LogFormat)
	require.Equal(t, "warn", c.LogLevel)

	// Credentials files, one at a time: they exclude the user and each other.
	setEnv(t, map[string]string{"BATCHFLOW_NATS_CREDS": creds})
	res, err = run(t, config.CommonFlags())
	require.NoError(t, err)
	require.Equal(t, creds, res.common.NATSCreds)

	setEnv(t, map[string]string{"BATCHFLOW_NATS_NKEY": nkey})
	res, err = run(t, config.CommonFlags())
	require.NoError(t, err)
	require.Equal(t, nkey, res.common.NATSNKey)
}

func TestFromCommandPrecedence(t *testing.T) {
	// Each setting: flag beats environment beats default.
	tests := []struct {
		name string
		flag []string
		env  map[string]string
		get  func(config.Common) any
		want any
	}{
		{"nats-url default", nil, nil, func(c config.Common) any { return c.NATSURL }, "nats://127.0.0.1:4222"},
		{"nats-url env", nil, map[string]string{"BATCHFLOW_NATS_URL": "nats://env:4222"}, func(c config.Common) any { return c.NATSURL }, "nats://env:4222"},
		{"nats-url flag", []string{"--nats-url", "nats://flag:4222"}, map[string]string{"BATCHFLOW_NATS_URL": "nats://env:4222"}, func(c config.Common) any { return c.NATSURL }, "nats://flag:4222"},

		{"nats-url explicit default", nil, nil, func(c config.Common) any { return c.NATSURLExplicit }, false},
		{"nats-url explicit env", nil, map[string]string{"BATCHFLOW_NATS_URL": "nats://127.0.0.1:4222"}, func(c config.Common) any { return c.NATSURLExplicit }, true},
		{"nats-url explicit flag", []string{"--nats-url", "nats://127.0.0.1:4222"}, nil, func(c config.Common) any { return c.NATSURLExplicit }, true},

		{"prefix default", nil, nil, func(c config.Common) any { return c.Prefix }, "batchflow"},
		{"prefix env", nil, map[string]string{"BATCHFLOW_PREFIX": "fromenv"}, func(c config.Common) any { return c.Prefix }, "fromenv"},
		{"prefix flag", []string{"--prefix", "fromflag"}, map[string]string{"BATCHFLOW_PREFIX": "fromenv"}, func(c config.Common) any { return c.Prefix }, "fromflag"},

		{"log-level default", nil, nil, func(c config.Common) any { return c.LogLevel }, "info"},
		{"log-level env", nil, map[string]string{"BATCHFLOW_LOG_LEVEL": "error"}, func(c config.Common) any { return c.LogLevel }, "error"},
		{"log-level flag", []string{"--log-level", "debug"}, map[string]string{"BATCHFLOW_LOG_LEVEL": "error"}, func(c config.Common) any { return c.LogLevel }, "debug"},

		{"nats-replicas default", nil, nil, func(c config.Common) any { return c.NATSReplicas }, 1},
		{"nats-replicas env", nil, map[string]string{"BATCHFLOW_NATS_REPLICAS": "3"}, func(c config.Common) any { return c.NATSReplicas }, 3},
		{"nats-replicas flag", []string{"--nats-replicas", "5"}, map[string]string{"BATCHFLOW_NATS_REPLICAS": "3"}, func(c config.Common) any { return c.NATSReplicas }, 5},

		{"targets default", nil, nil, func(c config.Common) any { return c.Targets.Names() }, []string{}},
		{"targets env", nil, map[string]string{"BATCHFLOW_TARGETS": "a=sqlite://a.db;b=sqlite://b.db"}, func(c config.Common) any { return c.Targets.Names() }, []string{"a", "b"}},
		{
			// Flags replace the environment's list; they do not add to it.
			"targets flag", []string{"--target", "c=sqlite://c.db"}, map[string]string{"BATCHFLOW_TARGETS": "a=sqlite://a.db;b=sqlite://b.db"},
			func(c config.Common) any { return c.Targets.Names() }, []string{"c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, tt.env)
			res, err := run(t, config.CommonFlags(), tt.flag...)
			require.NoError(t, err)
			require.Equal(t, tt.want, tt.get(res.common))
		})
	}
}

func TestFromCommandErrors(t *testing.T) {
	dir := t.TempDir()
	file := tempFile(t, "file")
	missing := filepath.Join(dir, "missing.creds")
	const prefixRule = "use 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter"
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"prefix flag", []string{"--prefix", "Foo"}, nil, `--prefix (BATCHFLOW_PREFIX): invalid prefix "Foo": ` + prefixRule},
		{"prefix env", nil, map[string]string{"BATCHFLOW_PREFIX": "1x"}, `--prefix (BATCHFLOW_PREFIX): invalid prefix "1x": ` + prefixRule},
		{"prefix with a dot", []string{"--prefix", "a.b"}, nil, `--prefix (BATCHFLOW_PREFIX): invalid prefix "a.b": ` + prefixRule},
		{"prefix too long", []string{"--prefix", "a" + strings.Repeat("b", 32)}, nil, `--prefix (BATCHFLOW_PREFIX): invalid prefix "a` + strings.Repeat("b", 32) + `": ` + prefixRule},
		{"empty prefix", []string{"--prefix", ""}, nil, `--prefix (BATCHFLOW_PREFIX): invalid prefix "": ` + prefixRule},
		{"log format", []string{"--log-format", "xml"}, nil, `--log-format (BATCHFLOW_LOG_FORMAT): invalid log format "xml": use text or json`},
		{"log level env", nil, map[string]string{"BATCHFLOW_LOG_LEVEL": "verbose"}, `--log-level (BATCHFLOW_LOG_LEVEL): invalid log level "verbose": use debug, info, warn or error`},
		{"empty log level", []string{"--log-level", ""}, nil, `--log-level (BATCHFLOW_LOG_LEVEL): invalid log level "": use debug, info, warn or error`},
		{"no replicas", []string{"--nats-replicas", "0"}, nil, `--nats-replicas (BATCHFLOW_NATS_REPLICAS): invalid replica count 0: use 1 to 5`},
		{"too many replicas", nil, map[string]string{"BATCHFLOW_NATS_REPLICAS": "7"}, `--nats-replicas (BATCHFLOW_NATS_REPLICAS): invalid replica count 7: use 1 to 5`},
		{"empty nats url", []string{"--nats-url", " "}, nil, `--nats-url (BATCHFLOW_NATS_URL): no server URL`},
		{"nats url scheme", []string{"--nats-url", "http://n1:4222"}, nil, `--nats-url (BATCHFLOW_NATS_URL): unknown scheme "http" in "http://n1:4222": use nats://, tls://, ws:// or wss://`},
		{
			"nats url malformed", nil, map[string]string{"BATCHFLOW_NATS_URL": "nats://n1:4222,nats://ops:" + secret + "@:4222"},
			`--nats-url (BATCHFLOW_NATS_URL): malformed server URL "nats://ops:xxxxx@:4222"`,
		},
		{"tls cert without key", []string{"--nats-tls-cert", file}, nil, `--nats-tls-cert (BATCHFLOW_NATS_TLS_CERT): needs --nats-tls-key (BATCHFLOW_NATS_TLS_KEY)`},
		{"tls key without cert", nil, map[string]string{"BATCHFLOW_NATS_TLS_KEY": file}, `--nats-tls-key (BATCHFLOW_NATS_TLS_KEY): needs --nats-tls-cert (BATCHFLOW_NATS_TLS_CERT)`},
		{"user without password", []string{"--nats-user", "u"}, nil, `--nats-user (BATCHFLOW_NATS_USER): needs --nats-password (BATCHFLOW_NATS_PASSWORD)`},
		{"password without user", nil, map[string]string{"BATCHFLOW_NATS_PASSWORD": secret}, `--nats-password (BATCHFLOW_NATS_PASSWORD): needs --nats-user (BATCHFLOW_NATS_USER)`},
		{
			"creds and nkey", []string{"--nats-creds", file, "--nats-nkey", file}, nil,
			`--nats-creds (BATCHFLOW_NATS_CREDS): cannot be combined with --nats-nkey (BATCHFLOW_NATS_NKEY): use one way to authenticate`,
		},
		{
			"nkey and user", []string{"--nats-nkey", file, "--nats-user", "u", "--nats-password", secret}, nil,
			`--nats-nkey (BATCHFLOW_NATS_NKEY): cannot be combined with --nats-user (BATCHFLOW_NATS_USER): use one way to authenticate`,
		},
		{"missing creds file", []string{"--nats-creds", missing}, nil, `--nats-creds (BATCHFLOW_NATS_CREDS): stat ` + missing + `: no such file or directory`},
		{"tls ca is a directory", nil, map[string]string{"BATCHFLOW_NATS_TLS_CA": dir}, `--nats-tls-ca (BATCHFLOW_NATS_TLS_CA): ` + dir + ` is a directory, not a file`},
		{
			"every problem at once", []string{"--prefix", "Foo", "--log-format", "xml", "--nats-replicas", "9"}, nil,
			`--nats-replicas (BATCHFLOW_NATS_REPLICAS): invalid replica count 9: use 1 to 5` + "\n" +
				`--prefix (BATCHFLOW_PREFIX): invalid prefix "Foo": ` + prefixRule + "\n" +
				`--log-format (BATCHFLOW_LOG_FORMAT): invalid log format "xml": use text or json`,
		},
		{"target without name", []string{"--target", "main"}, nil, `--target wants NAME=DSN, got "main"`},
		{
			"target bad scheme", []string{"--target", "main=mongodb://app:" + secret + "@m/app"}, nil,
			`--target: target "main": unknown DSN scheme "mongodb": use postgres://, mysql:// or sqlite://`,
		},
		{
			"target DSN without name", []string{"--target", "postgres://app:" + secret + "@db/app"}, nil,
			`--target wants NAME=DSN, got "postgres://xxxxx@db/app"`,
		},
		{
			"targets env duplicate", nil, map[string]string{"BATCHFLOW_TARGETS": "main=sqlite://a.db;main=sqlite://b.db"},
			`BATCHFLOW_TARGETS: target "main" given twice`,
		},
		{
			"targets env malformed", nil, map[string]string{"BATCHFLOW_TARGETS": "main=postgres://app:" + secret + "%zz@db/app"},
			`BATCHFLOW_TARGETS: target "main": malformed DSN "postgres://xxxxx@db/app": not a valid URL (percent-encode special characters in the user name and password: @ as %40, / as %2F, # as %23, ? as %3F)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, tt.env)
			res, err := run(t, config.CommonFlags(), tt.args...)
			require.True(t, res.ran, "the command parsed its flags: %s", res.output)
			require.EqualError(t, err, tt.want)
			require.NotContains(t, err.Error(), secret)
			require.NotContains(t, res.output, secret)
			require.Equal(t, config.Common{}, res.common, "no half-validated config")
		})
	}
}

func TestFromCommandUnparsableEnvNamesFlagAndVariable(t *testing.T) {
	setEnv(t, map[string]string{"BATCHFLOW_NATS_REPLICAS": "three"})
	res, err := run(t, config.CommonFlags())
	require.Error(t, err)
	require.False(t, res.ran)
	require.Contains(t, err.Error(), "BATCHFLOW_NATS_REPLICAS")
	require.Contains(t, err.Error(), "nats-replicas")
}

func TestFromCommandNeverPrintsTargetPasswords(t *testing.T) {
	// urfave/cli quotes the raw value of a flag whose Set fails; the
	// --target flag must never give it the chance, and help shows values
	// redacted.
	setEnv(t, nil)
	for _, args := range [][]string{
		{"--target", "postgres://app:" + secret + "@db/app"},
		{"--target", "main=postgres://app:" + secret + "%zz@db/app"},
		{"--target", "main=postgres://app:" + secret + "@db/app", "--help"},
		{"--target", "main=postgres://app:" + secret + "@db/app", "--no-such-flag"},
	} {
		res, err := run(t, config.CommonFlags(), args...)
		if err != nil {
			require.NotContains(t, err.Error(), secret, args)
		}
		require.NotContains(t, res.output, secret, args)
		require.NotContains(t, res.common.String(), secret, args)
	}
}

func TestSubcommands(t *testing.T) {
	// The operator tool's shape: common flags on the root, inherited by
	// subcommands; --target only where a database is opened.
	newTool := func(got *config.Common) *cli.Command {
		action := func(_ context.Context, cmd *cli.Command) error {
			c, err := config.FromCommand(cmd)
			*got = c
			return err
		}
		return &cli.Command{
			Name:  "batchflow",
			Flags: config.CommonFlagsWithoutTargets(),
			Commands: []*cli.Command{
				{Name: "run", Flags: []cli.Flag{config.TargetFlag()}, Action: action},
				{Name: "status", Action: action},
			},
		}
	}

	t.Run("run takes targets", func(t *testing.T) {
		setEnv(t, map[string]string{"BATCHFLOW_TARGETS": "env=sqlite://env.db"})
		var got config.Common
		err := newTool(&got).Run(t.Context(), []string{"batchflow", "--prefix", "bf", "run", "--target", "main=sqlite://main.db", "--log-level", "debug"})
		require.NoError(t, err)
		require.Equal(t, "bf", got.Prefix)
		require.Equal(t, "debug", got.LogLevel)
		require.Equal(t, []string{"main"}, got.Targets.Names())
	})
	t.Run("run falls back to the environment", func(t *testing.T) {
		setEnv(t, map[string]string{"BATCHFLOW_TARGETS": "env=sqlite://env.db"})
		var got config.Common
		require.NoError(t, newTool(&got).Run(t.Context(), []string{"batchflow", "run"}))
		require.Equal(t, []string{"env"}, got.Targets.Names())
	})
	t.Run("status ignores the targets environment", func(t *testing.T) {
		setEnv(t, map[string]string{"BATCHFLOW_TARGETS": "not a target list"})
		var got config.Common
		require.NoError(t, newTool(&got).Run(t.Context(), []string{"batchflow", "status"}))
		require.Empty(t, got.Targets)
		require.Equal(t, "batchflow", got.Prefix)
	})
	t.Run("a subcommand flag beats the environment read by the root", func(t *testing.T) {
		setEnv(t, map[string]string{"BATCHFLOW_NATS_URL": "nats://env:4222", "BATCHFLOW_PREFIX": "fromenv"})
		var got config.Common
		require.NoError(t, newTool(&got).Run(t.Context(), []string{"batchflow", "status", "--nats-url", "nats://flag:4222"}))
		require.Equal(t, "nats://flag:4222", got.NATSURL)
		require.Equal(t, "fromenv", got.Prefix)
	})
	t.Run("targets on the root reach subcommands", func(t *testing.T) {
		setEnv(t, nil)
		var got config.Common
		tool := &cli.Command{
			Name:  "batchflow",
			Flags: config.CommonFlags(),
			Commands: []*cli.Command{{Name: "run", Action: func(_ context.Context, cmd *cli.Command) error {
				c, err := config.FromCommand(cmd)
				got = c
				return err
			}}},
		}
		err := tool.Run(t.Context(), []string{"batchflow", "--target", "a=sqlite://a.db", "run", "--target", "b=sqlite://b.db"})
		require.NoError(t, err)
		require.Equal(t, []string{"a", "b"}, got.Targets.Names())
	})
}

func TestHelpNamesEnvironmentTwins(t *testing.T) {
	setEnv(t, nil)
	res, err := run(t, config.CommonFlags(), "--help")
	require.NoError(t, err)
	require.False(t, res.ran)
	for _, want := range append([]string{"--target NAME=DSN", `(default: "nats://127.0.0.1:4222")`}, batchflowEnv...) {
		require.Contains(t, res.output, want)
	}
}

func TestCommonWithDefaultsValidates(t *testing.T) {
	t.Parallel()
	c := config.Common{}.WithDefaults()
	require.NoError(t, c.Validate())
	require.Equal(t, "nats://127.0.0.1:4222", c.NATSURL)
	require.Equal(t, 1, c.NATSReplicas)
	require.Equal(t, "batchflow", c.Prefix)
	require.Equal(t, "text", c.LogFormat)
	require.Equal(t, "info", c.LogLevel)

	kept := config.Common{NATSURL: "nats://n:4222", NATSReplicas: 3, Prefix: "bf", LogFormat: "json", LogLevel: "warn"}
	require.Equal(t, kept, kept.WithDefaults())

	require.Error(t, config.Common{}.Validate(), "the zero Common is not valid without defaults")
}
