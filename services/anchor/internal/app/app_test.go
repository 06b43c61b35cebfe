package app_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/wrapperspb"

	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/anchor/internal/app"
	"github.com/witnz/witnz/services/anchor/internal/config"
)

func mustPKI(t *testing.T, ids ...mtls.Identity) string {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Init(dir, ids, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustTLS(t *testing.T, dir string, id mtls.Identity) *mtls.Config {
	t.Helper()
	p := pki.PathsFor(dir, id)
	c, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func files(dir string, id mtls.Identity) mtls.Files {
	p := pki.PathsFor(dir, id)
	return mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA}
}

// fakeWitness answers GetStatus like a witness node; nothing else.
type fakeWitness struct {
	witnessv1connect.UnimplementedWitnessServiceHandler
}

func (fakeWitness) GetStatus(context.Context, *connect.Request[witnessv1.GetStatusRequest]) (*connect.Response[witnessv1.GetStatusResponse], error) {
	return connect.NewResponse(&witnessv1.GetStatusResponse{NodeId: "w1", State: "Leader"}), nil
}

func (fakeWitness) ListAnchorReceipts(context.Context, *connect.Request[witnessv1.ListAnchorReceiptsRequest]) (*connect.Response[witnessv1.ListAnchorReceiptsResponse], error) {
	return connect.NewResponse(&witnessv1.ListAnchorReceiptsResponse{}), nil
}

func startFakeWitness(t *testing.T, addr string, tlsCfg *mtls.Config) {
	t.Helper()
	srv, err := rpcserver.New(rpcserver.Config{Name: "witness", Addr: addr, TLS: tlsCfg.Server(), Logger: testLogger(t, "witness")})
	if err != nil {
		t.Fatal(err)
	}
	path, h := witnessv1connect.NewWitnessServiceHandler(fakeWitness{}, srv.HandlerOptions()...)
	srv.Handle(path, h, witnessv1connect.WitnessServiceName)
	runInBackground(t, srv.Run)
}

func runInBackground(t *testing.T, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

func testLogger(t *testing.T, name string) *slog.Logger {
	t.Helper()
	l, err := logging.New(t.Output(), name, logging.Options{Level: "debug", Format: "text"})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last: %s", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpStatus(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// grpcHealth calls grpc.health.v1.Health/Check. Its messages are
// wire-compatible with the wrapper types: the request is {string service = 1}
// and the response {enum status = 1}, where SERVING is 1 and NOT_SERVING 2.
func grpcHealth(t *testing.T, hc *http.Client, base, service string) int32 {
	t.Helper()
	c := connect.NewClient[wrapperspb.StringValue, wrapperspb.Int32Value](hc, base+"/grpc.health.v1.Health/Check", connect.WithGRPC())
	resp, err := c.CallUnary(t.Context(), connect.NewRequest(wrapperspb.String(service)))
	if err != nil {
		t.Fatalf("health check %q: %v", service, err)
	}
	return resp.Msg.GetValue()
}

const (
	healthServing    = 1
	healthNotServing = 2
)

var operator = mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}

// writePolicy writes a policy with one fresh witness key.
func writePolicy(t *testing.T) string {
	t.Helper()
	_, path := cosignerKeys(t, 1)
	return path
}

func TestServesAndReportsReadiness(t *testing.T) {
	dir := mustPKI(t, mtls.Service("anchor"), mtls.Witness("w1"), mtls.Service("gateway"), mtls.Service("verifier"))
	witnessAddr := testenv.FreeAddr(t)
	sinkDir := filepath.Join(t.TempDir(), "anchors")

	svc, err := app.New(t.Context(), config.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		TLS:         files(dir, mtls.Service("anchor")),
		Witnesses:   []string{"https://" + witnessAddr},
		Sink:        config.SinkDir,
		SinkDir:     sinkDir,
		DataDir:     t.TempDir(),
		PolicyFile:  writePolicy(t),
		Interval:    time.Hour,
	}, testLogger(t, "anchor"))
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, svc.Run)

	admin := "http://" + svc.AdminAddr().String()
	base := "https://" + svc.Addr().String()
	gateway := mustTLS(t, dir, mtls.Service("gateway")).HTTPClient()

	if fi, err := os.Stat(sinkDir); err != nil || !fi.IsDir() {
		t.Fatalf("--sink-dir was not created: %v", err)
	}
	if code, body := httpStatus(admin + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s, want 200", code, body)
	}
	if code, body := httpStatus(admin + "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no witness answered") {
		t.Fatalf("/readyz without a witness = %d %q, want 503 naming the witness", code, body)
	}
	if got := grpcHealth(t, gateway, base, ""); got != healthNotServing {
		t.Fatalf("gRPC health without a witness = %d, want NOT_SERVING", got)
	}

	startFakeWitness(t, witnessAddr, mustTLS(t, dir, mtls.Witness("w1")))
	waitFor(t, "/readyz to return 200", func() (bool, string) {
		code, body := httpStatus(admin + "/readyz")
		return code == http.StatusOK, body
	})
	for _, service := range []string{"", anchorv1connect.AnchorServiceName} {
		if got := grpcHealth(t, gateway, base, service); got != healthServing {
			t.Errorf("gRPC health %q = %d, want SERVING", service, got)
		}
	}

	protocols := map[string][]connect.ClientOption{
		"grpc":    rpcserver.ClientOptions(),
		"connect": nil,
	}
	for name, opts := range protocols {
		t.Run(name, func(t *testing.T) {
			client := anchorv1connect.NewAnchorServiceClient(gateway, base, opts...)
			// The fake witness has no tables: nothing to anchor, nothing
			// anchored, an empty list.
			_, err := client.AnchorNow(t.Context(), connect.NewRequest(&anchorv1.AnchorNowRequest{}))
			if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "nothing to anchor") {
				t.Errorf("AnchorNow = %v, want FailedPrecondition: nothing to anchor", err)
			}
			list, err := client.ListAnchors(t.Context(), connect.NewRequest(&anchorv1.ListAnchorsRequest{}))
			if err != nil || len(list.Msg.GetReceipts()) != 0 {
				t.Errorf("ListAnchors = %v, %v; want no receipts", list, err)
			}
			_, err = client.CheckAnchors(t.Context(), connect.NewRequest(&anchorv1.CheckAnchorsRequest{All: true}))
			if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "nothing anchored yet") {
				t.Errorf("CheckAnchors = %v, want FailedPrecondition: nothing anchored yet", err)
			}
		})
	}
	if code, body := httpStatus(admin + "/metrics"); code != http.StatusOK || !strings.Contains(body, `witnz_anchor_attempts_total{result="nothing"}`) || !strings.Contains(body, "witnz_anchor_pending_receipts 0") {
		t.Errorf("/metrics = %d, lacks the anchor attempts:\n%s", code, body)
	}
	verifier := anchorv1connect.NewAnchorServiceClient(mustTLS(t, dir, mtls.Service("verifier")).HTTPClient(), base)
	if _, err := verifier.AnchorNow(t.Context(), connect.NewRequest(&anchorv1.AnchorNowRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "operator identity") {
		t.Errorf("AnchorNow by the verifier = %v, want PermissionDenied naming the identity required", err)
	}

	// A sink directory that disappears makes the service unready.
	if err := os.RemoveAll(sinkDir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz to report the sink", func() (bool, string) {
		code, body := httpStatus(admin + "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "sink"), body
	})
}
