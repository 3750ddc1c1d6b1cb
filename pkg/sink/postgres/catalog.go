package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/batchflow/batchflow/pkg/sink"
)

// relation is a table found in the catalog.
type relation struct {
	oid    uint32
	schema string
	name   string
}

// findTableSQL finds a table ('r') or partitioned table ('p') by name,
// with the name bound, never spliced. $1 is the table name, $2 the schema
// or NULL for the search path. The best match wins: the exact name, then
// the name folded to lower case (what Postgres does with an unquoted
// identifier), then any case; among equals, the exact schema, then the
// first schema on the search path, then the names in byte order.
const findTableSQL = `
SELECT c.oid, n.nspname, c.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND lower(c.relname) = lower($1::text)
  AND CASE WHEN $2::text IS NULL THEN n.nspname = ANY (pg_catalog.current_schemas(false))
           ELSE lower(n.nspname) = lower($2::text) END
ORDER BY c.relname = $1::text DESC,
         c.relname = lower($1::text) DESC,
         n.nspname = $2::text DESC NULLS LAST,
         n.nspname = lower($2::text) DESC NULLS LAST,
         array_position(pg_catalog.current_schemas(false), n.nspname::text),
         c.relname, n.nspname
LIMIT 1`

// lookup resolves "table" or "schema.table" in the catalog; a missing
// table is sink.ErrTableNotFound.
func (s *Sink) lookup(ctx context.Context, name string) (relation, error) {
	var schema *string
	table := name
	if before, after, dotted := strings.Cut(name, "."); dotted {
		schema, table = &before, after
	}
	notFound := fmt.Errorf("table %q: %w", name, sink.ErrTableNotFound)
	if table == "" || (schema != nil && *schema == "") || strings.ContainsRune(name, 0) {
		return relation{}, notFound
	}
	var r relation
	err := s.pool.QueryRow(ctx, findTableSQL, table, schema).Scan(&r.oid, &r.schema, &r.name)
	if errors.Is(err, pgx.ErrNoRows) {
		return relation{}, notFound
	}
	if err != nil {
		return relation{}, fmt.Errorf("look up table %q: %w", name, err)
	}
	return r, nil
}

// columnsSQL lists a table's live columns in order, with the type's OID
// (a domain's base type) that decides the key type.
const columnsSQL = `
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`

// primaryKeySQL lists the primary key's columns in key order.
const primaryKeySQL = `
SELECT a.attname
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND i.indisprimary
ORDER BY k.ord`

// Table looks up a table ("users" or "schema.users") in the catalog.
func (s *Sink) Table(ctx context.Context, name string) (*sink.Table, error) {
	r, err := s.lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	t := &sink.Table{Schema: r.schema, Name: r.name}

	rows, err := s.pool.Query(ctx, columnsSQL, r.oid)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", name, err)
	}
	var (
		col    sink.Column
		typOID uint32
	)
	_, err = pgx.ForEachRow(rows, []any{&col.Name, &col.Type, &col.Nullable, &typOID}, func() error {
		col.Key = keyType(typOID)
		t.Columns = append(t.Columns, col)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", name, err)
	}

	rows, err = s.pool.Query(ctx, primaryKeySQL, r.oid)
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", name, err)
	}
	t.PrimaryKey, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", name, err)
	}
	return t, nil
}

// keyType says how a column of the type (a domain's base type) bounds
// batches.
func keyType(oid uint32) sink.KeyType {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		return sink.KeyInt
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.UUIDOID:
		return sink.KeyString
	}
	return sink.KeyUnsupported
}

// estimateSQL reads the planner's row estimate: reltuples, which is -1
// (Postgres 14+) or 0 before the first VACUUM or ANALYZE. A partitioned
// table has no rows of its own; its estimate is its leaf partitions' sum.
const estimateSQL = `
SELECT CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(greatest(l.reltuples, 0)), 0)
                  FROM pg_catalog.pg_partition_tree(c.oid) p
                  JOIN pg_catalog.pg_class l ON l.oid = p.relid
                  WHERE p.isleaf)
            ELSE greatest(c.reltuples, 0) END::bigint
FROM pg_catalog.pg_class c
WHERE c.oid = $1`

// EstimateRows returns the table's row estimate from pg_class, 0 before
// the table was first analyzed.
func (s *Sink) EstimateRows(ctx context.Context, table string) (int64, error) {
	r, err := s.lookup(ctx, table)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := s.pool.QueryRow(ctx, estimateSQL, r.oid).Scan(&n); err != nil {
		if errors.Is(err, pgx.ErrNoRows) { // dropped since the lookup
			return 0, fmt.Errorf("table %q: %w", table, sink.ErrTableNotFound)
		}
		return 0, fmt.Errorf("estimate rows of %s: %w", table, err)
	}
	return n, nil
}
