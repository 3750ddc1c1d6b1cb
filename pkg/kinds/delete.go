package kinds

import (
	"strings"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// DeleteAssociated is the change of the delete_associated kind: DELETE the
// sub-batch's rows. The condition foreign_key = parent_id is the
// relation's filter (see Relation), so it is part of the sub-batch's rows,
// and batches and sub-batches count only the rows it deletes.
func DeleteAssociated(rel sink.Relation, _ batches.DeleteAssociatedArgs) sink.Change {
	return deleteRows(rel)
}

// DeleteOrphaned is the change of the delete_orphaned kind: DELETE the
// sub-batch's rows whose reference, in any association, is not NULL and
// finds no row in the referenced table (NOT EXISTS). A NULL reference is
// no reference, so its row is kept.
//
// MySQL refuses a subquery reading the table a DELETE deletes from (error
// 1093), so there a self-reference is looked up in a derived table, which
// MySQL materializes before deleting (DISTINCT keeps the optimizer from
// merging it back): the referenced keys of the sub-batch's rows.
func DeleteOrphaned(rel sink.Relation, args batches.DeleteOrphanedArgs) sink.Change {
	return sink.Change{
		Foldable: true,
		Statement: func(b *sink.Builder, s sink.Scope) {
			d := b.Dialect().Name()
			b.SQL("DELETE FROM ").Ident(rel.Table.QualifiedName()).SQL(" WHERE ").Write(s.Rows).SQL(" AND (")
			for i, a := range args.Associations {
				if i > 0 {
					b.SQL(" OR ")
				}
				name, _ := column(d, rel.Table, a.Column)
				refTable, refColumn := a.Referenced()
				b.SQL("(").Write(outer(rel, name)).SQL(" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ")
				if d == dialectMySQL && sameTable(rel, refTable) {
					b.SQL("(SELECT DISTINCT ").Write(qualified("bf_ref", refColumn)).SQL(" AS ").Ident("bf_key").
						SQL(" FROM ").Ident(refTable).SQL(" AS ").Ident("bf_ref").
						SQL(" WHERE ").Write(qualified("bf_ref", refColumn)).SQL(" IN (SELECT ").Ident(name).
						SQL(" FROM ").Ident(refTable).SQL(" WHERE ").Write(s.Rows).SQL(")) AS ").Ident("bf_found").
						SQL(" WHERE ").Write(qualified("bf_found", "bf_key"))
				} else {
					b.Ident(refTable).SQL(" AS ").Ident("bf_ref").SQL(" WHERE ").Write(qualified("bf_ref", refColumn))
				}
				b.SQL(" = ").Write(outer(rel, name)).SQL("))")
			}
			b.SQL(")")
		},
	}
}

// sameTable reports whether a table named in the spec ("t" or "schema.t")
// may be the relation's own table. It errs towards yes: that only costs
// MySQL a derived table.
func sameTable(rel sink.Relation, name string) bool {
	schema, table, qualified := strings.Cut(name, ".")
	if !qualified {
		schema, table = "", name
	}
	return strings.EqualFold(table, rel.Table.Name) && (schema == "" || strings.EqualFold(schema, rel.Table.Schema))
}
