package rows

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/witnz/witnz/tools/bench/internal/cpuuse"
	"github.com/witnz/witnz/tools/bench/internal/load"
	"github.com/witnz/witnz/tools/bench/internal/logrepl"
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
	// b2ProbeGap is the pause between two probe transactions.
	b2ProbeGap = 20 * time.Millisecond
	// b2ProbeTimeout gives up on a probe that never becomes visible.
	b2ProbeTimeout = 30 * time.Second
)

// b2 is commit → hash durable on the witness quorum at 1k single-row tx/s.
type b2 struct {
	base, meas    []float64 // ms
	baseLoad      []load.Result
	measLoad      load.Result
	probes        probeStats
	leaderChanges int
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
	return []report.Row{b.row(e)}
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
	dsn := s.Info.Postgres.DSN
	e.Logf("B2: %d single-row tx/s for %s into the protected table, probe transactions followed to the leader", b2Rate, e.D.B2Load)
	type probed struct {
		ps  probeStats
		err error
	}
	probes := make(chan probed, 1)
	pctx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	go func() {
		// Probes start after the warm-up, like the baseline's samples.
		select {
		case <-pctx.Done():
		case <-time.After(b2Warmup):
		}
		ps, err := probe(pctx, cl, dsn)
		probes <- probed{ps, err}
	}()
	in0 := scrapeInside(ctx, s)
	cpu := e.cpuMeter()
	res, err := load.Run(ctx, b2Load(dsn, e.D.B2Load))
	b.cpuMeas = cpu()
	b.inside = insideNote(in0, scrapeInside(ctx, s))
	stopProbes()
	p := <-probes
	if err != nil {
		return err
	}
	if res.FirstErr != nil {
		return fmt.Errorf("load: %d errors, first: %w", res.Errors, res.FirstErr)
	}
	if p.err != nil {
		return fmt.Errorf("probe: %w", p.err)
	}
	b.measLoad, b.probes = res, p.ps
	b.meas = p.ps.lat
	b.leaderChanges = cl.LeaderChanges()
	return nil
}

// probeStats is what the probe transactions saw.
type probeStats struct {
	lat      []float64 // commit → visible on the leader, ms
	gaps     []float64 // between two answers while a probe was followed, ms
	polls    int
	polling  time.Duration
	elapsed  time.Duration
	misses   int // LSN passed but the entry came in a later answer
	timeouts int
}

// probe runs probe transactions one after another until ctx ends: each
// inserts a row, notes its xid and the WAL insert position before its
// commit record, commits, then asks the leader back to back until the
// table's last applied commit LSN reaches that position and the entry with
// the probe's xid is in the log. The entry's index gives the first answer
// that covered it; its commit time is PostgreSQL's. Polling only while a
// probe is in flight keeps the observer's own CPU off the other 1k tx/s.
func probe(ctx context.Context, cl *stack.Cluster, dsn string) (probeStats, error) {
	var ps probeStats
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return ps, err
	}
	defer conn.Close(context.Background())
	started := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		t0, err := cl.Table(ctx, stack.Table)
		if err != nil {
			return done(ctx, ps, err)
		}
		checked := t0.GetSize()
		var xid int64
		var lsnText string
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, insertOneSQL, "probe-"+strconv.Itoa(i)); err != nil {
				return err
			}
			return tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint % 4294967296, pg_current_wal_insert_lsn()::text").Scan(&xid, &lsnText)
		})
		if err != nil {
			return done(ctx, ps, err)
		}
		before, err := pglogrepl.ParseLSN(lsnText)
		if err != nil {
			return ps, err
		}
		followed := time.Now()
		var samples []stack.Sample
		idx, ct := int64(-1), time.Time{}
		for idx < 0 && ctx.Err() == nil {
			sent := time.Now()
			t, err := cl.Table(ctx, stack.Table)
			recv := time.Now()
			if err != nil {
				return done(ctx, ps, err)
			}
			samples = append(samples, stack.Sample{Sent: sent, Recv: recv, Size: t.GetSize()})
			if t.GetLastCommitLsn() >= uint64(before) && t.GetSize() > checked {
				es, err := cl.Entries(ctx, stack.Table, checked, t.GetSize())
				if err != nil {
					return done(ctx, ps, err)
				}
				for k, e := range es {
					if e.GetEntry().GetXid() == uint32(xid) {
						idx, ct = int64(checked)+int64(k), time.UnixMicro(e.GetEntry().GetCommitTimeMicros())
						break
					}
				}
				if idx < 0 {
					ps.misses++
				}
				checked = t.GetSize()
			}
			if time.Since(followed) > b2ProbeTimeout {
				ps.timeouts++
				break
			}
		}
		ps.polling += time.Since(followed)
		ps.polls += len(samples)
		for k := 1; k < len(samples); k++ {
			ps.gaps = append(ps.gaps, float64(samples[k].Recv.Sub(samples[k-1].Recv))/float64(time.Millisecond))
		}
		if idx >= 0 {
			if seen, ok := stats.FirstAtLeast(points(samples), uint64(idx)+1); ok {
				ps.lat = append(ps.lat, float64(seen.Sub(ct))/float64(time.Millisecond))
			}
		}
		ps.elapsed = time.Since(started)
		select {
		case <-ctx.Done():
		case <-time.After(b2ProbeGap):
		}
	}
	return ps, nil
}

func done(ctx context.Context, ps probeStats, err error) (probeStats, error) {
	if ctx.Err() != nil {
		return ps, nil
	}
	return ps, err
}

func (b *b2) row(e *Env) report.Row {
	m, bl := stats.Summarize(b.meas), stats.Summarize(b.base)
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
		"commit time is PostgreSQL's commit timestamp (the entry's commit_time); an entry counts as durable on the quorum when the leader's FSM has applied it (after the Raft quorum commit)",
		fmt.Sprintf("sampled by %d probe transactions (one INSERT each, %s apart) followed on the leader with back-to-back GetStatus: answers every %.2f ms (median), so each figure is an upper bound by up to that much; the observer polled %.0f %% of the time", len(b.probes.lat), b2ProbeGap, stats.Summarize(b.probes.gaps).P50, 100*b.probes.polling.Seconds()/max(b.probes.elapsed.Seconds(), 1e-9)),
		"baseline: receive time of every COMMIT message minus the same commit timestamp, no polling",
		fmt.Sprintf("client INSERT latency from its scheduled start: p99 %.2f ms with the stack, %.2f ms without", cm.P99, cb.P99),
		"CPU with the stack: " + b.cpuMeas.String(),
		"CPU during the baselines: " + joinNonEmpty(baseCPU, " | "),
	}
	if b.inside != "" {
		notes = append(notes, b.inside)
	}
	notes = append(notes, noiseNote(append([]cpuuse.Usage{b.cpuMeas}, b.cpuBase...)...)...)
	if b.leaderChanges > 0 || b.probes.timeouts > 0 {
		notes = append(notes, fmt.Sprintf("witness leader changed %d time(s); %d probes not visible within %s", b.leaderChanges, b.probes.timeouts, b2ProbeTimeout))
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
