package kinds_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/mysql"
	"github.com/batchflow/batchflow/pkg/sink/postgres"
	"github.com/batchflow/batchflow/pkg/sink/sqlite"
)

var update = flag.Bool("update", false, "rewrite testdata/*.md and the generated SQL of docs/kinds/*.md")

// goldenCase is one sample spec of a kind, rendered on every dialect.
type goldenCase struct {
	title string
	table string
	args  string
	where string
}

var goldenCases = map[string][]goldenCase{
	batches.KindSQL: {
		{title: "set", table: "users", args: `{"set": "plan = 'pro'"}`, where: "created_at < '2026-01-01'"},
		{title: "statement", table: "users", args: `{"statement": "UPDATE users SET plan = 'pro' WHERE id > :lo AND id <= :hi"}`},
	},
	batches.KindBackfillColumn: {
		{title: "two columns", table: "users", args: `{"updates": {"admin": false, "plan": "pro"}}`, where: "created_at < '2026-01-01'"},
		{title: "a JSON document, an exact decimal and NULL", table: "users",
			args: `{"updates": {"balance": 12345678901.25, "settings": {"theme": "dark"}, "plan": null}}`},
	},
	batches.KindCopyColumn: {
		{title: "with a cast", table: "users", args: `{"from": ["amount_text", "email"], "to": ["amount_cents", "email_copy"], "cast": {"amount_cents": "bigint"}}`},
	},
	batches.KindDeleteAssociated: {
		{title: "a post's comments", table: "comments", args: `{"parent_id": 42, "foreign_key": "post_id"}`},
	},
	batches.KindDeleteOrphaned: {
		{title: "a reference to another table and one to the same table", table: "comments",
			args: `{"associations": [{"column": "post_id", "references": "posts.id"}, {"column": "parent_id", "references": "comments.id"}]}`},
	},
	batches.KindPerformAction: {
		{title: "update_all", table: "users", args: `{"action": "update_all", "updates": {"plan": "free"}}`, where: "plan = 'trial'"},
		{title: "delete_all", table: "users", args: `{"action": "delete_all"}`, where: "plan = 'trial'"},
	},
	batches.KindResetCounters: {
		{title: "a child table, a self-reference and touch", table: "posts",
			args: `{"counters": [{"column": "comments_count", "child_table": "comments", "foreign_key": "post_id"}, {"column": "replies_count", "child_table": "posts", "foreign_key": "reply_to_id"}], "touch": true}`},
	},
}

// sampleTables are the tables of the samples, as each sink's catalog
// describes them.
func sampleTables(dialect string) map[string]*sink.Table {
	type col struct{ name, pg, my, lite string }
	users := []col{
		{"id", "bigint", "bigint", "INTEGER"},
		{"admin", "boolean", "tinyint", "BOOLEAN"},
		{"plan", "character varying(20)", "varchar", "VARCHAR(20)"},
		{"settings", "jsonb", "json", "JSON"},
		{"balance", "numeric(14,2)", "decimal", "NUMERIC(14,2)"},
		{"created_at", "timestamp with time zone", "datetime", "DATETIME"},
		{"amount_text", "text", "varchar", "TEXT"},
		{"amount_cents", "bigint", "bigint", "INTEGER"},
		{"email", "text", "varchar", "TEXT"},
		{"email_copy", "text", "varchar", "TEXT"},
	}
	comments := []col{
		{"id", "bigint", "bigint", "INTEGER"},
		{"post_id", "bigint", "bigint", "INTEGER"},
		{"parent_id", "bigint", "bigint", "INTEGER"},
	}
	posts := []col{
		{"id", "bigint", "bigint", "INTEGER"},
		{"reply_to_id", "bigint", "bigint", "INTEGER"},
		{"comments_count", "integer", "int", "INTEGER"},
		{"replies_count", "integer", "int", "INTEGER"},
		{"updated_at", "timestamp without time zone", "datetime", "DATETIME"},
	}
	schema := map[string]string{"postgres": "public", "mysql": "app", "sqlite": "main"}[dialect]
	tables := map[string]*sink.Table{}
	for name, cols := range map[string][]col{"users": users, "comments": comments, "posts": posts} {
		t := &sink.Table{Schema: schema, Name: name, PrimaryKey: []string{"id"}}
		for _, c := range cols {
			typ := map[string]string{"postgres": c.pg, "mysql": c.my, "sqlite": c.lite}[dialect]
			t.Columns = append(t.Columns, sink.Column{Name: c.name, Type: typ, Nullable: c.name != "id", Key: sink.KeyInt})
		}
		tables[name] = t
	}
	return tables
}

