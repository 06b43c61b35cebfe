// Package load generates database load at a fixed rate with pgx: each
// statement is scheduled in advance and its latency counts from the
// scheduled time, so a stalled server cannot hide queueing.
package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Fixed describes an open-loop load: Rate single-statement transactions per
// second for Duration, over Conns connections.
type Fixed struct {
	DSN      string
	SQL      string
	Args     func(i int64) []any
	Rate     float64
	Duration time.Duration
	Conns    int
}

// Result of a fixed-rate run.
type Result struct {
	Scheduled, Done, Errors int64
	FirstErr                error
	Start, End              time.Time
	// Latencies in milliseconds, from the scheduled start to the end of
	// the commit, in completion order.
	Latencies []float64
}

// Achieved is the completed transactions per second.
func (r Result) Achieved() float64 {
	d := r.End.Sub(r.Start).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(r.Done) / d
}

// Run connects, then sends the load until Duration has passed or ctx ends,
// and waits for what was scheduled to finish.
func Run(ctx context.Context, f Fixed) (Result, error) {
	if f.Rate <= 0 || f.Conns <= 0 {
		return Result{}, errors.New("load: rate and connections must be positive")
	}
	conns := make([]*pgx.Conn, f.Conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	for i := range conns {
		c, err := pgx.Connect(ctx, f.DSN)
		if err != nil {
			return Result{}, fmt.Errorf("load: connect: %w", err)
		}
		if _, err := c.Prepare(ctx, "load", f.SQL); err != nil {
			return Result{}, fmt.Errorf("load: prepare: %w", err)
		}
		conns[i] = c
	}
	total := int64(f.Rate * f.Duration.Seconds())
	type job struct {
		i     int64
		sched time.Time
	}
	jobs := make(chan job, total+1)
	var (
		mu  sync.Mutex
		res Result
		wg  sync.WaitGroup
	)
	for _, c := range conns {
		wg.Go(func() {
			lat := make([]float64, 0, total/int64(len(conns))+16)
			var done, failed int64
			var firstErr error
			for j := range jobs {
				_, err := c.Exec(ctx, "load", f.Args(j.i)...)
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				done++
				lat = append(lat, float64(time.Since(j.sched))/float64(time.Millisecond))
			}
			mu.Lock()
			res.Latencies = append(res.Latencies, lat...)
			res.Done += done
			res.Errors += failed
			if res.FirstErr == nil {
				res.FirstErr = firstErr
			}
			mu.Unlock()
		})
	}
	interval := time.Duration(float64(time.Second) / f.Rate)
	res.Start = time.Now()
	var i int64
	for ; i < total && ctx.Err() == nil; i++ {
		sched := res.Start.Add(time.Duration(i) * interval)
		if d := time.Until(sched); d > 0 {
			time.Sleep(d)
		}
		jobs <- job{i: i, sched: sched}
	}
	close(jobs)
	wg.Wait()
	res.End = time.Now()
	res.Scheduled = i
	return res, nil
}
