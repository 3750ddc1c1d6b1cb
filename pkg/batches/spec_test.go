package batches_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
)

var update = flag.Bool("update", false, "rewrite golden files")

// base is a valid spec; rejection cases change one thing in it.
const base = `"name": "m1", "target": "main", "kind": "sql", "table": "users", "args": {"set": "n = n + 1"}`

func TestParseSpecRejects(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 101)
	cases := []struct {
		name string
		spec string
		// want holds "field: message fragment" for each expected problem.
		want []string
	}{
		// Not a spec at all.
		{"not json", `hello`, []string{"malformed JSON"}},
		{"truncated", `{"name": "m1"`, []string{"malformed JSON"}},
		{"array", `[1, 2]`, []string{"must be a JSON object, got a list"}},
		{"trailing data", `{` + base + `} {}`, []string{"unexpected data after the JSON object"}},
		{"empty", ``, []string{"malformed JSON"}},

		// Strictness.
		{"unknown field typo", `{` + base + `, "batchsize": 100}`, []string{`batchsize: unknown field (did you mean "batch_size"?)`}},
		{"unknown field far", `{` + base + `, "colour": "red"}`, []string{"colour: unknown field; known fields are after, args, batch_column"}},
		{"duplicate field", `{` + base + `, "batch_size": 10, "batch_size": 20}`, []string{"batch_size: appears more than once"}},
		{"unknown nested field", `{` + base + `, "throttle": {"max_lag": "5s"}}`, []string{`throttle.max_lag: unknown field (did you mean "max_replication_lag"?)`}},
		{"unknown args field", `{"name": "m1", "target": "main", "kind": "sql", "table": "users", "args": {"sett": "n = 1"}}`, []string{`args.sett: unknown field (did you mean "set"?)`}},

		// Required fields and names.
		{"all required missing", `{}`, []string{"name: required", "target: required", "table: required", "kind: required"}},
		{"name uppercase", `{"name": "Backfill", "target": "main", "kind": "sql", "table": "users", "args": {"set": "a = 1"}}`, []string{`name: "Backfill" is not a valid name`}},
		{"name with dot", `{"name": "a.b", "target": "main", "kind": "sql", "table": "users", "args": {"set": "a = 1"}}`, []string{`name: "a.b" is not a valid name`}},
		{"name with wildcard", `{"name": "a*", "target": "main", "kind": "sql", "table": "users", "args": {"set": "a = 1"}}`, []string{`name: "a*" is not a valid name`}},
		{"name too long", `{"name": "` + long + `", "target": "main", "kind": "sql", "table": "users", "args": {"set": "a = 1"}}`, []string{"is not a valid name: use 1 to 100"}},
		{"name not a string", `{"name": 7, "target": "main", "kind": "sql", "table": "users", "args": {"set": "a = 1"}}`, []string{"name: must be a string, got the number 7"}},
		{"target is a dsn", `{"name": "m1", "target": "postgres://u:p@h/db", "kind": "sql", "table": "users", "args": {"set": "a = 1"}}`, []string{"target: must name a configured target, not a DSN"}},
		{"target invalid", `{"name": "m1", "target": "Main DB", "kind": "sql", "table": "users", "args": {"set": "a = 1"}}`, []string{`target: "Main DB" is not a valid target name`}},
		{"unknown kind", `{"name": "m1", "target": "main", "kind": "rewrite", "table": "users"}`, []string{`kind: unknown kind "rewrite"; stock kinds are backfill_column, copy_column`}},

		// Identifiers.
		{"table injection", `{"name": "m1", "target": "main", "kind": "sql", "table": "users; DROP TABLE users", "args": {"set": "a = 1"}}`, []string{`table: "users; DROP TABLE users" is not a plain table name`}},
		{"table quoted", `{"name": "m1", "target": "main", "kind": "sql", "table": "\"users\"", "args": {"set": "a = 1"}}`, []string{"is not a plain table name"}},
		{"table three parts", `{"name": "m1", "target": "main", "kind": "sql", "table": "a.b.c", "args": {"set": "a = 1"}}`, []string{"is not a plain table name"}},
		{"batch column injection", `{` + base + `, "batch_column": "id) OR (1=1"}`, []string{`batch_column: "id) OR (1=1" is not a plain column name`}},
		{"where NUL", `{` + base + `, "where": "a = 1\u0000"}`, []string{"where: contains a NUL byte"}},

		// Keys.
		{"float key", `{` + base + `, "min_value": 1.5}`, []string{"min_value: 1.5 is not an integer"}},
		{"huge key", `{` + base + `, "max_value": 99999999999999999999}`, []string{"max_value: integer 99999999999999999999 is out of the 64-bit range"}},
		{"bool key", `{` + base + `, "min_value": true}`, []string{"min_value: must be an integer, a string or null"}},
		{"mixed keys", `{` + base + `, "min_value": 1, "max_value": "z"}`, []string{"max_value: min_value and max_value must both be integers or both be strings"}},
		{"min above max", `{` + base + `, "min_value": 10, "max_value": 5}`, []string{"max_value: 5 is less than min_value 10"}},

		// Sizes.
		{"batch size zero", `{` + base + `, "batch_size": 0}`, []string{"batch_size: must be at least 1, got 0"}},
		{"batch size negative", `{` + base + `, "batch_size": -5}`, []string{"batch_size: must be at least 1, got -5"}},
		{"batch size fraction", `{` + base + `, "batch_size": 1.5}`, []string{"batch_size: must be a whole number, got 1.5"}},
		{"batch size string", `{` + base + `, "batch_size": "100"}`, []string{`batch_size: must be an integer, got a string "100"`}},
		{"batch size too large", `{` + base + `, "batch_size": 20000000}`, []string{"batch_size: must be at most 10000000, got 20000000"}},
		{"sub batch zero", `{` + base + `, "sub_batch_size": 0}`, []string{"sub_batch_size: must be at least 1, got 0"}},
		{"sub batch above batch", `{` + base + `, "batch_size": 100, "sub_batch_size": 500}`, []string{"sub_batch_size: 500 is larger than batch_size 100"}},
		{"sub batch above bound", `{` + base + `, "batch_size": 1000000, "sub_batch_size": 200000}`, []string{"sub_batch_size: must be at most 100000, got 200000"}},
		{"parallelism zero", `{` + base + `, "parallelism": 0}`, []string{"parallelism: must be at least 1, got 0"}},
		{"parallelism huge", `{` + base + `, "parallelism": 1000}`, []string{"parallelism: must be at most 256, got 1000"}},
		{"max attempts zero", `{` + base + `, "max_attempts": 0}`, []string{"max_attempts: must be at least 1, got 0"}},
		{"max attempts huge", `{` + base + `, "max_attempts": 101}`, []string{"max_attempts: must be at most 100, got 101"}},

		// Durations.
		{"duration word", `{` + base + `, "sub_batch_target": "5 seconds"}`, []string{`sub_batch_target: invalid duration "5 seconds": use a Go duration`}},
		{"duration number", `{` + base + `, "batch_pause": 5}`, []string{"batch_pause: must be a duration string such as"}},
		{"duration negative", `{` + base + `, "sub_batch_pause": "-1s"}`, []string{"sub_batch_pause: must not be negative, got -1s"}},
		{"negative lag", `{` + base + `, "throttle": {"max_replication_lag": "-5s"}}`, []string{"throttle.max_replication_lag: must not be negative"}},
		{"health check zero", `{` + base + `, "health_check": {"frequency": "0s"}}`, []string{"health_check.frequency: must be greater than 0s"}},
		{"health check tiny", `{` + base + `, "health_check": {"timeout": "10ms"}}`, []string{"health_check.timeout: must be at least 1s, got 10ms"}},
		{"timeout below target", `{` + base + `, "sub_batch_target": "5s", "health_check": {"timeout": "2s"}}`, []string{"health_check.timeout: 2s must be longer than sub_batch_target 5s"}},
		{"timeout below pause", `{` + base + `, "sub_batch_pause": "1m", "health_check": {"timeout": "45s"}}`, []string{"health_check.timeout: 45s must be longer than sub_batch_pause 1m0s"}},
		{"throttle not object", `{` + base + `, "throttle": "5s"}`, []string{`throttle: must be a JSON object, got a string "5s"`}},

		// Policies and ordering.
		{"row error policy", `{` + base + `, "on_row_error": "ignore"}`, []string{`on_row_error: must be "fail" or "skip", got "ignore"`}},
		{"after self", `{` + base + `, "after": ["m1"]}`, []string{"after[0]: a migration cannot wait for itself"}},
		{"after invalid", `{` + base + `, "after": ["ok", "Not OK"]}`, []string{`after[1]: "Not OK" is not a valid migration name`}},
		{"after duplicate", `{` + base + `, "after": ["a", "a"]}`, []string{`after[1]: "a" is listed twice`}},
		{"after not list", `{` + base + `, "after": "a"}`, []string{"after: must be a list of strings"}},

		// Kind arguments.
		{"args not object", `{"name": "m1", "target": "main", "kind": "sql", "table": "t", "args": [1]}`, []string{"args: must be a JSON object, got a list"}},
		{"sql neither", `{"name": "m1", "target": "main", "kind": "sql", "table": "t"}`, []string{"args: the sql kind needs args.set"}},
		{"sql both", `{"name": "m1", "target": "main", "kind": "sql", "table": "t", "args": {"set": "a = 1", "statement": "UPDATE t SET a = 1 WHERE id > :lo AND id <= :hi"}}`, []string{"args: give args.set or args.statement, not both"}},
		{"sql no placeholders", `{"name": "m1", "target": "main", "kind": "sql", "table": "t", "args": {"statement": "UPDATE t SET a = 1"}}`, []string{"args.statement: must use both :lo and :hi"}},
		{"sql only lo", `{"name": "m1", "target": "main", "kind": "sql", "table": "t", "args": {"statement": "UPDATE t SET a = 1 WHERE id > :lo"}}`, []string{"args.statement: must use both :lo and :hi"}},
		{"sql cast is not placeholder", `{"name": "m1", "target": "main", "kind": "sql", "table": "t", "args": {"statement": "UPDATE t SET a = b::hi WHERE id > :lo AND :high"}}`, []string{"args.statement: must use both :lo and :hi"}},
		{"backfill no updates", `{"name": "m1", "target": "main", "kind": "backfill_column", "table": "t", "args": {}}`, []string{"args.updates: required"}},
		{"backfill updates not object", `{"name": "m1", "target": "main", "kind": "backfill_column", "table": "t", "args": {"updates": ["a"]}}`, []string{"args.updates: must be a JSON object, got a list"}},
		{"backfill bad column", `{"name": "m1", "target": "main", "kind": "backfill_column", "table": "t", "args": {"updates": {"a = 1; --": 1}}}`, []string{`args.updates: "a = 1; --" is not a plain column name`}},
		{"copy missing", `{"name": "m1", "target": "main", "kind": "copy_column", "table": "t", "args": {}}`, []string{"args.from: required", "args.to: required"}},
		{"copy mismatch", `{"name": "m1", "target": "main", "kind": "copy_column", "table": "t", "args": {"from": ["a", "b"], "to": ["c"]}}`, []string{"args.to: has 1 columns but args.from has 2"}},
		{"copy bad cast type", `{"name": "m1", "target": "main", "kind": "copy_column", "table": "t", "args": {"from": ["a"], "to": ["b"], "cast": {"b": "int); DROP TABLE t; --"}}}`, []string{`args.cast.b: "int); DROP TABLE t; --" is not a type name`}},
		{"copy cast not a destination", `{"name": "m1", "target": "main", "kind": "copy_column", "table": "t", "args": {"from": ["a"], "to": ["b"], "cast": {"a": "bigint"}}}`, []string{`args.cast.a: "a" is not one of args.to`}},
		{"copy duplicate destination", `{"name": "m1", "target": "main", "kind": "copy_column", "table": "t", "args": {"from": ["a", "b"], "to": ["c", "c"]}}`, []string{`args.to[1]: column "c" is written twice`}},
		{"delete associated missing", `{"name": "m1", "target": "main", "kind": "delete_associated", "table": "t", "args": {}}`, []string{"args.parent_id: required", "args.foreign_key: required"}},
		{"delete associated bad parent", `{"name": "m1", "target": "main", "kind": "delete_associated", "table": "t", "args": {"parent_id": {"id": 1}, "foreign_key": "user_id"}}`, []string{"args.parent_id: must be an integer, a string or null"}},
		{"delete orphaned empty", `{"name": "m1", "target": "main", "kind": "delete_orphaned", "table": "t", "args": {"associations": []}}`, []string{"args.associations: required"}},
		{"delete orphaned bad reference", `{"name": "m1", "target": "main", "kind": "delete_orphaned", "table": "t", "args": {"associations": [{"column": "post_id", "references": "posts"}]}}`, []string{`args.associations[0].references: "posts" is not "table.column"`}},
		{"delete orphaned unknown field", `{"name": "m1", "target": "main", "kind": "delete_orphaned", "table": "t", "args": {"associations": [{"column": "post_id", "references": "posts.id", "on": "x"}]}}`, []string{"args.associations[0].on: unknown field"}},
		{"perform action missing", `{"name": "m1", "target": "main", "kind": "perform_action", "table": "t", "args": {}}`, []string{`args.action: required: "update_all" or "delete_all"`}},
		{"perform action unknown", `{"name": "m1", "target": "main", "kind": "perform_action", "table": "t", "args": {"action": "truncate"}}`, []string{`args.action: must be "update_all" or "delete_all", got "truncate"`}},
		{"update all without updates", `{"name": "m1", "target": "main", "kind": "perform_action", "table": "t", "args": {"action": "update_all"}}`, []string{"args.updates: required"}},
		{"delete all with updates", `{"name": "m1", "target": "main", "kind": "perform_action", "table": "t", "args": {"action": "delete_all", "updates": {"a": 1}}}`, []string{"args.updates: not used by delete_all"}},
		{"reset counters empty", `{"name": "m1", "target": "main", "kind": "reset_counters", "table": "t", "args": {}}`, []string{"args.counters: required"}},
		{"reset counters bad", `{"name": "m1", "target": "main", "kind": "reset_counters", "table": "t", "args": {"counters": [{"column": "n", "child_table": "x;y"}], "touch": 5}}`, []string{`args.counters[0].child_table: "x;y" is not a plain table name`, "args.counters[0].foreign_key: required", "args.touch: must be true or a column name"}},
		{"reset counters duplicate", `{"name": "m1", "target": "main", "kind": "reset_counters", "table": "t", "args": {"counters": [{"column": "n", "child_table": "c", "foreign_key": "f"}, {"column": "n", "child_table": "d", "foreign_key": "f"}]}}`, []string{`args.counters[1].column: counter "n" is listed twice`}},

		// Several problems at once are all reported.
		{"many problems", `{"name": "X", "target": "main", "kind": "sql", "table": "t;", "args": {"set": "a = 1"}, "batch_size": 0, "on_row_error": "nope", "bogus": 1}`,
			[]string{"name:", "table:", "batch_size:", "on_row_error:", "bogus: unknown field"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := batches.ParseSpec([]byte(tc.spec))
			require.Error(t, err)
			var verr *batches.ValidationError
			require.True(t, errors.As(err, &verr), "want a *ValidationError, got %T", err)
			require.Len(t, verr.Problems, len(tc.want), "problems: %v", verr.Problems)
			msg := err.Error()
			for _, w := range tc.want {
				require.Contains(t, msg, w)
			}
		})
	}
}

