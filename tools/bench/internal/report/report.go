// Package report holds the result of a benchmark run and writes it as
// bench/results/latest.json and a readable latest.md.
package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/witnz/witnz/tools/bench/internal/gobench"
	"github.com/witnz/witnz/tools/bench/internal/stats"
)

// Version of the latest.json layout. Fields are only ever added.
const Version = 1

// Row statuses.
const (
	StatusMeasured         = "measured"
	StatusNotYetMeasurable = "not yet measurable"
	StatusError            = "error"
)

// Verdicts, against the floor of a row.
const (
	VerdictPass    = "pass"
	VerdictFail    = "fail"
	VerdictNoFloor = "no floor"
)

// Bound is one condition of a target or a floor: On (value, ratio, p50,
// p99) Op (>= or <=) Value.
type Bound struct {
	On    string  `json:"on"`
	Op    string  `json:"op"`
	Value float64 `json:"value"`
}

// Window is the stretch of time a throughput figure was taken over.
type Window struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Seconds float64   `json:"seconds"`
	// What the window is, e.g. "from 5 s after the load started to the end
	// of the load".
	Description string `json:"description,omitempty"`
}

// Row is one measured figure beside its same-run baseline.
type Row struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	// Reason says why a row is not measured, or what failed.
	Reason string `json:"reason,omitempty"`

	Metric string   `json:"metric,omitempty"`
	Value  *float64 `json:"value"`
	Unit   string   `json:"unit,omitempty"`
	// Latency holds the distribution of a latency row (Value is then its
	// p99).
	Latency *stats.Summary `json:"latency,omitempty"`

	BaselineMetric  string         `json:"baseline_metric,omitempty"`
	Baseline        *float64       `json:"baseline_value"`
	BaselineUnit    string         `json:"baseline_unit,omitempty"`
	BaselineLatency *stats.Summary `json:"baseline_latency,omitempty"`
	// Ratio is Value / Baseline.
	Ratio *float64 `json:"ratio"`

	Target     []Bound `json:"target,omitempty"`
	TargetText string  `json:"target_text,omitempty"`
	Floor      []Bound `json:"floor,omitempty"`
	FloorText  string  `json:"floor_text,omitempty"`
	// Verdict is pass or fail against the floor, "no floor" when the row
	// has none, or the status when the row was not measured.
	Verdict   string `json:"verdict"`
	TargetMet *bool  `json:"target_met"`

	Window  *Window  `json:"window,omitempty"`
	Samples int      `json:"samples,omitempty"`
	Notes   []string `json:"notes,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Hostname     string  `json:"hostname"`
	CPUModel     string  `json:"cpu_model"`
	Cores        int     `json:"cores"`
	MemoryBytes  uint64  `json:"memory_bytes"`
	Kernel       string  `json:"kernel"`
	GoVersion    string  `json:"go_version"`
	PGVersion    string  `json:"pg_version"`
	LoadAvgStart float64 `json:"load_avg_1m_start"`
	LoadAvgEnd   float64 `json:"load_avg_1m_end"`
}

// Result is the whole run.
type Result struct {
	Version  int       `json:"version"`
	Mode     string    `json:"mode"`
	Selected []string  `json:"selected_rows"`
	Commit   string    `json:"git_commit"`
	Dirty    bool      `json:"git_dirty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Seconds  float64   `json:"duration_seconds"`
	Machine  Machine   `json:"machine"`
	Rows     []Row     `json:"rows"`
	// GoBenchmarks are the raw `go test -bench` results behind B4 and B6.
	GoBenchmarks []gobench.Result `json:"go_benchmarks,omitempty"`
}

// F returns a pointer to v, for the optional numbers of a Row.
func F(v float64) *float64 { return &v }

// Evaluate fills Ratio, Verdict and TargetMet from the figures and bounds.
func (r *Row) Evaluate() {
	if r.Status == "" {
		r.Status = StatusMeasured
	}
	if r.Status != StatusMeasured {
		r.Verdict = r.Status
		r.Ratio, r.TargetMet = nil, nil
		return
	}
	if r.Value != nil && r.Baseline != nil && *r.Baseline != 0 && !math.IsNaN(*r.Value) {
		r.Ratio = F(*r.Value / *r.Baseline)
	}
	if len(r.Target) > 0 {
		met, known := r.check(r.Target)
		if known {
			r.TargetMet = &met
		}
	}
	r.Verdict = VerdictNoFloor
	if len(r.Floor) > 0 {
		met, known := r.check(r.Floor)
		switch {
		case !known:
			r.Verdict = VerdictFail
		case met:
			r.Verdict = VerdictPass
		default:
			r.Verdict = VerdictFail
		}
	}
}

// check reports whether every bound holds, and whether every bound could be
// evaluated.
func (r *Row) check(bounds []Bound) (met, known bool) {
	met, known = true, true
	for _, b := range bounds {
		v, ok := r.figure(b.On)
		if !ok {
			known = false
			continue
		}
		switch b.Op {
		case ">=":
			met = met && v >= b.Value
		case "<=":
			met = met && v <= b.Value
		default:
			known = false
		}
	}
	return met, known
}

func (r *Row) figure(on string) (float64, bool) {
	switch on {
	case "value":
		if r.Value != nil {
			return *r.Value, true
		}
	case "ratio":
		if r.Ratio != nil {
			return *r.Ratio, true
		}
	case "p50":
		if r.Latency != nil && r.Latency.N > 0 {
			return r.Latency.P50, true
		}
	case "p99":
		if r.Latency != nil && r.Latency.N > 0 {
			return r.Latency.P99, true
		}
	}
	return 0, false
}

// Write writes latest.json and latest.md into dir.
func (res *Result) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "latest.json"), append(b, '\n')); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "latest.md"), []byte(res.Markdown()))
}

// writeFile replaces path atomically, so an interrupted run never leaves
// half a file behind.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
