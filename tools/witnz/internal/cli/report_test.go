package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/checkpoint"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/testenv"
)

// runsVerifier is fakeVerifier with a run history.
type runsVerifier struct {
	*fakeVerifier
	runs []*verifierv1.VerifyResponse // newest first
}

func (f *runsVerifier) ListRuns(_ context.Context, req *connect.Request[verifierv1.ListRunsRequest]) (*connect.Response[verifierv1.ListRunsResponse], error) {
	var out []*verifierv1.VerifyResponse
	for _, r := range f.runs {
		if req.Msg.GetTable() == "" || r.GetTable() == req.Msg.GetTable() {
			out = append(out, r)
		}
	}
	return connect.NewResponse(&verifierv1.ListRunsResponse{Runs: out}), nil
}

// checkpointWitness is fakeWitness with cosigned checkpoints.
type checkpointWitness struct {
	*fakeWitness
	checkpoints map[string]*witnessv1.GetCheckpointResponse
}

func (f *checkpointWitness) GetCheckpoint(_ context.Context, req *connect.Request[witnessv1.GetCheckpointRequest]) (*connect.Response[witnessv1.GetCheckpointResponse], error) {
	cp, ok := f.checkpoints[req.Msg.GetTable()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no cosigned checkpoint yet"))
	}
	return connect.NewResponse(cp), nil
}

func (f *checkpointWitness) ListAnchorReceipts(context.Context, *connect.Request[witnessv1.ListAnchorReceiptsRequest]) (*connect.Response[witnessv1.ListAnchorReceiptsResponse], error) {
	return connect.NewResponse(&witnessv1.ListAnchorReceiptsResponse{Total: 1, Receipts: []*witnessv1.AnchorReceipt{
		{Sink: "s3", Bucket: "witnz-anchors", Key: "anchors/2026/11/20/080000.json", VersionId: "v-2", Sha256: []byte{0x0a, 0x1b, 0x2c, 0x3d}, RaftIndex: 57},
	}}), nil
}

// alertsGateway answers ListAlerts like the alert service: from and to
// inclusive on occurred_at, newest first, limit and offset.
type alertsGateway struct {
	gatewayv1connect.UnimplementedGatewayServiceHandler
	alerts []*alertv1.Alert // newest first
}

func (g *alertsGateway) ListAlerts(_ context.Context, req *connect.Request[gatewayv1.ListAlertsRequest]) (*connect.Response[gatewayv1.ListAlertsResponse], error) {
	f := req.Msg.GetFilter()
	var match []*alertv1.Alert
	for _, a := range g.alerts {
		t := a.GetOccurredAt().AsTime()
		if (f.GetFrom() == nil || !t.Before(f.GetFrom().AsTime())) && (f.GetTo() == nil || !t.After(f.GetTo().AsTime())) {
			match = append(match, a)
		}
	}
	off := min(int(f.GetOffset()), len(match))
	match = match[off:]
	match = match[:min(int(f.GetLimit()), len(match))]
	return connect.NewResponse(&gatewayv1.ListAlertsResponse{Alerts: match}), nil
}

func testAlerts() []*alertv1.Alert {
	return []*alertv1.Alert{
		{AlertId: "a4", Type: "cdc.delete_on_append_only", Severity: alertv1.Severity_SEVERITY_CRITICAL, Source: "cdc-ingest", Table: "public.audit_log",
			Message: "DELETE at the end of the period", OccurredAt: at("2026-11-21T00:00:00Z")},
		{AlertId: "a1", Type: "verify.tampered", Severity: alertv1.Severity_SEVERITY_CRITICAL, Source: "verifier", Table: "public.audit_log",
			Message: "verification of public.audit_log found 1 rows | that differ", OccurredAt: at("2026-11-20T09:01:00Z")},
		{AlertId: "a2", Type: "witness.cosign_refused", Severity: alertv1.Severity_SEVERITY_HIGH, Source: "witness",
			Message: "witness node w3 refused to cosign", OccurredAt: at("2026-11-19T10:00:00Z")},
		{AlertId: "a3", Type: "cdc.update_on_append_only", Severity: alertv1.Severity_SEVERITY_CRITICAL, Source: "cdc-ingest", Table: "public.audit_log",
			Message: "UPDATE before the period", OccurredAt: at("2026-10-01T00:00:00Z")},
	}
}