// TestParseSpecKeepsName checks the planner can name the migration in its
// rejection event even when other fields are wrong.
func TestParseSpecKeepsName(t *testing.T) {
	t.Parallel()
	s, err := batches.ParseSpec([]byte(`{"name": "fine_name", "target": "main", "kind": "nope", "table": "t", "batch_size": -1}`))
	require.Error(t, err)
	require.Equal(t, "fine_name", s.Name)
}

func TestSpecGolden(t *testing.T) {
	t.Parallel()
	inputs, err := filepath.Glob("testdata/specs/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, inputs)
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.json") {
			continue
		}
		t.Run(filepath.Base(in), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(in)
			require.NoError(t, err)
			spec, err := batches.ParseSpec(data)
			require.NoError(t, err)
			got, err := json.MarshalIndent(spec, "", "  ")
			require.NoError(t, err)
			got = append(got, '\n')

			golden := strings.TrimSuffix(in, ".json") + ".golden.json"
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test -update to create it")
			require.Equal(t, string(want), string(got))

			// The normalised form is itself a valid spec describing the same migration.
			again, err := batches.ParseSpec(got)
			require.NoError(t, err)
			require.True(t, again.Same(spec))
			require.True(t, spec.Same(again))
		})
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	spec, err := batches.ParseSpec([]byte(`{` + base + `}`))
	require.NoError(t, err)
	require.Equal(t, batches.DefaultBatchSize, spec.BatchSize)
	require.Equal(t, batches.DefaultSubBatchSize, spec.SubBatchSize)
	require.Equal(t, batches.DefaultSubBatchTarget, spec.SubBatchTargetOrDefault())
	require.Equal(t, batches.DefaultParallelism, spec.Parallelism)
	require.Equal(t, batches.DefaultMaxAttempts, spec.MaxAttempts)
	require.Equal(t, batches.DefaultHealthCheckFrequency, spec.HealthCheck.Frequency.D())
	require.Equal(t, batches.DefaultHealthCheckTimeout, spec.HealthCheck.Timeout.D())
	require.Equal(t, batches.RowErrorFail, spec.OnRowError)
	require.True(t, spec.MinValue.IsNull())
	require.Nil(t, spec.Throttle)

	// A small batch size lowers the default sub-batch size with it.
	small, err := batches.ParseSpec([]byte(`{` + base + `, "batch_size": 50}`))
	require.NoError(t, err)
	require.Equal(t, 50, small.SubBatchSize)

	// "0s" keeps the sub-batch size fixed; it is not replaced by the default.
	fixed, err := batches.ParseSpec([]byte(`{` + base + `, "sub_batch_target": "0s"}`))
	require.NoError(t, err)
	require.Equal(t, time.Duration(0), fixed.SubBatchTargetOrDefault())

	// In Go, zero fields mean defaults and validate.
	goSpec := batches.Spec{Name: "m1", Target: "main", Kind: batches.KindSQL, Table: "users", Args: json.RawMessage(`{"set": "n = 1"}`)}
	require.NoError(t, goSpec.Validate())
}

