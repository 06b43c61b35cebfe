// Package logging sets up the slog logger every witnz process uses: JSON
// lines on stderr by default, with the service name on every record.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Options choose the level and format of a logger.
type Options struct {
	// Level is one of debug, info, warn, error; empty means info.
	Level string
	// Format is json (default) or text.
	Format string
}

// ParseLevel turns a level name into a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q is not one of debug, info, warn, error", s)
}

// Validate checks the options, naming the flag at fault.
func (o Options) Validate() error {
	if _, err := ParseLevel(o.Level); err != nil {
		return err
	}
	switch o.Format {
	case "", "json", "text":
		return nil
	}
	return fmt.Errorf("--log-format %q is not one of json, text", o.Format)
}

// New returns a logger writing to w with the service attribute set.
func New(w io.Writer, service string, o Options) (*slog.Logger, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	level, _ := ParseLevel(o.Level)
	ho := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if o.Format == "text" {
		h = slog.NewTextHandler(w, ho)
	} else {
		h = slog.NewJSONHandler(w, ho)
	}
	return slog.New(h).With("service", service), nil
}
