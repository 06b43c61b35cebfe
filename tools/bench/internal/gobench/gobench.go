// Package gobench runs `go test -bench` in a module directory and parses
// its output into results.
package gobench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
)

// Metric is one value of a benchmark line, e.g. 1050 "ns/op".
type Metric struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Result is one benchmark line.
type Result struct {
	Package string `json:"package"`
	// Name without the "Benchmark" prefix and the -GOMAXPROCS suffix,
	// e.g. "Append" or "Proof/size=1024".
	Name       string   `json:"name"`
	Procs      int      `json:"procs"`
	Iterations int64    `json:"iterations"`
	Metrics    []Metric `json:"metrics"`
	// Runs is how many runs Best chose this one from (the fastest), and
	// Spread the slowest ns/op over the fastest, minus one.
	Runs   int     `json:"runs,omitempty"`
	Spread float64 `json:"spread,omitempty"`
}

// Best keeps, for every benchmark, its fastest run (lowest ns/op) of the
// several -count gave: on a shared machine the fastest run is the one least
// disturbed by others. Order follows the first appearance.
func Best(rs []Result) []Result {
	type k struct{ pkg, name string }
	idx := map[k]int{}
	var out []Result
	worst := map[k]float64{}
	for _, r := range rs {
		key := k{r.Package, r.Name}
		ns, _ := r.Get("ns/op")
		worst[key] = max(worst[key], ns)
		i, ok := idx[key]
		if !ok {
			idx[key] = len(out)
			r.Runs = 1
			out = append(out, r)
			continue
		}
		runs := out[i].Runs + 1
		if best, _ := out[i].Get("ns/op"); ns < best {
			out[i] = r
		}
		out[i].Runs = runs
	}
	for i := range out {
		if ns, _ := out[i].Get("ns/op"); ns > 0 {
			out[i].Spread = worst[k{out[i].Package, out[i].Name}]/ns - 1
		}
	}
	return out
}

// Get returns the value for unit.
func (r Result) Get(unit string) (float64, bool) {
	for _, m := range r.Metrics {
		if m.Unit == unit {
			return m.Value, true
		}
	}
	return 0, false
}

// PerSecond is 1e9 / ns/op, 0 when the line has no ns/op.
func (r Result) PerSecond() float64 {
	ns, ok := r.Get("ns/op")
	if !ok || ns <= 0 {
		return 0
	}
	return 1e9 / ns
}

// Parse reads `go test -bench` output. Lines "pkg: X" set the package of
// the results after them; other non-benchmark lines are ignored.
func Parse(r io.Reader) ([]Result, error) {
	var out []Result
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			continue // a benchmark's own log line, or a failed one
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		res := Result{Package: pkg, Iterations: n, Procs: 1}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if p, err := strconv.Atoi(name[i+1:]); err == nil {
				name, res.Procs = name[:i], p
			}
		}
		res.Name = name
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark line %q: value %q: %w", line, f[i], err)
			}
			res.Metrics = append(res.Metrics, Metric{Value: v, Unit: f[i+1]})
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// Run runs the benchmarks matching pattern in the package(s) pkgs of the
// module at dir, one CPU, each count times for benchtime (e.g. "1s" or
// "100000x"), and parses the results (all runs; see Best). The combined output is returned too, for the log.
func Run(ctx context.Context, dir, pattern, benchtime string, count int, pkgs ...string) ([]Result, []byte, error) {
	if len(pkgs) == 0 {
		pkgs = []string{"."}
	}
	args := append([]string{"test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-cpu", "1", "-count", strconv.Itoa(max(count, 1))}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, out, fmt.Errorf("go %s in %s: %w\n%s", strings.Join(args, " "), dir, err, tail(out, 2000))
	}
	res, err := Parse(bytes.NewReader(out))
	return res, out, err
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
