package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
)

// fakeVerifier answers Verify from a table of canned results (the
// verifier itself is tested in services/verifier against real
// PostgreSQL and witnesses); it records the tables asked for.
type fakeVerifier struct {
	verifierv1connect.UnimplementedVerifierServiceHandler
	results map[string]*verifierv1.VerifyResponse
	errs    map[string]error
	mu      sync.Mutex
	asked   []string
	caller  mtls.Identity
}

func (f *fakeVerifier) Verify(ctx context.Context, req *connect.Request[verifierv1.VerifyRequest]) (*connect.Response[verifierv1.VerifyResponse], error) {
	f.mu.Lock()
	f.asked = append(f.asked, req.Msg.GetTable())
	f.caller, _ = mtls.PeerIdentity(ctx)
	f.mu.Unlock()
	if err := f.errs[req.Msg.GetTable()]; err != nil {
		return nil, err
	}
	return connect.NewResponse(f.results[req.Msg.GetTable()]), nil
}

// fakeWitness lists tables in GetStatus.
type fakeWitness struct {
	witnessv1connect.UnimplementedWitnessServiceHandler
	tables []*witnessv1.TableInfo
}

func (f *fakeWitness) GetStatus(context.Context, *connect.Request[witnessv1.GetStatusRequest]) (*connect.Response[witnessv1.GetStatusResponse], error) {
	return connect.NewResponse(&witnessv1.GetStatusResponse{NodeId: "w1", State: "Leader", Tables: f.tables}), nil
}

