package mysql_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
	_ "github.com/batchflow/batchflow/pkg/sink/mysql" // registers mysql://
)

// Example backfills users.admin through the MySQL sink, sub-batch by
// sub-batch, as an executor does with one batch.
func Example() {
	ctx := context.Background()
	s, err := sink.Open(ctx, "mysql://app:secret@127.0.0.1:3306/shop", sink.Options{
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, nil)),
		LockTimeout: 2 * time.Second,
	})
	if err != nil {
		fmt.Println(err) // never shows the password
		return
	}
	defer s.Close()

	tbl, err := s.Table(ctx, "users")
	if err != nil {
		fmt.Println(err)
		return
	}
	col, _ := tbl.BatchColumn("")
	rel := sink.Relation{Table: tbl, Column: col.Name, Key: col.Key}
	change := kinds.SQL(rel, batches.SQLArgs{Set: "admin = FALSE"})
	batch := sink.Range{Lo: batches.IntKey(1), LoInclusive: true, Hi: batches.IntKey(20000)}

	cp, err := s.BeginBatch(ctx, "backfill_users_admin", 0, rel.Key)
	for err == nil {
		var res sink.Result
		res, err = s.ApplySubBatch(ctx, sink.SubBatch{Migration: "backfill_users_admin", Relation: rel, Batch: batch, From: cp.Key, Limit: 1000}, change)
		if err == nil && res.Done {
			break
		}
		cp.Key = res.Checkpoint
	}
	if err != nil {
		fmt.Println(s.Classify(err), err)
	}
}
