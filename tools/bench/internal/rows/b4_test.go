package rows

import (
	"bytes"
	"testing"

	"github.com/witnz/witnz/tools/bench/internal/gobench"
)

// The output of BenchmarkB4 as `go test -bench` prints it.
const b4Output = `goos: linux
goarch: amd64
pkg: github.com/witnz/witnz/services/verifier/internal/verify
cpu: AMD EPYC
BenchmarkB4-2   	       1	1234567890 ns/op	         0.9800 ratio	   1290000 copy-rows/s	        37.50 peak-rss-MB	   1250000 rows/s	       128.0 bytes/row
--- BENCH: BenchmarkB4-2
    bench_test.go:104: B4 1000000 rows: scan 1250000 rows/s (child process 1190000 rows/s), COPY baseline 1290000 rows/s, ratio 0.98, peak RSS 37.5 MiB, 128 bytes/row, GOMAXPROCS 2
PASS
ok  	github.com/witnz/witnz/services/verifier/internal/verify	30.1s
`

func TestB4Output(t *testing.T) {
	res, err := gobench.Parse(bytes.NewReader([]byte(b4Output)))
	if err != nil || len(res) != 1 || res[0].Name != "B4" {
		t.Fatalf("Parse = %+v, %v", res, err)
	}
	for unit, want := range map[string]float64{"rows/s": 1250000, "copy-rows/s": 1290000, "peak-rss-MB": 37.5} {
		if v, ok := res[0].Get(unit); !ok || v != want {
			t.Errorf("%s = %v, %v; want %v", unit, v, ok, want)
		}
	}
	if got := b4Line([]byte(b4Output)); got != "B4 1000000 rows: scan 1250000 rows/s (child process 1190000 rows/s), COPY baseline 1290000 rows/s, ratio 0.98, peak RSS 37.5 MiB, 128 bytes/row, GOMAXPROCS 2" {
		t.Errorf("b4Line = %q", got)
	}
	for n, want := range map[int]string{7: "7", 1000: "1,000", 10000000: "10,000,000", 123456: "123,456"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
