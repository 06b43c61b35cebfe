package rows

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/witnz/witnz/tools/bench/internal/gobench"
	"github.com/witnz/witnz/tools/bench/internal/report"
)

// b6Libs are the modules whose Go benchmarks make up B6 (the commitment
// core), and the others shown beside them for context.
var b6Libs = []string{"libs/tlog", "libs/lthash", "libs/commitment", "libs/statedigest"}

// runB6 runs `go test -run '^$' -bench . -cpu 1` in each core library and
// turns the results into rows. Each library benchmarks its operation next
// to raw SHA-256 in the same process (tlog: SHA256Leaf, 33 bytes; lthash:
// SHA256Same, the same 64-byte element).
func runB6(ctx context.Context, e *Env) []report.Row {
	errs := map[string]error{}
	var all []gobench.Result
	for _, lib := range b6Libs {
		dir := filepath.Join(e.Repo, lib)
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
			errs[lib] = fmt.Errorf("%s does not exist yet", lib)
			continue
		}
		e.Logf("B6: go test -bench . -benchtime %s -count %d in %s", e.D.B6Benchtime, e.D.B6Count, lib)
		res, _, err := gobench.Run(ctx, dir, ".", e.D.B6Benchtime, e.D.B6Count)
		if err != nil {
			errs[lib] = err
			continue
		}
		all = append(all, gobench.Best(res)...)
	}
	e.GoBenchmarks = append(e.GoBenchmarks, all...)
	find := func(lib, name string) (gobench.Result, bool) {
		for _, r := range all {
			if strings.HasSuffix(r.Package, "/"+lib) && r.Name == name {
				return r, true
			}
		}
		return gobench.Result{}, false
	}
	row := func(id, title, metric, unit, lib, name, baseName, baseMetric string, target []report.Bound, targetText string, notes ...string) report.Row {
		r := report.Row{ID: id, Title: title, Metric: metric, Unit: unit, BaselineMetric: baseMetric, Target: target, TargetText: targetText}
		if err := errs[lib]; err != nil {
			r.Status, r.Reason = report.StatusError, "go test -bench in "+lib+": "+firstLines(err.Error(), 6)
			return r
		}
		g, ok := find(lib, name)
		b, okb := find(lib, baseName)
		if !ok || !okb {
			r.Status, r.Reason = report.StatusError, fmt.Sprintf("%s has no benchmark %s or %s", lib, name, baseName)
			return r
		}
		r.Value, r.Baseline = report.F(rate(g)), report.F(rate(b))
		r.BaselineUnit = "hashes/s"
		r.Samples = int(g.Iterations)
		r.Notes = append([]string{fmt.Sprintf("Benchmark%s in %s, one CPU, -benchtime %s, fastest of %d runs (slowest %.0f %% slower); baseline Benchmark%s in the same run, fastest of %d (slowest %.0f %% slower)",
			name, lib, e.D.B6Benchtime, g.Runs, 100*g.Spread, baseName, b.Runs, 100*b.Spread)}, notes...)
		return r
	}
	also := func(lib, name, unit string) string {
		g, ok := find(lib, name)
		if !ok {
			return ""
		}
		return fmt.Sprintf("%s: %.0f %s", name, rate(g), unit)
	}
	sha33 := "raw SHA-256 of a leaf's 33 input bytes (0x00 || 32 bytes), per second"
	rows := []report.Row{
		row("B6.append", "Merkle append", "RFC 6962 log append, one leaf per call, leaves/s per core (memory)", "leaves/s",
			"libs/tlog", "Append", "SHA256Leaf", sha33,
			[]report.Bound{{On: "value", Op: ">=", Value: 2e6}}, "≥ 2,000,000 leaves/s"),
		row("B6.append-batch", "Merkle append, batched", "RFC 6962 log append, 4096 leaves per call (as the witness FSM applies a batch), leaves/s per core (memory)", "leaves/s",
			"libs/tlog", "AppendBatch", "SHA256Leaf", sha33,
			[]report.Bound{{On: "value", Op: ">=", Value: 2e6}}, "≥ 2,000,000 leaves/s",
			nonEmpty(also("libs/tlog", "DBAppendBatch/batch=4096", "leaves/s into bbolt in batches of 4096 (durable)"),
				also("libs/tlog", "DBAppendBatch/batch=64", "leaves/s into bbolt in batches of 64"),
				also("libs/tlog", "DBAppendBatch/batch=1", "leaves/s into bbolt one per commit"))...),
		row("B6.inclusion", "inclusion proof", "inclusion proofs/s per core, random leaf of a 2^20 tree (memory)", "proofs/s",
			"libs/tlog", "InclusionProof/memory", "SHA256Leaf", sha33,
			[]report.Bound{{On: "value", Op: ">=", Value: 2e5}}, "≥ 200,000 proofs/s",
			nonEmpty(also("libs/tlog", "InclusionProof/db", "proofs/s from bbolt"))...),
		row("B6.consistency", "consistency proof", "consistency proofs/s per core, random size to 2^20 (memory)", "proofs/s",
			"libs/tlog", "ConsistencyProof/memory", "SHA256Leaf", sha33,
			[]report.Bound{{On: "value", Op: ">=", Value: 2e5}}, "≥ 200,000 proofs/s",
			nonEmpty(also("libs/tlog", "ConsistencyProof/db", "proofs/s from bbolt"))...),
		row("B6.lthash", "LtHash add", "LtHash16 add of a 64-byte element (SHA-256 key + AES-256-CTR expansion + 1024 lanes), adds/s per core", "adds/s",
			"libs/lthash", "Add", "SHA256Same", "raw SHA-256 of the same 64 bytes, per second",
			nil, "", nonEmpty(also("libs/lthash", "Expand", "expansions/s"))...),
	}
	return rows
}

// rate is the benchmark's own per-unit rate (e.g. "leafs/s" of a batch
// benchmark) when it reports one, else operations per second.
func rate(g gobench.Result) float64 {
	for _, m := range g.Metrics {
		if strings.HasSuffix(m.Unit, "s/s") {
			return m.Value
		}
	}
	return g.PerSecond()
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, " / ")
}
