package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/batchflow/batchflow/pkg/sink"
)

// tableRef is a table as the catalog stores it.
type tableRef struct {
	schema, name, kind string
	engine             sql.NullString
}

// Table implements sink.Sink. name is "table" (in the DSN's database) or
// "database.table". Names are looked up in information_schema with bound
// parameters and match exactly first, then case-insensitively, as unquoted
// identifiers do where lower_case_table_names is set; two tables differing
// only in case make a case-insensitive name ambiguous, an error.
//
// Only InnoDB base tables are accepted: on a non-transactional engine
// (MyISAM, Aria, MEMORY) a rolled-back sub-batch keeps its changes, and the
// exactly-once ledger cannot hold.
func (s *Sink) Table(ctx context.Context, name string) (*sink.Table, error) {
	ref, err := s.findTable(ctx, name)
	if err != nil {
		return nil, err
	}
	// MariaDB lists system-versioned tables as such; they are base tables.
	if ref.kind != "BASE TABLE" && ref.kind != "SYSTEM VERSIONED" {
		return nil, fmt.Errorf("table %q is a %s, not a base table: batchflow migrates tables", name, strings.ToLower(ref.kind))
	}
	if !strings.EqualFold(ref.engine.String, "InnoDB") {
		return nil, fmt.Errorf("table %s.%s uses the %s engine, which is not transactional: batchflow's exactly-once ledger needs InnoDB",
			ref.schema, ref.name, ref.engine.String)
	}

	t := &sink.Table{Schema: ref.schema, Name: ref.name}
	if t.Columns, err = s.columns(ctx, ref); err != nil {
		return nil, err
	}

	pk, err := s.db.QueryContext(ctx, `SELECT COLUMN_NAME FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX`, ref.schema, ref.name)
	if err != nil {
		return nil, fmt.Errorf("primary key of %s.%s: %w", ref.schema, ref.name, err)
	}
	defer pk.Close()
	for pk.Next() {
		var col string
		if err := pk.Scan(&col); err != nil {
			return nil, fmt.Errorf("primary key of %s.%s: %w", ref.schema, ref.name, err)
		}
		t.PrimaryKey = append(t.PrimaryKey, col)
	}
	if err := pk.Err(); err != nil {
		return nil, fmt.Errorf("primary key of %s.%s: %w", ref.schema, ref.name, err)
	}
	return t, nil
}

// columns reads a table's columns from the metadata of an empty result,
// SELECT * … LIMIT 0, and not from information_schema.COLUMNS: MariaDB
// answers that view through an on-disk Aria temporary table, and a
// catalog lookup of this sink's once crashed a MariaDB 10.11 server in that
// temporary table's cleanup (a SIGSEGV in ha_maria::drop_table). The
// table's name is quoted from the catalog's own spelling, found above with
// bound parameters. INVISIBLE columns, which SELECT * leaves out, are not
// listed.
func (s *Sink) columns(ctx context.Context, ref tableRef) ([]sink.Column, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT * FROM "+quotePart(ref.schema)+"."+quotePart(ref.name)+" LIMIT 0")
	if err != nil {
		return nil, fmt.Errorf("columns of %s.%s: %w", ref.schema, ref.name, err)
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, fmt.Errorf("columns of %s.%s: %w", ref.schema, ref.name, err)
	}
	cols := make([]sink.Column, len(types))
	for i, ct := range types {
		nullable, _ := ct.Nullable()
		name, unsigned := strings.CutPrefix(strings.ToLower(ct.DatabaseTypeName()), "unsigned ")
		cols[i] = sink.Column{Name: ct.Name(), Type: name, Nullable: nullable, Key: keyType(name)}
		if unsigned {
			cols[i].Type += " unsigned"
		}
		if name == "" {
			cols[i].Type = "unknown"
		}
	}
	return cols, rows.Err()
}

// keyType maps a column's type, as the driver names it from the result
// metadata, to a batch key type. MariaDB's UUID travels as CHAR.
func keyType(typeName string) sink.KeyType {
	switch typeName {
	case "tinyint", "smallint", "mediumint", "int", "bigint":
		return sink.KeyInt
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext":
		return sink.KeyString
	}
	return sink.KeyUnsupported
}

