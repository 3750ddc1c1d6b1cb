package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/kinds"
	"github.com/batchflow/batchflow/pkg/sink"
	_ "github.com/batchflow/batchflow/pkg/sink/postgres" // postgres://, postgresql://
)

// A batch applied sub-batch by sub-batch through the ledger, the way an
// executor does: each ApplySubBatch is one statement that changes the rows
// and moves the checkpoint together, so a crash or a second executor
// never applies a row twice.
func Example() {
	ctx := context.Background()
	s, err := sink.Open(ctx, "postgres://batchflow@db.internal:5432/app?sslmode=require", sink.Options{
		LockTimeout:      2 * time.Second,
		StatementTimeout: 30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	table, err := s.Table(ctx, "public.users")
	if err != nil {
		log.Fatal(err)
	}
	col, err := table.BatchColumn("") // the primary key
	if err != nil {
		log.Fatal(err)
	}
	rel := sink.Relation{Table: table, Column: col.Name, Key: col.Key, Where: "created_at < '2026-01-01'"}
	change := kinds.SQL(rel, batches.SQLArgs{Set: "login_count = login_count + 1"})
	batch := sink.Range{Lo: batches.IntKey(0), Hi: batches.IntKey(20_000)}

	cp, err := s.BeginBatch(ctx, "bump_logins", 1, rel.Key) // resumes where a previous owner stopped
	if err != nil {
		log.Fatal(err)
	}
	for from := cp.Key; ; {
		// Integer keys: the sub-batch ends 1000 keys on, which spares the
		// sink a scan for where 1000 rows end (pass Limit instead of Hi
		// for that, as text keys need).
		start := batch.Lo
		if !from.IsNull() {
			start = from
		}
		hi := batches.IntKey(min(start.Int()+1000, batch.Hi.Int()))
		res, err := s.ApplySubBatch(ctx, sink.SubBatch{Migration: "bump_logins", Seq: 1, Relation: rel, Batch: batch, From: from, Hi: hi}, change)
		if errors.Is(err, sink.ErrCheckpointMoved) {
			return // another executor owns the batch now
		}
		if err != nil {
			log.Fatalf("%s error: %v", s.Classify(err), err)
		}
		fmt.Printf("rows (%s, %s]: %d changed\n", res.Lo, res.Hi, res.Rows)
		if res.Done {
			return
		}
		from = res.Checkpoint
	}
}
