package common

import (
	"io"
	"log/slog"
	"os"
	"strings"
)

// NewLogger returns the JSON logger of one component, writing to stderr.
func NewLogger(component, level string) *slog.Logger {
	return NewLoggerTo(os.Stderr, component, level)
}

// NewLoggerTo is NewLogger writing to w.
func NewLoggerTo(w io.Writer, component, level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})).With("component", component)
}

// DiscardLogger returns a logger that drops everything (tests).
func DiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
