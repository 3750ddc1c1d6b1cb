package kinds

import (
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// BackfillColumn is the change of the backfill_column kind: one UPDATE
// setting every column of args.Updates, over the sub-batch's rows that are
// not already at every value, compared NULL-safely (Postgres IS DISTINCT
// FROM, MySQL NOT (c <=> v), SQLite IS NOT) and byte for byte for text. A
// re-run writes nothing, and rows_affected counts the rows changed.
func BackfillColumn(rel sink.Relation, args batches.BackfillColumnArgs) sink.Change {
	cols := sortedKeys(args.Updates)
	return sink.Change{
		Foldable: true,
		Statement: func(b *sink.Builder, s sink.Scope) {
			d := b.Dialect().Name()
			b.SQL("UPDATE ").Ident(rel.Table.QualifiedName()).SQL(" SET ")
			set(b, rel, args.Updates)
			b.SQL(" WHERE ").Write(s.Rows).SQL(" AND (")
			for i, col := range cols {
				if i > 0 {
					b.SQL(" OR ")
				}
				name, ct := column(d, rel.Table, col)
				b.Write(differs(d, ct, ident(name), comparedValue(d, ct, args.Updates[col])))
			}
			b.SQL(")")
		},
	}
}
