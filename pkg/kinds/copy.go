package kinds

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// CopyColumn is the change of the copy_column kind: one UPDATE setting
// to[i] = from[i], or CAST(from[i] AS type) where args.Cast names a type
// for to[i], over the sub-batch's rows where some to[i] differs from what
// it would receive (NULL-safely, as BackfillColumn compares), so a re-run
// writes nothing. A cast outside the dialect's allowlist (Check rejects
// it) is written as the spec spells it, which batches.Validate restricted
// to a type name.
func CopyColumn(rel sink.Relation, args batches.CopyColumnArgs) sink.Change {
	return sink.Change{
		Foldable: true,
		Statement: func(b *sink.Builder, s sink.Scope) {
			d := b.Dialect().Name()
			type pair struct {
				to       string
				toType   columnType
				src, cmp sink.Fragment
			}
			pairs := make([]pair, len(args.To))
			for i := range args.To {
				from, fromType := column(d, rel.Table, args.From[i])
				to, toType := column(d, rel.Table, args.To[i])
				p := pair{to: to, toType: toType, src: ident(from)}
				srcFamily := fromType.family
				if spelled, ok := args.Cast[args.To[i]]; ok {
					sqlType := spelled
					if c, ok := castFor(d, spelled); ok {
						sqlType, srcFamily = c.sql, c.family
					}
					p.src = func(b *sink.Builder) { b.SQL("CAST(").Ident(from).SQL(" AS " + sqlType + ")") }
				}
				p.cmp = p.src
				if d == dialectMySQL && toType.name == "json" && srcFamily != famJSON {
					// MySQL compares a JSON column with a string as a JSON string.
					src := p.src
					p.cmp = func(b *sink.Builder) { b.SQL("CAST(").Write(src).SQL(" AS JSON)") }
				}
				pairs[i] = p
			}
			b.SQL("UPDATE ").Ident(rel.Table.QualifiedName()).SQL(" SET ")
			for i, p := range pairs {
				if i > 0 {
					b.SQL(", ")
				}
				b.Ident(p.to).SQL(" = ").Write(p.src)
			}
			b.SQL(" WHERE ").Write(s.Rows).SQL(" AND (")
			for i, p := range pairs {
				if i > 0 {
					b.SQL(" OR ")
				}
				b.Write(differs(d, p.toType, ident(p.to), p.cmp))
			}
			b.SQL(")")
		},
	}
}

// cast is a type copy_column may cast to, as the dialect writes it.
type cast struct {
	sql    string
	family family
}

// castRule admits spec type names (names, with between minParams and
// maxParams sizes) and writes the dialect's type for them.
type castRule struct {
	names                []string
	minParams, maxParams int
	family               family
	// sql writes the type for the sizes; nil: the first name, upper-cased
	// on MySQL and SQLite, with the sizes.
	sql func(p []int) string
	// check says what is wrong with the sizes, or "".
	check func(p []int) string
	// doc is how the allowlist shows the rule.
	doc string
}

// A name a dialect has means what it means there ("float" is double
// precision on Postgres and single on MySQL); names it lacks map to its
// nearest type (bigint is SIGNED on MySQL, INTEGER on SQLite), or are
// refused where there is none (SQLite has no date or uuid type: a CAST to
// one would give the value NUMERIC affinity).
var castRules = map[string][]castRule{
	dialectPostgres: {
		{names: []string{"smallint", "int2"}, family: famInt},
		{names: []string{"integer", "int", "int4"}, family: famInt},
		{names: []string{"bigint", "int8", "signed"}, family: famInt},
		{names: []string{"numeric", "decimal"}, maxParams: 2, family: famDecimal, sql: sized("numeric"), check: precision(1000, 1000), doc: "numeric(p,s)"},
		{names: []string{"real", "float4"}, family: famDecimal},
		{names: []string{"double precision", "double", "float8", "float"}, family: famDecimal},
		{names: []string{"text", "string"}, family: famString},
		{names: []string{"varchar", "character varying"}, maxParams: 1, family: famString, sql: sized("varchar"), check: between(1, 10485760), doc: "varchar(n)"},
		{names: []string{"char", "character"}, maxParams: 1, family: famString, sql: sized("char"), check: between(1, 10485760), doc: "char(n)"},
		{names: []string{"uuid"}, family: famUUID},
		{names: []string{"boolean", "bool"}, family: famBool},
		{names: []string{"date"}, family: famTemporal},
		{names: []string{"timestamp", "timestamp without time zone", "datetime"}, family: famTemporal},
		{names: []string{"timestamptz", "timestamp with time zone"}, family: famTemporal},
		{names: []string{"time", "time without time zone"}, family: famTime},
		{names: []string{"json"}, family: famJSON},
		{names: []string{"jsonb"}, family: famJSON},
		{names: []string{"bytea", "binary", "blob"}, family: famBinary},
	},
	dialectMySQL: {
		{names: []string{"signed", "signed integer", "bigint", "integer", "int", "mediumint", "smallint", "tinyint"}, family: famInt, sql: fixed("SIGNED"), doc: "signed (bigint, integer…)"},
		{names: []string{"unsigned", "unsigned integer"}, family: famInt, sql: fixed("UNSIGNED")},
		{names: []string{"decimal", "numeric"}, maxParams: 2, family: famDecimal, sql: sized("DECIMAL"), check: precision(65, 30), doc: "decimal(p,s)"},
		{names: []string{"double", "double precision", "real", "float8"}, family: famDecimal, sql: fixed("DOUBLE")},
		{names: []string{"float", "float4"}, family: famDecimal, sql: fixed("FLOAT")},
		{names: []string{"char", "varchar", "character", "character varying", "text", "string"}, maxParams: 1, family: famString, sql: sized("CHAR"), check: between(1, 65535), doc: "char(n) (varchar, text)"},
		{names: []string{"date"}, family: famTemporal},
		{names: []string{"datetime", "timestamp"}, maxParams: 1, family: famTemporal, sql: sized("DATETIME"), check: between(0, 6), doc: "datetime(fsp)"},
		{names: []string{"time"}, maxParams: 1, family: famTime, sql: sized("TIME"), check: between(0, 6), doc: "time(fsp)"},
		{names: []string{"binary", "varbinary", "blob", "bytea"}, maxParams: 1, family: famBinary, sql: sized("BINARY"), check: between(1, 65535), doc: "binary(n)"},
	},
	dialectSQLite: {
		{names: []string{"integer", "int", "bigint", "smallint", "tinyint", "mediumint", "signed", "boolean", "bool"}, family: famInt, sql: fixed("INTEGER"), doc: "integer (bigint, boolean…)"},
		{names: []string{"real", "double", "double precision", "float", "float4", "float8"}, family: famDecimal, sql: fixed("REAL")},
		{names: []string{"numeric", "decimal"}, maxParams: 2, family: famDecimal, sql: fixed("NUMERIC")},
		{names: []string{"text", "string", "varchar", "char", "character", "character varying", "clob"}, maxParams: 1, family: famString, sql: fixed("TEXT"), doc: "text (varchar, char…)"},
		{names: []string{"blob", "binary", "varbinary", "bytea"}, maxParams: 1, family: famBinary, sql: fixed("BLOB")},
	},
}

