package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/client"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/planner"
)

// testBundle is one test's JetStream, database and client, with a stock
// planner told about normalize_email and executors running this binary's kinds.
type testBundle struct {
	js     *testenv.JS
	db     *testenv.Database
	client *client.Client
}

// ackWait is short so a batch whose executor died comes back in seconds.
const ackWait = 3 * time.Second

func setup(t *testing.T, js *testenv.JS, db *testenv.Database) *testBundle {
	t.Helper()
	_, err := bus.Bootstrap(context.Background(), js.JetStream, bus.MustNames(""), bus.Topology{BatchAckWait: ackWait})
	require.NoError(t, err)
	c, err := client.New(context.Background(), js.Conn, client.Options{})
	require.NoError(t, err)
	return &testBundle{js: js, db: db, client: c}
}

// startPlanner runs a stock planner, which knows the kind only by name, as
// `planner --kind normalize_email` does.
func (b *testBundle) startPlanner(t *testing.T) {
	t.Helper()
	nc := b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	p, err := planner.New(planner.Config{
		Conn: nc, JetStream: js, Targets: map[string]string{"main": b.db.DSN},
		Kinds:  []string{"normalize_email"},
		Logger: testenv.Logger(t).With("component", "planner"), Tick: 20 * time.Millisecond,
		ProgressInterval: 500 * time.Millisecond,
	})
	require.NoError(t, err)
	serve(t, "planner", p.Run)
}

// startExecutor runs an executor with the kinds main registers.
func (b *testBundle) startExecutor(t *testing.T) {
	t.Helper()
	nc := b.js.Connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ex, err := executor.New(executor.Config{
		Conn: nc, JetStream: js, ID: "custom", Concurrency: 2,
		Targets:            map[string]string{"main": b.db.DSN},
		Kinds:              kinds,
		Logger:             testenv.Logger(t).With("component", "executor"),
		InProgressInterval: ackWait / 3,
		HeartbeatInterval:  200 * time.Millisecond,
		RetryBackoff:       []time.Duration{100 * time.Millisecond},
	})
	require.NoError(t, err)
	serve(t, "executor", ex.Run)
}

