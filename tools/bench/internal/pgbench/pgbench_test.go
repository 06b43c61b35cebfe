package pgbench

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSummary(t *testing.T) {
	out := `pgbench (15.14 (Debian 15.14-0+deb12u1))
transaction type: ins100.sql
scaling factor: 1
query mode: simple
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 5542
number of failed transactions: 0 (0.000%)
latency average = 7.240 ms
initial connection time = 10.777 ms
tps = 552.513067 (without initial connection time)
`
	var res Result
	if err := ParseSummary(out, &res); err != nil {
		t.Fatal(err)
	}
	if res.Transactions != 5542 || res.TPS != 552.513067 || res.LatencyAvgMS != 7.24 || res.Failed != 0 {
		t.Fatalf("ParseSummary = %+v", res)
	}
	if err := ParseSummary("connection refused", &res); err == nil {
		t.Fatal("ParseSummary accepted output without a tps line")
	}
}

func TestParseLog(t *testing.T) {
	log := "0 1 1500 0 1700000000 123456 250\n1 1 skipped 0 1700000000 123999 40000\n0 2 800 0 1700000000 124000 0\n"
	lat, lag, err := ParseLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]float64{1.5, 0.8}, lat); diff != "" {
		t.Errorf("latencies (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]float64{0.25, 0}, lag); diff != "" {
		t.Errorf("lags (-want +got):\n%s", diff)
	}
}