func TestSame(t *testing.T) {
	t.Parallel()
	a, err := batches.ParseSpec([]byte(`{` + base + `, "args": {"set": "n = 1"}}`))
	require.Error(t, err, "args given twice")
	a, err = batches.ParseSpec([]byte(`{"name": "m1", "target": "main", "kind": "backfill_column", "table": "users", "args": {"updates": {"a": 1, "b": "x"}}}`))
	require.NoError(t, err)
	b, err := batches.ParseSpec([]byte(`{"args": {"updates": {"b": "x", "a": 1}}, "table": "users", "kind": "backfill_column", "target": "main", "name": "m1", "batch_size": 20000}`))
	require.NoError(t, err)
	require.True(t, a.Same(b), "order of fields and explicit defaults do not make a spec different")
	c, err := batches.ParseSpec([]byte(`{"name": "m1", "target": "main", "kind": "backfill_column", "table": "users", "args": {"updates": {"a": 2, "b": "x"}}}`))
	require.NoError(t, err)
	require.False(t, a.Same(c))
}

func TestDecodeArgs(t *testing.T) {
	t.Parallel()
	spec, err := batches.ParseSpec([]byte(`{"name": "m1", "target": "main", "kind": "reset_counters", "table": "users",
		"args": {"counters": [{"column": "posts_count", "child_table": "posts", "foreign_key": "user_id"}], "touch": true}}`))
	require.NoError(t, err)
	args, err := batches.DecodeArgs[batches.ResetCountersArgs](spec)
	require.NoError(t, err)
	require.Equal(t, "updated_at", args.Touch)
	require.Equal(t, []batches.Counter{{Column: "posts_count", ChildTable: "posts", ForeignKey: "user_id"}}, args.Counters)

	spec, err = batches.ParseSpec([]byte(`{"name": "m1", "target": "main", "kind": "backfill_column", "table": "users",
		"args": {"updates": {"big": 12345678901234567, "s": "x", "n": null}}}`))
	require.NoError(t, err)
	bf, err := batches.DecodeArgs[batches.BackfillColumnArgs](spec)
	require.NoError(t, err)
	require.Equal(t, json.Number("12345678901234567"), bf.Updates["big"], "large integers stay exact")
	require.Nil(t, bf.Updates["n"])

	spec, err = batches.ParseSpec([]byte(`{"name": "m1", "target": "main", "kind": "delete_orphaned", "table": "comments",
		"args": {"associations": [{"column": "author_id", "references": "public.users.id"}]}}`))
	require.NoError(t, err)
	do, err := batches.DecodeArgs[batches.DeleteOrphanedArgs](spec)
	require.NoError(t, err)
	table, column := do.Associations[0].Referenced()
	require.Equal(t, "public.users", table)
	require.Equal(t, "id", column)
}

