package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/witnz/witnz/tools/bench/internal/stats"
)

// Markdown renders the run as a readable page: a header naming the machine,
// commit and times, one table row per figure, then the notes of each row.
func (res *Result) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# witnz benchmarks — latest run\n\n")
	fmt.Fprintf(&b, "- **When:** %s → %s (%s), %s mode, rows %s\n",
		res.Started.UTC().Format("2006-01-02 15:04:05"), res.Finished.UTC().Format("15:04:05 MST"),
		(time.Duration(res.Seconds) * time.Second).String(), res.Mode, strings.Join(res.Selected, ", "))
	commit := res.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if res.Dirty {
		commit += " (with uncommitted changes)"
	}
	fmt.Fprintf(&b, "- **Commit:** %s\n", commit)
	m := res.Machine
	fmt.Fprintf(&b, "- **Machine:** %s, %d cores, %.1f GiB, Linux %s, %s, %s; load average %.2f at the start, %.2f at the end\n",
		m.CPUModel, m.Cores, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.GoVersion, m.PGVersion, m.LoadAvgStart, m.LoadAvgEnd)
	fmt.Fprintf(&b, "- PostgreSQL, the witnesses, the services and the load generator share this machine. Each figure has its baseline measured in the same run; compare ratios, not absolute figures, across runs.\n\n")

	fmt.Fprintf(&b, "| id | metric | value | baseline (same run) | ratio | target | floor | verdict | window / samples |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range res.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.ID, cell(r.Metric, r.Title), valueCell(r), baselineCell(r), ratioCell(r.Ratio),
			dash(r.TargetText), dash(r.FloorText), verdictCell(r), windowCell(r))
	}
	var notes strings.Builder
	for _, r := range res.Rows {
		lines := r.Notes
		if r.Reason != "" {
			lines = append([]string{r.Reason}, lines...)
		}
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(&notes, "- **%s**", r.ID)
		if r.BaselineMetric != "" {
			fmt.Fprintf(&notes, " (baseline: %s)", r.BaselineMetric)
		}
		fmt.Fprintf(&notes, ": %s\n", strings.Join(lines, "; "))
	}
	if notes.Len() > 0 {
		fmt.Fprintf(&b, "\n## Notes\n\n%s", notes.String())
	}
	if len(res.GoBenchmarks) > 0 {
		fmt.Fprintf(&b, "\n## `go test -bench` results behind B4 and B6\n\n| package | benchmark | ns/op | other |\n|---|---|---|---|\n")
		for _, g := range res.GoBenchmarks {
			var other []string
			for _, m := range g.Metrics {
				if m.Unit != "ns/op" {
					other = append(other, num(m.Value)+" "+m.Unit)
				}
			}
			ns, _ := g.Get("ns/op")
			pkg := g.Package
			if i := strings.Index(pkg, "/libs/"); i >= 0 {
				pkg = pkg[i+1:]
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", pkg, g.Name, num(ns), dash(strings.Join(other, ", ")))
		}
	}
	return b.String()
}

func cell(s, fallback string) string {
	if s == "" {
		s = fallback
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return cell(s, "")
}

func valueCell(r Row) string {
	switch {
	case r.Status == StatusNotYetMeasurable:
		return "not yet measurable"
	case r.Status == StatusError:
		return "error"
	case r.Latency != nil:
		return latencyCell(*r.Latency, r.Unit)
	case r.Value != nil:
		return num(*r.Value) + " " + r.Unit
	}
	return "—"
}

func baselineCell(r Row) string {
	unit := r.BaselineUnit
	if unit == "" {
		unit = r.Unit
	}
	switch {
	case r.BaselineLatency != nil:
		return latencyCell(*r.BaselineLatency, unit)
	case r.Baseline != nil:
		return num(*r.Baseline) + " " + unit
	case r.BaselineMetric != "" && r.Status == StatusMeasured:
		return "none: " + cell(r.BaselineMetric, "")
	}
	return "—"
}

func latencyCell(s stats.Summary, unit string) string {
	if s.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s · p90 %s · p99 %s · max %s %s (n=%d)", num(s.P50), num(s.P90), num(s.P99), num(s.Max), unit, s.N)
}

func ratioCell(r *float64) string {
	if r == nil {
		return "—"
	}
	return strconv.FormatFloat(*r, 'f', 2, 64)
}

func verdictCell(r Row) string {
	v := r.Verdict
	if r.TargetMet != nil {
		if *r.TargetMet {
			v += ", target met"
		} else {
			v += ", target missed"
		}
	}
	return v
}

func windowCell(r Row) string {
	var parts []string
	if r.Window != nil {
		parts = append(parts, fmt.Sprintf("%.1f s", r.Window.Seconds))
	}
	if r.Samples > 0 {
		parts = append(parts, "n="+strconv.Itoa(r.Samples))
	}
	return dash(strings.Join(parts, ", "))
}

// num prints a figure readably: thousands separators for large numbers,
// three significant digits for small ones.
func num(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "—"
	case math.Abs(v) >= 1000:
		return group(int64(math.Round(v)))
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case math.Abs(v) >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
