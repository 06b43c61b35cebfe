// Package closedloop runs a fixed number of callers, each making one call
// after another for a while, and records when every call started and
// ended: throughput and latency at a given concurrency. It also carries
// such a record between processes as JSON (the bare Raft nodes of B11 run
// their load themselves and send it back).
package closedloop

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// Call is one completed call.
type Call struct {
	Start, End time.Time
}

// Result of a run: the calls that succeeded, in no particular order.
type Result struct {
	Start, End time.Time
	Calls      []Call
	Errors     int
	FirstErr   error
}

// Run starts callers goroutines; each calls call back to back until d has
// passed (a call in flight then is finished and recorded) or ctx ends.
// caller is 0..callers-1 and i counts that caller's calls from 0.
func Run(ctx context.Context, callers int, d time.Duration, call func(ctx context.Context, caller, i int) error) Result {
	res := Result{Start: time.Now()}
	deadline := res.Start.Add(d)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var calls []Call
			var errs int
			var first error
			for i := 0; ctx.Err() == nil && time.Now().Before(deadline); i++ {
				t0 := time.Now()
				err := call(ctx, c, i)
				t1 := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				calls = append(calls, Call{Start: t0, End: t1})
			}
			mu.Lock()
			res.Calls = append(res.Calls, calls...)
			res.Errors += errs
			if res.FirstErr == nil {
				res.FirstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.End = time.Now()
	slices.SortFunc(res.Calls, func(a, b Call) int { return a.End.Compare(b.End) })
	return res
}

// Rate is the calls that ended in [from, to) per second, and their count.
func (r Result) Rate(from, to time.Time) (perSecond float64, n int) {
	for _, c := range r.Calls {
		if !c.End.Before(from) && c.End.Before(to) {
			n++
		}
	}
	if s := to.Sub(from).Seconds(); s > 0 {
		return float64(n) / s, n
	}
	return 0, n
}

// Latencies are the durations, in milliseconds, of the calls that started
// at or after from.
func (r Result) Latencies(from time.Time) []float64 {
	out := make([]float64, 0, len(r.Calls))
	for _, c := range r.Calls {
		if !c.Start.Before(from) {
			out = append(out, float64(c.End.Sub(c.Start))/float64(time.Millisecond))
		}
	}
	return out
}

// Wire is a Result as JSON: times in nanoseconds, calls as offsets from
// the start.
type Wire struct {
	StartNanos int64      `json:"start_unix_nanos"`
	EndNanos   int64      `json:"end_unix_nanos"`
	Calls      [][2]int64 `json:"calls"`
	Errors     int        `json:"errors"`
	FirstErr   string     `json:"first_error,omitempty"`
}

// ToWire encodes r.
func (r Result) ToWire() Wire {
	w := Wire{StartNanos: r.Start.UnixNano(), EndNanos: r.End.UnixNano(), Errors: r.Errors, Calls: make([][2]int64, len(r.Calls))}
	for i, c := range r.Calls {
		w.Calls[i] = [2]int64{c.Start.Sub(r.Start).Nanoseconds(), c.End.Sub(r.Start).Nanoseconds()}
	}
	if r.FirstErr != nil {
		w.FirstErr = r.FirstErr.Error()
	}
	return w
}

// Result decodes w.
func (w Wire) Result() Result {
	start := time.Unix(0, w.StartNanos)
	r := Result{Start: start, End: time.Unix(0, w.EndNanos), Errors: w.Errors, Calls: make([]Call, len(w.Calls))}
	for i, c := range w.Calls {
		r.Calls[i] = Call{Start: start.Add(time.Duration(c[0])), End: start.Add(time.Duration(c[1]))}
	}
	if w.FirstErr != "" {
		r.FirstErr = errors.New(w.FirstErr)
	}
	return r
}
