package app

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/gateway/internal/config"
)

// fakeVerifier answers like the verifier: a tampered run for
// public.audit_log, FAILED_PRECONDITION for a table it does not protect,
// and the runs it holds; it records who called.
type fakeVerifier struct {
	verifierv1connect.UnimplementedVerifierServiceHandler
	mu      sync.Mutex
	callers []string
	lists   []*verifierv1.ListRunsRequest
}

var tamperedRun = &verifierv1.VerifyResponse{
	Table: "public.audit_log", SnapshotLsn: "0/1A2B3C", LogSize: 42, RowsScanned: 40, Outcome: verifierv1.Outcome_OUTCOME_TAMPERED,
	Findings: []*verifierv1.Finding{{Kind: verifierv1.FindingKind_FINDING_KIND_MODIFIED, Key: map[string]string{"id": "7"}, EvidencePath: "/e/1.json"}},
	Trigger:  "api",
}

var integrityRun = &verifierv1.VerifyResponse{
	Table: "public.orders", Outcome: verifierv1.Outcome_OUTCOME_INTEGRITY, Trigger: "schedule",
	Integrity: []*verifierv1.IntegrityProblem{{Witness: "w2", WitnessUrl: "https://127.0.0.1:7012", Kind: verifierv1.IntegrityKind_INTEGRITY_KIND_ROOT_MISMATCH, Problem: "root differs", Size: 40}},
}

func (f *fakeVerifier) record(ctx context.Context) {
	id, _ := mtls.PeerIdentity(ctx)
	f.mu.Lock()
	f.callers = append(f.callers, id.String())
	f.mu.Unlock()
}

func (f *fakeVerifier) Verify(ctx context.Context, req *connect.Request[verifierv1.VerifyRequest]) (*connect.Response[verifierv1.VerifyResponse], error) {
	f.record(ctx)
	if req.Msg.GetTable() != "public.audit_log" {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("table is not protected: protect it with `witnz protect`"))
	}
	return connect.NewResponse(tamperedRun), nil
}

func (f *fakeVerifier) ListRuns(ctx context.Context, req *connect.Request[verifierv1.ListRunsRequest]) (*connect.Response[verifierv1.ListRunsResponse], error) {
	f.record(ctx)
	f.mu.Lock()
	f.lists = append(f.lists, req.Msg)
	f.mu.Unlock()
	return connect.NewResponse(&verifierv1.ListRunsResponse{Runs: []*verifierv1.VerifyResponse{integrityRun, tamperedRun}}), nil
}

func TestVerifyThroughGateway(t *testing.T) {
	e := startEnv(t)
	for name, gw := range map[string]gatewayv1connect.GatewayServiceClient{"grpc": e.client(t, idAdmin), "connect": e.connectClient(t, idAdmin)} {
		t.Run(name, func(t *testing.T) {
			resp, err := gw.Verify(t.Context(), connect.NewRequest(&gatewayv1.VerifyRequest{Table: "public.audit_log"}))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if diff := cmp.Diff(tamperedRun, resp.Msg.GetRun(), protocmp.Transform()); diff != "" {
				t.Errorf("run (-want +got):\n%s", diff)
			}

			_, err = gw.Verify(t.Context(), connect.NewRequest(&gatewayv1.VerifyRequest{Table: "public.other"}))
			if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "not protected") {
				t.Errorf("Verify of an unprotected table = %v, want FAILED_PRECONDITION with the verifier's message", err)
			}

			list, err := gw.ListVerifications(t.Context(), connect.NewRequest(&gatewayv1.ListVerificationsRequest{Table: "public.orders", Limit: 5}))
			if err != nil {
				t.Fatalf("ListVerifications: %v", err)
			}
			want := &gatewayv1.ListVerificationsResponse{Runs: []*verifierv1.VerifyResponse{integrityRun, tamperedRun}}
			if diff := cmp.Diff(want, list.Msg, protocmp.Transform()); diff != "" {
				t.Errorf("ListVerifications (-want +got):\n%s", diff)
			}
		})
	}
	e.verifier.mu.Lock()
	defer e.verifier.mu.Unlock()
	for _, c := range e.verifier.callers {
		if c != idGateway.String() {
			t.Errorf("the verifier was called as %s, want the gateway's own identity %s", c, idGateway)
		}
	}
	for _, l := range e.verifier.lists {
		if diff := cmp.Diff(&verifierv1.ListRunsRequest{Table: "public.orders", Limit: 5}, l, protocmp.Transform()); diff != "" {
			t.Errorf("ListRuns request (-want +got):\n%s", diff)
		}
	}
}

func TestVerifyWithoutVerifier(t *testing.T) {
	e := startEnv(t, func(c *config.Config) { c.Verifier = "" })
	gw := e.client(t, idAdmin)
	_, err := gw.Verify(t.Context(), connect.NewRequest(&gatewayv1.VerifyRequest{Table: "public.audit_log"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "--verifier") {
		t.Errorf("Verify = %v, want FAILED_PRECONDITION naming --verifier", err)
	}
	_, err = gw.ListVerifications(t.Context(), connect.NewRequest(&gatewayv1.ListVerificationsRequest{}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("ListVerifications = %v, want FAILED_PRECONDITION", err)
	}
}

func TestVerifyVerifierUnreachable(t *testing.T) {
	closed := ""
	e := startEnv(t, func(c *config.Config) { closed = c.Witnesses[1]; c.Verifier = closed })
	_, err := e.client(t, idAdmin).Verify(t.Context(), connect.NewRequest(&gatewayv1.VerifyRequest{Table: "public.audit_log"}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), closed) {
		t.Errorf("Verify = %v, want UNAVAILABLE naming %s", err, closed)
	}
}
