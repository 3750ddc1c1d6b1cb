package sink

import (
	"strings"
)

// Dialect writes what differs between databases in the SQL batchflow builds.
type Dialect interface {
	// Name is "postgres", "mysql" or "sqlite".
	Name() string
	// QuoteIdent quotes an identifier; a dotted name is quoted part by part
	// ("schema"."table"). Names reaching it have been checked against the schema.
	QuoteIdent(name string) string
	// Placeholder is the n-th bound parameter (1-based): $n or ?.
	Placeholder(n int) string
	// LockClause is appended to a SELECT to lock the rows it reads until
	// the transaction ends: " FOR UPDATE", or "" where the transaction
	// already holds the database's write lock (SQLite's BEGIN IMMEDIATE).
	LockClause() string
}

// Fragment writes a piece of SQL, with its bound values, into a Builder.
type Fragment func(b *Builder)

// Builder accumulates one statement and its bound values. Values always
// travel as parameters; identifiers are quoted by the dialect; trusted SQL
// from the spec (where, set, statement) is copied verbatim. Placeholders
// are numbered in the order they are written, which is also the order of
// the text, so `?` dialects bind correctly.
type Builder struct {
	d    Dialect
	text strings.Builder
	args []any
}

// NewBuilder returns an empty builder for d.
func NewBuilder(d Dialect) *Builder { return &Builder{d: d} }

// Dialect returns the builder's dialect.
func (b *Builder) Dialect() Dialect { return b.d }

// SQL appends trusted SQL text.
func (b *Builder) SQL(s string) *Builder {
	b.text.WriteString(s)
	return b
}

// Ident appends a quoted identifier.
func (b *Builder) Ident(name string) *Builder {
	b.text.WriteString(b.d.QuoteIdent(name))
	return b
}

// Arg appends a placeholder bound to v.
func (b *Builder) Arg(v any) *Builder {
	b.args = append(b.args, v)
	b.text.WriteString(b.d.Placeholder(len(b.args)))
	return b
}

// Write appends a fragment; nil writes nothing.
func (b *Builder) Write(f Fragment) *Builder {
	if f != nil {
		f(b)
	}
	return b
}

// String returns the statement text.
func (b *Builder) String() string { return b.text.String() }

// Args returns the bound values in placeholder order.
func (b *Builder) Args() []any { return b.args }

// KeyRange writes "col > lo AND col <= hi" for r (">=" when LoInclusive;
// an open side writes nothing), or "col IS NOT NULL" for an unbounded
// range: a row without a key belongs to no batch.
func KeyRange(column string, r Range) Fragment {
	return func(b *Builder) {
		var parts int
		if !r.Lo.IsNull() {
			op := " > "
			if r.LoInclusive {
				op = " >= "
			}
			b.Ident(column).SQL(op).Arg(r.Lo.Value())
			parts++
		}
		if !r.Hi.IsNull() {
			if parts > 0 {
				b.SQL(" AND ")
			}
			b.Ident(column).SQL(" <= ").Arg(r.Hi.Value())
			parts++
		}
		if parts == 0 {
			b.Ident(column).SQL(" IS NOT NULL")
		}
	}
}

// Filters writes the relation's own conditions, each prefixed by " AND ":
// the spec's where (in parentheses, so an OR in it cannot escape) and the
// kind's filter.
func (rel Relation) Filters() Fragment {
	return func(b *Builder) {
		if strings.TrimSpace(rel.Where) != "" {
			b.SQL(" AND (").SQL(rel.Where).SQL(")")
		}
		if rel.Filter != nil {
			b.SQL(" AND (").Write(rel.Filter).SQL(")")
		}
	}
}

// Rows writes the predicate selecting the relation's rows within r.
func (rel Relation) Rows(r Range) Fragment {
	return func(b *Builder) {
		b.Write(KeyRange(rel.Column, r)).Write(rel.Filters())
	}
}
