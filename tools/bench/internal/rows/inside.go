package rows

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/witnz/witnz/tools/bench/internal/promscrape"
	"github.com/witnz/witnz/tools/bench/internal/stack"
)

// Procedures of witness.v1.WitnessService as the RPC metrics name them.
const (
	procAppend    = "/witnz.witness.v1.WitnessService/Append"
	procGetStatus = "/witnz.witness.v1.WitnessService/GetStatus"
)

// inside is what the services' own /metrics say about a run: cdc-ingest's
// Appends (how many, how large, how long from send to the quorum's
// answer) and what each witness handled and how much CPU it used. It
// tells apart the parts of an end-to-end latency.
type inside struct {
	at      time.Time
	ingest  promscrape.Samples
	witness map[string]promscrape.Samples
	errs    []string
}

// scrapeInside reads every /metrics it can; failures are kept for the
// notes, not fatal.
func scrapeInside(ctx context.Context, s *stack.Stack) *inside {
	in := &inside{at: time.Now(), witness: map[string]promscrape.Samples{}}
	if svc, ok := s.Info.Services["cdc-ingest"]; ok && svc.Admin != "" {
		ss, err := promscrape.Get(ctx, svc.Admin+"/metrics")
		if err != nil {
			in.errs = append(in.errs, "cdc-ingest: "+err.Error())
		}
		in.ingest = ss
	}
	for _, w := range s.Info.Witnesses {
		if w.Admin == "" {
			continue
		}
		ss, err := promscrape.Get(ctx, w.Admin+"/metrics")
		if err != nil {
			in.errs = append(in.errs, w.ID+": "+err.Error())
			continue
		}
		in.witness[w.ID] = ss
	}
	return in
}

// insideNote describes the run between two scrapes.
func insideNote(a, b *inside) string {
	sec := b.at.Sub(a.at).Seconds()
	if sec <= 0 {
		return ""
	}
	var parts []string
	if a.ingest != nil && b.ingest != nil {
		took := b.ingest.Histogram("witnz_cdc_append_seconds", nil).Sub(a.ingest.Histogram("witnz_cdc_append_seconds", nil))
		batch := b.ingest.Histogram("witnz_cdc_append_batch_entries", nil).Sub(a.ingest.Histogram("witnz_cdc_append_batch_entries", nil))
		parts = append(parts, fmt.Sprintf("cdc-ingest sent %.0f Appends/s of %.1f entries on average; send → quorum's answer mean %s, p50 ~%s, p99 ~%s ms (from its histogram)",
			took.Count/sec, batch.Mean(), ms(took.Mean()), ms(took.Quantile(0.5)), ms(took.Quantile(0.99))))
	}
	var ws []string
	for id, sb := range b.witness {
		sa, ok := a.witness[id]
		if !ok {
			continue
		}
		app := map[string]string{"procedure": procAppend}
		st := map[string]string{"procedure": procGetStatus}
		appends := (sb.Sum("witnz_rpc_server_requests_total", app) - sa.Sum("witnz_rpc_server_requests_total", app)) / sec
		polls := (sb.Sum("witnz_rpc_server_requests_total", st) - sa.Sum("witnz_rpc_server_requests_total", st)) / sec
		cpu := 100 * (sb.Sum("process_cpu_seconds_total", nil) - sa.Sum("process_cpu_seconds_total", nil)) / sec
		w := fmt.Sprintf("%s %.0f %% CPU, %.0f Append/s", id, cpu, appends)
		if appends > 0 {
			h := sb.Histogram("witnz_rpc_server_duration_seconds", app).Sub(sa.Histogram("witnz_rpc_server_duration_seconds", app))
			w += fmt.Sprintf(" handled in p50 ~%s, p99 ~%s ms", ms(h.Quantile(0.5)), ms(h.Quantile(0.99)))
		}
		if polls > 0 {
			w += fmt.Sprintf(", %.0f GetStatus/s", polls)
		}
		ws = append(ws, w)
	}
	if len(ws) > 0 {
		slices.Sort(ws)
		parts = append(parts, "witnesses: "+strings.Join(ws, "; "))
	}
	errs := append(append([]string(nil), a.errs...), b.errs...)
	if len(errs) > 0 {
		parts = append(parts, "unreadable metrics: "+strings.Join(errs, "; "))
	}
	if len(parts) == 0 {
		return ""
	}
	return "inside the pipeline during the run (services' /metrics): " + strings.Join(parts, "; ")
}

// ms formats seconds as milliseconds.
func ms(sec float64) string {
	if math.IsNaN(sec) {
		return "—"
	}
	return fmtMS(sec * 1000)
}
