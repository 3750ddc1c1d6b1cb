package watchdog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchflow/batchflow/internal/bus"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/events"
)

// advisory is the part of a JetStream consumer advisory the watchdog reads.
type advisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
	Reason     string `json:"reason"`
}

// handleAdvisory turns a dead letter of the batch stream into a failed batch.
func (w *Watchdog) handleAdvisory(ctx context.Context, msg jetstream.Msg) {
	var a advisory
	if err := json.Unmarshal(msg.Data(), &a); err != nil || a.StreamSeq == 0 {
		w.log.Warn("watchdog: unreadable advisory, dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	var (
		migration, reason string
		err               error
	)
	switch {
	case strings.Contains(msg.Subject(), ".MAX_DELIVERIES."):
		reason = reasonMaxDeliveries
		migration, err = w.maxDeliveries(ctx, a)
	case strings.Contains(msg.Subject(), ".MSG_TERMINATED."):
		reason = reasonTerminated
		migration, err = w.terminated(ctx, a)
	}
	if err != nil {
		w.log.Warn("watchdog: handle advisory, retrying", "subject", msg.Subject(), "stream_seq", a.StreamSeq, "err", err)
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	if migration != "" {
		w.metrics.deadLetter(ctx, migration, reason)
	}
	_ = msg.Ack()
}

// maxDeliveries fails the batch whose message was delivered as often as the
// consumer allows; the message itself stays in a work-queue stream, so it
// is deleted here. It returns the batch's migration, or "" when there was
// nothing to do.
func (w *Watchdog) maxDeliveries(ctx context.Context, a advisory) (string, error) {
	raw, err := w.res.BatchStream.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", nil // gone already: another watchdog did it
	}
	if err != nil {
		return "", err
	}
	var hint batches.Batch
	if err := json.Unmarshal(raw.Data, &hint); err != nil {
		return "", w.res.BatchStream.DeleteMsg(ctx, a.StreamSeq)
	}
	reason := fmt.Sprintf("delivered %d times without finishing (the consumer's max deliveries): executors keep dying or hanging on it", a.Deliveries)
	if err := w.fail(ctx, hint, reason); err != nil {
		return "", err
	}
	err = w.res.BatchStream.DeleteMsg(ctx, a.StreamSeq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", err
	}
	return hint.Migration, nil
}

// terminated makes sure a batch whose message an executor terminated is
// failed in KV. The message is gone from the work-queue stream by then, so
// the batch is named by the termination reason executors give,
// "batch <migration>.<seq> epoch <n>: …" (bus.TermReason). It returns
// the batch's migration, or "" when the message was no batch's.
func (w *Watchdog) terminated(ctx context.Context, a advisory) (string, error) {
	migration, seq, epoch, why, ok := bus.ParseTermReason(a.Reason)
	if !ok || !batches.ValidName(migration) {
		return "", nil // not terminated by an executor on a batch's behalf
	}
	if err := w.fail(ctx, batches.Batch{Migration: migration, Seq: seq, Epoch: epoch}, why); err != nil {
		return "", err
	}
	return migration, nil
}

// fail marks the batch failed with reason, unless it is already settled or
// was republished under a newer epoch than the dead message's.
func (w *Watchdog) fail(ctx context.Context, hint batches.Batch, reason string) error {
	key := bus.BatchKey(hint.Migration, hint.Seq)
	for tries := 0; tries < 5; tries++ {
		entry, err := w.res.BatchesKV.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var rec batches.Batch
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			return err
		}
		if rec.Status == batches.BatchSucceeded || rec.Status == batches.BatchFailed || rec.Epoch != hint.Epoch {
			return nil
		}
		now := time.Now().UTC()
		rec.Status, rec.Owner, rec.FinishedAt, rec.UpdatedAt = batches.BatchFailed, "", &now, now
		rec.Errors = batches.AppendError(rec.Errors, batches.ErrorRecord{Time: now, Class: batches.ClassFatal, Message: reason, Attempt: rec.Attempts, Seq: rec.Seq, Executor: w.cfg.ID})
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if _, err := w.res.BatchesKV.Update(ctx, key, data, entry.Revision()); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		} else if err != nil {
			return err
		}
		w.log.Error("watchdog: batch failed", "migration", rec.Migration, "batch", rec.Seq, "reason", reason)
		_, _ = w.pub.Publish(ctx, events.BatchFailed, events.Data{
			Migration: rec.Migration, Batch: &events.BatchRef{Seq: rec.Seq, Lo: rec.Lo, LoInclusive: rec.LoInclusive, Hi: rec.Hi},
			Attempt: rec.Attempts, Epoch: rec.Epoch, Error: &events.Error{Class: batches.ClassFatal, Message: reason}, Reason: reason,
		})
		return nil
	}
	return fmt.Errorf("fail batch %s: the record keeps changing", key)
}
