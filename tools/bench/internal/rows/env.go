// Package rows implements the benchmark rows of docs/design/0007: each row
// measures its figure on the real stack and its baseline in the same run,
// adjacent in time, and returns report rows.
package rows

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/witnz/witnz/libs/pgbin"
	"github.com/witnz/witnz/tools/bench/internal/cpuuse"
	"github.com/witnz/witnz/tools/bench/internal/gobench"
	"github.com/witnz/witnz/tools/bench/internal/pgcluster"
	"github.com/witnz/witnz/tools/bench/internal/stack"
)

// Durations sizes the runs; Quick and Full are the two modes.
type Durations struct {
	// B1: the producer baseline, the saturated load on the stack (and the
	// part of it skipped as warm-up), the paced load for the lag, and the
	// backlog size for the drain.
	B1Baseline, B1Load, B1Warmup, B1Paced time.Duration
	B1Backlog                             int
	// B2: each of the two fixed-rate runs.
	B2Load time.Duration
	// B5: each pgbench run, and how many rounds of (without, with) runs
	// each of the two parts alternates.
	B5Load   time.Duration
	B5Rounds int
	// B3: how many tampering UPDATEs are followed to the clients.
	B3Updates int
	// B9: the run on the stack (the baseline gets as long, in two halves).
	B9Load time.Duration
	// B6: -benchtime and -count of every Go benchmark.
	B6Benchtime string
	B6Count     int
	// B11: at each batch size, the run with many callers and the run with
	// one caller on each cluster, and the start of each left out.
	B11Load, B11Latency, B11Warmup time.Duration
	// B4: the rows of the verified table.
	B4Rows int
	// CatchUp bounds every wait for the witnesses to catch up.
	CatchUp time.Duration
}

// Quick finishes every row in under three minutes in total.
var Quick = Durations{
	B1Baseline: 8 * time.Second, B1Load: 12 * time.Second, B1Warmup: 3 * time.Second, B1Paced: 8 * time.Second, B1Backlog: 150_000,
	B2Load: 8 * time.Second,
	B5Load: 4 * time.Second, B5Rounds: 2,
	B6Benchtime: "100ms", B6Count: 2,
	B9Load: 6 * time.Second, B3Updates: 30,
	B11Load: 2 * time.Second, B11Latency: 1500 * time.Millisecond, B11Warmup: 500 * time.Millisecond,
	B4Rows:  1_000_000,
	CatchUp: 90 * time.Second,
}

// Full runs long enough for steady state (about 15 minutes for all rows).
var Full = Durations{
	B1Baseline: 40 * time.Second, B1Load: 60 * time.Second, B1Warmup: 10 * time.Second, B1Paced: 45 * time.Second, B1Backlog: 1_000_000,
	B2Load: 60 * time.Second,
	B5Load: 15 * time.Second, B5Rounds: 3,
	B6Benchtime: "1s", B6Count: 3,
	B9Load: 30 * time.Second, B3Updates: 300,
	B11Load: 10 * time.Second, B11Latency: 6 * time.Second, B11Warmup: time.Second,
	B4Rows:  10_000_000,
	CatchUp: 5 * time.Minute,
}

// Env is what rows share: paths, durations, the bare PostgreSQL cluster of
// the baselines (started on first use) and the stack launcher.
type Env struct {
	D Durations
	// Repo is the repository root (go test -bench runs in its modules).
	Repo string
	// Bin holds the service binaries and witnz (make build).
	Bin string
	// Work is this run's scratch directory (under bench/results/tmp).
	Work string
	Log  io.Writer
	// Self is the harness binary, which B11 starts again as bare Raft
	// nodes (bareraft.Command).
	Self string

	// GoBenchmarks collects the raw `go test -bench` results (B6).
	GoBenchmarks []gobench.Result

	bare   *pgcluster.Cluster
	stacks int
	// stack is the running stack, if any: baselines account its idle CPU
	// under its own name.
	stack *stack.Stack
}