// serve runs a component until the test ends, then stops it and waits.
func serve(t *testing.T, name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("%s: %v", name, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// createUsers makes users(id, email, email_normalized, email_hash, writes,
// sample) and inserts rows. A trigger counts the writes to the derived
// columns in `writes`, so "normalized exactly once" is read from the table
// itself, whatever the kind reports. sample says which rule a row tests.
func createUsers(t *testing.T, db *testenv.Database, rows []user) {
	t.Helper()
	table := "CREATE TABLE users (id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(320), " +
		"email_normalized VARCHAR(320), email_hash CHAR(64), writes INT NOT NULL DEFAULT 0, sample VARCHAR(20) NOT NULL)"
	switch db.Dialect {
	case testenv.DialectPostgres:
		db.Exec(t, table)
		db.Exec(t, `CREATE FUNCTION count_writes() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN NEW.writes := OLD.writes + 1; RETURN NEW; END $$`)
		db.Exec(t, "CREATE TRIGGER users_writes BEFORE UPDATE OF email_normalized, email_hash ON users FOR EACH ROW EXECUTE FUNCTION count_writes()")
	case testenv.DialectMySQL:
		// Binary collation: a case-insensitive one would make the
		// reference query's email_normalized = LOWER(email) always true.
		db.Exec(t, table+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
		db.Exec(t, "CREATE TRIGGER users_writes BEFORE UPDATE ON users FOR EACH ROW SET NEW.writes = OLD.writes + 1")
	case testenv.DialectSQLite:
		db.Exec(t, table)
		db.Exec(t, `CREATE TRIGGER users_writes AFTER UPDATE OF email_normalized, email_hash ON users
			BEGIN UPDATE users SET writes = writes + 1 WHERE id = NEW.id; END`)
	}
	var values []string
	var args []any
	for _, r := range rows {
		n := len(args)
		values = append(values, fmt.Sprintf("(%s, %s, %s)", db.Placeholder(n+1), db.Placeholder(n+2), db.Placeholder(n+3)))
		args = append(args, r.id, r.email, r.sample)
	}
	db.Exec(t, "INSERT INTO users (id, email, sample) VALUES "+strings.Join(values, ", "), args...)
}

// user is one row of the test table and what the migration should make of it.
type user struct {
	id     int64
	email  any    // string, or nil for NULL
	sample string // plain, special, malformed or null
	want   string // the expected email_normalized of a special row
}

// specialEmails are the corners of the rule, with the expected value
// written out by hand. The punycode forms are the published ones (RFC 3492
// examples, IANA's test TLDs).
var specialEmails = []struct{ email, want string }{
	{"John.Smith+newsletter@Gmail.com", "johnsmith@gmail.com"},
	{"j.o.h.n.smith@gmail.com", "johnsmith@gmail.com"},
	{"x.y+z@GMAIL.COM", "xy@gmail.com"},
	{"JANE.DOE+work+extra@GoogleMail.com", "janedoe@googlemail.com"},
	{"first.last+tag@example.com", "first.last+tag@example.com"}, // not Gmail: dots and +tag stay
	{"First.Last@Example.COM", "first.last@example.com"},
	{"info@münchen.de", "info@xn--mnchen-3ya.de"},
	{"Kontakt@BÜCHER.example", "kontakt@xn--bcher-kva.example"},
	{"user@XN--MNCHEN-3YA.DE", "user@xn--mnchen-3ya.de"},
	{"user@例え.テスト", "user@xn--r8jz45g.xn--zckzah"},
	{"Admin@пример.испытание", "admin@xn--e1afmkfd.xn--80akhbyknj4f"},
	{"owner@faß.de", "owner@xn--fa-hia.de"}, // UTS #46 non-transitional: ß stays ß
	{"Jürgen.Müller@Example.de", "jürgen.müller@example.de"},
	{"Alice Example <Alice@Example.org>", "alice@example.org"},
	{"  spaced@example.com  ", "spaced@example.com"},
	{"user@ｅｘａｍｐｌｅ.com", "user@example.com"}, // full-width letters map to ASCII
}

// malformedEmails do not normalize: with on_row_error skip, exactly these
// rows end up in failed_keys.
var malformedEmails = []string{
	"not-an-email",
	"two@@example.com",
	"@example.com",
	"user@exa_mple.com",     // parses, but '_' is not allowed in a domain name (IDNA)
	"user@-dash-.com",       // parses, but a label may not start or end with '-'
	"+only-a-tag@gmail.com", // no Gmail mailbox left
}

// usersTable lays out n rows with gapped ids: malformed rows at the first,
// the last and two adjacent positions, specials spread out, two NULL
// emails, and mixed-case ASCII addresses everywhere else.
func usersTable(n int) []user {
	malformedAt := map[int]string{}
	for i, pos := range []int{0, 41, 42, 133, 250, n - 1} {
		malformedAt[pos] = malformedEmails[i]
	}
	nullAt := map[int]bool{100: true, 201: true}
	names := []string{"Alice", "BOB", "carol", "DaVe", "eve.Smith"}
	domains := []string{"Example.com", "EXAMPLE.ORG", "mail.Example.net", "corp.example"}
	rows := make([]user, 0, n)
	special := 0
	for i := range n {
		u := user{id: int64(1000 + 3*i + i%2)}
		switch {
		case malformedAt[i] != "":
			u.email, u.sample = malformedAt[i], "malformed"
		case nullAt[i]:
			u.email, u.sample = nil, "null"
		case i%10 == 7 && special < len(specialEmails):
			u.email, u.want, u.sample = specialEmails[special].email, specialEmails[special].want, "special"
			special++
		default:
			u.email, u.sample = fmt.Sprintf("%s%d@%s", names[i%len(names)], i, domains[i%len(domains)]), "plain"
		}
		rows = append(rows, u)
	}
	return rows
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func normalizeSpec(name string, mod func(*batches.Spec)) batches.Spec {
	s := batches.Spec{Name: name, Target: "main", Kind: "normalize_email", Table: "users",
		Args: json.RawMessage(`{"source": "email", "target": "email_normalized", "hash": "email_hash"}`)}
	if mod != nil {
		mod(&s)
	}
	return s
}

// failedKeys collects the failed_keys of every batch of a migration.
func (b *testBundle) failedKeys(t *testing.T, ctx context.Context, migration string) []int64 {
	t.Helper()
	bs, err := b.client.Batches(ctx, migration)
	require.NoError(t, err)
	keys := []int64{}
	for _, bt := range bs {
		for _, k := range bt.FailedKeys {
			keys = append(keys, k.Int())
		}
	}
	return keys
}

// TestNormalizeEmail runs normalize_email with on_row_error skip through a
// stock planner and this executor's kinds on every database: each address
// is normalized once, the malformed rows alone are skipped and recorded.
func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	testenv.ForEachDialect(t, func(t *testing.T, db *testenv.Database) {
		t.Parallel()
		b := setup(t, testenv.JetStream(t), db)
		rows := usersTable(300)
		createUsers(t, db, rows)
		b.startPlanner(t)
		b.startExecutor(t)
		ctx := ctxFor(t, 2*time.Minute)

		_, err := b.client.Enqueue(ctx, normalizeSpec("normalize_users_email", func(s *batches.Spec) {
			s.OnRowError = batches.RowErrorSkip
			s.BatchSize, s.SubBatchSize, s.Parallelism = 100, 20, 2
		}))
		require.NoError(t, err)
		m, err := b.client.Wait(ctx, "normalize_users_email")
		require.NoError(t, err)
		require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)

		var malformed []int64
		var good int64
		for _, u := range rows {
			switch u.sample {
			case "malformed":
				malformed = append(malformed, u.id)
			case "plain", "special":
				good++
			}
		}
		require.Len(t, malformed, len(malformedEmails))
		require.Equal(t, int64(len(specialEmails)), db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE sample = 'special'"), "every special case is in the table")
		require.ElementsMatch(t, malformed, b.failedKeys(t, ctx, "normalize_users_email"), "exactly the malformed rows are failed_keys")
		require.Equal(t, int64(len(malformed)), m.Counters.FailedKeys)

		// Row by row: the special cases against their written-out values,
		// plain addresses lower-cased, the hash of what was written, and
		// one write per normalized row.
		want := map[int64]user{}
		for _, u := range rows {
			want[u.id] = u
		}
		res, err := db.DB.QueryContext(ctx, "SELECT id, email_normalized, email_hash, writes FROM users ORDER BY id")
		require.NoError(t, err)
		defer res.Close()
		seen := 0
		for res.Next() {
			var (
				id           int64
				normal, hash sql.NullString
				writes       int64
			)
			require.NoError(t, res.Scan(&id, &normal, &hash, &writes))
			u := want[id]
			seen++
			switch u.sample {
			case "malformed", "null":
				require.False(t, normal.Valid, "row %d (%v) is left alone", id, u.email)
				require.False(t, hash.Valid, "row %d (%v) is left alone", id, u.email)
				require.Zero(t, writes, "row %d (%v) is never written", id, u.email)
				continue
			case "special":
				require.Equal(t, u.want, normal.String, "row %d: %q", id, u.email)
			case "plain":
				require.Equal(t, strings.ToLower(u.email.(string)), normal.String, "row %d", id)
			}
			require.Equal(t, sha256Hex(normal.String), hash.String, "row %d: the hash of the normalized address", id)
			require.Equal(t, int64(1), writes, "row %d is written exactly once", id)
		}
		require.NoError(t, res.Err())
		require.Equal(t, len(rows), seen)

		// The generic rule once more, computed by the database.
		plain := db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE sample = 'plain'")
		require.Equal(t, plain, db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE sample = 'plain' AND email_normalized = LOWER(email)"))
		switch db.Dialect {
		case testenv.DialectPostgres:
			require.Equal(t, good, db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE email_hash = encode(sha256(convert_to(email_normalized, 'UTF8')), 'hex')"))
		case testenv.DialectMySQL:
			require.Equal(t, good, db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE email_hash = SHA2(email_normalized, 256)"))
		}

		// What the kind reported is what it changed, counted once.
		require.Equal(t, good, db.QueryInt(t, "SELECT SUM(rows_affected) FROM batchflow_ledger WHERE migration = 'normalize_users_email'"))
		require.Equal(t, good, m.Counters.RowsAffected)
		require.Equal(t, good, db.QueryInt(t, "SELECT SUM(writes) FROM users"))
	})
}

// TestMalformedRowFailsWithoutSkip: with on_row_error fail, a malformed
// address fails the attempt; the retry resumes from the checkpoint (no row
// written twice) and fails again, and the batch fails with a data error that
// names the row by key, not by address.
func TestMalformedRowFailsWithoutSkip(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, testenv.JetStream(t), db)
	const bad = "not-an-email"
	var rows []user
	for i := range 60 {
		u := user{id: int64(i + 1), email: fmt.Sprintf("User%d@Example.com", i+1), sample: "plain"}
		if i == 45 {
			u.email, u.sample = bad, "malformed"
		}
		rows = append(rows, u)
	}
	createUsers(t, db, rows)
	b.startPlanner(t)
	b.startExecutor(t)
	ctx := ctxFor(t, time.Minute)
	zero := batches.Duration(0)
	_, err := b.client.Enqueue(ctx, normalizeSpec("strict", func(s *batches.Spec) {
		s.OnRowError = batches.RowErrorFail
		s.BatchSize, s.SubBatchSize, s.SubBatchTarget, s.MaxAttempts = 60, 10, &zero, 2
	}))
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "strict")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationFailed, m.Status)

	bs, err := b.client.Batches(ctx, "strict")
	require.NoError(t, err)
	require.Len(t, bs, 1)
	rec := bs[0]
	require.Equal(t, batches.BatchFailed, rec.Status)
	require.Equal(t, 2, rec.Attempts, "a data error uses the attempts")
	require.Empty(t, rec.FailedKeys, "nothing is skipped under on_row_error fail")
	require.Len(t, rec.Errors, 2)
	for _, e := range rec.Errors {
		require.Equal(t, batches.ClassData, e.Class)
		require.Contains(t, e.Message, "normalize_email")
		require.Contains(t, e.Message, "id 46")
		require.NotContains(t, e.Message, bad, "the address itself stays out of records and events")
	}

	written := db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE writes = 1")
	require.Positive(t, written, "the sub-batches before the bad row committed")
	require.Equal(t, written, db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE id <= (SELECT MAX(id) FROM users WHERE writes = 1)"), "a prefix of the keys")
	require.Less(t, db.QueryInt(t, "SELECT MAX(id) FROM users WHERE writes = 1"), int64(46))
	require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE writes > 1"), "the retry resumed after the committed sub-batches")
	require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE id >= 46 AND email_normalized IS NOT NULL"))
}

// TestMissingColumnFailsAtOnce: the stock planner cannot check a custom
// kind's columns, so a misspelt one reaches the executor; the kind says
// Fail and the batch fails on its first attempt instead of retrying.
func TestMissingColumnFailsAtOnce(t *testing.T) {
	t.Parallel()
	db := testenv.SQLite(t)
	b := setup(t, testenv.JetStream(t), db)
	createUsers(t, db, []user{{id: 1, email: "a@example.com", sample: "plain"}, {id: 2, email: "b@example.com", sample: "plain"}})
	b.startPlanner(t)
	b.startExecutor(t)
	ctx := ctxFor(t, time.Minute)
	_, err := b.client.Enqueue(ctx, normalizeSpec("misspelt", func(s *batches.Spec) {
		s.Args = json.RawMessage(`{"source": "email", "target": "email_normalised", "hash": "email_hash"}`)
		s.MaxAttempts = 5
	}))
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "misspelt")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationFailed, m.Status)
	bs, err := b.client.Batches(ctx, "misspelt")
	require.NoError(t, err)
	require.Len(t, bs, 1)
	require.Equal(t, 1, bs[0].Attempts, "a fatal error spends no more attempts")
	require.Len(t, bs[0].Errors, 1)
	require.Equal(t, batches.ClassFatal, bs[0].Errors[0].Class)
	require.Contains(t, bs[0].Errors[0].Message, `no column "email_normalised"`)
	require.Zero(t, db.QueryInt(t, "SELECT COUNT(*) FROM users WHERE writes > 0"))
}

// TestCheckArgs: the arguments a planner in this process rejects, each
// problem on its field.
func TestCheckArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, args string
		fields     []string // the fields with problems; none for valid args
		message    string   // part of the first problem's message
	}{
		{"valid", `{"source": "email", "target": "email_normalized", "hash": "email_hash"}`, nil, ""},
		{"valid, any case", `{"source": "Email", "target": "EmailNormalized", "hash": "email_sha256"}`, nil, ""},
		{"empty", `{}`, []string{"args.source", "args.target", "args.hash"}, "required"},
		{"absent", ``, []string{"args.source", "args.target", "args.hash"}, "required"},
		{"null", `null`, []string{"args.source", "args.target", "args.hash"}, "required"},
		{"missing hash", `{"source": "email", "target": "email_normalized"}`, []string{"args.hash"}, "required"},
		{"unknown field", `{"source": "email", "target": "n", "hash": "h", "sorce": "x"}`, []string{"args"}, `unknown field "sorce"`},
		{"wrong type", `{"source": ["email"], "target": "n", "hash": "h"}`, []string{"args"}, "cannot unmarshal array"},
		{"not an object", `["email"]`, []string{"args"}, "cannot unmarshal array"},
		{"trailing data", `{"source": "email", "target": "n", "hash": "h"} {}`, []string{"args"}, "unexpected data"},
		{"malformed JSON", `{"source": "email",`, []string{"args"}, "unexpected EOF"},
		{"injection", `{"source": "email", "target": "n = 'x'; DROP TABLE users; --", "hash": "h"}`, []string{"args.target"}, "not a plain column name"},
		{"quoted", `{"source": "\"email\"", "target": "n", "hash": "h"}`, []string{"args.source"}, "not a plain column name"},
		{"schema-qualified", `{"source": "users.email", "target": "n", "hash": "h"}`, []string{"args.source"}, "not a plain column name"},
		{"too long", `{"source": "email", "target": "` + strings.Repeat("n", 64) + `", "hash": "h"}`, []string{"args.target"}, "not a plain column name"},
		{"target is source", `{"source": "email", "target": "email", "hash": "h"}`, []string{"args.target"}, "already args.source"},
		{"hash is target", `{"source": "email", "target": "n", "hash": "N"}`, []string{"args.hash"}, "already args.target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems := normalizeEmail{}.CheckArgs(json.RawMessage(tc.args))
			var fields []string
			for _, p := range problems {
				fields = append(fields, p.Field)
			}
			require.Equal(t, tc.fields, fields, "%v", problems)
			if tc.message != "" {
				require.Contains(t, problems[0].Message, tc.message)
			}
		})
	}
}

