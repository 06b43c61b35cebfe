package rows

import (
	"context"
	"fmt"
	"time"

	"github.com/witnz/witnz/tools/bench/internal/stack"
	"github.com/witnz/witnz/tools/bench/internal/stats"
)

// poller observes the leader's log size in the background.
type poller struct {
	cancel   context.CancelFunc
	done     chan struct{}
	samples  []stack.Sample
	failures int
}

func startPoll(ctx context.Context, cl *stack.Cluster, interval time.Duration) *poller {
	ctx, cancel := context.WithCancel(ctx)
	p := &poller{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.samples, p.failures = cl.Poll(ctx, stack.Table, interval)
	}()
	return p
}

func (p *poller) stop() ([]stack.Sample, int) {
	p.cancel()
	<-p.done
	return p.samples, p.failures
}

// points are the samples as (time the answer arrived, size): an entry is
// certainly visible by the Recv time of the first answer that covers it.
func points(samples []stack.Sample) []stats.Point {
	out := make([]stats.Point, len(samples))
	for i, s := range samples {
		out[i] = stats.Point{At: s.Recv, Count: s.Size}
	}
	return out
}

// pollInterval is the median time between two answers: the resolution of
// every "became visible" time.
func pollInterval(samples []stack.Sample) time.Duration {
	if len(samples) < 2 {
		return 0
	}
	d := make([]float64, 0, len(samples)-1)
	for i := 1; i < len(samples); i++ {
		d = append(d, float64(samples[i].Recv.Sub(samples[i-1].Recv)))
	}
	return time.Duration(stats.Summarize(d).P50)
}

// waitSize polls until the leader's size of the table reaches want and
// returns the time the answer that showed it arrived.
func waitSize(ctx context.Context, cl *stack.Cluster, want uint64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var size uint64
	for {
		s, err := cl.Size(ctx, stack.Table)
		if err == nil {
			size = s
			if size >= want {
				return time.Now(), nil
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the witnesses reached %d of %d entries within %s", size, want, timeout)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// entryLatencies turns the commit times of entries base, base+1, … into
// commit → visible-on-the-leader latencies in milliseconds. Entries
// committed before from are left out (warm-up), and so are entries no
// sample covers.
func entryLatencies(pts []stats.Point, base uint64, commitTimes []time.Time, from time.Time) []float64 {
	out := make([]float64, 0, len(commitTimes))
	for k, ct := range commitTimes {
		if ct.Before(from) {
			continue
		}
		seen, ok := stats.FirstAtLeast(pts, base+uint64(k)+1)
		if !ok {
			continue
		}
		out = append(out, float64(seen.Sub(ct))/float64(time.Millisecond))
	}
	return out
}

// sampledLatencies is entryLatencies for n entries spread evenly over
// [from, to), fetched one by one: for runs with millions of entries.
// Entries committed before notBefore are left out.
func sampledLatencies(ctx context.Context, cl *stack.Cluster, pts []stats.Point, from, to uint64, n int, notBefore time.Time) ([]float64, error) {
	if to <= from {
		return nil, nil
	}
	step := max((to-from)/uint64(n), 1)
	var out []float64
	for i := from; i < to; i += step {
		ct, err := cl.CommitTimes(ctx, stack.Table, i, i+1)
		if err != nil {
			return nil, err
		}
		if ct[0].Before(notBefore) {
			continue
		}
		seen, ok := stats.FirstAtLeast(pts, i+1)
		if !ok {
			continue
		}
		out = append(out, float64(seen.Sub(ct[0]))/float64(time.Millisecond))
	}
	return out, nil
}
