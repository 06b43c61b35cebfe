package app

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/services/verifier/internal/alerts"
	"github.com/witnz/witnz/services/verifier/internal/config"
	"github.com/witnz/witnz/services/verifier/internal/history"
	"github.com/witnz/witnz/services/verifier/internal/verify"
)

// Triggers of a run.
const (
	triggerAPI      = "api"
	triggerSchedule = "schedule"
)

// firstScheduledRun is how long after start-up a scheduled table is first
// verified when its interval is longer.
const firstScheduledRun = 30 * time.Second

// runner runs verifications one at a time (a scan uses every core it is
// given, and memory is bounded per run, not per table) and records each in
// the history.
type runner struct {
	v       *verify.Verifier
	history *history.Store
	alerter *alerts.Alerter
	log     *slog.Logger
	sem     chan struct{}
}

func newRunner(v *verify.Verifier, h *history.Store, a *alerts.Alerter, log *slog.Logger) *runner {
	return &runner{v: v, history: h, alerter: a, log: log, sem: make(chan struct{}, 1)}
}

// run verifies table and records the run. The response describes the run
// in every case; err is set when the table could not be verified.
func (r *runner) run(ctx context.Context, table, trigger string) (*verifierv1.VerifyResponse, error) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	started := time.Now()
	res, err := r.v.Verify(ctx, table)
	<-r.sem
	resp := toProto(table, trigger, started, res, err)
	if ctx.Err() != nil && err != nil {
		// Cancelled by the caller or by shutdown: not a result.
		return resp, err
	}
	if herr := r.history.Add(resp); herr != nil {
		r.log.Error("record verification run", "table", table, "error", herr)
	}
	attrs := []any{"table", table, "trigger", trigger, "outcome", outcomeName(resp.GetOutcome()),
		"snapshot_lsn", resp.GetSnapshotLsn(), "log_size", resp.GetLogSize(), "rows", resp.GetRowsScanned(), "duration_ms", resp.GetDurationMs()}
	switch resp.GetOutcome() {
	case verifierv1.Outcome_OUTCOME_OK:
		r.log.Info("verification", attrs...)
	case verifierv1.Outcome_OUTCOME_TAMPERED:
		r.log.Warn("verification found tampering", append(attrs, "findings", len(resp.GetFindings()))...)
	case verifierv1.Outcome_OUTCOME_INTEGRITY:
		r.log.Warn("verification found log integrity problems", append(attrs, "findings", len(resp.GetFindings()), "integrity_problems", len(resp.GetIntegrity()))...)
	default:
		r.log.Warn("verification failed", append(attrs, "reason", resp.GetError())...)
	}
	r.alerter.Raise(alerts.ForRun(resp)...)
	return resp, err
}

// schedule verifies each table every interval until ctx ends.
func (r *runner) schedule(ctx context.Context, tables []config.Scheduled) {
	var wg sync.WaitGroup
	for _, s := range tables {
		wg.Go(func() {
			timer := time.NewTimer(min(s.Interval, firstScheduledRun))
			defer timer.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
				// The outcome is in the history and the log.
				_, _ = r.run(ctx, s.Table, triggerSchedule)
				timer.Reset(s.Interval)
			}
		})
	}
	wg.Wait()
}

func outcomeName(o verifierv1.Outcome) string {
	switch o {
	case verifierv1.Outcome_OUTCOME_OK:
		return "ok"
	case verifierv1.Outcome_OUTCOME_TAMPERED:
		return "tampered"
	case verifierv1.Outcome_OUTCOME_INTEGRITY:
		return "integrity"
	}
	return "error"
}

// toProto describes a run.
func toProto(table, trigger string, started time.Time, res *verify.Result, err error) *verifierv1.VerifyResponse {
	out := &verifierv1.VerifyResponse{Table: table, StartedAt: timestamppb.New(started), Trigger: trigger}
	if err != nil || res == nil {
		out.Outcome = verifierv1.Outcome_OUTCOME_ERROR
		if err != nil {
			out.Error = err.Error()
		}
		out.DurationMs = uint64(time.Since(started).Milliseconds())
		return out
	}
	out.SnapshotLsn = verify.FormatLSN(res.SnapshotLSN)
	out.LogSize = res.LogSize
	out.RowsScanned = res.Rows
	out.DurationMs = uint64(res.Duration.Milliseconds())
	out.Ok = res.OK()
	out.DifferingBuckets = uint32(res.DifferingBuckets)
	out.FindingsTruncated = res.Truncated
	out.Warnings = res.Warnings
	out.Outcome = verifierv1.Outcome_OUTCOME_OK
	if len(res.Findings) > 0 {
		out.Outcome = verifierv1.Outcome_OUTCOME_TAMPERED
		out.ConfirmSnapshotLsn = verify.FormatLSN(res.ConfirmLSN)
	}
	if len(res.Integrity) > 0 {
		out.Outcome = verifierv1.Outcome_OUTCOME_INTEGRITY
	}
	for _, p := range res.Integrity {
		out.Integrity = append(out.Integrity, &verifierv1.IntegrityProblem{
			Witness: p.Witness, WitnessUrl: p.URL, Kind: verifierv1.IntegrityKind(p.Kind), Problem: p.Problem, Size: p.Size,
		})
	}
	for i := range res.Findings {
		f := &res.Findings[i]
		pf := &verifierv1.Finding{
			Kind:         findingKind(f.Kind),
			Key:          f.Key(),
			WitnessEntry: f.Entry,
			EvidencePath: f.EvidencePath,
			KeyCommit:    f.KeyCommit[:],
			Bucket:       f.Bucket,
			Message:      f.Message,
		}
		if f.Expected != nil {
			pf.ExpectedDataCommit = f.Expected[:]
		}
		if f.Actual != nil {
			pf.ActualDataCommit = f.Actual[:]
		}
		out.Findings = append(out.Findings, pf)
	}
	return out
}

func findingKind(k verify.Kind) verifierv1.FindingKind {
	switch k {
	case verify.Modified:
		return verifierv1.FindingKind_FINDING_KIND_MODIFIED
	case verify.Deleted:
		return verifierv1.FindingKind_FINDING_KIND_DELETED
	case verify.Phantom:
		return verifierv1.FindingKind_FINDING_KIND_PHANTOM
	}
	return verifierv1.FindingKind_FINDING_KIND_UNSPECIFIED
}
