package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/verifier/internal/app"
	"github.com/witnz/witnz/services/verifier/internal/config"
	"github.com/witnz/witnz/services/verifier/internal/history"
	"github.com/witnz/witnz/services/verifier/internal/testcluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testcluster.Cleanup()
	os.Exit(code)
}

// TestVerifyAPI drives the verifier service through its API against a real
// deployment: on-demand runs, findings with evidence, the run history kept
// across a restart, scheduled runs, and who may call it.
func TestVerifyAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, a witness and cdc-ingest; skipped with -short")
	}
	c := testcluster.Start(t, testcluster.Options{
		Setup: `CREATE TABLE public.audit_log (id bigint PRIMARY KEY, actor text NOT NULL);
			INSERT INTO public.audit_log SELECT g, 'actor ' || g FROM generate_series(1, 500) g;
			CREATE TABLE public.orders (id int PRIMARY KEY, total numeric);
			INSERT INTO public.orders SELECT g, g FROM generate_series(1, 50) g;`,
		Protect: []string{"public.audit_log:append-only", "public.orders:append-only"},
	})
	dataDir := t.TempDir()
	cfg := config.Config{
		Listen:         "127.0.0.1:0",
		TLS:            c.Files(mtls.Service("verifier")),
		Log:            logging.Options{Level: "info", Format: "text"},
		PGDSN:          c.DSN,
		Witnesses:      c.WitnessURLs,
		KeyFile:        c.KeyFile,
		DataDir:        dataDir,
		CatchUpTimeout: 30 * time.Second,
		CheckpointWait: 10 * time.Second,
		PolicyFile:     c.PolicyFile,
		AlertURL:       c.Alerts.URL,
		// Parse refuses intervals below 10 s; the test sets one directly.
		Schedule: []config.Scheduled{{Table: "public.orders", Interval: time.Second}},
	}
	svc, err := app.New(t.Context(), cfg, testLogger(t, "verifier"))
	if err != nil {
		t.Fatal(err)
	}
	stop := runUntil(t, svc.Run)
	base := "https://" + svc.Addr().String()
	operator := verifierv1connect.NewVerifierServiceClient(c.TLS(t, testcluster.Operator).HTTPClient(), base, rpcserver.ClientOptions()...)

	clean, err := operator.Verify(t.Context(), connect.NewRequest(&verifierv1.VerifyRequest{Table: "public.audit_log"}))
	if err != nil {
		t.Fatal(err)
	}
	if m := clean.Msg; !m.GetOk() || m.GetOutcome() != verifierv1.Outcome_OUTCOME_OK || m.GetRowsScanned() != 500 || m.GetLogSize() != 502 ||
		!strings.Contains(m.GetSnapshotLsn(), "/") || m.GetTrigger() != "api" || m.GetStartedAt() == nil {
		t.Errorf("clean run = %v", m)
	}

	c.Exec(t, `UPDATE public.audit_log SET actor = 'mallory' WHERE id = 7`)
	tampered, err := operator.Verify(t.Context(), connect.NewRequest(&verifierv1.VerifyRequest{Table: "public.audit_log"}))
	if err != nil {
		t.Fatal(err)
	}
	m := tampered.Msg
	if m.GetOk() || m.GetOutcome() != verifierv1.Outcome_OUTCOME_TAMPERED || len(m.GetFindings()) != 1 || m.GetConfirmSnapshotLsn() == "" {
		t.Fatalf("tampered run = %v", m)
	}
	f := m.GetFindings()[0]
	want := &verifierv1.Finding{Kind: verifierv1.FindingKind_FINDING_KIND_MODIFIED, Key: map[string]string{"id": "7"}}
	if diff := cmp.Diff(want, f, protocmp.Transform(), protocmp.IgnoreFields(&verifierv1.Finding{},
		"witness_entry", "evidence_path", "key_commit", "expected_data_commit", "actual_data_commit", "bucket", "message")); diff != "" {
		t.Errorf("finding (-want +got):\n%s", diff)
	}
	if f.WitnessEntry == nil || f.GetWitnessEntry() != 7 || len(f.GetKeyCommit()) != 32 || len(f.GetExpectedDataCommit()) != 32 || len(f.GetActualDataCommit()) != 32 {
		t.Errorf("finding = %v, want entry 7 (the row's BASELINE) and its commitments", f)
	}
	if !strings.HasPrefix(f.GetEvidencePath(), filepath.Join(dataDir, "evidence", "public.audit_log")+string(filepath.Separator)) {
		t.Errorf("evidence at %s, want under --data-dir/evidence/public.audit_log", f.GetEvidencePath())
	}
	if _, err := os.Stat(f.GetEvidencePath()); err != nil {
		t.Errorf("evidence bundle: %v", err)
	}
	// One CRITICAL alert for the run, naming the table, the row and the
	// bundle.
	a := waitAlert(t, c, "verify.tampered", "public.audit_log")
	d := a.GetDetail().AsMap()
	if a.GetSeverity() != alertv1.Severity_SEVERITY_CRITICAL || !strings.Contains(a.GetMessage(), "id=7") || d["snapshot_lsn"] != m.GetSnapshotLsn() ||
		fmt.Sprint(d["evidence_paths"]) != fmt.Sprint([]any{f.GetEvidencePath()}) || fmt.Sprint(d["counts"]) != "map[modified:1]" {
		t.Errorf("findings alert = %v", a)
	}

	_, err = operator.Verify(t.Context(), connect.NewRequest(&verifierv1.VerifyRequest{Table: "public.nothing"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "witnz protect public.nothing") {
		t.Errorf("unprotected table: %v", err)
	}
	_, err = operator.Verify(t.Context(), connect.NewRequest(&verifierv1.VerifyRequest{Table: "nothing"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("bad name: %v", err)
	}

	// The schedule verifies public.orders every second.
	waitFor(t, "two scheduled runs of public.orders", func() (bool, string) {
		resp, err := operator.ListRuns(t.Context(), connect.NewRequest(&verifierv1.ListRunsRequest{Table: "public.orders"}))
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, r := range resp.Msg.GetRuns() {
			if r.GetTrigger() == "schedule" && r.GetOk() {
				n++
			}
		}
		return n >= 2, resp.Msg.String()
	})

	// Only operators and the gateway may call.
	gateway := verifierv1connect.NewVerifierServiceClient(c.TLS(t, mtls.Service("gateway")).HTTPClient(), base, rpcserver.ClientOptions()...)
	if _, err := gateway.ListRuns(t.Context(), connect.NewRequest(&verifierv1.ListRunsRequest{})); err != nil {
		t.Errorf("gateway ListRuns: %v", err)
	}
	for _, id := range []mtls.Identity{{Kind: mtls.KindAgent, Name: "host1"}, mtls.Service("cdc-ingest")} {
		cl := verifierv1connect.NewVerifierServiceClient(c.TLS(t, id).HTTPClient(), base, rpcserver.ClientOptions()...)
		_, err := cl.Verify(t.Context(), connect.NewRequest(&verifierv1.VerifyRequest{Table: "public.audit_log"}))
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "caller is "+id.String()) {
			t.Errorf("Verify as %s: %v, want PermissionDenied naming the caller", id, err)
		}
	}

	// The history survives a restart.
	stop()
	svc, err = app.New(t.Context(), config.Config{
		Listen: "127.0.0.1:0", TLS: c.Files(mtls.Service("verifier")), PGDSN: c.DSN, Witnesses: c.WitnessURLs,
		KeyFile: c.KeyFile, DataDir: dataDir,
	}, testLogger(t, "verifier"))
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, svc.Run)
	operator = verifierv1connect.NewVerifierServiceClient(c.TLS(t, testcluster.Operator).HTTPClient(), "https://"+svc.Addr().String(), rpcserver.ClientOptions()...)
	runs, err := operator.ListRuns(t.Context(), connect.NewRequest(&verifierv1.ListRunsRequest{Table: "public.audit_log", Limit: 10}))
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []verifierv1.Outcome
	for _, r := range runs.Msg.GetRuns() {
		outcomes = append(outcomes, r.GetOutcome())
	}
	if diff := cmp.Diff([]verifierv1.Outcome{verifierv1.Outcome_OUTCOME_TAMPERED, verifierv1.Outcome_OUTCOME_OK}, outcomes); diff != "" {
		t.Errorf("history of public.audit_log after a restart, newest first (-want +got):\n%s", diff)
	}
	if got := runs.Msg.GetRuns()[0]; len(got.GetFindings()) != 1 || got.GetFindings()[0].GetKey()["id"] != "7" {
		t.Errorf("the stored run lost its finding: %v", got)
	}
	all, err := operator.ListRuns(t.Context(), connect.NewRequest(&verifierv1.ListRunsRequest{Limit: 3}))
	if err != nil || len(all.Msg.GetRuns()) != 3 {
		t.Errorf("ListRuns of every table, limit 3: %d runs, %v", len(all.Msg.GetRuns()), err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, history.FileName)); err != nil {
		t.Errorf("history file: %v", err)
	}
}

// runUntil runs fn in the background and returns a function that stops
// it and waits (also called at cleanup).
func runUntil(t *testing.T, run func(context.Context) error) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
