package postgres

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
)

func TestTableDescribesColumnsAndKey(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.db.Exec(t, `CREATE DOMAIN account_id AS bigint CHECK (VALUE > 0)`)
	tb.db.Exec(t, `CREATE TABLE accounts (
		tenant int NOT NULL,
		id account_id NOT NULL,
		small smallint,
		name varchar(255) NOT NULL,
		code char(4),
		body text,
		uid uuid,
		created_at timestamptz,
		score real,
		tags text[],
		dropped int,
		PRIMARY KEY (tenant, id))`)
	tb.db.Exec(t, `ALTER TABLE accounts DROP COLUMN dropped`)

	tab, err := tb.sink.Table(t.Context(), "accounts")
	require.NoError(t, err)
	require.Equal(t, &sink.Table{
		Schema: "public",
		Name:   "accounts",
		Columns: []sink.Column{
			{Name: "tenant", Type: "integer", Key: sink.KeyInt},
			{Name: "id", Type: "account_id", Key: sink.KeyInt},
			{Name: "small", Type: "smallint", Nullable: true, Key: sink.KeyInt},
			{Name: "name", Type: "character varying(255)", Key: sink.KeyString},
			{Name: "code", Type: "character(4)", Nullable: true, Key: sink.KeyString},
			{Name: "body", Type: "text", Nullable: true, Key: sink.KeyString},
			{Name: "uid", Type: "uuid", Nullable: true, Key: sink.KeyString},
			{Name: "created_at", Type: "timestamp with time zone", Nullable: true},
			{Name: "score", Type: "real", Nullable: true},
			{Name: "tags", Type: "text[]", Nullable: true},
		},
		PrimaryKey: []string{"tenant", "id"},
	}, tab)
	_, err = tab.BatchColumn("")
	require.ErrorIs(t, err, sink.ErrNoPrimaryKey)
	_, err = tab.BatchColumn("created_at")
	require.ErrorIs(t, err, sink.ErrUnsupportedKey)
}

func TestTableNameResolution(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	tb.db.Exec(t, `CREATE TABLE users (id bigint PRIMARY KEY)`)
	tb.db.Exec(t, `CREATE TABLE "Mixed" (id bigint PRIMARY KEY)`)
	tb.db.Exec(t, `CREATE TABLE "MIXED" (id bigint PRIMARY KEY)`)
	tb.db.Exec(t, `CREATE SCHEMA "Billing"`)
	tb.db.Exec(t, `CREATE TABLE "Billing".invoices (id bigint PRIMARY KEY)`)
	tb.db.Exec(t, `CREATE SCHEMA other`)
	tb.db.Exec(t, `CREATE TABLE other.users (id bigint PRIMARY KEY)`)
	tb.db.Exec(t, `CREATE TABLE other.only_here (id bigint PRIMARY KEY)`)

	for name, want := range map[string]string{
		"users":            "public.users",
		"USERS":            "public.users", // unquoted identifiers fold
		"public.users":     "public.users",
		"other.users":      "other.users",
		"OTHER.Users":      "other.users",
		"Mixed":            "public.Mixed", // the exact name first
		"MIXED":            "public.MIXED",
		"mixed":            "public.MIXED", // then any case, deterministically
		"Billing.invoices": "Billing.invoices",
		"billing.invoices": "Billing.invoices",
	} {
		tab, err := tb.sink.Table(ctx, name)
		require.NoError(t, err, name)
		require.Equal(t, want, tab.QualifiedName(), name)
	}
	for _, name := range []string{
		"missing", "only_here", // not on the search path
		"invoices", "nope.users", ".users", "users.", "",
		"users; DROP TABLE users", `users"--`, `users' OR '1'='1`, "users\x00",
	} {
		_, err := tb.sink.Table(ctx, name)
		require.ErrorIs(t, err, sink.ErrTableNotFound, "%q", name)
		require.ErrorContains(t, err, fmt.Sprintf("%q", name), "the error names the table")
	}
	require.EqualValues(t, 1, tb.db.QueryInt(t, "SELECT count(*) FROM pg_class WHERE relname = 'users' AND relnamespace = 'public'::regnamespace"))

	// The search path decides between schemas, as for the application.
	s := openSink(t, tb.db.DSN+"&search_path=other,public", sink.Options{MaxConns: 1})
	tab, err := s.Table(ctx, "users")
	require.NoError(t, err)
	require.Equal(t, "other.users", tab.QualifiedName())
	tab, err = s.Table(ctx, "only_here")
	require.NoError(t, err)
	require.Equal(t, "other.only_here", tab.QualifiedName())
}

// TestQuotedIdentifiersEndToEnd runs a migration on a table and column
// whose names need quoting, in a schema that does too.
func TestQuotedIdentifiersEndToEnd(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.db.Exec(t, `CREATE SCHEMA "Sales ""EU"""`)
	tb.db.Exec(t, `CREATE TABLE "Sales ""EU"""."Order Lines" ("Line ID" bigint PRIMARY KEY, "select" int NOT NULL DEFAULT 0)`)
	tb.db.Exec(t, `INSERT INTO "Sales ""EU"""."Order Lines" ("Line ID") SELECT g FROM generate_series(1, 30) g`)

	tab, err := tb.sink.Table(t.Context(), `Sales "EU".Order Lines`)
	require.NoError(t, err)
	require.Equal(t, `Sales "EU"`, tab.Schema)
	col, err := tab.BatchColumn("line id")
	require.NoError(t, err)
	rel := sink.Relation{Table: tab, Column: col.Name, Key: col.Key, Where: `"select" = 0`}
	lo, hi, ok, err := tb.sink.Bounds(t.Context(), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []batches.Key{batches.IntKey(1), batches.IntKey(30)}, []batches.Key{lo, hi})

	rows := tb.runBatch(t, "m", 1, rel, sink.Range{Lo: lo, LoInclusive: true, Hi: hi}, 7,
		kinds.SQL(rel, batches.SQLArgs{Set: `"select" = "select" + 1`}))
	require.EqualValues(t, 30, rows)
	require.EqualValues(t, 30, tb.db.QueryInt(t, `SELECT sum("select") FROM "Sales ""EU"""."Order Lines"`))
}

func TestEstimateRows(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	tb.counterTable(t, "t", 5000, 1)

	n, err := tb.sink.EstimateRows(ctx, "t")
	require.NoError(t, err)
	require.Zero(t, n, "no statistics before ANALYZE")
	tb.db.Exec(t, "ANALYZE t")
	n, err = tb.sink.EstimateRows(ctx, "T")
	require.NoError(t, err)
	require.EqualValues(t, 5000, n)

	// A partitioned table's estimate is its partitions'.
	tb.db.Exec(t, "CREATE TABLE p (id bigint PRIMARY KEY) PARTITION BY RANGE (id)")
	tb.db.Exec(t, "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (1000)")
	tb.db.Exec(t, "CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (1000) TO (10000)")
	tb.db.Exec(t, "INSERT INTO p SELECT g FROM generate_series(0, 2999) g")
	tb.db.Exec(t, "ANALYZE p")
	n, err = tb.sink.EstimateRows(ctx, "p")
	require.NoError(t, err)
	require.EqualValues(t, 3000, n)

	_, err = tb.sink.EstimateRows(ctx, "nope")
	require.ErrorIs(t, err, sink.ErrTableNotFound)
}
