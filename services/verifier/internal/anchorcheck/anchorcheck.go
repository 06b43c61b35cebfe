// Package anchorcheck asks the anchor service, on a schedule, to prove
// that today's witness logs extend what was anchored in write-once
// storage. A failed check (history rewritten, an anchored object missing
// or corrupted) is a CRITICAL alert naming the table and the problem,
// unless the anchor service says it raised that alert itself; an
// anchor service that cannot be asked for longer than the interval is a
// HIGH alert.
package anchorcheck

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/alertqueue"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
)

// Alert types.
const (
	// TypeCheckFailed: the logs no longer extend an anchored checkpoint, or
	// an anchored object is missing or corrupted.
	TypeCheckFailed = "verify.anchor_check_failed"
	// TypeUnavailable: the anchor check could not run for longer than its
	// interval.
	TypeUnavailable = "verify.anchor_check_unavailable"
)

// Source is the source of the alerts.
const Source = "verifier"

// DefaultInterval is the interval when none is configured.
const DefaultInterval = time.Hour

// firstCheck is how long after start-up the first check runs when the
// interval is longer.
const firstCheck = 30 * time.Second

// maxCallTimeout bounds one CheckAnchors call.
const maxCallTimeout = 5 * time.Minute

// Alerter delivers alerts (the verifier's alert client).
type Alerter interface {
	Raise(alerts ...*alertv1.Alert)
}

// Config configures a Checker.
type Config struct {
	// Client calls the anchor service at URL.
	Client anchorv1connect.AnchorServiceClient
	URL    string
	// Interval between checks; zero means DefaultInterval.
	Interval time.Duration
	// Alerts receives the alerts; nil only logs them.
	Alerts Alerter
	Log    *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Checker runs the scheduled anchor check.
type Checker struct {
	cfg Config
	// failingSince is when the anchor service first failed to answer in
	// the current outage (zero while it answers); alerted says the outage
	// was alerted.
	failingSince time.Time
	alerted      bool
}

// New returns a Checker.
func New(cfg Config) *Checker {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Checker{cfg: cfg}
}

// Run checks every interval until ctx ends; the first check comes after
// at most 30 s.
func (c *Checker) Run(ctx context.Context) {
	timer := time.NewTimer(min(c.cfg.Interval, firstCheck))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		c.Check(ctx)
		timer.Reset(c.cfg.Interval)
	}
}

// Outcome is what one check found.
type Outcome struct {
	// Checked is false when the anchor service did not answer (Err says
	// why) or nothing is anchored yet.
	Checked bool
	OK      bool
	// Problems are the failed checks.
	Problems []*anchorv1.AnchorCheck
	// Alerts raised by this check.
	Alerts []*alertv1.Alert
	Err    error
}

// Check runs one anchor check and raises its alerts.
func (c *Checker) Check(ctx context.Context) Outcome {
	cctx, cancel := context.WithTimeout(ctx, min(c.cfg.Interval, maxCallTimeout))
	defer cancel()
	resp, err := c.cfg.Client.CheckAnchors(cctx, connect.NewRequest(&anchorv1.CheckAnchorsRequest{}))
	now := c.cfg.Now()
	if err != nil {
		if ctx.Err() != nil {
			return Outcome{Err: ctx.Err()}
		}
		return c.failed(now, err)
	}
	if !c.failingSince.IsZero() {
		c.cfg.Log.Info("anchor check: the anchor service answers again", "anchor", c.cfg.URL, "after", now.Sub(c.failingSince).Round(time.Second).String())
	}
	c.failingSince, c.alerted = time.Time{}, false

	checks := resp.Msg.GetChecks()
	out := Outcome{Checked: len(checks) > 0, OK: resp.Msg.GetOk()}
	if !out.Checked && out.OK {
		c.cfg.Log.Info("anchor check: nothing is anchored yet", "anchor", c.cfg.URL)
		return out
	}
	if !out.Checked {
		// Not ok, and no check says why: still a failed check.
		out.Checked = true
		checks = []*anchorv1.AnchorCheck{{Problem: "the anchor service reports the check failed without naming a table or object"}}
	}
	for _, ch := range checks {
		if ch.GetOk() {
			continue
		}
		out.OK = false
		out.Problems = append(out.Problems, ch)
		al := CheckFailed(ch, now)
		out.Alerts = append(out.Alerts, al)
		c.cfg.Log.Error("anchor check failed", "table", ch.GetTable(), "key", ch.GetReceipt().GetKey(),
			"version_id", ch.GetReceipt().GetVersionId(), "problem", ch.GetProblem(), "alert_id", al.GetAlertId())
	}
	if out.OK {
		c.cfg.Log.Info("anchor check", "outcome", "ok", "checks", len(checks))
	}
	if resp.Msg.GetAlerted() {
		// The anchor service raised these itself: one failure, one alert.
		out.Alerts = nil
	}
	c.raise(out.Alerts...)
	return out
}

