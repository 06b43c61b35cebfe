// Command bench is the witnz benchmark harness (`make bench`): it measures
// the rows of shared/BENCHMARKS.md on the real stack, each beside a
// baseline from the same run, and writes bench/results/latest.json and
// latest.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/witnz/witnz/tools/bench/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}
