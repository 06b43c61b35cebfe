package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/checkpoint"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/mtls"
)

func noEnv(string) string { return "" }

func run(t *testing.T, getenv func(string) string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = Run(t.Context(), args, getenv, &o, &e)
	return o.String(), e.String(), err
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string // substring of the error
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, "witnz help"},
		{[]string{"status", "--bogus"}, "witnz status -h"},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"status", "--stack", filepath.Join(dir, "none.json")}, "make up"},
		{[]string{"status", "--stack", filepath.Join(dir, "none.json"), "--gateway", "x"}, "make up"},
		{[]string{"alerts", "--limit", "0"}, "--limit"},
		{[]string{"alerts", "--since", "-1h"}, "--since"},
		{[]string{"pki"}, "witnz pki init"},
		{[]string{"pki", "init", "--witnesses", ","}, "--witnesses"},
	} {
		_, _, err := run(t, noEnv, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("witnz %s: error %v, want one containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("witnz %s: error spans lines: %q", strings.Join(tc.args, " "), err)
		}
	}
}

func TestStatusWithoutGateway(t *testing.T) {
	t.Chdir(t.TempDir()) // no .witnz/stack.json here
	_, _, err := run(t, noEnv, "status")
	if err == nil || !strings.Contains(err.Error(), "--gateway") || !strings.Contains(err.Error(), "make up") {
		t.Errorf("status without a stack: %v, want an error naming make up and --gateway", err)
	}
	// Env counts like the flag; the TLS files are then what is missing.
	_, _, err = run(t, func(k string) string {
		if k == "WITNZ_GATEWAY" {
			return "https://127.0.0.1:1"
		}
		return ""
	}, "status")
	if err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Errorf("status with WITNZ_GATEWAY only: %v, want an error naming --tls-cert", err)
	}
}

func TestHelp(t *testing.T) {
	out, _, err := run(t, noEnv, "help")
	if err != nil || !strings.Contains(out, "status") || !strings.Contains(out, "keygen") {
		t.Errorf("help = %q, %v", out, err)
	}
	out, _, err = run(t, noEnv, "alerts", "-h")
	if err != nil || !strings.Contains(out, "-follow") {
		t.Errorf("alerts -h = %q, %v", out, err)
	}
}

func TestPKIInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	out, _, err := run(t, noEnv, "pki", "init", "--dir", dir, "--witnesses", "a,b", "--host", "witnz.example", "--hostname", "db1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ca.crt", "service-cdc-ingest.crt", "service-gateway.crt", "witness-a.crt", "witness-b.crt", "operator-admin.crt", "agent-db1.crt"} {
		if !strings.Contains(out, filepath.Join(dir, want)) {
			t.Errorf("output does not name created %s:\n%s", want, out)
		}
	}
	cfg, err := mtls.Load(mtls.Files{Cert: filepath.Join(dir, "witness-b.crt"), Key: filepath.Join(dir, "witness-b.key"), CA: filepath.Join(dir, "ca.crt")})
	if err != nil {
		t.Fatal(err)
	}
	if want := mtls.Witness("b"); cfg.Identity != want {
		t.Errorf("identity = %v, want %v", cfg.Identity, want)
	}
	if err := cfg.Client().Certificates[0].Leaf.VerifyHostname("witnz.example"); err != nil {
		t.Errorf("--host witnz.example is not in the certificate: %v", err)
	}

	out, _, err = run(t, noEnv, "pki", "init", "--dir", dir, "--witnesses", "a,b,c", "--hostname", "db1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "witness-c.crt") || strings.Contains(out, "witness-a.crt") || !strings.Contains(out, "kept 10 existing") {
		t.Errorf("second init should add only witness c and keep 10 (CA included):\n%s", out)
	}
	// Every witness has a cosigning key and the policy names them all with
	// a majority quorum; the second init kept a's key.
	if _, err := checkpoint.LoadPolicy(filepath.Join(dir, "policy.txt")); err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(filepath.Join(dir, "policy.txt"))
	pubA, _ := os.ReadFile(filepath.Join(dir, "cosign-a.pub"))
	if !strings.Contains(string(text), strings.TrimSpace(string(pubA))) || !strings.Contains(string(text), "quorum 2") || len(pubA) == 0 {
		t.Errorf("policy:\n%s\nwant a's key %q and quorum 2", text, pubA)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, err := checkpoint.LoadCosigner(filepath.Join(dir, "cosign-"+id+".key")); err != nil {
			t.Errorf("cosign-%s.key: %v", id, err)
		}
	}
}

func TestKeygen(t *testing.T) {
	out, _, err := run(t, noEnv, "keygen")
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(out) {
		t.Errorf("keygen = %q, %v; want 64 hex characters", out, err)
	}
	path := filepath.Join(t.TempDir(), "k")
	if _, _, err := run(t, noEnv, "keygen", "--out", path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	if _, _, err := run(t, noEnv, "keygen", "--out", path); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("keygen over an existing file: %v, want a refusal", err)
	}
}

