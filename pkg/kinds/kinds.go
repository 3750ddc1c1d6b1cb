// Package kinds turns a migration spec of a stock kind into the change its
// sub-batches apply (DESIGN.md §2): the SQL, written for the target's
// dialect through sink.Builder, with every value bound as a parameter and
// every identifier quoted. Check validates a spec's arguments against the
// live schema, and Relation adds a kind's own row condition to the
// relation the planner cuts into batches. docs/kinds has one page per
// kind, with the SQL each dialect runs (rendered by this package's tests).
package kinds

import (
	"errors"
	"fmt"
	"sort"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// ErrNotStock is returned for a kind this package does not build: a custom
// kind registered by an executor, which brings its own change.
var ErrNotStock = errors.New("not a stock kind")

// Build returns the change of spec's kind over rel. The spec must have
// passed Validate; rel is resolved against the live schema and, for every
// kind, passed through Relation first.
func Build(spec batches.Spec, rel sink.Relation) (sink.Change, error) {
	switch spec.Kind {
	case batches.KindSQL:
		args, err := batches.DecodeArgs[batches.SQLArgs](spec)
		if err != nil {
			return sink.Change{}, err
		}
		return SQL(rel, args), nil
	case batches.KindBackfillColumn:
		args, err := batches.DecodeArgs[batches.BackfillColumnArgs](spec)
		if err != nil {
			return sink.Change{}, err
		}
		return BackfillColumn(rel, args), nil
	case batches.KindCopyColumn:
		args, err := batches.DecodeArgs[batches.CopyColumnArgs](spec)
		if err != nil {
			return sink.Change{}, err
		}
		if len(args.From) != len(args.To) || len(args.From) == 0 {
			return sink.Change{}, fmt.Errorf("copy_column: args.from and args.to must pair up, got %d and %d columns", len(args.From), len(args.To))
		}
		return CopyColumn(rel, args), nil
	case batches.KindDeleteAssociated:
		args, err := batches.DecodeArgs[batches.DeleteAssociatedArgs](spec)
		if err != nil {
			return sink.Change{}, err
		}
		if rel.Filter == nil {
			// Without the filter the DELETE would take every row of the range.
			return sink.Change{}, errors.New("delete_associated: the relation has no foreign key filter: build on kinds.Relation(spec, rel)")
		}
		return DeleteAssociated(rel, args), nil
	case batches.KindDeleteOrphaned:
		args, err := batches.DecodeArgs[batches.DeleteOrphanedArgs](spec)
		if err != nil {
			return sink.Change{}, err
		}
		return DeleteOrphaned(rel, args), nil
	case batches.KindPerformAction:
		args, err := batches.DecodeArgs[batches.PerformActionArgs](spec)
		if err != nil {
			return sink.Change{}, err
		}
		return PerformAction(rel, args)
	case batches.KindResetCounters:
		args, err := batches.DecodeArgs[batches.ResetCountersArgs](spec)
		if err != nil {
			return sink.Change{}, err
		}
		return ResetCounters(rel, args), nil
	}
	return sink.Change{}, fmt.Errorf("kind %q: %w", spec.Kind, ErrNotStock)
}

// Relation returns rel with the kind's own row condition as its Filter:
// delete_associated's foreign_key = parent_id. The planner cuts batches,
// and the executor sizes sub-batches, over the filtered relation, so both
// count only the rows the kind touches. Other kinds, custom ones included,
// get rel back as it is; so does a spec whose args do not decode (Build
// reports that).
func Relation(spec batches.Spec, rel sink.Relation) sink.Relation {
	if spec.Kind != batches.KindDeleteAssociated {
		return rel
	}
	args, err := batches.DecodeArgs[batches.DeleteAssociatedArgs](spec)
	if err != nil || args.ForeignKey == "" {
		return rel
	}
	table := rel.Table
	rel.Filter = func(b *sink.Builder) {
		d := b.Dialect().Name()
		name, ct := column(d, table, args.ForeignKey)
		b.Ident(name).SQL(" = ").Arg(bindKey(d, ct, args.ParentID))
	}
	return rel
}

// SQL is the change of the sql kind: UPDATE <table> SET <set> over the
// sub-batch's rows, or the statement with :lo and :hi bound to the
// sub-batch's exclusive lower and inclusive upper key.
func SQL(rel sink.Relation, args batches.SQLArgs) sink.Change {
	if args.Set != "" {
		set := args.Set
		return sink.Change{
			Foldable: true,
			Statement: func(b *sink.Builder, s sink.Scope) {
				b.SQL("UPDATE ").Ident(rel.Table.QualifiedName()).SQL(" SET ").SQL(set).SQL(" WHERE ").Write(s.Rows)
			},
		}
	}
	parts := batches.SplitStatement(args.Statement)
	return sink.Change{
		Statement: func(b *sink.Builder, s sink.Scope) {
			for _, p := range parts {
				switch p.Placeholder {
				case "lo":
					b.Write(s.Lo)
				case "hi":
					b.Write(s.Hi)
				default:
					b.SQL(p.Text)
				}
			}
		},
	}
}

// column resolves name in tbl: the catalog's spelling (quoted identifiers
// are case-sensitive on Postgres) and its type. A column missing from the
// catalog (Check reports it) keeps the spec's spelling and no type.
func column(dialect string, tbl *sink.Table, name string) (string, columnType) {
	if tbl != nil {
		if c, ok := tbl.Column(name); ok {
			return c.Name, typeOf(dialect, c)
		}
	}
	return name, columnType{family: famOther}
}

// ident writes a quoted identifier.
func ident(name string) sink.Fragment {
	return func(b *sink.Builder) { b.Ident(name) }
}

// qualified writes table.column, each quoted on its own: the dialects
// differ on how many dots QuoteIdent splits.
func qualified(table, column string) sink.Fragment {
	return func(b *sink.Builder) { b.Ident(table).SQL(".").Ident(column) }
}

// outer names a column of the relation's table from inside a subquery:
// "schema"."table"."column", since the statement gives the table no alias.
func outer(rel sink.Relation, name string) sink.Fragment {
	return qualified(rel.Table.QualifiedName(), name)
}

// set writes "c1" = v1, "c2" = v2 for updates, in column order.
func set(b *sink.Builder, rel sink.Relation, updates map[string]any) {
	d := b.Dialect().Name()
	for i, col := range sortedKeys(updates) {
		if i > 0 {
			b.SQL(", ")
		}
		name, ct := column(d, rel.Table, col)
		b.Ident(name).SQL(" = ").Write(value(d, ct, updates[col]))
	}
}

// bindKey binds parent_id for a column of type ct: an integer key becomes
// text for a text or uuid column (Postgres cannot encode a bigint
// parameter as text, and a text column compares as text elsewhere).
func bindKey(dialect string, ct columnType, key batches.Key) any {
	if key.IsInt() && (ct.family == famString || ct.family == famUUID || (ct.family == famOther && dialect == dialectPostgres)) {
		return key.String()
	}
	return key.Value()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