func at(s string) *timestamppb.Timestamp {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(t)
}

func testRuns() []*verifierv1.VerifyResponse {
	return []*verifierv1.VerifyResponse{
		{Table: "public.clean", StartedAt: at("2026-11-20T10:00:00Z"), Trigger: "schedule", Outcome: verifierv1.Outcome_OUTCOME_INTEGRITY,
			SnapshotLsn: "0/1A2B50", LogSize: 12, RowsScanned: 10, DurationMs: 5,
			Integrity: []*verifierv1.IntegrityProblem{{Witness: "w2", WitnessUrl: "https://w2:7010", Kind: verifierv1.IntegrityKind_INTEGRITY_KIND_ROOT_MISMATCH, Problem: "root at size 12 differs from the majority's", Size: 12}}},
		{Table: "public.audit_log", StartedAt: at("2026-11-20T09:00:00Z"), Trigger: "schedule", Outcome: verifierv1.Outcome_OUTCOME_TAMPERED,
			SnapshotLsn: "0/1A2B40", LogSize: 1002, RowsScanned: 1000, DurationMs: 80, ConfirmSnapshotLsn: "0/1A2B41",
			Findings: []*verifierv1.Finding{{Kind: verifierv1.FindingKind_FINDING_KIND_MODIFIED, Key: map[string]string{"id": "17"}, WitnessEntry: entry(19), EvidencePath: "/ev/17.json"}}},
		{Table: "public.audit_log", StartedAt: at("2026-11-20T08:30:00Z"), Trigger: "api", Outcome: verifierv1.Outcome_OUTCOME_ERROR,
			Error: "witness cluster: no leader | quorum lost", DurationMs: 3},
		{Table: "public.audit_log", StartedAt: at("2026-11-19T08:00:00Z"), Trigger: "schedule", Outcome: verifierv1.Outcome_OUTCOME_OK, Ok: true,
			SnapshotLsn: "0/1A0000", LogSize: 900, RowsScanned: 898, DurationMs: 70},
		{Table: "public.audit_log", StartedAt: at("2026-10-01T08:00:00Z"), Trigger: "schedule", Outcome: verifierv1.Outcome_OUTCOME_OK, Ok: true,
			SnapshotLsn: "0/100000", LogSize: 100, RowsScanned: 98, DurationMs: 10},
	}
}

// testCheckpoints returns a checkpoint of public.audit_log cosigned by w1
// and w2, and the policy (2 of w1, w2) it meets.
func testCheckpoints(t *testing.T) (map[string]*witnessv1.GetCheckpointResponse, string) {
	t.Helper()
	cp := checkpoint.Checkpoint{Origin: "witnz/local/public.audit_log", Size: 1002}
	cp.Root[0] = 1
	var sigs []note.Signature
	created := time.Date(2026, 11, 20, 7, 59, 0, 0, time.UTC)
	policy := ""
	for _, id := range []string{"w1", "w2"} {
		skey, vkey, err := checkpoint.GenerateKey("witnz.local/" + id)
		policy += "witness " + id + " " + vkey + "\n"
		if err != nil {
			t.Fatal(err)
		}
		k, err := checkpoint.NewCosigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := checkpoint.Cosign(cp, k, created)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, sig)
	}
	signed, err := checkpoint.Assemble(cp, sigs...)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*witnessv1.GetCheckpointResponse{
		"public.audit_log": {Note: signed, Size: 1002, Root: cp.Root[:], CreatedAt: timestamppb.New(created)},
	}, policy + "quorum 2\n"
}