// findTable resolves name in the catalog. Every lookup binds the names as
// values: nothing the caller wrote reaches the SQL text.
func (s *Sink) findTable(ctx context.Context, name string) (tableRef, error) {
	notFound := func() error {
		return fmt.Errorf("table %q: %w", name, sink.ErrTableNotFound)
	}
	schema, table, qualified := strings.Cut(name, ".")
	if !qualified {
		schema, table = s.database, name
	}
	if schema == "" || table == "" {
		return tableRef{}, notFound()
	}

	const query = `SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND `
	// The exact name first: the common case, and the one the server can
	// answer without listing the schema.
	found, err := s.tableRefs(ctx, query+"TABLE_NAME = ?", schema, table)
	if err != nil {
		return tableRef{}, err
	}
	for _, ref := range found {
		if ref.schema == schema && ref.name == table {
			return ref, nil
		}
	}

	// Then case-insensitively, in the databases whose name matches.
	schemas, err := s.schemasLike(ctx, schema)
	if err != nil {
		return tableRef{}, err
	}
	var matches []tableRef
	for _, sc := range schemas {
		refs, err := s.tableRefs(ctx, query+"LOWER(TABLE_NAME) = LOWER(?)", sc, table)
		if err != nil {
			return tableRef{}, err
		}
		for _, ref := range refs {
			if strings.EqualFold(ref.name, table) && strings.EqualFold(ref.schema, schema) {
				matches = append(matches, ref)
			}
		}
	}
	switch len(matches) {
	case 0:
		return tableRef{}, notFound()
	case 1:
		return matches[0], nil
	}
	names := make([]string, len(matches))
	for i, m := range matches {
		names[i] = m.schema + "." + m.name
	}
	return tableRef{}, fmt.Errorf("table %q is ambiguous: it matches %s, which differ only in case; write the name exactly",
		name, strings.Join(names, ", "))
}

func (s *Sink) tableRefs(ctx context.Context, query string, args ...any) ([]tableRef, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("look up table: %w", err)
	}
	defer rows.Close()
	var refs []tableRef
	for rows.Next() {
		var r tableRef
		if err := rows.Scan(&r.schema, &r.name, &r.kind, &r.engine); err != nil {
			return nil, fmt.Errorf("look up table: %w", err)
		}
		refs = append(refs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up table: %w", err)
	}
	return refs, nil
}

// schemasLike lists the databases whose name is schema in any case, the
// exact one first.
func (s *Sink) schemasLike(ctx context.Context, schema string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx,
		"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE LOWER(SCHEMA_NAME) = LOWER(?)", schema)
	if err != nil {
		return nil, fmt.Errorf("look up database %q: %w", schema, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("look up database %q: %w", schema, err)
		}
		if name == schema {
			out = append([]string{name}, out...)
		} else {
			out = append(out, name)
		}
	}
	return out, rows.Err()
}

// EstimateRows implements sink.Sink with information_schema.TABLES'
// TABLE_ROWS: InnoDB's estimate from its sampled statistics (on MySQL 8
// read fresh, since the sink sets information_schema_stats_expiry = 0).
// It may be off by tens of percent, and is 0 before statistics exist.
func (s *Sink) EstimateRows(ctx context.Context, table string) (int64, error) {
	ref, err := s.findTable(ctx, table)
	if err != nil {
		return 0, err
	}
	var n sql.NullInt64
	err = s.db.QueryRowContext(ctx,
		"SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?", ref.schema, ref.name).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("table %q: %w", table, sink.ErrTableNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("estimate rows of %s.%s: %w", ref.schema, ref.name, err)
	}
	return max(n.Int64, 0), nil
}

// CheckStatement implements sink.Sink with a server-side prepare
// (COM_STMT_PREPARE), which parses the statement and resolves its tables
// and columns without running it or taking row locks, and then closes the
// prepared statement (COM_STMT_CLOSE). The driver prepares on the server
// whatever the DSN's interpolateParams says: that setting only concerns
// statements run with arguments.
func (s *Sink) CheckStatement(ctx context.Context, query string) error {
	ctx, cancel := s.statementContext(ctx)
	defer cancel()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("check statement: %w", err)
	}
	defer conn.Close()
	stmt, err := conn.PrepareContext(ctx, query)
	if err != nil {
		return fmt.Errorf("check statement: %w", err)
	}
	if err := stmt.Close(); err != nil {
		return fmt.Errorf("check statement: close: %w", err)
	}
	return nil
}
