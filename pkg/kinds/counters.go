package kinds

import (
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// ResetCounters is the change of the reset_counters kind: one UPDATE
// setting each counter to the number of its child table's rows whose
// foreign key is the row's primary key, over the sub-batch's rows where
// some counter is wrong (NULL-safely: a NULL counter is wrong), so a
// re-run writes nothing and rows_affected counts the rows fixed. The touch
// column, if any, is set to the current time on the rows fixed: the
// database's CURRENT_TIMESTAMP, in UTC for a column without a time zone
// (Postgres timestamp, MySQL DATETIME), as the ledger's own times are.
//
// On MySQL a counter whose child table is the relation's own table (a
// self-reference: replies_count over the same table's reply_to_id) counts
// in a grouped derived table of the sub-batch's keys, which MySQL
// materializes first, since it refuses a subquery reading the table an
// UPDATE writes (error 1093).
func ResetCounters(rel sink.Relation, args batches.ResetCountersArgs) sink.Change {
	pk := rel.Column
	if len(rel.Table.PrimaryKey) == 1 {
		pk = rel.Table.PrimaryKey[0]
	}
	return sink.Change{
		Foldable: true,
		Statement: func(b *sink.Builder, s sink.Scope) {
			d := b.Dialect().Name()
			count := func(c batches.Counter) sink.Fragment {
				return func(b *sink.Builder) {
					if d == dialectMySQL && sameTable(rel, c.ChildTable) {
						b.SQL("COALESCE((SELECT ").Write(qualified("bf_counted", "bf_count")).SQL(" FROM (SELECT ").
							Write(qualified("bf_child", c.ForeignKey)).SQL(" AS ").Ident("bf_key").SQL(", COUNT(*) AS ").Ident("bf_count").
							SQL(" FROM ").Ident(c.ChildTable).SQL(" AS ").Ident("bf_child").
							SQL(" WHERE ").Write(qualified("bf_child", c.ForeignKey)).SQL(" IN (SELECT ").Ident(pk).
							SQL(" FROM ").Ident(c.ChildTable).SQL(" WHERE ").Write(s.Rows).
							SQL(") GROUP BY ").Write(qualified("bf_child", c.ForeignKey)).SQL(") AS ").Ident("bf_counted").
							SQL(" WHERE ").Write(qualified("bf_counted", "bf_key")).SQL(" = ").Write(outer(rel, pk)).SQL("), 0)")
						return
					}
					b.SQL("(SELECT COUNT(*) FROM ").Ident(c.ChildTable).SQL(" AS ").Ident("bf_child").
						SQL(" WHERE ").Write(qualified("bf_child", c.ForeignKey)).SQL(" = ").Write(outer(rel, pk)).SQL(")")
				}
			}
			b.SQL("UPDATE ").Ident(rel.Table.QualifiedName()).SQL(" SET ")
			for i, c := range args.Counters {
				if i > 0 {
					b.SQL(", ")
				}
				name, _ := column(d, rel.Table, c.Column)
				b.Ident(name).SQL(" = ").Write(count(c))
			}
			if args.Touch != "" {
				name, ct := column(d, rel.Table, args.Touch)
				b.SQL(", ").Ident(name).SQL(" = ").SQL(currentTime(d, ct))
			}
			b.SQL(" WHERE ").Write(s.Rows).SQL(" AND (")
			for i, c := range args.Counters {
				if i > 0 {
					b.SQL(" OR ")
				}
				name, ct := column(d, rel.Table, c.Column)
				b.Write(differs(d, ct, ident(name), count(c)))
			}
			b.SQL(")")
		},
	}
}

// currentTime is the dialect's current time for a column of type ct: UTC
// for a column without a time zone, microseconds on MySQL (whose bare
// CURRENT_TIMESTAMP has whole seconds). SQLite's CURRENT_TIMESTAMP is UTC.
func currentTime(dialect string, ct columnType) string {
	switch dialect {
	case dialectPostgres:
		if ct.name == "timestamp without time zone" {
			return "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')"
		}
	case dialectMySQL:
		if ct.name == "datetime" {
			return "UTC_TIMESTAMP(6)"
		}
		return "CURRENT_TIMESTAMP(6)"
	}
	return "CURRENT_TIMESTAMP"
}
