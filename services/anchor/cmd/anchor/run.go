package main

import (
	"context"
	"errors"
	"io"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/services/anchor/internal/app"
	"github.com/witnz/witnz/services/anchor/internal/config"
)

// run starts the anchor service and serves until ctx ends. It returns a
// one-line error for any problem with the configuration or the environment.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Parse(args, getenv)
	if errors.Is(err, config.ErrHelp) {
		_, err = io.WriteString(stderr, config.Usage())
		return err
	}
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, "anchor", cfg.Log)
	if err != nil {
		return err
	}
	svc, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