// failed records a check that could not run and alerts once per outage
// that lasts longer than the interval.
func (c *Checker) failed(now time.Time, err error) Outcome {
	if c.failingSince.IsZero() {
		c.failingSince = now
	}
	down := now.Sub(c.failingSince)
	out := Outcome{Err: err}
	c.cfg.Log.Warn("anchor check could not run", "anchor", c.cfg.URL, "failing_for", down.Round(time.Second).String(), "error", err)
	if down >= c.cfg.Interval && !c.alerted {
		c.alerted = true
		al := Unavailable(c.cfg.URL, c.failingSince, now, err)
		out.Alerts = append(out.Alerts, al)
		c.raise(al)
	}
	return out
}

func (c *Checker) raise(alerts ...*alertv1.Alert) {
	if c.cfg.Alerts != nil && len(alerts) > 0 {
		c.cfg.Alerts.Raise(alerts...)
	}
}

// CheckFailed is the CRITICAL alert of a failed check. Its id is derived
// from the anchored object and the table, not from the problem's wording
// (which names the current size, growing with the log), so a failure that
// persists round after round is one alert.
func CheckFailed(ch *anchorv1.AnchorCheck, now time.Time) *alertv1.Alert {
	r := ch.GetReceipt()
	id := alertqueue.ID("witnz/alert/verifier/anchor-check/v1", r.GetSink(), r.GetBucket(), r.GetKey(), r.GetVersionId(), r.GetChecksumSha256(), ch.GetTable())
	where := r.GetKey()
	if r.GetBucket() != "" {
		where = r.GetBucket() + "/" + where
	}
	if r.GetVersionId() != "" {
		where += " version " + r.GetVersionId()
	}
	problem := oneLine(ch.GetProblem())
	if problem == "" {
		problem = "the check failed"
	}
	var msg string
	if ch.GetTable() == "" {
		msg = fmt.Sprintf("anchored object %s (%s sink): %s", where, r.GetSink(), problem)
	} else {
		msg = fmt.Sprintf("the witness log of %s no longer matches its anchored checkpoint at size %d in %s (%s sink): %s",
			ch.GetTable(), anchoredSize(ch), where, r.GetSink(), problem)
	}
	detail, err := structpb.NewStruct(map[string]any{
		"table":         ch.GetTable(),
		"problem":       problem,
		"sink":          r.GetSink(),
		"bucket":        r.GetBucket(),
		"key":           r.GetKey(),
		"version_id":    r.GetVersionId(),
		"anchored_at":   rfc3339(r.GetAnchoredAt()),
		"anchored_size": fmt.Sprint(anchoredSize(ch)),
		"current_size":  fmt.Sprint(ch.GetCurrentSize()),
	})
	if err != nil {
		detail = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:    id,
		Type:       TypeCheckFailed,
		Severity:   alertv1.Severity_SEVERITY_CRITICAL,
		Message:    msg,
		Source:     Source,
		Table:      ch.GetTable(),
		Detail:     detail,
		OccurredAt: timestamppb.New(now),
	}
}

// Unavailable is the HIGH alert of an anchor check that could not run
// since failingSince. Its id is derived from the anchor service and the
// start of the outage.
func Unavailable(url string, failingSince, now time.Time, err error) *alertv1.Alert {
	id := alertqueue.ID("witnz/alert/verifier/anchor-unavailable/v1", url, failingSince.UTC().Format(time.RFC3339Nano))
	reason := oneLine(err.Error())
	detail, derr := structpb.NewStruct(map[string]any{
		"anchor_url":    url,
		"failing_since": failingSince.UTC().Format(time.RFC3339),
		"error":         reason,
	})
	if derr != nil {
		detail = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:  id,
		Type:     TypeUnavailable,
		Severity: alertv1.Severity_SEVERITY_HIGH,
		Message: fmt.Sprintf("the anchor check has not run for %s: the anchor service %s does not answer (%s), so a rewritten history would go unnoticed",
			now.Sub(failingSince).Round(time.Second), url, reason),
		Source:     Source,
		Detail:     detail,
		OccurredAt: timestamppb.New(now),
	}
}

func anchoredSize(ch *anchorv1.AnchorCheck) uint64 {
	if n := ch.GetAnchoredSize(); n > 0 {
		return n
	}
	return ch.GetReceipt().GetTableSizes()[ch.GetTable()]
}

func rfc3339(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
