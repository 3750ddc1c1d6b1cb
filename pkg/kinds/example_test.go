package kinds_test

import (
	"encoding/json"
	"fmt"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/postgres"
)

// A stock kind's change writes one statement per sub-batch, for the
// dialect of the builder it is given; the sink supplies the rows.
func ExampleBuild() {
	spec := batches.Spec{Name: "backfill_admin", Target: "main", Kind: batches.KindBackfillColumn, Table: "users",
		Args: json.RawMessage(`{"updates": {"admin": false}}`)}
	users := &sink.Table{Schema: "public", Name: "users", PrimaryKey: []string{"id"}, Columns: []sink.Column{
		{Name: "id", Type: "bigint", Key: sink.KeyInt},
		{Name: "admin", Type: "boolean", Nullable: true},
	}}
	rel := kinds.Relation(spec, sink.Relation{Table: users, Column: "id", Key: sink.KeyInt})
	change, err := kinds.Build(spec, rel)
	if err != nil {
		panic(err)
	}

	b := sink.NewBuilder(postgres.Dialect)
	change.Statement(b, sink.Scope{Relation: rel, Rows: rel.Rows(sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(1000)})})
	fmt.Println(b.String())
	fmt.Println(b.Args()...)
	// Output:
	// UPDATE "public"."users" SET "admin" = $1 WHERE "id" > $2 AND "id" <= $3 AND ("admin" IS DISTINCT FROM $4)
	// false 0 1000 false
}
