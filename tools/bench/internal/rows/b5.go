package rows

import (
	"context"
	"fmt"
	"slices"

	"github.com/witnz/witnz/tools/bench/internal/cpuuse"
	"github.com/witnz/witnz/tools/bench/internal/pgbench"
	"github.com/witnz/witnz/tools/bench/internal/report"
	"github.com/witnz/witnz/tools/bench/internal/stack"
	"github.com/witnz/witnz/tools/bench/internal/stats"
)

const (
	b5Clients = 8
	b5Threads = 2
	b5Rate    = 2000
)

// b5 is the overhead on the application: the same pgbench of single-row
// INSERT transactions into the table protected by the running stack and
// into the same table on a bare PostgreSQL, in alternating rounds.
type b5 struct {
	satWith, satWithout   []pgbench.Result
	rateWith, rateWithout []pgbench.Result
	cpuWith, cpuWithout   []cpuuse.Usage
}

func runB5(ctx context.Context, e *Env) []report.Row {
	b := &b5{}
	err := e.WithStack(ctx, func(s *stack.Stack) error {
		dsn, drop, err := e.bareDatabase(ctx, "bench_b5")
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		defer drop()
		return b.run(ctx, e, s, dsn)
	})
	if err != nil {
		return []report.Row{failed("B5a", "application overhead at saturation", err), failed("B5b", "application latency at 2k tx/s", err)}
	}
	return b.rows(e)
}

// run alternates the two sides, round by round (without, with; then with,
// without; …), first at saturation, then at the fixed rate. After a run on
// the stack it waits for the witnesses to catch up, so the pipeline's
// backlog never runs into the next run.
func (b *b5) run(ctx context.Context, e *Env, s *stack.Stack, bareDSN string) error {
	dir, err := e.dir("b5")
	if err != nil {
		return err
	}
	cl, err := s.Cluster()
	if err != nil {
		return err
	}
	defer cl.Close()
	one := func(with bool, rate float64) (pgbench.Result, error) {
		dsn, side := bareDSN, "without witnz"
		if with {
			dsn, side = s.Info.Postgres.DSN, "with the stack"
		}
		what := "at saturation"
		if rate > 0 {
			what = fmt.Sprintf("at %.0f tx/s", rate)
		}
		e.Logf("B5: pgbench single-row INSERT %s, %s, %s", what, e.D.B5Load, side)
		cpu := e.cpuMeter()
		res, err := pgbench.Run(ctx, pgbench.Options{Bin: e.PGBin(), DSN: dsn, Script: insertOne, Dir: dir,
			Clients: b5Clients, Threads: b5Threads, Duration: e.D.B5Load, Rate: rate, Log: rate > 0})
		if err != nil {
			return res, err
		}
		if with {
			b.cpuWith = append(b.cpuWith, cpu())
			n, err := queryInt(ctx, dsn, "SELECT count(*) FROM audit_log")
			if err != nil {
				return res, err
			}
			if _, err := waitSize(ctx, cl, uint64(n), e.D.CatchUp); err != nil {
				return res, err
			}
			return res, execSQL(ctx, dsn, "CHECKPOINT")
		}
		b.cpuWithout = append(b.cpuWithout, cpu())
		return res, execSQL(ctx, dsn, "TRUNCATE audit_log", "CHECKPOINT")
	}
	for _, rate := range []float64{0, b5Rate} {
		for round := range e.D.B5Rounds {
			for _, with := range order(round) {
				res, err := one(with, rate)
				if err != nil {
					return err
				}
				switch {
				case with && rate == 0:
					b.satWith = append(b.satWith, res)
				case rate == 0:
					b.satWithout = append(b.satWithout, res)
				case with:
					b.rateWith = append(b.rateWith, res)
				default:
					b.rateWithout = append(b.rateWithout, res)
				}
			}
		}
	}
	return nil
}

