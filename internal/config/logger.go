package config

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// NewLogger builds the process logger from --log-format and --log-level.
// format is "text" or "json", level "debug", "info", "warn" or "error", in
// any case; empty means the default (text, info), so tests and embedding
// programs need not spell it out.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	f, err := parseLogFormat(format)
	if err != nil {
		return nil, err
	}
	l, err := parseLogLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: l}
	if f == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func parseLogFormat(s string) (string, error) {
	switch f := strings.ToLower(strings.TrimSpace(s)); f {
	case "":
		return DefaultLogFormat, nil
	case "text", "json":
		return f, nil
	default:
		return "", fmt.Errorf("invalid log format %q: use text or json", s)
	}
}

// parseLogLevel takes only the four names: slog's own parser also takes
// "info+2" and the like, which no one should have to read in a manifest.
func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("invalid log level %q: use debug, info, warn or error", s)
	}
}
