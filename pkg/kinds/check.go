package kinds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Check validates a stock kind's arguments against the live schema of
// tbl, the spec's table, and of the tables the arguments name (looked up
// with s.Table): the columns exist, values fit their columns, casts are on
// the dialect's allowlist, copies and references join columns of
// compatible types, and no kind writes the batch column, which would move
// rows between batches. Every problem names its field (args.updates.admin,
// args.cast.amount_cents). Specs that passed batches.Validate only; the
// sql kind and custom kinds have nothing to check here (the planner has
// the database prepare the sql kind's statement).
func Check(ctx context.Context, s sink.Sink, spec batches.Spec, tbl *sink.Table) []batches.Problem {
	c := &checker{ctx: ctx, s: s, d: s.Dialect().Name(), tbl: tbl, tables: map[string]*sink.Table{}}
	if col, err := tbl.BatchColumn(spec.BatchColumn); err == nil {
		c.batchColumn = col.Name
	}
	switch spec.Kind {
	case batches.KindBackfillColumn:
		if a, ok := decoded[batches.BackfillColumnArgs](c, spec); ok {
			c.updates("args.updates", a.Updates)
		}
	case batches.KindPerformAction:
		if a, ok := decoded[batches.PerformActionArgs](c, spec); ok && a.Action == batches.ActionUpdateAll {
			c.updates("args.updates", a.Updates)
		}
	case batches.KindCopyColumn:
		if a, ok := decoded[batches.CopyColumnArgs](c, spec); ok {
			c.copyColumns(a)
		}
	case batches.KindDeleteAssociated:
		if a, ok := decoded[batches.DeleteAssociatedArgs](c, spec); ok {
			c.deleteAssociated(a)
		}
	case batches.KindDeleteOrphaned:
		if a, ok := decoded[batches.DeleteOrphanedArgs](c, spec); ok {
			c.deleteOrphaned(a)
		}
	case batches.KindResetCounters:
		if a, ok := decoded[batches.ResetCountersArgs](c, spec); ok {
			c.resetCounters(a)
		}
	}
	return c.problems
}

// decoded decodes the spec's args, or records why they do not decode.
func decoded[T any](c *checker, spec batches.Spec) (T, bool) {
	a, err := batches.DecodeArgs[T](spec)
	if err != nil {
		c.add("args", "%v", err)
		return a, false
	}
	return a, true
}

type checker struct {
	ctx         context.Context
	s           sink.Sink
	d           string
	tbl         *sink.Table
	batchColumn string
	tables      map[string]*sink.Table // looked up by spec spelling; nil: missing
	problems    []batches.Problem
}

