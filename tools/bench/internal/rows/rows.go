package rows

import (
	"context"

	"github.com/witnz/witnz/tools/bench/internal/report"
)

// Def is one row of shared/BENCHMARKS.md and how to run it.
type Def struct {
	ID    string
	Title string
	Run   func(ctx context.Context, e *Env) []report.Row
}

// Defs lists every row in order.
func Defs() []Def {
	return []Def{
		{ID: "B1", Title: "sustained end-to-end ingest", Run: runB1},
		{ID: "B2", Title: "commit → quorum-durable latency", Run: runB2},
		{ID: "B3", Title: "UPDATE → alert on 100 stream clients", Run: runB3},
		{ID: "B4", Title: "full verification scan", Run: runB4},
		{ID: "B5", Title: "application overhead", Run: runB5},
		{ID: "B6", Title: "commitment core per core", Run: runB6},
		notYet("B7", "host agent idle",
			"host agent RSS and CPU with eBPF loaded and ~1k watches",
			"the host agent has no watchers yet (eBPF exec, inotify): they arrive with the host-agent issue"),
		notYet("B8", "host agent under load",
			"exec events/s with zero drops, inotify events/s with zero overflows, baseline scan files/s",
			"the host agent has no watchers yet (eBPF exec, inotify, baseline scan): they arrive with the host-agent issue"),
		{ID: "B9", Title: "alert ingest", Run: runB9},
		notYet("B10", "live fan-out to 1,000 clients",
			"deliveries/s to 1,000 stream/WebSocket clients, publish → client p99",
			"the gateway serves no WebSocket feed yet; a fan-out to 1,000 Connect streams alone would load the 2-core machine with the harness's own 1,000 in-process clients as much as the gateway, so it waits for the WebSocket feed and a separate client process"),
		{ID: "B11", Title: "witness append beside bare Raft", Run: runB11},
	}
}

func notYet(id, title, metric, reason string) Def {
	return Def{ID: id, Title: title, Run: func(context.Context, *Env) []report.Row {
		return []report.Row{{ID: id, Title: title, Metric: metric, Status: report.StatusNotYetMeasurable, Reason: reason}}
	}}
}
