package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Table looks up "name" or "schema.name" ("main", or an attached
// database's name) in the catalog, with bound parameters only. SQLite's
// names are case-insensitive, so "ITEMS" finds items. An unqualified name is
// searched in main and then in the attached databases, in attach order, as
// SQLite resolves it; temp is left out, since a temporary table belongs to
// one connection of the pool.
func (s *Sink) Table(ctx context.Context, name string) (*sink.Table, error) {
	ctx, cancel := s.statementCtx(ctx)
	defer cancel()
	found, err := s.lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	t := sink.Table{Schema: found.schema, Name: found.name}
	withoutRowid := found.withoutRowid

	rows, err := s.read.QueryContext(ctx,
		`SELECT name, type, "notnull", pk FROM pragma_table_xinfo(?, ?) WHERE hidden <> 1 ORDER BY cid`, t.Name, t.Schema)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", t.QualifiedName(), err)
	}
	defer rows.Close()
	type pkCol struct {
		pos  int
		name string
	}
	var pk []pkCol
	for rows.Next() {
		var c sink.Column
		var notNull bool
		var pos int
		if err := rows.Scan(&c.Name, &c.Type, &notNull, &pos); err != nil {
			return nil, fmt.Errorf("columns of %s: %w", t.QualifiedName(), err)
		}
		c.Nullable = !notNull
		c.Key = keyType(c.Type)
		if pos > 0 {
			pk = append(pk, pkCol{pos, c.Name})
		}
		t.Columns = append(t.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("columns of %s: %w", t.QualifiedName(), err)
	}
	sort.Slice(pk, func(i, j int) bool { return pk[i].pos < pk[j].pos })
	for _, c := range pk {
		t.PrimaryKey = append(t.PrimaryKey, c.name)
	}
	// SQLite lets primary key columns hold NULL (a historical quirk) unless
	// declared NOT NULL, except the INTEGER PRIMARY KEY of a rowid table,
	// which is the rowid itself, and the keys of WITHOUT ROWID tables.
	for i, c := range t.Columns {
		if !slices.Contains(t.PrimaryKey, c.Name) {
			continue
		}
		rowidAlias := len(pk) == 1 && strings.EqualFold(strings.TrimSpace(c.Type), "INTEGER")
		if withoutRowid || rowidAlias {
			t.Columns[i].Nullable = false
		}
	}
	return &t, nil
}

// catalogTable is a table found in the catalog.
type catalogTable struct {
	schema, name string
	withoutRowid bool
}

// lookup finds "name" or "schema.name" in the catalog, with bound
// parameters only; see Table.
func (s *Sink) lookup(ctx context.Context, name string) (catalogTable, error) {
	schema, table, qualified := strings.Cut(name, ".")
	if !qualified {
		schema, table = "", name
	}
	var t catalogTable
	if table == "" {
		return t, fmt.Errorf("table %q: %w", name, sink.ErrTableNotFound)
	}
	err := s.read.QueryRowContext(ctx, `SELECT t.schema, t.name, t.wr
		FROM pragma_table_list AS t JOIN pragma_database_list AS d ON d.name = t.schema
		WHERE t.type = 'table' AND t.schema <> 'temp'
		  AND t.name = ? COLLATE NOCASE AND (? = '' OR t.schema = ? COLLATE NOCASE)
		ORDER BY d.seq LIMIT 1`, table, schema, schema).Scan(&t.schema, &t.name, &t.withoutRowid)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("table %q: %w", name, sink.ErrTableNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("look up table %q: %w", name, err)
	}
	return t, nil
}

// keyType maps a declared column type to a key type by SQLite's type
// affinity rules (https://sqlite.org/datatype3.html#determination_of_column_affinity),
// in their order: "INT" anywhere is INTEGER affinity (BIGINT, INTEGER,
// even "POINT"), then "CHAR", "CLOB" or "TEXT" is TEXT affinity. A UUID
// column holds uuids as text. Everything else (REAL, BLOB, NUMERIC,
// DATETIME, no type at all) cannot bound batches.
func keyType(declared string) sink.KeyType {
	t := strings.ToUpper(declared)
	switch {
	case strings.Contains(t, "INT"):
		return sink.KeyInt
	case strings.Contains(t, "CHAR"), strings.Contains(t, "CLOB"), strings.Contains(t, "TEXT"):
		return sink.KeyString
	case strings.Contains(t, "UUID"):
		return sink.KeyString
	}
	return sink.KeyUnsupported
}

// Bounds returns the smallest and largest key of the relation's rows in r,
// from two index probes in one statement (so one snapshot).
func (s *Sink) Bounds(ctx context.Context, rel sink.Relation, r sink.Range) (lo, hi batches.Key, ok bool, err error) {
	ctx, cancel := s.statementCtx(ctx)
	defer cancel()
	b := sink.NewBuilder(Dialect)
	probe := func(order string) {
		b.SQL("(SELECT ").Ident(rel.Column).SQL(" FROM ").Ident(rel.Table.QualifiedName()).
			SQL(" WHERE ").Write(rel.Rows(r)).SQL(" AND ").Ident(rel.Column).SQL(" IS NOT NULL").
			SQL(" ORDER BY ").Ident(rel.Column).SQL(order).SQL(" LIMIT 1)")
	}
	b.SQL("SELECT ")
	probe("")
	b.SQL(", ")
	probe(" DESC")
	row := s.read.QueryRowContext(ctx, b.String(), b.Args()...)
	switch rel.Key {
	case sink.KeyInt:
		var l, h sql.NullInt64
		if err := row.Scan(&l, &h); err != nil {
			return lo, hi, false, fmt.Errorf("bounds of %s.%s: %w", rel.Table.Name, rel.Column, err)
		}
		if !l.Valid || !h.Valid {
			return lo, hi, false, nil
		}
		return batches.IntKey(l.Int64), batches.IntKey(h.Int64), true, nil
	case sink.KeyString:
		var l, h sql.NullString
		if err := row.Scan(&l, &h); err != nil {
			return lo, hi, false, fmt.Errorf("bounds of %s.%s: %w", rel.Table.Name, rel.Column, err)
		}
		if !l.Valid || !h.Valid {
			return lo, hi, false, nil
		}
		return batches.StringKey(l.String), batches.StringKey(h.String), true, nil
	}
	return lo, hi, false, fmt.Errorf("bounds of %s.%s: %w", rel.Table.Name, rel.Column, sink.ErrUnsupportedKey)
}

// NextKey returns the key n rows into the relation's rows within r.
func (s *Sink) NextKey(ctx context.Context, rel sink.Relation, r sink.Range, n int) (batches.Key, bool, error) {
	if n < 1 {
		return batches.Key{}, false, fmt.Errorf("next key: n = %d, want at least 1", n)
	}
	ctx, cancel := s.statementCtx(ctx)
	defer cancel()
	b := sink.NewBuilder(Dialect)
	b.SQL("SELECT ").Ident(rel.Column).SQL(" FROM ").Ident(rel.Table.QualifiedName()).
		SQL(" WHERE ").Write(rel.Rows(r)).SQL(" AND ").Ident(rel.Column).SQL(" IS NOT NULL").
		SQL(" ORDER BY ").Ident(rel.Column).SQL(" LIMIT 1 OFFSET ").Arg(n - 1)
	row := s.read.QueryRowContext(ctx, b.String(), b.Args()...)
	var key batches.Key
	var err error
	switch rel.Key {
	case sink.KeyInt:
		var v int64
		if err = row.Scan(&v); err == nil {
			key = batches.IntKey(v)
		}
	case sink.KeyString:
		var v string
		if err = row.Scan(&v); err == nil {
			key = batches.StringKey(v)
		}
	default:
		err = sink.ErrUnsupportedKey
	}
	if errors.Is(err, sql.ErrNoRows) {
		return batches.Key{}, false, nil
	}
	if err != nil {
		return batches.Key{}, false, fmt.Errorf("next key of %s.%s: %w", rel.Table.Name, rel.Column, err)
	}
	return key, true, nil
}
