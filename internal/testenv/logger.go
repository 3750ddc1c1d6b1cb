package testenv

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
)

// Logger returns a logger writing to the test's log, shown when the test
// fails or runs with -v: the components' own account of what happened.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(&testHandler{t: t, mu: &sync.Mutex{}, level: slog.LevelDebug})
}

type testHandler struct {
	t     testing.TB
	mu    *sync.Mutex
	attrs []slog.Attr
	group string
	level slog.Level
}

func (h *testHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *testHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var buf bytes.Buffer
	th := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: h.level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.String(slog.TimeKey, a.Value.Time().Format("15:04:05.000"))
		}
		return a
	}})
	var handler slog.Handler = th
	if len(h.attrs) > 0 {
		handler = handler.WithAttrs(h.attrs)
	}
	if h.group != "" {
		handler = handler.WithGroup(h.group)
	}
	if err := handler.Handle(context.Background(), r); err != nil {
		return err
	}
	defer func() { _ = recover() }() // a log line after the test ended is dropped
	h.t.Log(string(bytes.TrimRight(buf.Bytes(), "\n")))
	return nil
}

func (h *testHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *testHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.group = name
	return &c
}
