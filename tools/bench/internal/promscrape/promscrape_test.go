package promscrape

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const before = `# HELP witnz_rpc_server_requests_total RPCs handled.
# TYPE witnz_rpc_server_requests_total counter
witnz_rpc_server_requests_total{code="ok",procedure="/witnz.witness.v1.WitnessService/Append"} 10
witnz_rpc_server_requests_total{code="ok",procedure="/witnz.witness.v1.WitnessService/GetStatus"} 5
witnz_rpc_server_duration_seconds_bucket{procedure="/witnz.witness.v1.WitnessService/Append",le="0.001"} 2
witnz_rpc_server_duration_seconds_bucket{procedure="/witnz.witness.v1.WitnessService/Append",le="0.002"} 6
witnz_rpc_server_duration_seconds_bucket{procedure="/witnz.witness.v1.WitnessService/Append",le="+Inf"} 10
witnz_rpc_server_duration_seconds_sum{procedure="/witnz.witness.v1.WitnessService/Append"} 0.03
witnz_rpc_server_duration_seconds_count{procedure="/witnz.witness.v1.WitnessService/Append"} 10
process_cpu_seconds_total 1.5
`

const after = `witnz_rpc_server_requests_total{code="ok",procedure="/witnz.witness.v1.WitnessService/Append"} 110
witnz_rpc_server_requests_total{code="unavailable",procedure="/witnz.witness.v1.WitnessService/Append"} 1
witnz_rpc_server_requests_total{code="ok",procedure="/witnz.witness.v1.WitnessService/GetStatus"} 5
witnz_rpc_server_duration_seconds_bucket{procedure="/witnz.witness.v1.WitnessService/Append",le="0.001"} 12
witnz_rpc_server_duration_seconds_bucket{procedure="/witnz.witness.v1.WitnessService/Append",le="0.002"} 86
witnz_rpc_server_duration_seconds_bucket{procedure="/witnz.witness.v1.WitnessService/Append",le="+Inf"} 111
witnz_rpc_server_duration_seconds_sum{procedure="/witnz.witness.v1.WitnessService/Append"} 0.23
witnz_rpc_server_duration_seconds_count{procedure="/witnz.witness.v1.WitnessService/Append"} 111
process_cpu_seconds_total 2.5 1700000000000
label_escape{a="x\"y,z",b="2"} 7
`

func mustParse(t *testing.T, s string) Samples {
	t.Helper()
	ss, err := Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

func TestSumAndHistogram(t *testing.T) {
	a, b := mustParse(t, before), mustParse(t, after)
	append := map[string]string{"procedure": "/witnz.witness.v1.WitnessService/Append"}
	if got := b.Sum("witnz_rpc_server_requests_total", append) - a.Sum("witnz_rpc_server_requests_total", append); got != 101 {
		t.Errorf("Append requests in between = %v, want 101", got)
	}
	if got := b.Sum("process_cpu_seconds_total", nil); got != 2.5 {
		t.Errorf("a sample with a timestamp = %v, want 2.5", got)
	}
	if got := b.Sum("label_escape", map[string]string{"a": `x"y,z`, "b": "2"}); got != 7 {
		t.Errorf("escaped label value: %v, want 7", got)
	}
	h := b.Histogram("witnz_rpc_server_duration_seconds", append).Sub(a.Histogram("witnz_rpc_server_duration_seconds", append))
	want := Histogram{Buckets: []Bucket{{0.001, 10}, {0.002, 80}, {math.Inf(1), 101}}, Sum: 0.2, Count: 101}
	if diff := cmp.Diff(want, h, cmp.Comparer(func(x, y float64) bool { return math.Abs(x-y) < 1e-9 || (math.IsInf(x, 1) && math.IsInf(y, 1)) })); diff != "" {
		t.Fatalf("histogram in between (-want +got):\n%s", diff)
	}
	// Rank 50.5 lies in (0.001, 0.002] with 10 below and 80 at its top.
	if got, want := h.Quantile(0.5), 0.001+0.001*(50.5-10)/70; math.Abs(got-want) > 1e-12 {
		t.Errorf("p50 = %v, want %v", got, want)
	}
	// Rank 99.99 falls in +Inf: the largest finite bound.
	if got := h.Quantile(0.99); got != 0.002 {
		t.Errorf("p99 = %v, want 0.002", got)
	}
	if got := (Histogram{}).Quantile(0.5); !math.IsNaN(got) {
		t.Errorf("quantile of nothing = %v, want NaN", got)
	}
}