// order alternates which side goes first in a round.
func order(round int) []bool {
	if round%2 == 0 {
		return []bool{false, true}
	}
	return []bool{true, false}
}

func medianTPS(rs []pgbench.Result) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = r.TPS
	}
	slices.Sort(xs)
	if len(xs) == 0 {
		return 0
	}
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

func tpsList(rs []pgbench.Result) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%.0f", r.TPS)
	}
	return s
}

func (b *b5) rows(e *Env) []report.Row {
	shape := fmt.Sprintf("pgbench -c %d -j %d, one single-row INSERT per transaction; %d alternating rounds of %s per side", b5Clients, b5Threads, e.D.B5Rounds, e.D.B5Load)
	cpuNotes := func(from, to int) []string {
		var out []string
		if to > len(b.cpuWith) || to > len(b.cpuWithout) {
			return nil
		}
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("CPU round %d with the stack: %s; without: %s", i-from+1, b.cpuWith[i].String(), b.cpuWithout[i].String()))
		}
		return append(out, noiseNote(append(slices.Clone(b.cpuWith[from:to]), b.cpuWithout[from:to]...)...)...)
	}
	n := e.D.B5Rounds
	var satTx int64
	for _, r := range b.satWith {
		satTx += r.Transactions
	}
	a := report.Row{
		ID: "B5a", Title: "application overhead at saturation",
		Metric: "pgbench TPS, single-row INSERT into the protected table with the whole stack running (median of the rounds)",
		Value:  report.F(medianTPS(b.satWith)), Unit: "tx/s",
		BaselineMetric: "the same pgbench into the same table on a bare PostgreSQL with the same settings, no witnz (median of the rounds)",
		Baseline:       report.F(medianTPS(b.satWithout)),
		TargetText:     "ratio ≥ 0.85", Target: []report.Bound{{On: "ratio", Op: ">=", Value: 0.85}},
		FloorText: "ratio ≥ 0.7", Floor: []report.Bound{{On: "ratio", Op: ">=", Value: 0.7}},
		Samples: int(satTx),
		Notes: append([]string{shape,
			fmt.Sprintf("TPS per round with the stack: %s; without: %s", tpsList(b.satWith), tpsList(b.satWithout))},
			cpuNotes(0, n)...),
	}
	var with, without, lagWith, lagWithout []float64
	for _, r := range b.rateWith {
		with = append(with, r.Latencies...)
		lagWith = append(lagWith, r.ScheduleLagMS...)
	}
	for _, r := range b.rateWithout {
		without = append(without, r.Latencies...)
		lagWithout = append(lagWithout, r.ScheduleLagMS...)
	}
	sw, swo := stats.Summarize(with), stats.Summarize(without)
	bb := report.Row{
		ID: "B5b", Title: "application latency at 2k tx/s",
		Metric: fmt.Sprintf("pgbench --rate %d: transaction latency from its scheduled start, with the whole stack running, ms", b5Rate),
		Value:  report.F(sw.P99), Unit: "ms", Latency: &sw, Samples: sw.N,
		BaselineMetric: "the same pgbench --rate on a bare PostgreSQL, no witnz, p99",
		Baseline:       report.F(swo.P99), BaselineLatency: &swo,
		TargetText: "p99 ratio ≤ 1.2", Target: []report.Bound{{On: "ratio", Op: "<=", Value: 1.2}},
		Notes: append([]string{shape + "; latencies of all rounds pooled",
			fmt.Sprintf("achieved tx/s per round with the stack: %s; without: %s", tpsList(b.rateWith), tpsList(b.rateWithout)),
			fmt.Sprintf("schedule lag p99 %.2f ms with, %.2f ms without (time pgbench could not start a transaction on schedule: CPU)", stats.Summarize(lagWith).P99, stats.Summarize(lagWithout).P99)},
			cpuNotes(n, 2*n)...),
	}
	return []report.Row{a, bb}
}
