package main

import (
	"context"
	"io"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/services/gateway/internal/app"
	"github.com/witnz/witnz/services/gateway/internal/config"
)

// run parses the configuration, starts the gateway and serves until ctx
// ends. Logs go to stderr; a returned error is the one line main prints.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Parse(args, getenv)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := logging.New(stderr, "gateway", cfg.Log)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, log, app.Options{})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