func (c *checker) add(field, format string, args ...any) {
	c.problems = append(c.problems, batches.Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

// column finds a column of the spec's table; false (and a problem) when
// it is missing.
func (c *checker) column(field, name string) (sink.Column, columnType, bool) {
	col, ok := c.tbl.Column(name)
	if !ok {
		c.add(field, "table %s has no column %q", c.tbl.Name, name)
		return col, columnType{}, false
	}
	return col, typeOf(c.d, col), true
}

// writable finds a column the kind writes: it must exist and not be the
// batch column.
func (c *checker) writable(field, name string) (sink.Column, columnType, bool) {
	col, ct, ok := c.column(field, name)
	if ok && col.Name == c.batchColumn {
		c.add(field, "%s is the batch column: changing it would move rows between batches; write another column, or batch on another one", col.Name)
		return col, ct, false
	}
	return col, ct, ok
}

// table looks up a table the arguments name. Statements quote it as the
// spec spells it, so on Postgres and MySQL, where quoted names are
// case-sensitive, the spelling must be the catalog's.
func (c *checker) table(field, name string) *sink.Table {
	if t, seen := c.tables[name]; seen {
		return t
	}
	t, err := c.s.Table(c.ctx, name)
	switch {
	case errors.Is(err, sink.ErrTableNotFound):
		c.add(field, "table %q does not exist on the target", name)
		t = nil
	case err != nil:
		c.add(field, "cannot look up table %q: %v", name, err)
		t = nil
	case c.d != dialectSQLite && !spelledAsCatalog(name, t):
		c.add(field, "table %q is spelled %s in the database: write it that way", name, t.QualifiedName())
		t = nil
	}
	c.tables[name] = t
	return t
}

func spelledAsCatalog(name string, t *sink.Table) bool {
	schema, table, qualified := strings.Cut(name, ".")
	if !qualified {
		return name == t.Name
	}
	return schema == t.Schema && table == t.Name
}

// foreignColumn finds a column of another table; on Postgres the spelling
// must be the catalog's, for the same reason as table names.
func (c *checker) foreignColumn(field string, t *sink.Table, name string) (sink.Column, columnType, bool) {
	col, ok := t.Column(name)
	switch {
	case !ok:
		c.add(field, "table %s has no column %q", t.Name, name)
	case c.d == dialectPostgres && col.Name != name:
		c.add(field, "column %q of %s is spelled %q in the database: write it that way", name, t.Name, col.Name)
		ok = false
	}
	return col, typeOf(c.d, col), ok
}

// updates checks {column: value} as backfill_column and update_all write it.
func (c *checker) updates(field string, updates map[string]any) {
	for _, name := range sortedKeys(updates) {
		f := field + "." + name
		col, ct, ok := c.writable(f, name)
		if !ok {
			continue
		}
		if p := valueProblem(c.d, col, ct, updates[name]); p != "" {
			c.add(f, "%s", p)
		}
	}
}

func (c *checker) copyColumns(a batches.CopyColumnArgs) {
	if len(a.From) != len(a.To) {
		return // batches.Validate reported it
	}
	for i := range a.To {
		fromField, toField := fmt.Sprintf("args.from[%d]", i), fmt.Sprintf("args.to[%d]", i)
		from, fromType, fromOK := c.column(fromField, a.From[i])
		to, toType, toOK := c.writable(toField, a.To[i])
		spelled, hasCast := a.Cast[a.To[i]]
		castField := "args.cast." + a.To[i]
		var source columnType
		switch {
		case hasCast:
			ct, problem := parseCast(c.d, spelled)
			if problem != "" {
				c.add(castField, "%s", problem)
				continue
			}
			source = columnType{family: ct.family, name: ct.sql}
			if toOK && !compatible(c.d, toType, source) {
				c.add(castField, "a cast to %s gives %s, which does not fit column %s (%s)", ct.sql, source.family, to.Name, to.Type)
			}
		case fromOK && toOK:
			if from.Name == to.Name {
				c.add(toField, "copies column %s onto itself", to.Name)
				continue
			}
			if !compatible(c.d, toType, fromType) {
				c.add(toField, "column %s (%s) cannot take column %s (%s) without a cast: add args.cast.%s with a type from: %s",
					to.Name, to.Type, from.Name, from.Type, a.To[i], allowlist(c.d))
			}
		}
	}
}

func (c *checker) deleteAssociated(a batches.DeleteAssociatedArgs) {
	col, ct, ok := c.column("args.foreign_key", a.ForeignKey)
	switch {
	case !ok:
	case a.ParentID.IsNull():
		c.add("args.parent_id", "null matches no row (a NULL foreign key equals nothing); to delete rows whose parent is missing, use delete_orphaned")
	default:
		var v any = a.ParentID.Text()
		if a.ParentID.IsInt() {
			v = json.Number(a.ParentID.String())
		}
		if p := valueProblem(c.d, col, ct, v); p != "" {
			c.add("args.parent_id", "%s", p)
		}
	}
}

func (c *checker) deleteOrphaned(a batches.DeleteOrphanedArgs) {
	for i, as := range a.Associations {
		path := fmt.Sprintf("args.associations[%d]", i)
		col, ct, ok := c.column(path+".column", as.Column)
		refName, refColumn := as.Referenced()
		ref := c.table(path+".references", refName)
		if ref == nil {
			continue
		}
		refCol, refType, refOK := c.foreignColumn(path+".references", ref, refColumn)
		if ok && refOK && !compatible(c.d, ct, refType) {
			c.add(path+".references", "column %s (%s) cannot be compared with %s.%s (%s): their types differ",
				col.Name, col.Type, ref.Name, refCol.Name, refCol.Type)
		}
	}
}

func (c *checker) resetCounters(a batches.ResetCountersArgs) {
	var pk sink.Column
	var pkType columnType
	if len(c.tbl.PrimaryKey) == 1 {
		pk, pkType, _ = c.column("table", c.tbl.PrimaryKey[0])
	} else {
		c.add("table", "reset_counters needs a single-column primary key on %s for the child rows' foreign keys to point at; it has %d key columns",
			c.tbl.Name, len(c.tbl.PrimaryKey))
	}
	for i, counter := range a.Counters {
		path := fmt.Sprintf("args.counters[%d]", i)
		if col, ct, ok := c.writable(path+".column", counter.Column); ok && !isNumber(ct.family) && ct.family != famOther {
			c.add(path+".column", "column %s (%s) cannot hold a count", col.Name, col.Type)
		}
		child := c.table(path+".child_table", counter.ChildTable)
		if child == nil {
			continue
		}
		fk, fkType, ok := c.foreignColumn(path+".foreign_key", child, counter.ForeignKey)
		if ok && pk.Name != "" && !compatible(c.d, fkType, pkType) {
			c.add(path+".foreign_key", "column %s.%s (%s) cannot point at %s.%s (%s): their types differ",
				child.Name, fk.Name, fk.Type, c.tbl.Name, pk.Name, pk.Type)
		}
	}
	if a.Touch == "" {
		return
	}
	col, ct, ok := c.writable("args.touch", a.Touch)
	if !ok {
		return
	}
	for _, counter := range a.Counters {
		if strings.EqualFold(counter.Column, a.Touch) {
			c.add("args.touch", "%s is also a counter", col.Name)
			return
		}
	}
	timeLike := ct.family == famTemporal || ct.family == famOther || (c.d == dialectSQLite && ct.family == famString)
	if !timeLike {
		c.add("args.touch", "column %s (%s) is not a timestamp column", col.Name, col.Type)
	}
}
