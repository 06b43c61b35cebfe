package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/witnz/witnz/tools/bench/internal/stats"
)

func TestEvaluate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		row       Row
		verdict   string
		targetMet *bool
		ratio     *float64
	}{
		{
			name: "throughput above the floor, below the target",
			row: Row{Value: F(30000), Baseline: F(60000),
				Target: []Bound{{On: "value", Op: ">=", Value: 50000}}, Floor: []Bound{{On: "value", Op: ">=", Value: 25000}}},
			verdict: VerdictPass, targetMet: new(false), ratio: F(0.5),
		},
		{
			name: "ratio floor missed",
			row: Row{Value: F(6), Baseline: F(10),
				Target: []Bound{{On: "ratio", Op: ">=", Value: 0.85}}, Floor: []Bound{{On: "ratio", Op: ">=", Value: 0.7}}},
			verdict: VerdictFail, targetMet: new(false), ratio: F(0.6),
		},
		{
			name: "latency percentiles",
			row: Row{Value: F(8), Latency: &stats.Summary{N: 10, P50: 2, P99: 8},
				Target: []Bound{{On: "p50", Op: "<=", Value: 3}, {On: "p99", Op: "<=", Value: 10}}, Floor: []Bound{{On: "p99", Op: "<=", Value: 50}}},
			verdict: VerdictPass, targetMet: new(true),
		},
		{
			name:    "no floor",
			row:     Row{Value: F(1)},
			verdict: VerdictNoFloor,
		},
		{
			name:    "a floor that cannot be evaluated fails",
			row:     Row{Floor: []Bound{{On: "p99", Op: "<=", Value: 50}}},
			verdict: VerdictFail,
		},
		{
			name:    "not measurable",
			row:     Row{Status: StatusNotYetMeasurable, Reason: "later", Value: F(1), Baseline: F(1)},
			verdict: StatusNotYetMeasurable,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.row
			r.Evaluate()
			if r.Verdict != tc.verdict {
				t.Errorf("verdict %q, want %q", r.Verdict, tc.verdict)
			}
			if !eqBool(r.TargetMet, tc.targetMet) {
				t.Errorf("target met %v, want %v", deref(r.TargetMet), deref(tc.targetMet))
			}
			if !eqFloat(r.Ratio, tc.ratio) {
				t.Errorf("ratio %v, want %v", r.Ratio, tc.ratio)
			}
		})
	}
}

func eqBool(a, b *bool) bool     { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
func eqFloat(a, b *float64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	res := &Result{Version: Version, Mode: "quick", Selected: []string{"B1", "B4"}, Commit: "0123456789abcdef0123", Dirty: true,
		Started: start, Finished: start.Add(90 * time.Second), Seconds: 90,
		Machine: Machine{CPUModel: "cpu", Cores: 2, MemoryBytes: 8 << 30, Kernel: "6.1", GoVersion: "go1.26", PGVersion: "15"},
		Rows: []Row{
			{ID: "B1", Title: "ingest", Metric: "rows/s | seen", Value: F(51234.4), Unit: "rows/s", Baseline: F(100000), BaselineMetric: "pgbench",
				Window: &Window{Seconds: 9.5}, Notes: []string{"a note"}},
			{ID: "B2", Title: "latency", Metric: "ms", Value: F(9), Unit: "ms", Latency: &stats.Summary{N: 100, P50: 1.5, P90: 4, P99: 9, Max: 12},
				Baseline: F(2), BaselineLatency: &stats.Summary{N: 200, P50: 0.5, P90: 1, P99: 2, Max: 3}, Samples: 100},
			{ID: "B4", Title: "verification", Metric: "rows/s", Status: StatusNotYetMeasurable, Reason: "issue 7"},
		},
	}
	for i := range res.Rows {
		res.Rows[i].Evaluate()
	}
	if err := res.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != 3 || *back.Rows[0].Ratio != 0.512344 || back.Rows[2].Verdict != StatusNotYetMeasurable {
		t.Fatalf("latest.json round trip: %+v", back.Rows)
	}
	md, err := os.ReadFile(filepath.Join(dir, "latest.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"quick mode, rows B1, B4",
		"0123456789ab (with uncommitted changes)",
		"| B1 | rows/s \\| seen | 51,234 rows/s | 100,000 rows/s | 0.51 |",
		"p50 1.50 · p90 4.00 · p99 9.00 · max 12.0 ms (n=100)",
		"| B4 | rows/s | not yet measurable |",
		"- **B4**: issue 7",
		"- **B1** (baseline: pgbench): a note",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("latest.md lacks %q:\n%s", want, md)
		}
	}
}