func fixed(s string) func([]int) string { return func([]int) string { return s } }

// sized writes name, or name(p) or name(p,s).
func sized(name string) func([]int) string {
	return func(p []int) string {
		if len(p) == 0 {
			return name
		}
		parts := make([]string, len(p))
		for i, n := range p {
			parts[i] = strconv.Itoa(n)
		}
		return name + "(" + strings.Join(parts, ",") + ")"
	}
}

func between(lo, hi int) func([]int) string {
	return func(p []int) string {
		if len(p) == 1 && (p[0] < lo || p[0] > hi) {
			return fmt.Sprintf("size %d is outside %d…%d", p[0], lo, hi)
		}
		return ""
	}
}

func precision(maxP, maxS int) func([]int) string {
	return func(p []int) string {
		switch {
		case len(p) >= 1 && (p[0] < 1 || p[0] > maxP):
			return fmt.Sprintf("precision %d is outside 1…%d", p[0], maxP)
		case len(p) == 2 && (p[1] > p[0] || p[1] > maxS):
			return fmt.Sprintf("scale %d must be at most the precision and %d", p[1], maxS)
		}
		return ""
	}
}

var castPattern = regexp.MustCompile(`^([a-z][a-z0-9_]*(?: [a-z][a-z0-9_]*)*)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$`)

// castFor finds the cast a spec's type name means on the dialect.
func castFor(dialect, spelled string) (cast, bool) {
	c, problem := parseCast(dialect, spelled)
	return c, problem == ""
}

// parseCast finds the cast a spec's type name means on the dialect, or
// says why there is none, listing the allowlist.
func parseCast(dialect, spelled string) (cast, string) {
	norm := strings.Join(strings.Fields(strings.ToLower(spelled)), " ")
	m := castPattern.FindStringSubmatch(norm)
	if m != nil {
		var params []int
		for _, s := range m[2:] {
			if s != "" {
				n, err := strconv.Atoi(s)
				if err != nil {
					m = nil
					break
				}
				params = append(params, n)
			}
		}
		if m != nil {
			for _, r := range castRules[dialect] {
				for _, name := range r.names {
					if name != m[1] {
						continue
					}
					if len(params) < r.minParams || len(params) > r.maxParams {
						return cast{}, fmt.Sprintf("%q takes %s on %s", spelled, paramsWanted(r), dialect)
					}
					if r.check != nil {
						if p := r.check(params); p != "" {
							return cast{}, fmt.Sprintf("%q: %s", spelled, p)
						}
					}
					sqlType := r.names[0]
					if r.sql != nil {
						sqlType = r.sql(params)
					} else if dialect != dialectPostgres {
						sqlType = strings.ToUpper(sqlType)
					}
					return cast{sql: sqlType, family: r.family}, ""
				}
			}
		}
	}
	return cast{}, fmt.Sprintf("%q is not a cast batchflow allows on %s; use one of: %s", truncate(spelled, 60), dialect, allowlist(dialect))
}

func paramsWanted(r castRule) string {
	switch {
	case r.maxParams == 0:
		return "no size"
	case r.maxParams == 1:
		return "at most one size"
	}
	return "a precision and a scale at most"
}

// allowlist lists the dialect's casts for a message.
func allowlist(dialect string) string {
	var names []string
	for _, r := range castRules[dialect] {
		doc := r.doc
		if doc == "" {
			doc = r.names[0]
		}
		names = append(names, doc)
	}
	return strings.Join(names, ", ")
}