func TestStatusJSONContract(t *testing.T) {
	root := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	table := func(size uint64, r byte) []*witnessv1.TableInfo {
		return []*witnessv1.TableInfo{{Name: "public.audit_log", Mode: witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, Size: size, Root: root(r)}}
	}
	resp := &gatewayv1.GetStatusResponse{
		Witnesses: []*gatewayv1.WitnessNodeStatus{
			{Address: "https://127.0.0.1:1", Status: &witnessv1.GetStatusResponse{NodeId: "w1", State: "Follower", LeaderId: "w2", AppliedIndex: 11, CommitIndex: 12, Term: 2, Tables: table(999, 0xaa)}},
			{Address: "https://127.0.0.1:2", Status: &witnessv1.GetStatusResponse{NodeId: "w2", State: "Leader", LeaderId: "w2", AppliedIndex: 12, CommitIndex: 12, Term: 2, Tables: table(1000, 0xbb)}},
			{Address: "https://127.0.0.1:3", Error: "connection refused"},
		},
		Ingest: &ingestv1.GetStatusResponse{SlotName: "witnz", Publication: "witnz", Streaming: true, ServerLsn: "0/1A2B", ConfirmedFlushLsn: "0/1A2B"},
	}
	st := statusFrom(resp, map[string]string{"https://127.0.0.1:3": "w3"})
	got, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	aa, bb := strings.Repeat("aa", 32), strings.Repeat("bb", 32)
	want := `{"witnesses":[` +
		`{"id":"w1","address":"https://127.0.0.1:1","reachable":true,"error":"","state":"Follower","leader_id":"w2","applied_index":11,"commit_index":12,"term":2},` +
		`{"id":"w2","address":"https://127.0.0.1:2","reachable":true,"error":"","state":"Leader","leader_id":"w2","applied_index":12,"commit_index":12,"term":2},` +
		`{"id":"w3","address":"https://127.0.0.1:3","reachable":false,"error":"connection refused","state":"","leader_id":"","applied_index":0,"commit_index":0,"term":0}],` +
		`"tables":[{"name":"public.audit_log","mode":"append-only","size":1000,"root":"` + bb + `","agree":false,` +
		`"nodes":{"w1":{"size":999,"root":"` + aa + `"},"w2":{"size":1000,"root":"` + bb + `"}}}],` +
		`"ingest":{"reachable":true,"error":"","slot":"witnz","publication":"witnz","streaming":true,"server_lsn":"0/1A2B","confirmed_flush_lsn":"0/1A2B","lag_bytes":0,"pending_entries":0}}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("status JSON (-want +got):\n%s", diff)
	}

	// Two nodes with the same view agree; an unreachable ingest is reported.
	resp.Witnesses[0].Status.Tables = table(1000, 0xbb)
	resp.Ingest, resp.IngestError = nil, "dial tcp: connection refused"
	st = statusFrom(resp, nil)
	if !st.Tables[0].Agree {
		t.Errorf("tables = %+v, want agree", st.Tables)
	}
	if st.Ingest.Reachable || st.Ingest.Error != "dial tcp: connection refused" {
		t.Errorf("ingest = %+v, want unreachable with the error", st.Ingest)
	}
	if st.Witnesses[2].ID != "https://127.0.0.1:3" {
		t.Errorf("unknown unreachable node id = %q, want its address", st.Witnesses[2].ID)
	}
	var text bytes.Buffer
	printStatus(&text, st)
	for _, want := range []string{"w2", "Leader", "public.audit_log", "append-only", "agree", "UNREACHABLE", "connection refused"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text status lacks %q:\n%s", want, text.String())
		}
	}

	// Empty lists are [] not null.
	got, _ = json.Marshal(statusFrom(&gatewayv1.GetStatusResponse{}, nil))
	if !strings.HasPrefix(string(got), `{"witnesses":[],"tables":[],`) {
		t.Errorf("empty status = %s", got)
	}
}

func TestAlertJSONContract(t *testing.T) {
	detail, err := structpb.NewStruct(map[string]any{"op": "UPDATE", "key": map[string]any{"id": "42"}, "xid": 1234})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 22, 3, 4, 5, 600_000_000, time.UTC)
	a := alertFrom(&alertv1.Alert{
		AlertId: "0b5e", Type: "cdc.update_on_append_only", Severity: alertv1.Severity_SEVERITY_CRITICAL,
		Message: "UPDATE on append-only table public.audit_log (id=42)", Source: "cdc-ingest", Table: "public.audit_log",
		Detail: detail, OccurredAt: timestamppb.New(at), ReceivedAt: timestamppb.New(at.Add(time.Second)),
	})
	got, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"alert_id":"0b5e","type":"cdc.update_on_append_only","severity":"critical",` +
		`"message":"UPDATE on append-only table public.audit_log (id=42)","source":"cdc-ingest","host":"","table":"public.audit_log",` +
		`"detail":{"key":{"id":"42"},"op":"UPDATE","xid":1234},"occurred_at":"2026-11-22T03:04:05.6Z","received_at":"2026-11-22T03:04:06.6Z"}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("alert JSON (-want +got):\n%s", diff)
	}
	got, _ = json.Marshal(alertFrom(&alertv1.Alert{Severity: alertv1.Severity_SEVERITY_HIGH}))
	if !strings.Contains(string(got), `"severity":"high"`) || !strings.Contains(string(got), `"detail":{}`) || !strings.Contains(string(got), `"occurred_at":""`) {
		t.Errorf("sparse alert = %s", got)
	}
}
