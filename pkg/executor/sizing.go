package executor

import (
	"slices"
	"time"

	"github.com/batchflow/batchflow/pkg/batches"
)

// sizer adapts the sub-batch size toward a time target, Spirit-style: from
// the p90 of recent sub-batch times, growing at most 1.5× a step, cutting to
// a tenth after a sub-batch over 5× the target, within the spec's bounds.
type sizer struct {
	size   int
	target time.Duration // 0: fixed size
	recent []time.Duration
}

// sizerWindow is how many recent sub-batches the p90 is taken over.
const sizerWindow = 10

func newSizer(size int, target time.Duration) *sizer {
	return &sizer{size: size, target: target}
}

// observe records how long a sub-batch of the current size took and
// returns the new size, and whether it changed enough to report.
func (s *sizer) observe(took time.Duration) (size int, changed bool) {
	if s.target <= 0 {
		return s.size, false
	}
	old := s.size
	if took > 5*s.target {
		// Far over: the table or the database is not what the size assumed.
		s.size = max(batches.MinSubBatchSize, s.size/10)
		s.recent = s.recent[:0]
		return s.size, true
	}
	s.recent = append(s.recent, took)
	if len(s.recent) > sizerWindow {
		s.recent = s.recent[len(s.recent)-sizerWindow:]
	}
	if len(s.recent) < 3 && took <= s.target {
		// Too few samples to move on, unless the first ones run long.
		return s.size, false
	}
	p90 := percentile90(s.recent)
	if p90 <= 0 {
		return s.size, false
	}
	next := int(float64(s.size) * float64(s.target) / float64(p90))
	next = min(next, s.size*3/2)
	next = max(min(next, batches.MaxSubBatchSize), batches.MinSubBatchSize)
	// Ignore small changes: each one is reported, and jitter is not news.
	if abs(next-old)*10 < old {
		return s.size, false
	}
	s.size = next
	s.recent = s.recent[:0]
	return s.size, true
}

// percentile90 is the nearest-rank 90th percentile: the ceil(0.9·n)-th value.
func percentile90(ds []time.Duration) time.Duration {
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	return sorted[(len(sorted)*9+9)/10-1]
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
