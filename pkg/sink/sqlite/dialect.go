package sqlite

import (
	"strings"

	"github.com/batchflow/batchflow/pkg/sink"
)

// Dialect is SQLite's SQL dialect: "double-quoted" identifiers, ? placeholders
// and no row locks (the sink's write transactions hold SQLite's write lock
// from BEGIN IMMEDIATE on, which excludes every other writer).
var Dialect sink.Dialect = dialect{}

type dialect struct{}

func (dialect) Name() string { return "sqlite" }

// QuoteIdent quotes name with double quotes, doubling embedded ones. A
// dotted name is schema-qualified: "main.items" is "main"."items". Only the
// first dot separates, so a table whose own name holds a dot still quotes
// as one identifier after its schema.
func (dialect) QuoteIdent(name string) string {
	if schema, rest, ok := strings.Cut(name, "."); ok {
		return quote(schema) + "." + quote(rest)
	}
	return quote(name)
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func (dialect) Placeholder(int) string { return "?" }

func (dialect) LockClause() string { return "" }
