package rows

import (
	"context"
	"fmt"
	"time"

	"github.com/witnz/witnz/tools/bench/internal/cpuuse"
	"github.com/witnz/witnz/tools/bench/internal/logrepl"
	"github.com/witnz/witnz/tools/bench/internal/pgbench"
	"github.com/witnz/witnz/tools/bench/internal/report"
	"github.com/witnz/witnz/tools/bench/internal/stack"
	"github.com/witnz/witnz/tools/bench/internal/stats"
)

// B1 load shape: pgbench clients and threads, how many committed entries
// the lag is sampled at, the paced rate as a share of the sustained one,
// and how often the leader is asked for its size.
const (
	b1Clients    = 4
	b1Threads    = 2
	b1LagSamples = 1000
	b1PacedShare = 0.7
	b1Poll       = 50 * time.Millisecond
)

// b1 is sustained end-to-end ingest: INSERT → pgoutput → commitments →
// Raft quorum → FSM, seen from the witness leader.
type b1 struct {
	// baseline: pgbench into the unprotected table of the bare cluster,
	// before and after the saturated run on the stack
	baseRows  []float64
	baseDrain float64 // bare pgoutput consumer rows/s over the same backlog
	rowBytes  float64

	// saturated load on the stack
	producerRows float64 // pgbench rows/s with the stack running
	ingestRows   float64 // witness rows/s over the window
	window       report.Window
	backlogAtEnd uint64
	catchUp      time.Duration
	lagSat       []float64

	// paced load
	pacedRows     float64
	pacedAchieved float64
	lagPaced      []float64

	// backlog drain
	backlog     uint64
	produceTime time.Duration
	drainRows   float64

	// errs holds, per row id, why it could not be measured.
	errs map[string]error

	leaderChanges, pollFailures int
	pollEvery                   time.Duration

	cpuBase                              []cpuuse.Usage
	cpuLoad, cpuPaced, cpuDrain, cpuBare cpuuse.Usage
}

func runB1(ctx context.Context, e *Env) []report.Row {
	b := &b1{errs: map[string]error{}}
	err := e.WithStack(ctx, func(s *stack.Stack) error {
		dsn, drop, err := e.bareDatabase(ctx, "bench_b1")
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		defer drop()
		return b.run(ctx, e, s, dsn)
	})
	if err != nil {
		return []report.Row{
			failed("B1", "sustained end-to-end ingest", err),
			failed("B1.lag", "end-to-end lag", err),
			failed("B1.drain", "backlog drain", err),
		}
	}
	return b.rows(e)
}

// run measures in the order baseline, stack, baseline (so drift of a shared
// machine weighs on both sides alike), then the paced load and the drain on
// the stack, then the drain baseline.
func (b *b1) run(ctx context.Context, e *Env, s *stack.Stack, bareDSN string) error {
	dir, err := e.dir("b1")
	if err != nil {
		return err
	}
	half := e.D.B1Baseline / 2
	if err := b.baseline(ctx, e, bareDSN, dir, half); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	cl, err := s.Cluster()
	if err != nil {
		return err
	}
	defer cl.Close()
	next, err := b.saturate(ctx, e, s, cl, dir)
	if err != nil {
		return err
	}
	b.rowBytes = rowBytes(ctx, s.Info.Postgres.DSN)
	if err := b.baseline(ctx, e, bareDSN, dir, half); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	if err := b.paced(ctx, e, s, cl, dir, &next); err != nil {
		b.errs["B1.lag"] = err
		// The drain needs the witnesses caught up.
		n, err := queryInt(ctx, s.Info.Postgres.DSN, "SELECT count(*) FROM audit_log")
		if err == nil {
			next = uint64(n)
			_, err = waitSize(ctx, cl, next, e.D.CatchUp)
		}
		if err != nil {
			b.errs["B1.drain"] = err
			return nil
		}
	}
	if err := b.drain(ctx, e, s, cl, dir, next); err != nil {
		b.errs["B1.drain"] = err
		return nil
	}
	if err := b.drainBaseline(ctx, e, bareDSN, dir); err != nil {
		b.errs["B1.drain"] = fmt.Errorf("baseline: %w", err)
	}
	b.leaderChanges = cl.LeaderChanges()
	return nil
}

// baseline is pgbench alone into the unprotected table for d, then the table
// is emptied and checkpointed so nothing of it weighs on the next run.
func (b *b1) baseline(ctx context.Context, e *Env, dsn, dir string, d time.Duration) error {
	e.Logf("B1 baseline: pgbench, %d-row INSERT transactions into the unprotected table of the bare PostgreSQL, %s", rowsPerTx, d)
	cpu := e.cpuMeter()
	res, err := pgbench.Run(ctx, pgbench.Options{Bin: e.PGBin(), DSN: dsn, Script: insertMany, Dir: dir,
		Clients: b1Clients, Threads: b1Threads, Duration: d})
	if err != nil {
		return err
	}
	b.cpuBase = append(b.cpuBase, cpu())
	b.baseRows = append(b.baseRows, res.TPS*rowsPerTx)
	return execSQL(ctx, dsn, "TRUNCATE audit_log", "CHECKPOINT")
}

