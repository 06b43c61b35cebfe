package rows

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"errors"

	"github.com/witnz/witnz/tools/bench/internal/bareraft"
	"github.com/witnz/witnz/tools/bench/internal/cpuuse"
	"github.com/witnz/witnz/tools/bench/internal/load"
	"github.com/witnz/witnz/tools/bench/internal/logrepl"
	"github.com/witnz/witnz/tools/bench/internal/promscrape"
	"github.com/witnz/witnz/tools/bench/internal/report"
	"github.com/witnz/witnz/tools/bench/internal/stack"
	"github.com/witnz/witnz/tools/bench/internal/stats"
)

const (
	b2Rate  = 1000
	b2Conns = 4
	// b2Warmup is left out of both distributions (connections and caches
	// warming up).
	b2Warmup = time.Second
)

// b2 is commit → hash durable on the witness quorum at 1k single-row tx/s.
type b2 struct {
	base, meas    []float64 // ms
	baseLoad      []load.Result
	measLoad      load.Result
	hist          promscrape.Histogram // commit → witnessed, seconds
	readHist      promscrape.Histogram // commit → read by cdc-ingest, seconds
	leaderChanges int
	floorLat      []float64 // ms
	floorErr      error
	cpuFloor      cpuuse.Usage
	cpuBase       []cpuuse.Usage
	cpuMeas       cpuuse.Usage
	inside        string
}

func runB2(ctx context.Context, e *Env) []report.Row {
	b := &b2{}
	err := e.WithStack(ctx, func(s *stack.Stack) error {
		dsn, drop, err := e.bareDatabase(ctx, "bench_b2")
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		defer drop()
		return b.run(ctx, e, s, dsn)
	})
	if err != nil {
		return []report.Row{failed("B2", "commit → quorum-durable latency", err)}
	}
	rows := []report.Row{b.row(e)}
	if b.floorErr != nil {
		rows = append(rows, failed("B2.floor", b2FloorTitle, b.floorErr))
	} else {
		rows = append(rows, b.floorRow(e))
	}
	return rows
}

const b2FloorTitle = "commit → quorum-durable latency with the bare libraries"

// floor streams the same load with a bare pgoutput consumer inside the
// leader of a bare hashicorp/raft + raft-boltdb cluster that logs each
// transaction as cdc-ingest batches them: what the design's libraries
// allow on this machine, with no RPC hop, TLS, API or state machine. The
// witnz stack stays up (idle), as during the baselines.
func (b *b2) floor(ctx context.Context, e *Env, bareDSN string) error {
	const pub, slot = "bench_floor_pub", "bench_floor_slot"
	if err := logrepl.Setup(ctx, bareDSN, "public.audit_log", pub, slot); err != nil {
		return err
	}
	defer func() { _ = logrepl.Drop(context.Background(), bareDSN, pub, slot) }()
	dir, err := e.dir("b2-floor")
	if err != nil {
		return err
	}
	bc, err := bareraft.Start(ctx, e.Self, filepath.Join(dir, "raft"), []string{"r1", "r2", "r3"})
	if err != nil {
		return err
	}
	defer bc.Stop()
	d := e.D.B2Load / 2
	e.Logf("B2.floor: %d single-row tx/s for %s, streamed by a bare consumer inside the leader of a bare 3-node Raft cluster", b2Rate, d)
	type followed struct {
		fc  []bareraft.FollowedCommit
		err error
	}
	got := make(chan followed, 1)
	go func() {
		fc, err := bc.Follow(ctx, bareDSN, slot, pub, d+2*time.Second)
		got <- followed{fc, err}
	}()
	var roots []cpuuse.Root
	for _, pid := range bc.PIDs() {
		roots = append(roots, cpuuse.Root{Group: "bare Raft cluster", PID: pid})
	}
	cpu := e.cpuMeter(roots...)
	res, err := load.Run(ctx, b2Load(bareDSN, d))
	b.cpuFloor = cpu()
	f := <-got
	if err != nil {
		return err
	}
	if res.FirstErr != nil {
		return fmt.Errorf("load: %d errors, first: %w", res.Errors, res.FirstErr)
	}
	if f.err != nil {
		return f.err
	}
	from, to := res.Start.Add(b2Warmup), res.End
	var n int64
	for _, c := range f.fc {
		ct := time.Unix(0, c.Commit)
		if ct.Before(res.Start) {
			continue
		}
		n++
		if !ct.Before(from) && !ct.After(to) {
			b.floorLat = append(b.floorLat, float64(c.Applied-c.Commit)/float64(time.Millisecond))
		}
	}
	if n < res.Done {
		return fmt.Errorf("the bare cluster logged %d of the %d transactions within 2 s of the load's end", n, res.Done)
	}
	return nil
}

