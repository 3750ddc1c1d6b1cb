package planner

import (
	"math"
	"time"

	"github.com/batchflow/batchflow/pkg/batches"
)

// progressWindow is how far back the rate and ETA look: long enough to
// smooth out batch boundaries, short enough to follow a throttle.
const progressWindow = 30 * time.Second

// progressTracker keeps recent samples of rows and done fraction.
type progressTracker struct {
	lastEvent time.Time
	samples   []progressSample
}

type progressSample struct {
	at       time.Time
	rows     int64
	fraction float64
}

func (t *progressTracker) reset(now time.Time) {
	t.samples = []progressSample{{at: now}}
}

// rates adds a sample and returns rows per second and fraction per second
// over the window.
func (t *progressTracker) rates(now time.Time, rows int64, fraction float64) (rowsPerSec, fractionPerSec float64) {
	t.samples = append(t.samples, progressSample{at: now, rows: rows, fraction: fraction})
	for len(t.samples) > 2 && now.Sub(t.samples[1].at) > progressWindow {
		t.samples = t.samples[1:]
	}
	first := t.samples[0]
	dt := now.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0, 0
	}
	return float64(rows-first.rows) / dt, (fraction - first.fraction) / dt
}

// computeProgress estimates how far m is: by key span for integer keys (a
// running batch counts up to its checkpoint), by batches against the
// estimated total for string keys.
func (m *migration) computeProgress(now time.Time) batches.Progress {
	c := m.counters()
	p := batches.Progress{
		RowsAffected:     c.RowsAffected,
		BatchesSucceeded: c.BatchesSucceeded,
		BatchesFailed:    c.BatchesFailed,
		BatchesTotal:     m.estimatedBatches(),
		ETASeconds:       -1,
	}
	fraction := m.fractionDone()
	p.Percent = math.Round(fraction*1000) / 10
	rowsPerSec, fractionPerSec := m.progress.rates(now, c.RowsAffected, fraction)
	p.RowsPerSecond = math.Round(rowsPerSec*10) / 10
	switch {
	case fraction >= 1:
		p.ETASeconds = 0
	case fractionPerSec > 0:
		p.ETASeconds = int64(math.Ceil((1 - fraction) / fractionPerSec))
	}
	return p
}

// estimatedBatches is the number of batches the migration will have: exact
// once planning is done, else from the row estimate.
func (m *migration) estimatedBatches() int64 {
	planned := m.rec.Cursor.NextSeq
	if m.rec.Cursor.Done {
		return planned
	}
	size := int64(max(m.rec.Spec.BatchSize, 1))
	return max(planned+1, (m.rec.EstimatedRows+size-1)/size)
}

// fractionDone is the part of the key range done, 0 to 1.
func (m *migration) fractionDone() float64 {
	if m.rec.Cursor.Done && m.rec.Cursor.NextSeq == 0 {
		return 1 // nothing to do
	}
	lo, hi := m.rec.Min, m.rec.Max
	if lo.IsInt() && hi.IsInt() {
		total := float64(hi.Int()) - float64(lo.Int()) + 1
		if total <= 0 {
			return 0
		}
		var done float64
		for _, b := range m.batches {
			start := float64(b.Lo.Int())
			if b.LoInclusive {
				start--
			}
			switch {
			case b.Status == batches.BatchSucceeded:
				done += float64(b.Hi.Int()) - start
			case b.Checkpoint.IsInt():
				done += float64(b.Checkpoint.Int()) - start
			}
		}
		return math.Min(1, math.Max(0, done/total))
	}
	total := m.estimatedBatches()
	if total <= 0 {
		return 0
	}
	return math.Min(1, float64(m.counters().BatchesSucceeded)/float64(total))
}