func serve(t *testing.T, dir string, id mtls.Identity, register func(*rpcserver.Server)) string {
	t.Helper()
	p := pki.PathsFor(dir, id)
	cfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := rpcserver.New(rpcserver.Config{Name: id.Name, Addr: "127.0.0.1:0", TLS: cfg.Server(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	register(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return "https://" + srv.Addr().String()
}

func entry(n uint64) *uint64 { return &n }

func TestVerifyCommand(t *testing.T) {
	dir := t.TempDir()
	operator := mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}
	if err := pki.Init(dir, []mtls.Identity{mtls.Service("verifier"), mtls.Witness("w1"), operator}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	fv := &fakeVerifier{
		results: map[string]*verifierv1.VerifyResponse{
			"public.clean": {Table: "public.clean", SnapshotLsn: "0/1A2B3C", LogSize: 1002, RowsScanned: 1000, DurationMs: 42, Ok: true, Outcome: verifierv1.Outcome_OUTCOME_OK},
			"public.audit_log": {
				Table: "public.audit_log", SnapshotLsn: "0/1A2B3C", LogSize: 1003, RowsScanned: 1000, DurationMs: 77, Ok: false,
				Outcome: verifierv1.Outcome_OUTCOME_TAMPERED, ConfirmSnapshotLsn: "0/1A2B40",
				Findings: []*verifierv1.Finding{
					{Kind: verifierv1.FindingKind_FINDING_KIND_MODIFIED, Key: map[string]string{"id": "42"}, WitnessEntry: entry(42), EvidencePath: "/ev/1.json", Message: "row id=42 differs"},
					{Kind: verifierv1.FindingKind_FINDING_KIND_DELETED, WitnessEntry: entry(0), EvidencePath: "/ev/2.json"},
					{Kind: verifierv1.FindingKind_FINDING_KIND_PHANTOM, Key: map[string]string{"tenant": "a", "n": "1"}, EvidencePath: "/ev/3.json"},
				},
				Warnings: []string{"no checkpoint yet"},
			},
		},
		errs: map[string]error{
			"public.other": connect.NewError(connect.CodeFailedPrecondition, errors.New("table is not protected: the witness cluster has no log for public.other; protect it with `witnz protect public.other`")),
			"public.down":  connect.NewError(connect.CodeUnavailable, errors.New("witness cluster: the witness cluster has no leader (no quorum?): w2 is Candidate")),
		},
	}
	verifierURL := serve(t, dir, mtls.Service("verifier"), func(s *rpcserver.Server) {
		path, h := verifierv1connect.NewVerifierServiceHandler(fv, s.HandlerOptions()...)
		s.Handle(path, h, verifierv1connect.VerifierServiceName)
	})
	witnessURL := serve(t, dir, mtls.Witness("w1"), func(s *rpcserver.Server) {
		path, h := witnessv1connect.NewWitnessServiceHandler(&fakeWitness{tables: []*witnessv1.TableInfo{
			{Name: "public.clean", Protection: witnessv1.Protection_PROTECTION_PROTECTED},
			{Name: "public.audit_log", Protection: witnessv1.Protection_PROTECTION_PROTECTED},
			{Name: "public.retired", Protection: witnessv1.Protection_PROTECTION_UNPROTECTED},
		}}, s.HandlerOptions()...)
		s.Handle(path, h, witnessv1connect.WitnessServiceName)
	})
	p := pki.PathsFor(dir, operator)
	env := func(k string) string {
		return map[string]string{"WITNZ_TLS_CERT": p.Cert, "WITNZ_TLS_KEY": p.Key, "WITNZ_TLS_CA": p.CA, "WITNZ_VERIFIER": verifierURL}[k]
	}
	t.Chdir(t.TempDir()) // no stack file

	t.Run("json contract of a tampered table", func(t *testing.T) {
		out, _, err := run(t, env, "verify", "public.audit_log", "--json")
		var te *TamperedError
		if !errors.As(err, &te) || te.ExitCode() != ExitTampered || te.Tables["public.audit_log"] != 3 {
			t.Fatalf("error %v, want a TamperedError (exit 3) naming 3 rows", err)
		}
		if fv.caller != operator {
			t.Errorf("the verifier saw the caller %v, want the operator", fv.caller)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		want := map[string]any{
			"table": "public.audit_log", "snapshot_lsn": "0/1A2B3C", "log_size": 1003.0, "rows_scanned": 1000.0, "duration_ms": 77.0, "ok": false,
			"findings": []any{
				map[string]any{"kind": "modified", "key": map[string]any{"id": "42"}, "witness_entry": 42.0, "evidence_path": "/ev/1.json"},
				map[string]any{"kind": "deleted", "key": map[string]any{}, "witness_entry": 0.0, "evidence_path": "/ev/2.json"},
				map[string]any{"kind": "phantom", "key": map[string]any{"tenant": "a", "n": "1"}, "witness_entry": nil, "evidence_path": "/ev/3.json"},
			},
			"integrity": []any{},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("witnz verify --json (-want +got):\n%s", diff)
		}
	})

	t.Run("clean table", func(t *testing.T) {
		out, _, err := run(t, env, "verify", "--json", "public.clean")
		if err != nil {
			t.Fatal(err)
		}
		var got VerifyResult
		if err := json.Unmarshal([]byte(out), &got); err != nil || !got.OK || got.Findings == nil || !strings.Contains(out, `"findings": []`) {
			t.Errorf("clean run: %v\n%s", err, out)
		}
		out, _, err = run(t, env, "verify", "public.clean")
		if err != nil || !strings.Contains(out, "public.clean: OK, 1000 rows match the witness log (size 1002) at snapshot 0/1A2B3C") {
			t.Errorf("text output %q, %v", out, err)
		}
	})

	t.Run("text output names every row", func(t *testing.T) {
		out, _, err := run(t, env, "verify", "public.audit_log")
		if !errors.As(err, new(*TamperedError)) {
			t.Fatalf("error %v, want TamperedError", err)
		}
		for _, want := range []string{"public.audit_log: TAMPERED, 3 rows differ", "modified id=42  (witness entry 42)", "row id=42 differs", "evidence: /ev/1.json",
			"deleted  (key unknown: only its commitment is logged)  (witness entry 0)", "phantom  n=1 tenant=a  (no witness entry)", "warning: no checkpoint yet"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("errors are not ok", func(t *testing.T) {
		_, _, err := run(t, env, "verify", "public.other")
		if err == nil || errors.As(err, new(*TamperedError)) || !strings.Contains(err.Error(), "verify public.other: table is not protected") {
			t.Errorf("unprotected: %v", err)
		}
		_, _, err = run(t, env, "verify", "public.down", "--json")
		if err == nil || !strings.Contains(err.Error(), "no quorum") {
			t.Errorf("no quorum: %v", err)
		}
		for _, args := range [][]string{{"verify", "audit_log"}, {"verify", "a.b", "c.d"}, {"verify", "--bogus"}} {
			if _, _, err := run(t, env, args...); err == nil {
				t.Errorf("witnz %s succeeded", strings.Join(args, " "))
			}
		}
		noVerifier := func(k string) string {
			if k == "WITNZ_VERIFIER" {
				return ""
			}
			return env(k)
		}
		if _, _, err := run(t, noVerifier, "verify", "public.clean"); err == nil || !strings.Contains(err.Error(), "--verifier") || !strings.Contains(err.Error(), "make up") {
			t.Errorf("no verifier: %v", err)
		}
		if _, _, err := run(t, env, "verify", "--verifier", "http://x:1", "public.clean"); err == nil || !strings.Contains(err.Error(), "https://") {
			t.Errorf("http verifier: %v", err)
		}
	})

	t.Run("every protected table", func(t *testing.T) {
		fv.mu.Lock()
		fv.asked = nil
		fv.mu.Unlock()
		out, _, err := run(t, env, "verify", "--json", "--witness", witnessURL)
		if !errors.As(err, new(*TamperedError)) {
			t.Fatalf("error %v, want TamperedError", err)
		}
		var got []VerifyResult
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("not a JSON array: %v\n%s", err, out)
		}
		var tables []string
		for _, r := range got {
			tables = append(tables, fmt.Sprintf("%s ok=%v", r.Table, r.OK))
		}
		if want := []string{"public.audit_log ok=false", "public.clean ok=true"}; !slices.Equal(tables, want) {
			t.Errorf("verified %v, want %v (the unprotected table left out)", tables, want)
		}
		if _, _, err := run(t, env, "verify"); err == nil || !strings.Contains(err.Error(), "--witness") {
			t.Errorf("no table and no witness: %v", err)
		}
	})
}