func (b *b2) floorRow(e *Env) report.Row {
	m := stats.Summarize(b.floorLat)
	return report.Row{
		ID: "B2.floor", Title: b2FloorTitle,
		Metric: fmt.Sprintf("commit → applied on a bare Raft leader after the quorum commit, at %d single-row tx/s, ms", b2Rate),
		Value:  report.F(m.P99), Unit: "ms", Latency: &m, Samples: m.N,
		Notes: []string{
			fmt.Sprintf("not a witnz measurement: the lower bound B2 is held to on this machine. The same %d single-row INSERT tx/s over %d connections into the bare PostgreSQL for %s (the first %s left out), read by a bare pgoutput consumer inside the leader of a bare 3-process hashicorp/raft v1.7.3 cluster (raft.DefaultConfig, raft-boltdb/v2, plain TCP, a counting state machine), which logs the transactions as cdc-ingest batches them: one Apply in flight, the next carrying all that arrived meanwhile (%d bytes per row); from PostgreSQL's commit timestamp to the Apply's answer", b2Rate, b2Conns, e.D.B2Load/2, b2Warmup, bareraft.EntryBytes),
			"no RPC hop, TLS, Connect API, protobuf or witness state machine; the witnz stack is up and idle, as during the baselines",
			"CPU: " + b.cpuFloor.String(),
		},
	}
}

func b2Load(dsn string, d time.Duration) load.Fixed {
	return load.Fixed{DSN: dsn, SQL: insertOneSQL, Rate: b2Rate, Duration: d, Conns: b2Conns,
		Args: func(i int64) []any { return []any{"user-" + strconv.FormatInt(i, 10)} }}
}