// TestBinary builds the command, as a team would, checks its flags, and
// runs it as a separate process against a stock planner until SIGTERM.
func TestBinary(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go tool is not on PATH, so the binary cannot be built here: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "custom-executor")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)

	help, err := exec.Command(bin, "--help").CombinedOutput()
	require.NoError(t, err, "%s", help)
	for _, flag := range []string{"--nats-url", "--target", "--prefix", "--concurrency", "--lock-timeout", "--http-addr", "normalize_email"} {
		require.Contains(t, string(help), flag)
	}

	js := testenv.JetStreamListening(t)
	db := testenv.SQLite(t)
	b := setup(t, js, db)
	createUsers(t, db, []user{
		{id: 1, email: "Ann.Lee+promo@GMAIL.com", sample: "special"},
		{id: 2, email: "bob@Bücher.example", sample: "special"},
		{id: 3, email: "no at sign", sample: "malformed"},
		{id: 4, email: "Carol@Example.COM", sample: "plain"},
	})
	b.startPlanner(t)

	var logs lockedBuffer
	cmd := exec.Command(bin, "--nats-url", js.URL, "--target", "main="+db.DSN, "--concurrency", "1", "--log-level", "debug", "--http-addr", "127.0.0.1:0")
	cmd.Env = environWithout("BATCHFLOW_", "SENTRY_DSN")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default: // the test failed before the SIGTERM
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("custom-executor output:\n%s", logs.String())
		}
	})

	ctx := ctxFor(t, time.Minute)
	_, err = b.client.Enqueue(ctx, normalizeSpec("via_binary", func(s *batches.Spec) { s.OnRowError = batches.RowErrorSkip }))
	require.NoError(t, err)
	m, err := b.client.Wait(ctx, "via_binary")
	require.NoError(t, err)
	require.Equal(t, batches.MigrationSucceeded, m.Status, m.Reason)
	require.Equal(t, []int64{3}, b.failedKeys(t, ctx, "via_binary"))
	var got []string
	r, err := db.DB.QueryContext(ctx, "SELECT email_normalized FROM users WHERE email_normalized IS NOT NULL ORDER BY id")
	require.NoError(t, err)
	defer r.Close()
	for r.Next() {
		var s string
		require.NoError(t, r.Scan(&s))
		got = append(got, s)
	}
	require.NoError(t, r.Err())
	require.Equal(t, []string{"annlee@gmail.com", "bob@xn--bcher-kva.example", "carol@example.com"}, got)

	// The stock executor's /healthz and /metrics, with the kind's rows.
	addr := regexp.MustCompile(`msg="http: serving /healthz and /metrics".* addr=(\S+)`).FindStringSubmatch(logs.String())
	require.Len(t, addr, 2, "the executor logs where it serves HTTP")
	health, err := http.Get("http://" + addr[1] + "/healthz")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, health.StatusCode)
	health.Body.Close()
	metrics, err := http.Get("http://" + addr[1] + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), `batchflow_rows_applied_total{migration="via_binary"} 3`+"\n")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-exited:
		require.NoError(t, exitErr, "a clean exit on SIGTERM")
	case <-time.After(15 * time.Second):
		t.Fatal("custom-executor did not stop within 15s of SIGTERM")
	}
}

// environWithout is the test's environment minus variables with the given
// prefixes, so a developer's BATCHFLOW_TARGETS or SENTRY_DSN cannot leak in.
func environWithout(prefixes ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
