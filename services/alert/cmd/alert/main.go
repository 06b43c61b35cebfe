// Command alert is the witnz alert service: the one sink for alerts from
// every service and host agent. It stores them in PostgreSQL, publishes new
// ones on Redis for the live feed, and registers host agents and records
// their tripwire events. See the README for flags and RPCs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "alert: %v\n", err)
		os.Exit(1)
	}
}
