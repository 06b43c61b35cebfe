// Package backoff computes exponential retry delays with jitter and waits
// them out unless the context ends first.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff: Min, doubling per attempt up to Max,
// each delay drawn uniformly from [d/2, d] so that many clients retrying
// the same server spread out.
type Policy struct {
	Min time.Duration
	Max time.Duration
}

// Default is the policy used for PostgreSQL, witness and alert retries.
var Default = Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// Delay returns the delay before retry number attempt (0-based).
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Min
	for i := 0; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	half := d / 2
	return half + rand.N(half+1)
}

// Wait sleeps for Delay(attempt) or until ctx ends, and returns ctx.Err()
// in the latter case.
func (p Policy) Wait(ctx context.Context, attempt int) error {
	t := time.NewTimer(p.Delay(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
