package rows

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/witnz/witnz/tools/bench/internal/gobench"
	"github.com/witnz/witnz/tools/bench/internal/report"
)

// b4Package is the verifier package whose BenchmarkB4 is the scan of a
// verification beside the bare COPY.
const (
	b4Module  = "services/verifier"
	b4Package = "./internal/verify/"
)

// runB4 runs the verifier's BenchmarkB4 over B4Rows rows: a PostgreSQL of
// its own (libs/testenv, the stack's settings), a table of about 128-byte
// rows, then in one process the bare `COPY (SELECT …) TO STDOUT (FORMAT
// binary)` into io.Discard (the baseline, after a run that warms the page
// cache) and the verifier's scan — COPY, key and data commitments,
// LtHash into the 1,024-bucket digest on every core — and in a child
// process the scan alone, whose peak RSS (getrusage) is the memory
// figure. Rows: B4 (rows/s beside the COPY) and B4.rss (peak RSS).
func runB4(ctx context.Context, e *Env) []report.Row {
	rows := e.D.B4Rows
	scan := report.Row{ID: "B4", Title: "full verification scan",
		Metric: fmt.Sprintf("verifier scan of a %s-row table (COPY binary, HMAC key and data commitments, LtHash into the bucket digest, every core), rows/s", thousands(rows)),
		Unit:   "rows/s", BaselineMetric: "`COPY … TO STDOUT (FORMAT binary)` of the same query into io.Discard, same process, same run", BaselineUnit: "rows/s",
		Target: []report.Bound{{On: "value", Op: ">=", Value: 1e6}, {On: "ratio", Op: ">=", Value: 0.4}}, TargetText: "≥ 1,000,000 rows/s and ≥ 0.4 × COPY",
		Floor: []report.Bound{{On: "value", Op: ">=", Value: 5e5}}, FloorText: "≥ 500,000 rows/s",
	}
	rss := report.Row{ID: "B4.rss", Title: "verification scan memory",
		Metric: fmt.Sprintf("peak RSS of a process that scans the %s-row table once", thousands(rows)), Unit: "MiB",
		Target: []report.Bound{{On: "value", Op: "<=", Value: 64}}, TargetText: "≤ 64 MB whatever the table size",
		Floor: []report.Bound{{On: "value", Op: "<=", Value: 64}}, FloorText: "≤ 64 MB",
	}
	dir := filepath.Join(e.Repo, b4Module)
	e.Logf("B4: BenchmarkB4 over %d rows in %s (generating the table takes about 10 s per million rows)", rows, b4Module)
	started := time.Now()
	res, out, err := runB4Bench(ctx, dir, rows)
	if err != nil {
		for _, r := range []*report.Row{&scan, &rss} {
			r.Status, r.Reason = report.StatusError, "BenchmarkB4 in "+b4Module+": "+firstLines(err.Error(), 8)
		}
		return []report.Row{scan, rss}
	}
	e.GoBenchmarks = append(e.GoBenchmarks, res)
	get := func(unit string) *float64 {
		if v, ok := res.Get(unit); ok {
			return report.F(v)
		}
		return nil
	}
	scan.Value, scan.Baseline = get("rows/s"), get("copy-rows/s")
	rss.Value = get("peak-rss-MB")
	if scan.Value == nil || scan.Baseline == nil || rss.Value == nil {
		for _, r := range []*report.Row{&scan, &rss} {
			r.Status, r.Reason = report.StatusError, "BenchmarkB4 reported no rows/s, copy-rows/s or peak-rss-MB: "+firstLines(string(out), 8)
		}
		return []report.Row{scan, rss}
	}
	scan.Samples = rows
	note := fmt.Sprintf("go test -run '^$' -bench '^BenchmarkB4$' -benchtime 1x %s in %s with WITNZ_B4_ROWS=%d (%s in all, table generation included); its own PostgreSQL (libs/testenv), on the same machine", b4Package, b4Module, rows, time.Since(started).Round(time.Second))
	scan.Notes = append(scan.Notes, note)
	if line := b4Line(out); line != "" {
		scan.Notes = append(scan.Notes, line)
	}
	if v, ok := res.Get("bytes/row"); ok {
		scan.Notes = append(scan.Notes, fmt.Sprintf("%.0f bytes per row in the COPY stream", v))
	}
	rss.Notes = append(rss.Notes, "peak RSS (getrusage ru_maxrss) of a child process that connects, describes the table and scans it once with every core (the same scan and digest as a verification's first pass), in the BenchmarkB4 run of row B4")
	rss.Samples = rows
	return []report.Row{scan, rss}
}

// runB4Bench runs BenchmarkB4 with every core (the scan hashes on all of
// them) and WITNZ_B4_ROWS set.
func runB4Bench(ctx context.Context, dir string, rows int) (gobench.Result, []byte, error) {
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return gobench.Result{}, nil, fmt.Errorf("%s does not exist", dir)
	}
	args := []string{"test", "-run", "^$", "-bench", "^BenchmarkB4$", "-benchtime", "1x", "-count", "1", "-timeout", "60m", b4Package}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "WITNZ_B4_ROWS="+strconv.Itoa(rows))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return gobench.Result{}, out, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, tail(out, 2000))
	}
	res, err := gobench.Parse(bytes.NewReader(out))
	if err != nil {
		return gobench.Result{}, out, err
	}
	for _, r := range res {
		if r.Name == "B4" {
			return r, out, nil
		}
	}
	return gobench.Result{}, out, fmt.Errorf("no BenchmarkB4 result in the output:\n%s", tail(out, 2000))
}

var b4LogLine = regexp.MustCompile(`B4 \d+ rows: .*`)

// b4Line is the benchmark's own summary line (child-process rate,
// GOMAXPROCS).
func b4Line(out []byte) string {
	return string(b4LogLine.Find(out))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// thousands writes n with comma separators.
func thousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
