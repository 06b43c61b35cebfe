package alerts

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
)

func run() *verifierv1.VerifyResponse {
	commit := func(b byte) []byte { return []byte(strings.Repeat(string(rune(b)), 32)) }
	return &verifierv1.VerifyResponse{
		Table: "public.audit_log", SnapshotLsn: "0/1A2B3C", ConfirmSnapshotLsn: "0/1A2C00", LogSize: 502, Trigger: "schedule",
		Outcome: verifierv1.Outcome_OUTCOME_TAMPERED,
		Findings: []*verifierv1.Finding{
			{Kind: verifierv1.FindingKind_FINDING_KIND_MODIFIED, Key: map[string]string{"id": "7"}, KeyCommit: commit('a'), ExpectedDataCommit: commit('b'), ActualDataCommit: commit('c'), EvidencePath: "/e/1.json"},
			{Kind: verifierv1.FindingKind_FINDING_KIND_DELETED, KeyCommit: commit('d'), ExpectedDataCommit: commit('e'), EvidencePath: "/e/2.json"},
			{Kind: verifierv1.FindingKind_FINDING_KIND_MODIFIED, Key: map[string]string{"id": "9"}, KeyCommit: commit('f'), ExpectedDataCommit: commit('g'), ActualDataCommit: commit('h'), EvidencePath: "/e/3.json"},
		},
	}
}

func TestFindingsAlert(t *testing.T) {
	r := run()
	a := Findings(r)
	if a.GetType() != TypeTampered || a.GetSeverity() != alertv1.Severity_SEVERITY_CRITICAL || a.GetTable() != "public.audit_log" || a.GetSource() != "verifier" {
		t.Errorf("alert = %v", a)
	}
	if !strings.Contains(a.GetMessage(), "3 rows") || !strings.Contains(a.GetMessage(), "2 modified, 1 deleted") || !strings.Contains(a.GetMessage(), "id=7") {
		t.Errorf("message %q", a.GetMessage())
	}
	d := a.GetDetail().AsMap()
	want := map[string]any{
		"table": "public.audit_log", "snapshot_lsn": "0/1A2B3C", "confirm_snapshot_lsn": "0/1A2C00", "log_size": "502", "trigger": "schedule",
		"findings": 3.0, "findings_truncated": false, "counts": map[string]any{"modified": 2.0, "deleted": 1.0},
		"first_keys":     []any{"id=7", "key commitment " + strings.Repeat("64", 32), "id=9"},
		"evidence_paths": []any{"/e/1.json", "/e/2.json", "/e/3.json"},
	}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("detail (-want +got):\n%s", diff)
	}

	// The same findings of the same snapshot are one alert, in any order
	// and with other evidence paths (a retry, or a second report).
	again := run()
	again.Findings[0], again.Findings[2] = again.Findings[2], again.Findings[0]
	again.Findings[1].EvidencePath = "/elsewhere.json"
	if Findings(again).GetAlertId() != a.GetAlertId() {
		t.Error("the same findings gave another alert id")
	}
	other := run()
	other.SnapshotLsn = "0/1A2B40"
	less := run()
	less.Findings = less.Findings[:2]
	for name, r := range map[string]*verifierv1.VerifyResponse{"another snapshot": other, "other findings": less} {
		if Findings(r).GetAlertId() == a.GetAlertId() {
			t.Errorf("%s: same alert id", name)
		}
	}
}

func TestIntegrityAlert(t *testing.T) {
	r := &verifierv1.VerifyResponse{Table: "public.audit_log", Outcome: verifierv1.Outcome_OUTCOME_INTEGRITY,
		Integrity: []*verifierv1.IntegrityProblem{
			{Witness: "w2", WitnessUrl: "https://127.0.0.1:7012", Kind: verifierv1.IntegrityKind_INTEGRITY_KIND_ROOT_MISMATCH, Problem: "witness w2 holds root 01 at size 40", Size: 40},
			{Kind: verifierv1.IntegrityKind_INTEGRITY_KIND_NO_MAJORITY, Problem: "only 1 of 3 witnesses answered"},
		}}
	as := ForRun(r)
	if len(as) != 2 {
		t.Fatalf("%d alerts, want one per problem", len(as))
	}
	a := as[0]
	if a.GetType() != TypeLogIntegrity || a.GetSeverity() != alertv1.Severity_SEVERITY_CRITICAL ||
		!strings.Contains(a.GetMessage(), "witness w2 (https://127.0.0.1:7012)") || a.GetDetail().AsMap()["witness"] != "w2" ||
		a.GetDetail().AsMap()["kind"] != "root_mismatch" {
		t.Errorf("alert = %v", a)
	}
	if !strings.Contains(as[1].GetMessage(), "the witness cluster") {
		t.Errorf("message %q does not say the whole cluster", as[1].GetMessage())
	}
	r2 := proto.CloneOf(r)
	r2.Integrity[0].Problem = "reworded"
	if ForRun(r2)[0].GetAlertId() != a.GetAlertId() {
		t.Error("the same problem (witness, kind, size) gave another alert id")
	}
	r2.Integrity[0].Size = 41
	if ForRun(r2)[0].GetAlertId() == a.GetAlertId() {
		t.Error("a problem at another size has the same alert id")
	}
	if len(ForRun(&verifierv1.VerifyResponse{Table: "t", Outcome: verifierv1.Outcome_OUTCOME_OK})) != 0 {
		t.Error("a clean run raised alerts")
	}
}