// otherPolicy is a policy of keys that signed nothing.
func otherPolicy(t *testing.T) string {
	t.Helper()
	_, vkey, err := checkpoint.GenerateKey("witnz.local/w9")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy.txt")
	if err := os.WriteFile(path, []byte("witness w9 "+vkey+"\nquorum 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReport(t *testing.T) {
	e := startAnchorEnv(t)
	e.anchor.set(&anchorv1.CheckAnchorsResponse{Ok: true, Checks: []*anchorv1.AnchorCheck{
		{Receipt: testReceipts()[0], Table: "public.audit_log", Ok: true},
		{Receipt: testReceipts()[0], Table: "public.clean", Ok: true},
	}}, nil)

	t.Run("json contract", func(t *testing.T) {
		out, _, err := run(t, e.env, "report", "--since", "2026-11-01", "--until", "2026-11-20", "--format", "json")
		if err != nil {
			t.Fatal(err)
		}
		var r Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if r.Version != 1 || r.Since != "2026-11-01T00:00:00Z" || r.Until != "2026-11-21T00:00:00Z" || r.GeneratedAt == "" || !strings.Contains(r.CheckpointHistory, "only the latest") {
			t.Errorf("header %+v", r)
		}
		if r.Sources.Witness != e.urls["witness"] || r.Sources.Verifier != e.urls["verifier"] || r.Sources.Anchor != e.urls["anchor"] {
			t.Errorf("sources %+v", r.Sources)
		}
		if !r.AnchorCheck.Checked || !r.AnchorCheck.OK || len(r.AnchorCheck.Checks) != 2 {
			t.Errorf("anchor check %+v", r.AnchorCheck)
		}
		wantSummary := ReportSummary{Tables: 2, TablesTampered: 1, TablesIntegrity: 1, OpenFindings: 1, AnchorsInPeriod: 2, VerificationsPeriod: 4,
			AlertsInPeriod: map[string]int{"critical": 1, "high": 1}}
		if diff := cmp.Diff(wantSummary, r.Summary); diff != "" {
			t.Errorf("summary (-want +got):\n%s", diff)
		}
		if len(r.Tables) != 2 || r.Tables[0].Table != "public.audit_log" || r.Tables[1].Table != "public.clean" {
			t.Fatalf("tables %+v", r.Tables)
		}
		a := r.Tables[0]
		if a.Mode != "append-only" || a.Protection != "protected" || a.CurrentSize != 1302 || a.Status != "tampered" ||
			a.LastProvenClean != "2026-11-19T08:00:00Z" || a.LastProvenCleanSize != 900 {
			t.Errorf("audit_log %+v", a)
		}
		if len(a.OpenFindings) != 1 || a.OpenFindings[0].Key["id"] != "17" || a.OpenFindings[0].EvidencePath != "/ev/17.json" {
			t.Errorf("open findings %+v", a.OpenFindings)
		}
		if r.Sources.Policy == "" || !strings.Contains(r.Sources.PolicyDescription, "w1") || len(r.Warnings) != 0 {
			t.Errorf("policy %q %q, warnings %v", r.Sources.Policy, r.Sources.PolicyDescription, r.Warnings)
		}
		if a.LatestCheckpoint == nil || a.LatestCheckpoint.Size != 1002 || !cmp.Equal(a.LatestCheckpoint.Cosigners, []string{"w1", "w2"}) ||
			a.LatestCheckpoint.PolicyVerified == nil || !*a.LatestCheckpoint.PolicyVerified {
			t.Errorf("latest checkpoint %+v", a.LatestCheckpoint)
		}
		var cps []string
		for _, cp := range a.Checkpoints {
			cps = append(cps, cp.Source+" "+cp.Time)
		}
		if want := []string{"anchor 2026-11-20T08:00:00Z", "witness 2026-11-20T07:59:00Z", "anchor 2026-11-19T08:00:00Z"}; !cmp.Equal(cps, want) {
			t.Errorf("checkpoints %v, want %v", cps, want)
		}
		if len(a.Anchors) != 2 || a.Anchors[0].VersionID != "v-2" || a.Anchors[0].Size != 1002 || a.Anchors[1].Size != 900 ||
			a.Anchors[0].WitnessLog != "recorded" || a.Anchors[1].WitnessLog != "missing" {
			t.Errorf("anchors %+v", a.Anchors)
		}
		var runs []string
		for _, v := range a.Verifications {
			runs = append(runs, v.StartedAt+" "+v.Outcome)
		}
		if want := []string{"2026-11-20T09:00:00Z tampered", "2026-11-20T08:30:00Z error", "2026-11-19T08:00:00Z ok"}; !cmp.Equal(runs, want) {
			t.Errorf("verifications %v, want %v (the October run is outside the period)", runs, want)
		}
		if a.Verifications[1].Error == "" || a.Verifications[0].Findings[0].Kind != "modified" {
			t.Errorf("runs %+v", a.Verifications)
		}
		if len(a.Alerts) != 1 || a.Alerts[0].AlertID != "a1" || len(r.OtherAlerts) != 1 || r.OtherAlerts[0].AlertID != "a2" || r.Sources.Gateway != e.urls["gateway"] {
			t.Errorf("alerts %+v, other %+v (want a1 on the table, a2 without one; a3 before and a4 at the end of the period left out)", a.Alerts, r.OtherAlerts)
		}
		c := r.Tables[1]
		if c.Status != "integrity" || len(c.OpenIntegrity) != 1 || c.OpenIntegrity[0].Kind != "root_mismatch" || c.OpenIntegrity[0].Witness != "w2" ||
			len(c.Verifications) != 1 || c.Verifications[0].Outcome != "integrity" || c.LastProvenClean != "" || c.LatestCheckpoint != nil || c.Mode != "mutable" || len(c.Anchors) != 1 ||
			c.OpenFindings == nil || c.Verifications == nil || c.Alerts == nil {
			t.Errorf("clean %+v", c)
		}
		// Arrays are never null.
		if strings.Contains(out, "null,") && !strings.Contains(out, `"latest_checkpoint": null`) {
			t.Errorf("a null array:\n%s", out)
		}
	})

	t.Run("markdown", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "report.md")
		_, stderr, err := run(t, e.env, "report", "--since", "2026-11-01T00:00:00Z", "--out", path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stderr, "report written to "+path) {
			t.Errorf("stderr %q", stderr)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		md := string(b)
		for _, want := range []string{
			"# witnz compliance report",
			"- **Period:** 2026-11-01T00:00:00Z to ",
			"## Summary",
			"Tables: 2 — 0 clean, 1 tampered, 1 with a log integrity problem, 0 never verified. Open findings: 1. In the period: 4 verifications, 2 anchors.",
			"| public.audit_log | TAMPERED | 2026-11-19T08:00:00Z | 1 | 1 / 1 / 1 | 2 | 2 | 1302 |",
			"| public.clean | INTEGRITY | never | 0 | 0 / 0 / 1 | 1 | 0 | 12 |",
			"Alerts in the period: 2 critical, 1 high.",
			"### Alerts",
			`| 2026-11-20T09:01:00Z | CRITICAL | verify.tampered | verifier | verification of public.audit_log found 1 rows \| that differ |`,
			"## Other alerts (hosts, witnesses, services)",
			"| 2026-11-19T10:00:00Z | HIGH | witness.cosign_refused | witness | witness node w3 refused to cosign |",
			"**Anchor check at the time of the report:** OK",
			"*Checkpoint history:* The witnesses keep only the latest cosigned checkpoint",
			"## public.audit_log",
			"### Cosigned checkpoints",
			"Latest held by the witnesses: size 1002",
			"The latest checkpoint held by the witnesses meets the policy. Latest held by the witnesses: size 1002",
			"cosigned by w1, w2.",
			"- **Checkpoint policy:** ",
			"### Anchors",
			"| 2026-11-20T08:00:00Z | s3 | witnz-anchors/anchors/2026/11/20/080000.json | v-2 | 0a1b2c3d | 2027-12-25T08:00:00Z | 1002 | recorded (Raft index 57) |",
			"| 2026-11-19T08:00:00Z | dir | 2026-11-19T080000Z.json | — | a1b2 | — | 900 | **MISSING** |",
			"| 2026-11-20T08:00:00Z | anchor anchors/2026/11/20/080000.json | 1002 | `AQID` | witnz.local/w1+0a0b0c0d, witnz.local/w2+01020304 |",
			"### Verifications",
			"| 2026-11-20T09:00:00Z | schedule | TAMPERED | 1000 | 1002 | 0/1A2B40 | 80 ms | 1 |",
			`ERROR: witness cluster: no leader \| quorum lost`,
			"### Open findings",
			"| modified | id=17 | 19 | /ev/17.json |",
			"## public.clean",
			"The witnesses hold no cosigned checkpoint of this table yet.",
			"- root_mismatch at size 12, witness w2: root at size 12 differs from the majority's",
		} {
			if !strings.Contains(md, want) {
				t.Errorf("report lacks %q:\n%s", want, md)
			}
		}
	})

	t.Run("checkpoint policy", func(t *testing.T) {
		out, _, err := run(t, e.env, "report", "--since", "2026-11-01", "--format", "json", "--policy", otherPolicy(t))
		var r Report
		if err != nil || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		lc := r.Tables[0].LatestCheckpoint
		if lc == nil || lc.PolicyVerified == nil || *lc.PolicyVerified || lc.PolicyError == "" {
			t.Errorf("checkpoint against another policy: %+v", lc)
		}
		out, _, err = run(t, e.env, "report", "--since", "2026-11-01", "--policy", otherPolicy(t))
		if err != nil || !strings.Contains(out, "does NOT meet the policy") {
			t.Errorf("markdown: %v\n%s", err, out)
		}
		out, _, err = run(t, without(e.env, "WITNZ_POLICY"), "report", "--since", "2026-11-01", "--format", "json")
		r = Report{}
		if err != nil || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if lc := r.Tables[0].LatestCheckpoint; lc == nil || lc.PolicyVerified != nil || len(lc.Cosigners) != 2 || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "--policy") {
			t.Errorf("without a policy: %+v, warnings %v", lc, r.Warnings)
		}
		if !strings.Contains(out, `"policy_verified": null`) {
			t.Errorf("policy_verified is not null without a policy:\n%s", out)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		// A service that accepts connections and never answers.
		hang, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hang.Close() })
		go func() {
			for {
				conn, err := hang.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { conn.Close() })
			}
		}()
		for _, tc := range []struct {
			env  func(string) string
			args []string
			want string
		}{
			{e.env, []string{"report"}, "--since is required"},
			{e.env, []string{"report", "--since", "yesterday"}, `--since "yesterday": want a date YYYY-MM-DD`},
			{e.env, []string{"report", "--since", "2026-11-01", "--until", "2026-13-01"}, `--until "2026-13-01"`},
			{e.env, []string{"report", "--since", "2026-11-02", "--until", "2026-11-01"}, "the period is empty"},
			{e.env, []string{"report", "--since", "2026-11-01", "--format", "pdf"}, `--format "pdf": want md`},
			{e.env, []string{"report", "--since", "2026-11-01", "--timeout", "0s"}, "--timeout 0s: want a positive duration"},
			{e.env, []string{"report", "--since", "2026-11-01", "--timeout", "500ms", "--verifier", "https://" + hang.Addr().String()}, "not done within --timeout 500ms"},
			{e.env, []string{"report", "--since", "2026-11-01", "--policy", filepath.Join(t.TempDir(), "none.txt")}, "--policy"},
			{e.env, []string{"report", "--since", "2026-11-01", "--out", filepath.Join(t.TempDir(), "no", "such", "dir", "r.md")}, "--out"},
			{e.env, []string{"report", "--since", "2026-11-01", "--verifier", "https://" + testenv.FreeAddr(t)}, "ListRuns"},
			{e.env, []string{"report", "--since", "2026-11-01", "--anchor", "https://" + testenv.FreeAddr(t)}, "ListAnchors on the anchor service"},
			{e.env, []string{"report", "--since", "2026-11-01", "--witness", "https://" + testenv.FreeAddr(t)}, "no witness answered"},
			{e.env, []string{"report", "--since", "2026-11-01", "--gateway", "https://" + testenv.FreeAddr(t)}, "ListAlerts on the gateway"},
			{without(e.env, "WITNZ_GATEWAY"), []string{"report", "--since", "2026-11-01"}, "--gateway https://host:port"},
			{without(e.env, "WITNZ_ANCHOR"), []string{"report", "--since", "2026-11-01"}, "--anchor https://host:port"},
		} {
			_, _, err := run(t, tc.env, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("witnz %s: %v, want one line containing %q", strings.Join(tc.args, " "), err, tc.want)
			}
		}
	})

	t.Run("anchor check failure is in the report", func(t *testing.T) {
		e.anchor.set(&anchorv1.CheckAnchorsResponse{Ok: false, Checks: []*anchorv1.AnchorCheck{
			{Receipt: testReceipts()[0], Table: "public.audit_log", Ok: false, Problem: "history rewritten"},
		}}, nil)
		out, _, err := run(t, e.env, "report", "--since", "2026-11-01")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "**FAILED** (tampering signal)") || !strings.Contains(out, "- public.audit_log: history rewritten") {
			t.Errorf("report:\n%s", out)
		}
		e.anchor.set(nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("nothing anchored yet")))
		out, _, err = run(t, e.env, "report", "--since", "2026-11-01", "--format", "json")
		var r Report
		if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.AnchorCheck.Checked || !strings.Contains(r.AnchorCheck.Error, "nothing anchored yet") {
			t.Errorf("unchecked anchors: %v %+v", err, r.AnchorCheck)
		}
	})
}