func TestRegisterKind(t *testing.T) {
	t.Parallel()
	batches.RegisterKind("hash_emails_test", func(args json.RawMessage) []batches.Problem {
		if !bytes.Contains(args, []byte(`"column"`)) {
			return []batches.Problem{{Field: "args.column", Message: "required"}}
		}
		return nil
	})
	_, err := batches.ParseSpec([]byte(`{"name": "m1", "target": "main", "kind": "hash_emails_test", "table": "users", "args": {}}`))
	require.ErrorContains(t, err, "args.column: required")
	_, err = batches.ParseSpec([]byte(`{"name": "m1", "target": "main", "kind": "hash_emails_test", "table": "users", "args": {"column": "email"}}`))
	require.NoError(t, err)
	require.True(t, batches.KnownKind("hash_emails_test"))
	require.NotContains(t, batches.StockKinds(), "hash_emails_test")

	require.Panics(t, func() { batches.RegisterKind("sql", nil) }, "a stock kind cannot be replaced")
	require.Panics(t, func() { batches.RegisterKind("Bad Name", nil) })
}

func TestValidNameIsSubjectToken(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"a", "backfill_users-2", strings.Repeat("x", 100)} {
		require.True(t, batches.ValidName(name), name)
	}
	for _, name := range []string{"", "a.b", "a b", "a*", "a>", "_x", "-x", "Ab", strings.Repeat("x", 101), "ü"} {
		require.False(t, batches.ValidName(name), name)
	}
}