// run measures the baseline for half the time, the stack, then the other
// half of the baseline, so drift of a shared machine weighs on both alike.
// The bare consumer streams its own slot throughout; only the baseline
// runs write to its table.
func (b *b2) run(ctx context.Context, e *Env, s *stack.Stack, bareDSN string) error {
	const pub, slot = "bench_pub", "bench_slot"
	if err := logrepl.Setup(ctx, bareDSN, "public.audit_log", pub, slot); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	defer func() { _ = logrepl.Drop(context.Background(), bareDSN, pub, slot) }()
	var (
		mu      sync.Mutex
		commits []logrepl.Commit
		rows    int
	)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		consumed <- logrepl.Consume(cctx, bareDSN, slot, pub, func(c logrepl.Commit) {
			mu.Lock()
			commits = append(commits, c)
			rows += c.Rows
			mu.Unlock()
		})
	}()
	baseline := func() error {
		e.Logf("B2 baseline: %d single-row tx/s for %s, a bare pgoutput consumer on its own slot", b2Rate, e.D.B2Load/2)
		cpu := e.cpuMeter()
		res, err := load.Run(ctx, b2Load(bareDSN, e.D.B2Load/2))
		if err != nil {
			return err
		}
		b.cpuBase = append(b.cpuBase, cpu())
		if res.FirstErr != nil {
			return fmt.Errorf("load: %d errors, first: %w", res.Errors, res.FirstErr)
		}
		b.baseLoad = append(b.baseLoad, res)
		return nil
	}
	if err := baseline(); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	if err := b.measure(ctx, e, s); err != nil {
		return err
	}
	if err := baseline(); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	b.floorErr = b.floor(ctx, e, bareDSN)
	var want int64
	for _, r := range b.baseLoad {
		want += r.Done
	}
	deadline := time.Now().Add(e.D.CatchUp)
	for {
		mu.Lock()
		n := rows
		mu.Unlock()
		if int64(n) >= want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("baseline: the bare consumer received %d of %d rows", n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-consumed; err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	for _, c := range commits {
		if c.Rows == 0 {
			continue
		}
		for _, r := range b.baseLoad {
			if !c.CommitTime.Before(r.Start.Add(b2Warmup)) && !c.CommitTime.After(r.End) {
				b.base = append(b.base, float64(c.Received.Sub(c.CommitTime))/float64(time.Millisecond))
				break
			}
		}
	}
	return nil
}

func (b *b2) measure(ctx context.Context, e *Env, s *stack.Stack) error {
	cl, err := s.Cluster()
	if err != nil {
		return err
	}
	defer cl.Close()
	svc, ok := s.Info.Services["cdc-ingest"]
	if !ok || svc.Admin == "" {
		return errors.New("the stack's cdc-ingest has no admin listener to read its latency histogram from")
	}
	metricsURL := svc.Admin + "/metrics"
	dsn := s.Info.Postgres.DSN
	e.Logf("B2: %d single-row tx/s for %s into the protected table, every transaction followed by cdc-ingest's commit → witnessed histogram", b2Rate, e.D.B2Load)
	type scraped struct {
		ss  promscrape.Samples
		err error
	}
	first := make(chan scraped, 1)
	wctx, stopWarmup := context.WithCancel(ctx)
	defer stopWarmup()
	go func() {
		// The histogram counts from the end of the warm-up, like the
		// baseline's samples.
		select {
		case <-wctx.Done():
			first <- scraped{err: wctx.Err()}
			return
		case <-time.After(b2Warmup):
		}
		ss, err := promscrape.Get(wctx, metricsURL)
		first <- scraped{ss, err}
	}()
	in0 := scrapeInside(ctx, s)
	cpu := e.cpuMeter()
	res, err := load.Run(ctx, b2Load(dsn, e.D.B2Load))
	b.cpuMeas = cpu()
	stopWarmup()
	f := <-first
	if err != nil {
		return err
	}
	if res.FirstErr != nil {
		return fmt.Errorf("load: %d errors, first: %w", res.Errors, res.FirstErr)
	}
	if f.err != nil {
		return fmt.Errorf("cdc-ingest metrics at the end of the warm-up: %w", f.err)
	}
	// Each transaction of the run is one observation; all of them are in
	// the last scrape.
	c0, err := witnessedCount(in0.ingest)
	if err != nil {
		return err
	}
	want := c0 + float64(res.Done)
	var last promscrape.Samples
	deadline := time.Now().Add(e.D.CatchUp)
	for {
		last, err = promscrape.Get(ctx, metricsURL)
		if err != nil {
			return fmt.Errorf("cdc-ingest metrics after the run: %w", err)
		}
		n, err := witnessedCount(last)
		if err != nil {
			return err
		}
		if n >= want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cdc-ingest witnessed %.0f of the run's %d transactions within %s after it", n-c0, res.Done, e.D.CatchUp)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.inside = insideNote(in0, scrapeInside(ctx, s))
	b.measLoad = res
	b.hist = last.Histogram(witnessedMetric, nil).Sub(f.ss.Histogram(witnessedMetric, nil))
	b.readHist = last.Histogram(readMetric, nil).Sub(f.ss.Histogram(readMetric, nil))
	b.leaderChanges = cl.LeaderChanges()
	return nil
}

const (
	witnessedMetric = "witnz_cdc_commit_to_witnessed_seconds"
	readMetric      = "witnz_cdc_commit_to_read_seconds"
)

func witnessedCount(ss promscrape.Samples) (float64, error) {
	h := ss.Histogram(witnessedMetric, nil)
	if len(h.Buckets) == 0 {
		return 0, fmt.Errorf("cdc-ingest's /metrics has no %s: is the stack built from this tree (make build)?", witnessedMetric)
	}
	return h.Count, nil
}

// histSummary summarizes a histogram of seconds in milliseconds: the
// quantiles are interpolated inside their bucket (histogram_quantile) and
// Max is the upper bound of the highest bucket holding an observation.
func histSummary(h promscrape.Histogram) stats.Summary {
	s := stats.Summary{N: int(h.Count), P50: 1000 * h.Quantile(0.5), P90: 1000 * h.Quantile(0.9), P99: 1000 * h.Quantile(0.99), Mean: 1000 * h.Mean()}
	below := 0.0
	for _, bk := range h.Buckets {
		if bk.Count > below {
			s.Max = 1000 * bk.Le
			below = bk.Count
		}
	}
	return s
}

// bucketAround names the histogram bounds on either side of v ms.
func bucketAround(h promscrape.Histogram, v float64) string {
	lower := 0.0
	for _, bk := range h.Buckets {
		if 1000*bk.Le >= v {
			return fmt.Sprintf("%s–%s", fmtMS(lower), fmtMS(1000*bk.Le))
		}
		lower = 1000 * bk.Le
	}
	return fmtMS(lower) + "–∞"
}

func (b *b2) row(e *Env) report.Row {
	m, bl := histSummary(b.hist), stats.Summarize(b.base)
	rd := histSummary(b.readHist)
	var baseLat []float64
	var baseAchieved float64
	for _, r := range b.baseLoad {
		baseLat = append(baseLat, r.Latencies...)
		baseAchieved += r.Achieved() / float64(len(b.baseLoad))
	}
	cm, cb := stats.Summarize(b.measLoad.Latencies), stats.Summarize(baseLat)
	baseCPU := make([]string, len(b.cpuBase))
	for i, u := range b.cpuBase {
		baseCPU[i] = u.String()
	}
	notes := []string{
		fmt.Sprintf("order: baseline %s, stack %s, baseline %s, each at %d single-row INSERT tx/s over %d pgx connections (achieved %.0f tx/s with the stack, %.0f without); the first %s of each run is left out",
			e.D.B2Load/2, e.D.B2Load, e.D.B2Load/2, b2Rate, b2Conns, b.measLoad.Achieved(), baseAchieved, b2Warmup),
		fmt.Sprintf("every transaction after the warm-up (%d): from PostgreSQL's commit timestamp to the moment the witness quorum's acknowledgement of its entry reached cdc-ingest (after the Raft quorum commit and the leader's apply), from cdc-ingest's %s histogram; percentiles are interpolated inside their bucket (p50 in %s ms, p99 in %s ms), max is the upper bound of the highest bucket used; nothing polls the witnesses", m.N, witnessedMetric, bucketAround(b.hist, m.P50), bucketAround(b.hist, m.P99)),
		fmt.Sprintf("of which commit → commit record read by cdc-ingest: p50 %s · p99 %s ms (%s)", fmtMS(rd.P50), fmtMS(rd.P99), readMetric),
		"baseline: receive time of every COMMIT message minus the same commit timestamp, no polling",
		fmt.Sprintf("client INSERT latency from its scheduled start: p99 %.2f ms with the stack, %.2f ms without", cm.P99, cb.P99),
		"CPU with the stack: " + b.cpuMeas.String(),
		"CPU during the baselines: " + joinNonEmpty(baseCPU, " | "),
	}
	if b.inside != "" {
		notes = append(notes, b.inside)
	}
	notes = append(notes, noiseNote(append([]cpuuse.Usage{b.cpuMeas}, b.cpuBase...)...)...)
	if b.leaderChanges > 0 {
		notes = append(notes, fmt.Sprintf("witness leader changed %d time(s)", b.leaderChanges))
	}
	return report.Row{
		ID: "B2", Title: "commit → quorum-durable latency",
		Metric: fmt.Sprintf("commit → hash durable on the witness quorum at %d single-row tx/s, ms", b2Rate),
		Value:  report.F(m.P99), Unit: "ms", Latency: &m, Samples: m.N,
		BaselineMetric: "raw pgoutput delivery latency to a bare consumer (own slot and publication, bare PostgreSQL), p99",
		Baseline:       report.F(bl.P99), BaselineLatency: &bl,
		TargetText: "p50 ≤ 3 ms, p99 ≤ 10 ms", Target: []report.Bound{{On: "p50", Op: "<=", Value: 3}, {On: "p99", Op: "<=", Value: 10}},
		FloorText: "p99 ≤ 50 ms", Floor: []report.Bound{{On: "p99", Op: "<=", Value: 50}},
		Notes: notes,
	}
}
