package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
)

// fakeAnchor answers the AnchorService from canned values (the service
// itself is tested in services/anchor against real storage and witnesses).
type fakeAnchor struct {
	anchorv1connect.UnimplementedAnchorServiceHandler
	mu       sync.Mutex
	receipts []*anchorv1.Receipt
	check    *anchorv1.CheckAnchorsResponse
	checkErr error
	asked    []string // "now", "list N", "check all=B"
}

func (f *fakeAnchor) AnchorNow(context.Context, *connect.Request[anchorv1.AnchorNowRequest]) (*connect.Response[anchorv1.AnchorNowResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, "now")
	return connect.NewResponse(&anchorv1.AnchorNowResponse{Receipt: f.receipts[0]}), nil
}

func (f *fakeAnchor) ListAnchors(_ context.Context, req *connect.Request[anchorv1.ListAnchorsRequest]) (*connect.Response[anchorv1.ListAnchorsResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, "list "+itoa(req.Msg.GetLimit()))
	n := min(int(req.Msg.GetLimit()), len(f.receipts))
	return connect.NewResponse(&anchorv1.ListAnchorsResponse{Receipts: f.receipts[:n]}), nil
}

func (f *fakeAnchor) CheckAnchors(_ context.Context, req *connect.Request[anchorv1.CheckAnchorsRequest]) (*connect.Response[anchorv1.CheckAnchorsResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Msg.GetAll() {
		f.asked = append(f.asked, "check all=true")
	} else {
		f.asked = append(f.asked, "check all=false")
	}
	if f.checkErr != nil {
		return nil, f.checkErr
	}
	return connect.NewResponse(f.check), nil
}

func (f *fakeAnchor) set(check *anchorv1.CheckAnchorsResponse, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.check, f.checkErr, f.asked = check, err, nil
}

func (f *fakeAnchor) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

var (
	anchoredAt  = time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
	retainUntil = time.Date(2027, 12, 25, 8, 0, 0, 0, time.UTC)
)

func testReceipts() []*anchorv1.Receipt {
	return []*anchorv1.Receipt{
		{
			Sink: "s3", Bucket: "witnz-anchors", Key: "anchors/2026/11/20/080000.json", VersionId: "v-2",
			ChecksumSha256: "0a1b2c3d", RetainUntil: timestamppb.New(retainUntil), AnchoredAt: timestamppb.New(anchoredAt),
			TableSizes: map[string]uint64{"public.audit_log": 1002, "public.clean": 10},
			Etag:       `"e1"`, WitnessRaftIndex: 57, ObjectSize: 812,
			Tables: []*anchorv1.AnchoredTable{
				{Table: "public.audit_log", Size: 1002, Root: []byte{1, 2, 3}, Cosigners: []string{"witnz.local/w1+0a0b0c0d", "witnz.local/w2+01020304"}},
				{Table: "public.clean", Size: 10, Root: []byte{4}},
			},
		},
		{
			Sink: "dir", Key: "2026-11-19T080000Z.json", ChecksumSha256: "a1b2",
			AnchoredAt: timestamppb.New(anchoredAt.Add(-24 * time.Hour)), TableSizes: map[string]uint64{"public.audit_log": 900},
		},
	}
}

// anchorEnv starts a fake anchor service, verifier and witness with real
// certificates and returns the environment that points the CLI at them.
type anchorEnv struct {
	env      func(string) string
	anchor   *fakeAnchor
	verifier *fakeVerifier
	urls     map[string]string
}

func startAnchorEnv(t *testing.T) *anchorEnv {
	t.Helper()
	dir := t.TempDir()
	operator := mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}
	if err := pki.Init(dir, []mtls.Identity{mtls.Service("anchor"), mtls.Service("verifier"), mtls.Service("gateway"), mtls.Witness("w1"), operator}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	fa := &fakeAnchor{receipts: testReceipts()}
	fv := &fakeVerifier{results: map[string]*verifierv1.VerifyResponse{
		"public.audit_log": {Table: "public.audit_log", SnapshotLsn: "0/1A2B3C", LogSize: 1003, RowsScanned: 1000, DurationMs: 77, Ok: true, Outcome: verifierv1.Outcome_OUTCOME_OK},
	}, errs: map[string]error{
		"public.clean": connect.NewError(connect.CodeUnavailable, errors.New("witness cluster: the witness cluster has no leader (no quorum?)")),
	}}
	e := &anchorEnv{anchor: fa, verifier: fv, urls: map[string]string{}}
	e.urls["anchor"] = serve(t, dir, mtls.Service("anchor"), func(s *rpcserver.Server) {
		path, h := anchorv1connect.NewAnchorServiceHandler(fa, s.HandlerOptions()...)
		s.Handle(path, h, anchorv1connect.AnchorServiceName)
	})
	e.urls["verifier"] = serve(t, dir, mtls.Service("verifier"), func(s *rpcserver.Server) {
		path, h := verifierv1connect.NewVerifierServiceHandler(&runsVerifier{fakeVerifier: fv, runs: testRuns()}, s.HandlerOptions()...)
		s.Handle(path, h, verifierv1connect.VerifierServiceName)
	})
	fw := &fakeWitness{tables: []*witnessv1.TableInfo{
		{Name: "public.audit_log", Protection: witnessv1.Protection_PROTECTION_PROTECTED, Size: 1302, Mode: witnessv1.TableMode_TABLE_MODE_APPEND_ONLY},
		{Name: "public.clean", Protection: witnessv1.Protection_PROTECTION_PROTECTED, Size: 12, Mode: witnessv1.TableMode_TABLE_MODE_MUTABLE},
	}}
	e.urls["gateway"] = serve(t, dir, mtls.Service("gateway"), func(s *rpcserver.Server) {
		path, h := gatewayv1connect.NewGatewayServiceHandler(&alertsGateway{alerts: testAlerts()}, s.HandlerOptions()...)
		s.Handle(path, h, gatewayv1connect.GatewayServiceName)
	})
	checkpoints, policy := testCheckpoints(t)
	policyPath := filepath.Join(dir, "policy.txt")
	if err := os.WriteFile(policyPath, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	e.urls["witness"] = serve(t, dir, mtls.Witness("w1"), func(s *rpcserver.Server) {
		path, h := witnessv1connect.NewWitnessServiceHandler(&checkpointWitness{fakeWitness: fw, checkpoints: checkpoints}, s.HandlerOptions()...)
		s.Handle(path, h, witnessv1connect.WitnessServiceName)
	})
	p := pki.PathsFor(dir, operator)
	vars := map[string]string{
		"WITNZ_TLS_CERT": p.Cert, "WITNZ_TLS_KEY": p.Key, "WITNZ_TLS_CA": p.CA,
		"WITNZ_ANCHOR": e.urls["anchor"], "WITNZ_VERIFIER": e.urls["verifier"], "WITNZ_WITNESS": e.urls["witness"],
		"WITNZ_POLICY": policyPath, "WITNZ_GATEWAY": e.urls["gateway"],
	}
	e.env = func(k string) string { return vars[k] }
	t.Chdir(t.TempDir()) // no stack file
	return e
}

// without returns env without the named variables.
func without(env func(string) string, names ...string) func(string) string {
	return func(k string) string {
		for _, n := range names {
			if k == n {
				return ""
			}
		}
		return env(k)
	}
}

func TestAnchorCommands(t *testing.T) {
	e := startAnchorEnv(t)

	t.Run("now prints the receipt", func(t *testing.T) {
		out, _, err := run(t, e.env, "anchor", "now")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"anchored:", "sink:         s3", "bucket:       witnz-anchors", "key:          anchors/2026/11/20/080000.json",
			"version id:   v-2", "sha-256:      0a1b2c3d", "retain until: 2027-12-25T08:00:00Z", "object size:  812 bytes", "witness log:  receipt recorded at Raft index 57",
			"public.audit_log  size 1002  root AQID  cosigned by witnz.local/w1+0a0b0c0d, witnz.local/w2+01020304", "public.clean  size 10  root BA=="} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("now json contract", func(t *testing.T) {
		out, _, err := run(t, e.env, "anchor", "now", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		want := map[string]any{
			"sink": "s3", "bucket": "witnz-anchors", "key": "anchors/2026/11/20/080000.json", "version_id": "v-2", "checksum_sha256": "0a1b2c3d",
			"retain_until": "2027-12-25T08:00:00Z", "anchored_at": "2026-11-20T08:00:00Z",
			"tables": map[string]any{"public.audit_log": 1002.0, "public.clean": 10.0},
			"etag":   `"e1"`, "object_size": 812.0, "witness_raft_index": 57.0,
			"checkpoints": []any{
				map[string]any{"table": "public.audit_log", "size": 1002.0, "root": "AQID", "cosigners": []any{"witnz.local/w1+0a0b0c0d", "witnz.local/w2+01020304"}},
				map[string]any{"table": "public.clean", "size": 10.0, "root": "BA==", "cosigners": []any{}},
			},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("witnz anchor now --json (-want +got):\n%s", diff)
		}
	})

	t.Run("list", func(t *testing.T) {
		out, _, err := run(t, e.env, "anchor", "list", "--json", "--limit", "5")
		if err != nil {
			t.Fatal(err)
		}
		var got []AnchorReceipt
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 2 || got[1].Sink != "dir" || got[1].RetainUntil != "" || got[1].VersionID != "" {
			t.Errorf("list: %v %+v\n%s", err, got, out)
		}
		if calls := e.anchor.calls(); calls[len(calls)-1] != "list 5" {
			t.Errorf("calls %v, want the last to be list 5", calls)
		}
		out, _, err = run(t, e.env, "anchor", "list", "--limit", "1")
		if err != nil || !strings.Contains(out, "witnz-anchors") || strings.Contains(out, "2026-11-19T080000Z.json") {
			t.Errorf("list --limit 1: %v\n%s", err, out)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			env  func(string) string
			args []string
			want string
		}{
			{e.env, []string{"anchor"}, "witnz anchor now"},
			{e.env, []string{"anchor", "frob"}, `unknown anchor subcommand "frob"`},
			{e.env, []string{"anchor", "list", "--limit", "0"}, "--limit 0"},
			{e.env, []string{"anchor", "now", "extra"}, `unexpected argument "extra"`},
			{without(e.env, "WITNZ_ANCHOR"), []string{"anchor", "now"}, "--anchor https://host:port"},
			{e.env, []string{"anchor", "now", "--anchor", "http://127.0.0.1:1"}, "https://"},
			{e.env, []string{"anchor", "now", "--anchor", "https://" + testenv.FreeAddr(t)}, "is it running?"},
		} {
			_, _, err := run(t, tc.env, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("witnz %s: %v, want one line containing %q", strings.Join(tc.args, " "), err, tc.want)
			}
		}
	})
}

func TestVerifyCheckAnchor(t *testing.T) {
	e := startAnchorEnv(t)
	receipts := testReceipts()
	okCheck := &anchorv1.CheckAnchorsResponse{Ok: true, Checks: []*anchorv1.AnchorCheck{
		{Receipt: receipts[0], Table: "public.audit_log", Ok: true},
		{Receipt: receipts[0], Table: "public.clean", Ok: true},
	}}

	t.Run("ok", func(t *testing.T) {
		e.anchor.set(okCheck, nil)
		out, _, err := run(t, e.env, "verify", "--check-anchor")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"anchor 2026-11-20T08:00:00Z, s3 sink witnz-anchors/anchors/2026/11/20/080000.json (version v-2)",
			"public.audit_log: OK, anchored size 1002, current size 1302",
			"public.clean: OK, anchored size 10, current size 12",
			"anchor check: OK",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if calls := e.anchor.calls(); len(calls) != 1 || calls[0] != "check all=false" {
			t.Errorf("calls %v", calls)
		}
		if len(e.verifier.asked) != 0 {
			t.Errorf("--check-anchor alone verified tables %v", e.verifier.asked)
		}
	})

	t.Run("json contract of a rewritten history", func(t *testing.T) {
		e.anchor.set(&anchorv1.CheckAnchorsResponse{Ok: false, Checks: []*anchorv1.AnchorCheck{
			{Receipt: receipts[0], Table: "public.audit_log", Ok: false, Problem: "consistency proof from size 1002 to 1300 fails:\nhistory rewritten", AnchoredSize: 1002, CurrentSize: 1300},
			{Receipt: receipts[1], Table: "public.audit_log", Ok: true},
		}}, nil)
		out, _, err := run(t, e.env, "verify", "--check-anchor", "--all", "--json")
		var ae *AnchorProblemError
		if !errors.As(err, &ae) || ae.ExitCode() != ExitTampered || !strings.Contains(err.Error(), "public.audit_log: consistency proof from size 1002 to 1300 fails: history rewritten") {
			t.Fatalf("error %v, want an AnchorProblemError (exit 3) naming the table and problem", err)
		}
		if calls := e.anchor.calls(); len(calls) != 1 || calls[0] != "check all=true" {
			t.Errorf("calls %v, want check all=true", calls)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		want := map[string]any{"ok": false, "checks": []any{
			map[string]any{"table": "public.audit_log", "ok": false, "problem": "consistency proof from size 1002 to 1300 fails: history rewritten",
				"anchored_size": 1002.0, "current_size": 1300.0, "anchor": map[string]any{
					"sink": "s3", "bucket": "witnz-anchors", "key": "anchors/2026/11/20/080000.json", "version_id": "v-2", "checksum_sha256": "0a1b2c3d",
					"retain_until": "2027-12-25T08:00:00Z", "anchored_at": "2026-11-20T08:00:00Z",
					"tables": map[string]any{"public.audit_log": 1002.0, "public.clean": 10.0},
					"etag":   `"e1"`, "object_size": 812.0, "witness_raft_index": 57.0,
					"checkpoints": []any{
						map[string]any{"table": "public.audit_log", "size": 1002.0, "root": "AQID", "cosigners": []any{"witnz.local/w1+0a0b0c0d", "witnz.local/w2+01020304"}},
						map[string]any{"table": "public.clean", "size": 10.0, "root": "BA==", "cosigners": []any{}},
					}}},
			map[string]any{"table": "public.audit_log", "ok": true, "problem": "", "anchored_size": 900.0, "current_size": 1302.0, "anchor": map[string]any{
				"sink": "dir", "bucket": "", "key": "2026-11-19T080000Z.json", "version_id": "", "checksum_sha256": "a1b2",
				"retain_until": "", "anchored_at": "2026-11-19T08:00:00Z", "tables": map[string]any{"public.audit_log": 900.0},
				"etag": "", "object_size": 0.0, "witness_raft_index": 0.0, "checkpoints": []any{}}},
		}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("witnz verify --check-anchor --json (-want +got):\n%s", diff)
		}
	})

	t.Run("missing object", func(t *testing.T) {
		e.anchor.set(&anchorv1.CheckAnchorsResponse{Ok: false, Checks: []*anchorv1.AnchorCheck{
			{Receipt: receipts[0], Ok: false, Problem: "object anchors/2026/11/20/080000.json version v-2 is missing from bucket witnz-anchors"},
		}}, nil)
		out, _, err := run(t, e.env, "verify", "--check-anchor")
		if !errors.As(err, new(*AnchorProblemError)) || !strings.Contains(err.Error(), "anchored object anchors/2026/11/20/080000.json: object") {
			t.Errorf("missing object: %v", err)
		}
		if !strings.Contains(out, "object: PROBLEM") || !strings.Contains(out, "anchor check: FAILED") {
			t.Errorf("output:\n%s", out)
		}
	})

	t.Run("table and anchors", func(t *testing.T) {
		e.anchor.set(okCheck, nil)
		out, _, err := run(t, e.env, "verify", "public.audit_log", "--check-anchor", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var got VerifyResult
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if !got.OK || got.RowsScanned != 1000 || got.AnchorCheck == nil || !got.AnchorCheck.OK || len(got.AnchorCheck.Checks) != 1 || got.AnchorCheck.Checks[0].Table != "public.audit_log" {
			t.Errorf("result %s", out)
		}
		// Without --check-anchor the contract has no anchor_check member.
		out, _, err = run(t, e.env, "verify", "public.audit_log", "--json")
		if err != nil || strings.Contains(out, "anchor_check") {
			t.Errorf("plain verify: %v\n%s", err, out)
		}

		e.anchor.set(&anchorv1.CheckAnchorsResponse{Ok: false, Checks: []*anchorv1.AnchorCheck{
			{Receipt: receipts[0], Table: "public.audit_log", Ok: false, Problem: "root differs"},
		}}, nil)
		out, _, err = run(t, e.env, "verify", "public.audit_log", "--check-anchor")
		if !errors.As(err, new(*AnchorProblemError)) {
			t.Errorf("clean table, rewritten log: %v, want AnchorProblemError", err)
		}
		if !strings.Contains(out, "public.audit_log: OK, 1000 rows") || !strings.Contains(out, "public.audit_log: PROBLEM, anchored size 1002, current size 1302: root differs") {
			t.Errorf("output:\n%s", out)
		}
	})

	t.Run("a table that cannot be verified still has its anchors checked", func(t *testing.T) {
		e.anchor.set(&anchorv1.CheckAnchorsResponse{Ok: false, Checks: []*anchorv1.AnchorCheck{
			{Receipt: receipts[0], Table: "public.clean", Ok: false, Problem: "root differs"},
		}}, nil)
		_, stderr, err := run(t, e.env, "verify", "public.clean", "--check-anchor")
		if !errors.As(err, new(*AnchorProblemError)) || !strings.Contains(stderr, "no quorum") {
			t.Errorf("rewritten history behind a failed verification: %v (stderr %q), want AnchorProblemError and the verify error on stderr", err, stderr)
		}
		e.anchor.set(okCheck, nil)
		_, _, err = run(t, e.env, "verify", "public.clean", "--check-anchor", "--json")
		if err == nil || errors.As(err, new(*AnchorProblemError)) || !strings.Contains(err.Error(), "no quorum") {
			t.Errorf("failed verification, anchors ok: %v, want the verify error (exit 1)", err)
		}
	})

	t.Run("errors exit 1", func(t *testing.T) {
		e.anchor.set(nil, connect.NewError(connect.CodeUnavailable, errors.New("sink unreachable: dial tcp 10.0.0.1:9000: connection refused")))
		_, _, err := run(t, e.env, "verify", "--check-anchor")
		if err == nil || errors.As(err, new(*AnchorProblemError)) || !strings.Contains(err.Error(), "sink unreachable") || !strings.Contains(err.Error(), "is it running?") {
			t.Errorf("unavailable: %v", err)
		}
		e.anchor.set(&anchorv1.CheckAnchorsResponse{Ok: true}, nil)
		if _, _, err := run(t, e.env, "verify", "--check-anchor"); err == nil || !strings.Contains(err.Error(), "witnz anchor now") {
			t.Errorf("nothing anchored: %v", err)
		}
		e.anchor.set(&anchorv1.CheckAnchorsResponse{Ok: false}, nil)
		if _, _, err := run(t, e.env, "verify", "--check-anchor"); !errors.As(err, new(*AnchorProblemError)) {
			t.Errorf("not ok without a check: %v, want AnchorProblemError", err)
		}
		if _, _, err := run(t, e.env, "verify", "--all"); err == nil || !strings.Contains(err.Error(), "--check-anchor") {
			t.Errorf("--all alone: %v", err)
		}
		if _, _, err := run(t, e.env, "verify", "--check-anchor", "--anchor", "https://"+testenv.FreeAddr(t)); err == nil || errors.As(err, new(*AnchorProblemError)) || strings.Contains(err.Error(), "\n") {
			t.Errorf("unreachable anchor service: %v", err)
		}
		// No witness answers: the check stands, current sizes are unknown.
		e.anchor.set(okCheck, nil)
		out, _, err := run(t, e.env, "verify", "--check-anchor", "--witness", "https://"+testenv.FreeAddr(t))
		if err != nil || !strings.Contains(out, "current size unknown") {
			t.Errorf("no witness: %v\n%s", err, out)
		}
	})
}