// saturate runs pgbench as fast as it goes with the whole stack running and
// follows the leader's log size; it returns the size once caught up.
func (b *b1) saturate(ctx context.Context, e *Env, s *stack.Stack, cl *stack.Cluster, dir string) (uint64, error) {
	dsn := s.Info.Postgres.DSN
	base, err := cl.Size(ctx, stack.Table)
	if err != nil {
		return 0, err
	}
	before, err := queryInt(ctx, dsn, "SELECT count(*) FROM audit_log")
	if err != nil {
		return 0, err
	}
	e.Logf("B1: pgbench, %d-row INSERT transactions into the protected table, %s", rowsPerTx, e.D.B1Load)
	p := startPoll(ctx, cl, b1Poll)
	cpu := e.cpuMeter()
	res, err := pgbench.Run(ctx, pgbench.Options{Bin: e.PGBin(), DSN: dsn, Script: insertMany, Dir: dir,
		Clients: b1Clients, Threads: b1Threads, Duration: e.D.B1Load})
	if err != nil {
		p.stop()
		return 0, err
	}
	b.cpuLoad = cpu()
	b.producerRows = res.TPS * rowsPerTx
	after, err := queryInt(ctx, dsn, "SELECT count(*) FROM audit_log")
	if err != nil {
		p.stop()
		return 0, err
	}
	end := base + uint64(after-before)
	e.Logf("B1: %d rows written; waiting for the witnesses", after-before)
	caughtUp, err := waitSize(ctx, cl, end, e.D.CatchUp)
	samples, failures := p.stop()
	if err != nil {
		return 0, err
	}
	b.pollFailures += failures
	b.pollEvery = pollInterval(samples)
	pts := points(samples)
	from := res.Started.Add(e.D.B1Warmup)
	rate, st, en, ok := stats.Rate(pts, from, res.Finished)
	if !ok {
		return 0, fmt.Errorf("too few witness samples in the load window (%d samples)", len(samples))
	}
	b.ingestRows = rate
	b.window = report.Window{Start: st.At, End: en.At, Seconds: en.At.Sub(st.At).Seconds(),
		Description: fmt.Sprintf("witness leader size from %s after the load started to the end of the load", e.D.B1Warmup)}
	b.backlogAtEnd = end - min(sizeAt(pts, res.Finished), end)
	b.catchUp = caughtUp.Sub(res.Finished)
	b.lagSat, err = sampledLatencies(ctx, cl, pts, base, end, b1LagSamples, from)
	if err != nil {
		return 0, err
	}
	return end, execSQL(ctx, dsn, "CHECKPOINT")
}

// paced runs a rate the pipeline can carry, for the lag in steady state.
// next is the log size it starts from, and the size it ends at.
func (b *b1) paced(ctx context.Context, e *Env, s *stack.Stack, cl *stack.Cluster, dir string, next *uint64) error {
	dsn := s.Info.Postgres.DSN
	b.pacedRows = b1PacedShare * min(b.ingestRows, b.producerRows)
	base := *next
	before, err := queryInt(ctx, dsn, "SELECT count(*) FROM audit_log")
	if err != nil {
		return err
	}
	e.Logf("B1: paced load at %.0f rows/s (%.0f %% of the sustained rate), %s", b.pacedRows, 100*b1PacedShare, e.D.B1Paced)
	p := startPoll(ctx, cl, b1Poll)
	cpu := e.cpuMeter()
	res, err := pgbench.Run(ctx, pgbench.Options{Bin: e.PGBin(), DSN: dsn, Script: insertMany, Dir: dir,
		Clients: b1Clients, Threads: b1Threads, Duration: e.D.B1Paced, Rate: b.pacedRows / rowsPerTx})
	b.cpuPaced = cpu()
	if err != nil {
		p.stop()
		return err
	}
	b.pacedAchieved = res.TPS * rowsPerTx
	after, err := queryInt(ctx, dsn, "SELECT count(*) FROM audit_log")
	if err != nil {
		p.stop()
		return err
	}
	end := base + uint64(after-before)
	_, err = waitSize(ctx, cl, end, e.D.CatchUp)
	samples, failures := p.stop()
	if err != nil {
		return err
	}
	b.pollFailures += failures
	*next = end
	b.lagPaced, err = sampledLatencies(ctx, cl, points(samples), base, end, b1LagSamples, res.Started.Add(time.Second))
	if err != nil {
		return err
	}
	return execSQL(ctx, dsn, "CHECKPOINT")
}

