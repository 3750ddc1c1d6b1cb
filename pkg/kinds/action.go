package kinds

import (
	"fmt"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// PerformAction is the change of the perform_action kind over the
// sub-batch's rows (the key range and the spec's where): update_all sets
// args.Updates on every one of them, with no check of their current
// values, and delete_all deletes them.
func PerformAction(rel sink.Relation, args batches.PerformActionArgs) (sink.Change, error) {
	switch args.Action {
	case batches.ActionUpdateAll:
		if len(args.Updates) == 0 {
			return sink.Change{}, fmt.Errorf("perform_action: update_all needs args.updates")
		}
		return sink.Change{
			Foldable: true,
			Statement: func(b *sink.Builder, s sink.Scope) {
				b.SQL("UPDATE ").Ident(rel.Table.QualifiedName()).SQL(" SET ")
				set(b, rel, args.Updates)
				b.SQL(" WHERE ").Write(s.Rows)
			},
		}, nil
	case batches.ActionDeleteAll:
		return deleteRows(rel), nil
	}
	return sink.Change{}, fmt.Errorf("perform_action: unknown action %q", args.Action)
}

// deleteRows deletes the sub-batch's rows.
func deleteRows(rel sink.Relation) sink.Change {
	return sink.Change{
		Foldable: true,
		Statement: func(b *sink.Builder, s sink.Scope) {
			b.SQL("DELETE FROM ").Ident(rel.Table.QualifiedName()).SQL(" WHERE ").Write(s.Rows)
		},
	}
}
