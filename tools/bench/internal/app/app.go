// Package app runs the benchmark harness: it runs the chosen rows, each
// against its same-run baseline, and writes bench/results/latest.json and
// latest.md.
package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/witnz/witnz/libs/pgbin"
	"github.com/witnz/witnz/tools/bench/internal/bareraft"
	"github.com/witnz/witnz/tools/bench/internal/config"
	"github.com/witnz/witnz/tools/bench/internal/cpuuse"
	"github.com/witnz/witnz/tools/bench/internal/report"
	"github.com/witnz/witnz/tools/bench/internal/rows"
)

// A row starts once the machine was less than settleBusy busy over two
// seconds, or after settleMax: the previous row's tail (autovacuum,
// checkpoints, write-back) must not weigh on it.
const (
	settleBusy = 0.15
	settleMax  = 90 * time.Second
)

// Run is the whole harness.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) > 0 && args[0] == bareraft.Command {
		// B11 starts this binary again as the nodes of its bare Raft
		// cluster.
		return bareraft.Serve(ctx, args[1:], stderr)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	defs := rows.Defs()
	var ids []string
	for _, d := range defs {
		ids = append(ids, d.ID)
	}
	cfg, err := config.Parse(args, getenv, ids)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(cfg.Rows) == 0 {
		cfg.Rows = ids
	}
	if err := os.MkdirAll(cfg.Work, 0o755); err != nil {
		return err
	}
	// PostgreSQL runs as the postgres user and must reach its directories.
	if err := os.Chmod(cfg.Work, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(cfg.Work, "run-")
	if err != nil {
		return err
	}
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}

	env := &rows.Env{D: rows.Full, Repo: cfg.Repo, Bin: cfg.Bin, Work: work, Log: stderr, Self: self}
	mode := "full"
	if cfg.Quick {
		env.D, mode = rows.Quick, "quick"
	}
	pgBin, _ := pgbin.Dir()
	res := &report.Result{Version: report.Version, Mode: mode, Selected: cfg.Rows, Started: time.Now().UTC()}
	res.Commit, res.Dirty = report.GitCommit(ctx, cfg.Repo)
	res.Machine = report.Probe(ctx, pgBin)
	env.Logf("bench: %s mode, rows %s, scratch %s", mode, strings.Join(cfg.Rows, ","), work)

	for _, d := range defs {
		if !slices.Contains(cfg.Rows, d.ID) {
			continue
		}
		busy, waited := cpuuse.Settle(ctx, settleBusy, settleMax)
		if waited > 3*time.Second {
			env.Logf("waited %s for the machine to settle (busy %.0f %% of its cores)", waited.Round(time.Second), 100*busy)
		}
		t0 := time.Now()
		env.Logf("== %s %s", d.ID, d.Title)
		load0 := report.LoadAvg()
		out := d.Run(ctx, env)
		load1 := report.LoadAvg()
		if ctx.Err() != nil {
			_ = env.Close(context.Background())
			return fmt.Errorf("interrupted during %s: nothing written (scratch left in %s)", d.ID, work)
		}
		for i := range out {
			if out[i].Status == report.StatusMeasured || out[i].Status == "" {
				out[i].Notes = append(out[i].Notes, fmt.Sprintf("machine load average (1 min) %.1f before the row, %.1f after; the machine was %.0f %% busy when the row started (after waiting %s for it to settle below %.0f %%)", load0, load1, 100*busy, waited.Round(time.Second), 100*settleBusy))
			}
			out[i].Evaluate()
			env.Logf("%s: %s", out[i].ID, summary(out[i]))
		}
		res.Rows = append(res.Rows, out...)
		env.Logf("== %s done in %s", d.ID, time.Since(t0).Round(time.Second))
	}
	if err := env.Close(context.Background()); err != nil {
		env.Logf("stopping the bare PostgreSQL: %v", err)
	}
	res.GoBenchmarks = env.GoBenchmarks
	res.Finished = time.Now().UTC()
	res.Seconds = res.Finished.Sub(res.Started).Seconds()
	res.Machine.LoadAvgEnd = report.LoadAvg()
	if err := res.Write(cfg.Out); err != nil {
		return err
	}
	if !cfg.Keep {
		if err := os.RemoveAll(work); err != nil {
			env.Logf("removing %s: %v", work, err)
		}
	}
	env.Logf("wrote %s and %s (%s)", filepath.Join(cfg.Out, "latest.json"), filepath.Join(cfg.Out, "latest.md"), time.Duration(res.Seconds*float64(time.Second)).Round(time.Second))
	var broken []string
	for _, r := range res.Rows {
		if r.Status == report.StatusError {
			broken = append(broken, r.ID)
		}
	}
	if len(broken) > 0 {
		return fmt.Errorf("rows that could not be measured: %s (their reason is in latest.md)", strings.Join(broken, ", "))
	}
	return nil
}

func summary(r report.Row) string {
	switch {
	case r.Status != report.StatusMeasured:
		return r.Status + ": " + r.Reason
	case r.Latency != nil:
		s := fmt.Sprintf("p50 %.2f p99 %.2f max %.2f %s (n=%d)", r.Latency.P50, r.Latency.P99, r.Latency.Max, r.Unit, r.Latency.N)
		if r.BaselineLatency != nil {
			s += fmt.Sprintf("; baseline p50 %.2f p99 %.2f", r.BaselineLatency.P50, r.BaselineLatency.P99)
		}
		return s + " → " + r.Verdict
	}
	s := ""
	if r.Value != nil {
		s = fmt.Sprintf("%.0f %s", *r.Value, r.Unit)
	}
	if r.Baseline != nil {
		s += fmt.Sprintf(", baseline %.0f", *r.Baseline)
	}
	if r.Ratio != nil {
		s += fmt.Sprintf(", ratio %.2f", *r.Ratio)
	}
	return s + " → " + r.Verdict
}
