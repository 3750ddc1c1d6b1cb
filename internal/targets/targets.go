// Package targets keeps one open sink per configured target, opened on
// first use, for the planner and the executors.
package targets

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/batchflow/batchflow/internal/config"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Set is the targets a process may run migrations on. It is safe for
// concurrent use.
type Set struct {
	dsns map[string]string
	opts sink.Options

	mu    sync.Mutex
	sinks map[string]sink.Sink
}

// New returns a set over name → DSN.
func New(dsns map[string]string, opts sink.Options) *Set {
	return &Set{dsns: dsns, opts: opts, sinks: map[string]sink.Sink{}}
}

// Names lists the configured target names, sorted.
func (s *Set) Names() []string {
	names := make([]string, 0, len(s.dsns))
	for n := range s.dsns {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Has reports whether name is configured.
func (s *Set) Has(name string) bool {
	_, ok := s.dsns[name]
	return ok
}

// ErrUnknownTarget is returned for a target name that is not configured.
var ErrUnknownTarget = fmt.Errorf("unknown target")

// Sink returns the open sink of target name, opening it on first use. A
// failed open is not cached: the next call tries again.
func (s *Set) Sink(ctx context.Context, name string) (sink.Sink, error) {
	dsn, ok := s.dsns[name]
	if !ok {
		known := "none are configured"
		if names := s.Names(); len(names) > 0 {
			known = "configured targets are " + strings.Join(names, ", ")
		}
		return nil, fmt.Errorf("%w %q: %s (--target NAME=DSN)", ErrUnknownTarget, name, known)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sk, ok := s.sinks[name]; ok {
		return sk, nil
	}
	sk, err := sink.Open(ctx, dsn, s.opts)
	if err != nil {
		return nil, fmt.Errorf("target %s (%s): %w", name, config.RedactDSN(dsn), err)
	}
	s.sinks[name] = sk
	return sk, nil
}

// Close closes every open sink.
func (s *Set) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, sk := range s.sinks {
		_ = sk.Close()
		delete(s.sinks, name)
	}
}