var goldenDialects = []struct {
	name, title string
	d           sink.Dialect
}{
	{"postgres", "Postgres", postgres.Dialect},
	{"mysql", "MySQL and MariaDB", mysql.Dialect{}},
	{"sqlite", "SQLite", sqlite.Dialect},
}

// render writes the statement one sub-batch of spec runs over the keys
// (1000, 2000], as the sinks' transactional path binds it (Postgres folds
// foldable statements into its ledger statement, with the same text inside).
func render(t *testing.T, kind string, c goldenCase) string {
	t.Helper()
	var out strings.Builder
	fmt.Fprintf(&out, "### %s\n\n", c.title)
	fmt.Fprintf(&out, "```json\n{\"kind\": %q, \"table\": %q, \"args\": %s", kind, c.table, c.args)
	if c.where != "" {
		fmt.Fprintf(&out, ", \"where\": %q", c.where)
	}
	out.WriteString("}\n```\n\n")
	spec := batches.Spec{Name: "sample", Target: "main", Kind: kind, Table: c.table, Args: json.RawMessage(c.args), Where: c.where}
	require.NoError(t, spec.Validate(), "%s %s", kind, c.title)
	for _, gd := range goldenDialects {
		tbl := sampleTables(gd.name)[c.table]
		rel := kinds.Relation(spec, sink.Relation{Table: tbl, Column: "id", Key: sink.KeyInt, Where: c.where})
		change, err := kinds.Build(spec, rel)
		require.NoError(t, err, "%s %s", kind, c.title)
		b := sink.NewBuilder(gd.d)
		r := sink.Range{Lo: batches.IntKey(1000), Hi: batches.IntKey(2000)}
		bound := func(k batches.Key) sink.Fragment { return func(b *sink.Builder) { b.Arg(k.Value()) } }
		change.Statement(b, sink.Scope{Relation: rel, Rows: rel.Rows(r), Lo: bound(r.Lo), Hi: bound(r.Hi), Range: r})
		params := make([]string, len(b.Args()))
		for i, a := range b.Args() {
			params[i] = showParam(a)
		}
		foldable := ""
		if change.Foldable {
			foldable = ", foldable"
		}
		fmt.Fprintf(&out, "%s%s:\n\n```sql\n%s\n-- parameters: %s\n```\n\n", gd.title, foldable, b.String(), strings.Join(params, ", "))
	}
	return out.String()
}

func showParam(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return "'" + strings.ReplaceAll(x, "'", "''") + "'"
	case []byte:
		return fmt.Sprintf("x'%x'", x)
	}
	return fmt.Sprint(v)
}

const (
	docsBegin = "<!-- BEGIN generated SQL: go test ./pkg/kinds -run TestGoldenSQL -update -->"
	docsEnd   = "<!-- END generated SQL -->"
)

// TestGoldenSQL renders each kind's statements for sample specs on every
// dialect and compares them with testdata/<kind>.md, which
// docs/kinds/<kind>.md quotes between its generated-SQL markers: the SQL
// in the docs is the SQL the builders write. -update rewrites both.
func TestGoldenSQL(t *testing.T) {
	t.Parallel()
	for _, kind := range batches.StockKinds() {
		t.Run(kind, func(t *testing.T) {
			cases := goldenCases[kind]
			require.NotEmpty(t, cases, "every stock kind has a sample")
			var got strings.Builder
			for _, c := range cases {
				got.WriteString(render(t, kind, c))
			}
			golden := filepath.Join("testdata", kind+".md")
			docs := filepath.Join("..", "..", "docs", "kinds", kind+".md")
			page, err := os.ReadFile(docs)
			require.NoError(t, err, "every stock kind has a docs page")
			begin, end := bytes.Index(page, []byte(docsBegin)), bytes.Index(page, []byte(docsEnd))
			require.True(t, begin >= 0 && end > begin, "%s has the generated-SQL markers", docs)
			block := "\n" + got.String()
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got.String()), 0o644))
				page = append(append(append([]byte{}, page[:begin+len(docsBegin)]...), block...), page[end:]...)
				require.NoError(t, os.WriteFile(docs, page, 0o644))
				return
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test ./pkg/kinds -run TestGoldenSQL -update")
			require.Equal(t, string(want), got.String(), "the builders' SQL changed: review it, then -update")
			require.Equal(t, block, string(page[begin+len(docsBegin):end]), "%s quotes the golden SQL: -update rewrites it", docs)
		})
	}
}