// drain writes a backlog with cdc-ingest paused (SIGSTOP), then lets it go
// and times how fast the witnesses catch up. base is the log size before.
func (b *b1) drain(ctx context.Context, e *Env, s *stack.Stack, cl *stack.Cluster, dir string, base uint64) error {
	dsn := s.Info.Postgres.DSN
	e.Logf("B1: backlog of %d rows written with cdc-ingest paused, then drained", e.D.B1Backlog)
	resume, err := s.Pause("cdc-ingest")
	if err != nil {
		return err
	}
	defer func() { _ = resume() }()
	t0 := time.Now()
	res, err := pgbench.Run(ctx, pgbench.Options{Bin: e.PGBin(), DSN: dsn, Script: insertMany, Dir: dir,
		Clients: b1Clients, Threads: b1Threads, Transactions: max(e.D.B1Backlog/rowsPerTx/b1Clients, 1)})
	if err != nil {
		return err
	}
	b.produceTime = time.Since(t0)
	b.backlog = uint64(res.Transactions) * rowsPerTx
	if err := execSQL(ctx, dsn, "CHECKPOINT"); err != nil {
		return err
	}
	if size, err := cl.Size(ctx, stack.Table); err == nil && size != base {
		return fmt.Errorf("the log grew from %d to %d while cdc-ingest was paused: no backlog to time", base, size)
	}
	cpu := e.cpuMeter()
	resumed := time.Now()
	if err := resume(); err != nil {
		return err
	}
	done, err := waitSize(ctx, cl, base+b.backlog, e.D.CatchUp)
	if err != nil {
		return err
	}
	b.cpuDrain = cpu()
	b.drainRows = float64(b.backlog) / done.Sub(resumed).Seconds()
	return nil
}

// drainBaseline has a bare pgoutput consumer drain the same backlog from
// its own slot on the bare cluster.
func (b *b1) drainBaseline(ctx context.Context, e *Env, dsn, dir string) error {
	e.Logf("B1 baseline: a bare pgoutput consumer drains a backlog of %d rows", e.D.B1Backlog)
	const pub, slot = "bench_pub", "bench_slot"
	if err := logrepl.Setup(ctx, dsn, "public.audit_log", pub, slot); err != nil {
		return err
	}
	defer func() { _ = logrepl.Drop(context.Background(), dsn, pub, slot) }()
	res, err := pgbench.Run(ctx, pgbench.Options{Bin: e.PGBin(), DSN: dsn, Script: insertMany, Dir: dir,
		Clients: b1Clients, Threads: b1Threads, Transactions: max(e.D.B1Backlog/rowsPerTx/b1Clients, 1)})
	if err != nil {
		return err
	}
	if err := execSQL(ctx, dsn, "CHECKPOINT"); err != nil {
		return err
	}
	want := int(res.Transactions) * rowsPerTx
	cctx, cancel := context.WithTimeout(ctx, e.D.CatchUp)
	defer cancel()
	got := 0
	var last time.Time
	cpu := e.cpuMeter()
	start := time.Now()
	err = logrepl.Consume(cctx, dsn, slot, pub, func(c logrepl.Commit) {
		got += c.Rows
		if got >= want && last.IsZero() {
			last = c.Received
			cancel()
		}
	})
	b.cpuBare = cpu()
	if err != nil {
		return err
	}
	if last.IsZero() {
		return fmt.Errorf("the bare consumer received %d of %d rows within %s", got, want, e.D.CatchUp)
	}
	b.baseDrain = float64(want) / last.Sub(start).Seconds()
	return execSQL(ctx, dsn, "TRUNCATE audit_log", "CHECKPOINT")
}

// sizeAt is the last observed size at or before t.
func sizeAt(pts []stats.Point, t time.Time) uint64 {
	var n uint64
	for _, p := range pts {
		if p.At.After(t) {
			break
		}
		n = p.Count
	}
	return n
}

