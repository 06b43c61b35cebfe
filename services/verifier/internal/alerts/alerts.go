// Package alerts turns verification results into alerts for the alert
// service and delivers them in the background: one CRITICAL alert per run
// with findings, and one CRITICAL alert per failed log integrity check,
// naming the witness. Alert ids are derived from what the alert is about,
// so a retried delivery, or the same result found again, is stored once.
package alerts

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/alertqueue"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
)

// Alert types raised by the verifier.
const (
	// TypeTampered: a run found rows that differ from the witness log.
	TypeTampered = "verify.tampered"
	// TypeLogIntegrity: a log integrity check failed (witnesses disagree,
	// a checkpoint misses the policy or does not extend the last one).
	TypeLogIntegrity = "verify.log_integrity"
)

// Source is the source of the verifier's alerts.
const Source = "verifier"

// firstN bounds the keys and evidence paths listed in a findings alert.
const firstN = 10

// queueSize bounds the alerts waiting for delivery.
const queueSize = 1024

// ForRun returns the alerts of a run: none for a clean or failed run.
func ForRun(run *verifierv1.VerifyResponse) []*alertv1.Alert {
	var out []*alertv1.Alert
	if len(run.GetFindings()) > 0 {
		out = append(out, Findings(run))
	}
	for _, p := range run.GetIntegrity() {
		out = append(out, Integrity(run, p))
	}
	return out
}

// Findings is the alert of a run with findings. Its id is derived from the
// table, the snapshot position and the findings (kind, key commitment,
// expected and actual data commitments), so the same result is one alert.
func Findings(run *verifierv1.VerifyResponse) *alertv1.Alert {
	table := run.GetTable()
	counts := map[string]any{}
	var keys, paths []any
	var ids []string
	for _, f := range run.GetFindings() {
		kind := kindName(f.GetKind())
		n, _ := counts[kind].(float64)
		counts[kind] = n + 1
		if len(keys) < firstN {
			keys = append(keys, keyText(f))
		}
		if len(paths) < firstN && f.GetEvidencePath() != "" {
			paths = append(paths, f.GetEvidencePath())
		}
		ids = append(ids, fmt.Sprintf("%s/%x/%x/%x", kind, f.GetKeyCommit(), f.GetExpectedDataCommit(), f.GetActualDataCommit()))
	}
	slices.Sort(ids)
	h := sha256.New()
	for _, s := range append([]string{"witnz/alert/verifier/findings/v1", table, run.GetSnapshotLsn()}, ids...) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var parts []string
	for _, k := range []string{"modified", "deleted", "phantom"} {
		if n, ok := counts[k].(float64); ok {
			parts = append(parts, fmt.Sprintf("%d %s", int(n), k))
		}
	}
	more := ""
	if run.GetFindingsTruncated() {
		more = " (and more not listed)"
	}
	detail, err := structpb.NewStruct(map[string]any{
		"table":                table,
		"snapshot_lsn":         run.GetSnapshotLsn(),
		"confirm_snapshot_lsn": run.GetConfirmSnapshotLsn(),
		"log_size":             fmt.Sprint(run.GetLogSize()),
		"trigger":              run.GetTrigger(),
		"findings":             float64(len(run.GetFindings())),
		"findings_truncated":   run.GetFindingsTruncated(),
		"counts":               counts,
		"first_keys":           orEmpty(keys),
		"evidence_paths":       orEmpty(paths),
	})
	if err != nil {
		detail = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:  alertqueue.IDFromSum(h.Sum(nil)),
		Type:     TypeTampered,
		Severity: alertv1.Severity_SEVERITY_CRITICAL,
		Message: fmt.Sprintf("verification of %s found %d rows that differ from the witness log%s: %s (snapshot %s); first: %s",
			table, len(run.GetFindings()), more, strings.Join(parts, ", "), run.GetSnapshotLsn(), keyText(run.GetFindings()[0])),
		Source:     Source,
		Table:      table,
		Detail:     detail,
		OccurredAt: occurred(run),
	}
}

// Integrity is the alert of one failed log integrity check. Its id is
// derived from the table, the witness, the kind and the log size.
func Integrity(run *verifierv1.VerifyResponse, p *verifierv1.IntegrityProblem) *alertv1.Alert {
	table := run.GetTable()
	h := sha256.New()
	for _, s := range []string{"witnz/alert/verifier/integrity/v1", table, p.GetWitness(), p.GetWitnessUrl(), p.GetKind().String()} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], p.GetSize())
	h.Write(b[:])
	who := "the witness cluster"
	if p.GetWitness() != "" {
		who = fmt.Sprintf("witness %s (%s)", p.GetWitness(), p.GetWitnessUrl())
	}
	detail, err := structpb.NewStruct(map[string]any{
		"table":        table,
		"witness":      p.GetWitness(),
		"witness_url":  p.GetWitnessUrl(),
		"kind":         integrityName(p.GetKind()),
		"size":         fmt.Sprint(p.GetSize()),
		"problem":      p.GetProblem(),
		"snapshot_lsn": run.GetSnapshotLsn(),
		"trigger":      run.GetTrigger(),
	})
	if err != nil {
		detail = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:    alertqueue.IDFromSum(h.Sum(nil)),
		Type:       TypeLogIntegrity,
		Severity:   alertv1.Severity_SEVERITY_CRITICAL,
		Message:    fmt.Sprintf("log integrity check of %s failed at %s: %s", table, who, p.GetProblem()),
		Source:     Source,
		Table:      table,
		Detail:     detail,
		OccurredAt: occurred(run),
	}
}

func occurred(run *verifierv1.VerifyResponse) *timestamppb.Timestamp {
	if run.GetStartedAt() != nil {
		return run.GetStartedAt()
	}
	return timestamppb.Now()
}

func orEmpty(l []any) []any {
	if l == nil {
		return []any{}
	}
	return l
}

// keyText renders a finding's key: id=42, (a=1, b=x), or its key
// commitment for a deleted row.
func keyText(f *verifierv1.Finding) string {
	k := f.GetKey()
	if len(k) == 0 {
		return fmt.Sprintf("key commitment %x", f.GetKeyCommit())
	}
	cols := make([]string, 0, len(k))
	for c := range k {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = c + "=" + k[c]
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func kindName(k verifierv1.FindingKind) string {
	switch k {
	case verifierv1.FindingKind_FINDING_KIND_MODIFIED:
		return "modified"
	case verifierv1.FindingKind_FINDING_KIND_DELETED:
		return "deleted"
	case verifierv1.FindingKind_FINDING_KIND_PHANTOM:
		return "phantom"
	}
	return "unknown"
}

func integrityName(k verifierv1.IntegrityKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "INTEGRITY_KIND_"))
}

// Alerter delivers alerts to the alert service in the background,
// retrying until it has them. A nil *Alerter drops alerts (they are in the
// log and the run history).
type Alerter = alertqueue.Queue

// New returns an Alerter calling client; Run delivers.
func New(client alertv1connect.AlertServiceClient, log *slog.Logger) *Alerter {
	return alertqueue.New(client, log, alertqueue.WithSize(queueSize))
}
