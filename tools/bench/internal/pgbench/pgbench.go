// Package pgbench runs PostgreSQL's pgbench with a custom script and reads
// its summary and per-transaction logs.
package pgbench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Options of one pgbench run.
type Options struct {
	// Bin is the directory holding pgbench.
	Bin string
	DSN string
	// Script is the SQL of the custom script (written to a file in Dir).
	Script string
	// Dir holds the script and the per-transaction logs.
	Dir      string
	Clients  int
	Threads  int
	Duration time.Duration
	// Transactions per client instead of Duration, when > 0.
	Transactions int
	// Rate throttles to this many transactions per second in total (0: as
	// fast as possible).
	Rate float64
	// Log writes a per-transaction log (needed for percentiles).
	Log bool
}

// Result is what one run reports.
type Result struct {
	Transactions int64
	Failed       int64
	TPS          float64
	LatencyAvgMS float64
	// Latencies of every transaction in milliseconds (with Log). With Rate
	// set they count from the scheduled start, so a stalled server cannot
	// hide queueing (no coordinated omission).
	Latencies []float64
	// ScheduleLagMS per transaction, with Log and Rate.
	ScheduleLagMS []float64
	// Started and Finished bracket the pgbench process.
	Started, Finished time.Time
	Output            string
}

// Run runs pgbench without initialization (-n) and without vacuum.
func Run(ctx context.Context, o Options) (Result, error) {
	script := filepath.Join(o.Dir, fmt.Sprintf("script-%d.sql", time.Now().UnixNano()))
	if err := os.WriteFile(script, []byte(o.Script+"\n"), 0o644); err != nil {
		return Result{}, err
	}
	prefix := strings.TrimSuffix(script, ".sql") + "-log"
	args := []string{"-n", "-f", script, "-c", strconv.Itoa(max(o.Clients, 1)), "-j", strconv.Itoa(max(o.Threads, 1))}
	if o.Transactions > 0 {
		args = append(args, "-t", strconv.Itoa(o.Transactions))
	} else {
		args = append(args, "-T", strconv.Itoa(max(int(o.Duration.Round(time.Second)/time.Second), 1)))
	}
	if o.Rate > 0 {
		args = append(args, "-R", strconv.FormatFloat(o.Rate, 'f', -1, 64))
	}
	if o.Log {
		args = append(args, "-l", "--log-prefix", prefix)
	}
	args = append(args, o.DSN)
	cmd := exec.CommandContext(ctx, filepath.Join(o.Bin, "pgbench"), args...)
	cmd.Dir = o.Dir
	res := Result{Started: time.Now()}
	out, err := cmd.CombinedOutput()
	res.Finished = time.Now()
	res.Output = string(out)
	if err != nil {
		return res, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args[:len(args)-1], " "), err, out)
	}
	if err := ParseSummary(res.Output, &res); err != nil {
		return res, err
	}
	if o.Log {
		logs, _ := filepath.Glob(prefix + ".*")
		for _, l := range logs {
			f, err := os.Open(l)
			if err != nil {
				return res, err
			}
			lat, lag, err := ParseLog(f)
			f.Close()
			if err != nil {
				return res, fmt.Errorf("%s: %w", l, err)
			}
			res.Latencies = append(res.Latencies, lat...)
			res.ScheduleLagMS = append(res.ScheduleLagMS, lag...)
			_ = os.Remove(l)
		}
	}
	return res, nil
}

var (
	reProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	reFailed    = regexp.MustCompile(`number of failed transactions: (\d+)`)
	reLatency   = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
	reTPS       = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
)

// ParseSummary reads the summary pgbench prints at the end into res.
func ParseSummary(out string, res *Result) error {
	m := reTPS.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("pgbench printed no tps line:\n%s", out)
	}
	res.TPS, _ = strconv.ParseFloat(m[1], 64)
	if m := reProcessed.FindStringSubmatch(out); m != nil {
		res.Transactions, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reFailed.FindStringSubmatch(out); m != nil {
		res.Failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reLatency.FindStringSubmatch(out); m != nil {
		res.LatencyAvgMS, _ = strconv.ParseFloat(m[1], 64)
	}
	return nil
}

// ParseLog reads a per-transaction log: "client_id transaction_no time
// script_no time_epoch time_us [schedule_lag [retries]]", times in
// microseconds. Skipped transactions (time "skipped") are left out.
func ParseLog(r io.Reader) (latencyMS, lagMS []float64, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		us, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			continue
		}
		latencyMS = append(latencyMS, us/1000)
		if len(f) >= 7 {
			if lag, err := strconv.ParseFloat(f[6], 64); err == nil {
				lagMS = append(lagMS, lag/1000)
			}
		}
	}
	return latencyMS, lagMS, sc.Err()
}