func (b *b1) rows(e *Env) []report.Row {
	common := []string{
		fmt.Sprintf("rows of ~%.0f bytes, %d rows per INSERT transaction, pgbench -c %d -j %d", b.rowBytes, rowsPerTx, b1Clients, b1Threads),
	}
	if b.leaderChanges > 0 || b.pollFailures > 0 {
		common = append(common, fmt.Sprintf("the witness leader changed %d time(s) during the run, %d status polls failed", b.leaderChanges, b.pollFailures))
	}
	var baseRows float64
	for _, r := range b.baseRows {
		baseRows += r / float64(len(b.baseRows))
	}
	lat := stats.Summarize(b.lagSat)
	baseCPU := make([]string, len(b.cpuBase))
	for i, u := range b.cpuBase {
		baseCPU[i] = u.String()
	}
	mainNotes := append(common,
		fmt.Sprintf("order: baseline %s, stack %s, baseline %s; the baseline is the mean of %s rows/s before and %s after", e.D.B1Baseline/2, e.D.B1Load, e.D.B1Baseline/2, fmtRate(first(b.baseRows)), fmtRate(last(b.baseRows))),
		fmt.Sprintf("the producer wrote %s rows/s with the stack running", fmtRate(b.producerRows)),
		fmt.Sprintf("backlog at the end of the load %d rows, caught up %.1f s later", b.backlogAtEnd, b.catchUp.Seconds()),
		fmt.Sprintf("lag during the saturated load: p50 %.0f ms, p99 %.0f ms, max %.0f ms (n=%d; it grows with the run when the pipeline is the bottleneck)", lat.P50, lat.P99, lat.Max, lat.N),
		"CPU during the saturated load: "+b.cpuLoad.String(),
		"CPU during the baselines: "+joinNonEmpty(baseCPU, " | "),
	)
	main := report.Row{
		ID: "B1", Title: "sustained end-to-end ingest",
		Metric: "INSERT → pgoutput → commitments → Raft quorum → FSM, rows/s seen on the witness leader",
		Value:  report.F(b.ingestRows), Unit: "rows/s",
		BaselineMetric: "pgbench alone into the same table, unprotected, on a bare PostgreSQL with the same settings (producer ceiling)",
		Baseline:       report.F(baseRows),
		TargetText:     "≥ 50,000 rows/s", Target: []report.Bound{{On: "value", Op: ">=", Value: 50000}},
		FloorText: "≥ 25,000 rows/s", Floor: []report.Bound{{On: "value", Op: ">=", Value: 25000}},
		Window: &b.window,
		Notes:  append(mainNotes, noiseNote(append([]cpuuse.Usage{b.cpuLoad}, b.cpuBase...)...)...),
	}
	paced := stats.Summarize(b.lagPaced)
	lag := report.Row{
		ID: "B1.lag", Title: "end-to-end lag",
		Metric: fmt.Sprintf("commit → entry on the witness leader, at a paced %s rows/s (%.0f %% of B1), ms", fmtRate(b.pacedRows), 100*b1PacedShare),
		Value:  report.F(paced.P99), Unit: "ms", Latency: &paced, Samples: paced.N,
		TargetText: "p99 < 1,000 ms", Target: []report.Bound{{On: "p99", Op: "<=", Value: 1000}},
		Notes: append(append(common,
			fmt.Sprintf("%s of pgbench --rate (achieved %s rows/s); %d entries sampled evenly, the first second left out", e.D.B1Paced, fmtRate(b.pacedAchieved), b1LagSamples),
			fmt.Sprintf("commit time is PostgreSQL's (the entry's commit_time); visibility from the leader's GetStatus, answers every %s", b.pollEvery.Round(time.Millisecond)),
			"no baseline here: B2 has the bare pgoutput consumer's latency",
			"CPU during the paced load: "+b.cpuPaced.String()), noiseNote(b.cpuPaced)...),
	}
	drain := report.Row{
		ID: "B1.drain", Title: "backlog drain",
		Metric: fmt.Sprintf("rows/s the witnesses catch up on a %d-row backlog (written in %.1f s with cdc-ingest paused)", b.backlog, b.produceTime.Seconds()),
		Value:  report.F(b.drainRows), Unit: "rows/s",
		BaselineMetric: "a bare pgoutput consumer (decode only) draining the same backlog from its own slot on the bare PostgreSQL",
		Baseline:       report.F(b.baseDrain),
		TargetText:     "≥ 100,000 rows/s", Target: []report.Bound{{On: "value", Op: ">=", Value: 100000}},
		Samples: int(b.backlog),
		Notes: append(append(common,
			"timed from resuming cdc-ingest (SIGSTOP while the backlog was written, then SIGCONT) to the leader's size covering the backlog (polled every 10 ms)",
			"CPU during the drain: "+b.cpuDrain.String(),
			"CPU during the baseline drain: "+b.cpuBare.String()), noiseNote(b.cpuDrain, b.cpuBare)...),
	}
	out := []report.Row{main, lag, drain}
	for i, r := range out {
		if err := b.errs[r.ID]; err != nil {
			out[i] = failed(r.ID, r.Title, err)
		}
	}
	return out
}

func failed(id, title string, err error) report.Row {
	return report.Row{ID: id, Title: title, Status: report.StatusError, Reason: err.Error()}
}

func fmtRate(v float64) string { return fmt.Sprintf("%.0f", v) }

func first(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[0]
}

func last(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[len(xs)-1]
}

func joinNonEmpty(ss []string, sep string) string {
	out := ""
	for _, s := range ss {
		if s == "" {
			continue
		}
		if out != "" {
			out += sep
		}
		out += s
	}
	return out
}
