package anchor

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/anchor/internal/alerts"
	"github.com/witnz/witnz/services/anchor/internal/witnesses"
)

// backoff waits exponentially longer between attempts, with jitter.
type backoff struct {
	next, max time.Duration
}

func newBackoff(first, max time.Duration) *backoff { return &backoff{next: first, max: max} }

// wait sleeps for the next delay (half to full of it, at random) and
// reports false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(2*b.next, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// notYet is how soon Run tries again when no table has a checkpoint yet.
const notYet = 30 * time.Second

// Run anchors every Interval until ctx ends: at start when the newest
// receipt (local, else in the witness log) is older than Interval (or
// there is none), then Interval after
// each success or failure. A failed attempt is retried with backoff for
// up to a quarter of the interval (at most 15 minutes) before it is an
// alert; no anchor for more than twice the interval is an alert too.
func (a *Anchorer) Run(ctx context.Context) error {
	interval := a.cfg.Interval
	last := a.cfg.Now()
	next := a.cfg.Now()
	if at, ok := a.lastAnchoredAt(ctx); ok {
		last = at
		next = last.Add(interval)
	}
	watch := min(interval, time.Minute)
	for {
		wait := min(time.Until(next), watch)
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		now := a.cfg.Now()
		if now.Before(next) {
			a.checkLate(last, now)
			continue
		}
		err := a.anchorWithRetry(ctx, min(interval/4, 15*time.Minute))
		now = a.cfg.Now()
		switch {
		case err == nil:
			last, next = now, now.Add(interval)
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrNothingToAnchor):
			a.log.Info("nothing anchored yet: no table has a cosigned checkpoint")
			// Not late while there is nothing to anchor.
			last, next = now, now.Add(min(interval, notYet))
		default:
			a.cfg.Alerts.Raise(a.log, alerts.Alert(alerts.TypeFailed, alertv1.Severity_SEVERITY_HIGH, "",
				"anchoring failed: "+err.Error(), map[string]any{"error": err.Error()}, now.Truncate(interval).String()))
			next = now.Add(interval)
		}
		a.checkLate(last, now)
	}
}

// lastAnchoredAt is the time of the newest receipt: in the local store,
// else (a new host, a lost data directory) in the witness log.
func (a *Anchorer) lastAnchoredAt(ctx context.Context) (time.Time, bool) {
	if r, err := a.cfg.Store.Latest(); err == nil && r != nil {
		return r.GetAnchoredAt().AsTime(), true
	}
	var newest time.Time
	for _, n := range a.cfg.Witnesses.Nodes() {
		cctx, cancel := context.WithTimeout(ctx, witnesses.CallTimeout)
		resp, err := n.Client.ListAnchorReceipts(cctx, connect.NewRequest(&witnessv1.ListAnchorReceiptsRequest{Limit: 1}))
		cancel()
		if err != nil || len(resp.Msg.GetReceipts()) == 0 {
			continue
		}
		if at := time.UnixMicro(resp.Msg.GetReceipts()[0].GetAnchoredAtMicros()); at.After(newest) {
			newest = at
		}
	}
	return newest, !newest.IsZero()
}

// checkLate raises the late alert when the last anchor is older than twice
// the interval; its id is derived from that anchor's time, so it is
// stored once per late period.
func (a *Anchorer) checkLate(last, now time.Time) {
	if now.Sub(last) <= 2*a.cfg.Interval {
		return
	}
	a.cfg.Alerts.Raise(a.log, alerts.Alert(alerts.TypeLate, alertv1.Severity_SEVERITY_HIGH, "",
		"no checkpoint anchored since "+last.UTC().Format(time.RFC3339)+", more than twice the anchoring interval ("+a.cfg.Interval.String()+")",
		map[string]any{"last_anchor": last.UTC().Format(time.RFC3339), "interval": a.cfg.Interval.String()}, last.UTC().Format(time.RFC3339Nano)))
}

// anchorWithRetry anchors, retrying failures with backoff for up to
// budget.
func (a *Anchorer) anchorWithRetry(ctx context.Context, budget time.Duration) error {
	ctx2, cancel := context.WithTimeout(ctx, max(budget, time.Second))
	defer cancel()
	b := newBackoff(time.Second, time.Minute)
	for attempt := 1; ; attempt++ {
		_, err := a.AnchorNow(ctx)
		if err == nil || errors.Is(err, ErrNothingToAnchor) {
			return err
		}
		a.log.Warn("anchoring failed; retrying", "attempt", attempt, "error", err)
		if !b.wait(ctx2) {
			return err
		}
	}
}