// Logf prints a progress line.
func (e *Env) Logf(format string, args ...any) {
	fmt.Fprintf(e.Log, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// dir makes and returns a scratch directory.
func (e *Env) dir(name string) (string, error) {
	d := filepath.Join(e.Work, name)
	return d, os.MkdirAll(d, 0o755)
}

// Bare returns the baseline PostgreSQL cluster, starting it on first use.
func (e *Env) Bare(ctx context.Context) (*pgcluster.Cluster, error) {
	if e.bare != nil {
		return e.bare, nil
	}
	e.Logf("starting a bare PostgreSQL for the baselines")
	c, err := pgcluster.Start(ctx, filepath.Join(e.Work, "bare-pg"))
	if err != nil {
		return nil, err
	}
	e.bare = c
	return c, nil
}

// PGBin is the directory of pgbench and the server binaries.
func (e *Env) PGBin() string {
	b, _ := pgbin.Dir()
	return b
}

// Close stops the bare cluster.
func (e *Env) Close(ctx context.Context) error {
	if e.bare == nil {
		return nil
	}
	err := e.bare.Stop(ctx)
	e.bare = nil
	return err
}

// WithStack starts a fresh local stack (`witnz up`), runs fn and stops it.
func (e *Env) WithStack(ctx context.Context, fn func(*stack.Stack) error) error {
	e.stacks++
	dir, err := e.dir(fmt.Sprintf("stack-%d", e.stacks))
	if err != nil {
		return err
	}
	e.Logf("starting the witnz stack in %s", dir)
	t0 := time.Now()
	s, err := stack.Up(ctx, filepath.Join(e.Bin, "witnz"), e.Bin, dir)
	if err != nil {
		return err
	}
	e.Logf("stack ready in %.1f s", time.Since(t0).Seconds())
	e.stack = s
	ferr := fn(s)
	e.stack = nil
	derr := s.Down(context.Background())
	if ferr != nil {
		return ferr
	}
	return derr
}

// bareDatabase creates database name with the stack's table in the bare
// cluster and returns its DSN and a function that drops it.
func (e *Env) bareDatabase(ctx context.Context, name string) (string, func(), error) {
	c, err := e.Bare(ctx)
	if err != nil {
		return "", nil, err
	}
	if err := execSQL(ctx, c.DSN("postgres"), "DROP DATABASE IF EXISTS "+name, "CREATE DATABASE "+name); err != nil {
		return "", nil, err
	}
	dsn := c.DSN(name)
	if err := execSQL(ctx, dsn, tableDDL); err != nil {
		return "", nil, err
	}
	drop := func() {
		// A fresh database per row: nothing of one baseline (autovacuum,
		// checkpoints of its rows) weighs on the next measurement.
		_ = execSQL(context.Background(), c.DSN("postgres"), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)", "CHECKPOINT")
	}
	return dsn, drop, nil
}

// cpuMeter starts accounting CPU for this process with its load
// generators, the bare cluster (if started), the stack (if running) and
// the extra trees (children of this process accounted on their own); the
// returned function ends it.
func (e *Env) cpuMeter(extra ...cpuuse.Root) func() cpuuse.Usage {
	roots := append(append([]cpuuse.Root(nil), extra...), cpuuse.Root{Group: "harness and load generator", PID: os.Getpid()})
	if e.bare != nil {
		roots = append(roots, cpuuse.Root{Group: "bare PostgreSQL", PID: e.bare.PID()})
	}
	if e.stack != nil {
		// The stack's supervisor is a child of this process: as a root of
		// its own, its tree counts for the stack.
		roots = append(roots, cpuuse.Root{Group: "stack", PID: e.stack.Info.PID})
	}
	a := cpuuse.Take(roots...)
	return func() cpuuse.Usage { return cpuuse.Since(a, cpuuse.Take(roots...)) }
}

// noisyShare is how much of a core other processes may use during a
// measurement before its row says the figure is unreliable.
const noisyShare = 50

// noiseNote warns when other processes on the machine took a large share
// of the CPU during any of the runs behind a row.
func noiseNote(us ...cpuuse.Usage) []string {
	var worst float64
	for _, u := range us {
		worst = max(worst, u.Others)
	}
	if worst < noisyShare {
		return nil
	}
	return []string{fmt.Sprintf("NOISY: other processes on the machine used up to %.0f %% of a core during these runs; treat this figure and its ratio with care", worst)}
}

// tableDDL is the protected table `witnz up` creates, public.audit_log:
// the baselines write into the same table, unprotected.
const tableDDL = `CREATE TABLE IF NOT EXISTS public.audit_log (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	actor text NOT NULL,
	action text NOT NULL,
	detail jsonb
)`

// The rows every benchmark writes: about 120 bytes each on disk.
const (
	detailJSON = `{"ip": "10.1.2.3", "agent": "bench/1.0", "ok": true}`
	// insertOne is one single-row INSERT transaction (pgbench script).
	insertOne = "\\set u random(1, 1000000)\nINSERT INTO audit_log (actor, action, detail) VALUES ('user-' || :u, 'login', '" + detailJSON + "');"
	// insertOneSQL is the same statement for the Go load generator.
	insertOneSQL = "INSERT INTO audit_log (actor, action, detail) VALUES ($1, 'login', '" + detailJSON + "')"
	// rowsPerTx is the size of a B1 transaction.
	rowsPerTx = 100
)

// insertMany is one transaction of rowsPerTx rows (pgbench script).
var insertMany = fmt.Sprintf("INSERT INTO audit_log (actor, action, detail) SELECT 'user-' || g, 'login', '%s'::jsonb FROM generate_series(1, %d) g;", detailJSON, rowsPerTx)

func execSQL(ctx context.Context, dsn string, stmts ...string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(s, "\n", 2)[0], err)
		}
	}
	return nil
}

func queryInt(ctx context.Context, dsn, sql string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, sql).Scan(&n)
	return n, err
}

// rowBytes is the average stored size of a row of audit_log.
func rowBytes(ctx context.Context, dsn string) float64 {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0
	}
	defer conn.Close(context.Background())
	var v float64
	_ = conn.QueryRow(ctx, "SELECT coalesce(avg(pg_column_size(t.*)), 0)::float8 FROM (SELECT * FROM audit_log LIMIT 1000) t").Scan(&v)
	return v
}
