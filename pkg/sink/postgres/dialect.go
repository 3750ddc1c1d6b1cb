package postgres

import (
	"strconv"
	"strings"

	"github.com/batchflow/batchflow/pkg/sink"
)

// Dialect is PostgreSQL's: "double-quoted" identifiers, $n placeholders,
// FOR UPDATE row locks.
var Dialect sink.Dialect = dialect{}

type dialect struct{}

func (dialect) Name() string { return "postgres" }

// QuoteIdent quotes each dot-separated part: "schema"."table", with
// embedded double quotes doubled.
func (dialect) QuoteIdent(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	return strings.Join(parts, ".")
}

func (dialect) Placeholder(n int) string { return "$" + strconv.Itoa(n) }

func (dialect) LockClause() string { return " FOR UPDATE" }