// TestMarshalGoSpec: a spec built in Go, with zero fields meaning defaults,
// marshals to JSON that decodes to the same valid spec.
func TestMarshalGoSpec(t *testing.T) {
	t.Parallel()
	goSpec := batches.Spec{Name: "m1", Target: "main", Kind: batches.KindSQL, Table: "users", Args: json.RawMessage(`{"set": "n = 1"}`)}
	data, err := json.Marshal(goSpec)
	require.NoError(t, err)
	back, err := batches.ParseSpec(data)
	require.NoError(t, err, string(data))
	require.True(t, back.Same(goSpec))
	require.Equal(t, batches.DefaultBatchSize, back.BatchSize)
}

func TestAcceptKindKeepsARegisteredCheck(t *testing.T) {
	t.Parallel()
	batches.RegisterKind("checked_kind_test", func(json.RawMessage) []batches.Problem {
		return []batches.Problem{{Field: "args", Message: "always wrong"}}
	})
	require.NoError(t, batches.AcceptKind("checked_kind_test"), "accepting a registered kind keeps its check")
	_, err := batches.ParseSpec([]byte(`{"name": "m1", "target": "main", "kind": "checked_kind_test", "table": "t"}`))
	require.ErrorContains(t, err, "always wrong")

	require.NoError(t, batches.AcceptKind("accepted_kind_test"))
	_, err = batches.ParseSpec([]byte(`{"name": "m1", "target": "main", "kind": "accepted_kind_test", "table": "t", "args": {"anything": [1, 2]}}`))
	require.NoError(t, err)
	require.Error(t, batches.AcceptKind("Bad Kind"))
}
