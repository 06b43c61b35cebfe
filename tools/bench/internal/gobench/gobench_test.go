package gobench

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/witnz/witnz/libs/tlog
cpu: Intel(R) Xeon(R) Processor
BenchmarkAppend          	 3045266	       393.2 ns/op	  81.38 MB/s	      16 B/op	       0 allocs/op
BenchmarkInclusionProof-2	  500000	      2400 ns/op	    1234 B/op	      12 allocs/op
BenchmarkProof/size=1024-2 	  100000	     10000 ns/op	 123456 leaves/s
BenchmarkBroken some log line from the benchmark
PASS
ok  	github.com/witnz/witnz/libs/tlog	3.1s
pkg: github.com/witnz/witnz/libs/commitment
BenchmarkDataCommit 	 2000000	       600.0 ns/op
`

func TestParse(t *testing.T) {
	got, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	const tlog, commit = "github.com/witnz/witnz/libs/tlog", "github.com/witnz/witnz/libs/commitment"
	want := []Result{
		{Package: tlog, Name: "Append", Procs: 1, Iterations: 3045266, Metrics: []Metric{{393.2, "ns/op"}, {81.38, "MB/s"}, {16, "B/op"}, {0, "allocs/op"}}},
		{Package: tlog, Name: "InclusionProof", Procs: 2, Iterations: 500000, Metrics: []Metric{{2400, "ns/op"}, {1234, "B/op"}, {12, "allocs/op"}}},
		{Package: tlog, Name: "Proof/size=1024", Procs: 2, Iterations: 100000, Metrics: []Metric{{10000, "ns/op"}, {123456, "leaves/s"}}},
		{Package: commit, Name: "DataCommit", Procs: 1, Iterations: 2000000, Metrics: []Metric{{600, "ns/op"}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Parse (-want +got):\n%s", diff)
	}
	if ps := got[3].PerSecond(); ps < 1666666 || ps > 1666667 {
		t.Fatalf("PerSecond = %v", ps)
	}
}

func TestBest(t *testing.T) {
	rs := []Result{
		{Package: "p", Name: "A", Metrics: []Metric{{200, "ns/op"}}},
		{Package: "p", Name: "B", Metrics: []Metric{{10, "ns/op"}}},
		{Package: "p", Name: "A", Metrics: []Metric{{100, "ns/op"}}},
		{Package: "p", Name: "A", Metrics: []Metric{{150, "ns/op"}}},
	}
	want := []Result{
		{Package: "p", Name: "A", Metrics: []Metric{{100, "ns/op"}}, Runs: 3, Spread: 1},
		{Package: "p", Name: "B", Metrics: []Metric{{10, "ns/op"}}, Runs: 1},
	}
	if diff := cmp.Diff(want, Best(rs)); diff != "" {
		t.Fatalf("Best (-want +got):\n%s", diff)
	}
}
