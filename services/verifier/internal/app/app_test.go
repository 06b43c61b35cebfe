package app_test

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/wrapperspb"

	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/verifier/internal/app"
	"github.com/witnz/witnz/services/verifier/internal/config"
)

var testKey = hex.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

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
	deadline := time.Now().Add(15 * time.Second)
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

func TestServesAndReportsReadiness(t *testing.T) {
	pg := testenv.PostgreSQL(t)
	dir := mustPKI(t, mtls.Service("verifier"), mtls.Witness("w1"), mtls.Service("gateway"))
	witnessAddr := testenv.FreeAddr(t)

	svc, err := app.New(t.Context(), config.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		TLS:         files(dir, mtls.Service("verifier")),
		Log:         logging.Options{Level: "info", Format: "json"},
		PGDSN:       pg.DSN("postgres"),
		Witnesses:   []string{"https://" + witnessAddr},
		KeyHex:      testKey,
	}, testLogger(t, "verifier"))
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, svc.Run)

	admin := "http://" + svc.AdminAddr().String()
	base := "https://" + svc.Addr().String()
	gateway := mustTLS(t, dir, mtls.Service("gateway")).HTTPClient()

	// No witness is listening yet: alive, but not ready.
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
	for _, service := range []string{"", verifierv1connect.VerifierServiceName} {
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
			client := verifierv1connect.NewVerifierServiceClient(gateway, base, opts...)
			// The witness answers, but holds no log for the table.
			_, err := client.Verify(t.Context(), connect.NewRequest(&verifierv1.VerifyRequest{Table: "public.audit_log"}))
			if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "no log for public.audit_log") {
				t.Errorf("Verify = %v, want FailedPrecondition: not protected", err)
			}
			runs, err := client.ListRuns(t.Context(), connect.NewRequest(&verifierv1.ListRunsRequest{Table: "public.audit_log"}))
			if err != nil {
				t.Fatal(err)
			}
			if len(runs.Msg.GetRuns()) == 0 || runs.Msg.GetRuns()[0].GetOutcome() != verifierv1.Outcome_OUTCOME_ERROR || runs.Msg.GetRuns()[0].GetOk() {
				t.Errorf("ListRuns = %v, want the failed run first", runs.Msg.GetRuns())
			}
		})
	}

	// Without a client certificate the handshake is refused.
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: mustTLS(t, dir, mtls.Service("gateway")).Client().Clone()}}
	noCert.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	noCert.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	_, err = verifierv1connect.NewVerifierServiceClient(noCert, base).Verify(t.Context(), connect.NewRequest(&verifierv1.VerifyRequest{}))
	if err == nil || connect.CodeOf(err) == connect.CodeUnimplemented {
		t.Errorf("Verify without a client certificate = %v, want a refused handshake", err)
	}

	// PostgreSQL going away makes the verifier unready, naming the check.
	pg.Stop(t)
	waitFor(t, "/readyz to report postgres", func() (bool, string) {
		code, body := httpStatus(admin + "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "postgres"), body
	})
}

func TestNewRefusesUnreachablePostgres(t *testing.T) {
	dir := mustPKI(t, mtls.Service("verifier"))
	addr := testenv.FreeAddr(t)
	_, err := app.New(t.Context(), config.Config{
		Listen:    "127.0.0.1:0",
		TLS:       files(dir, mtls.Service("verifier")),
		PGDSN:     "postgres://verifier@" + addr + "/app?connect_timeout=5",
		Witnesses: []string{"https://127.0.0.1:1"},
		KeyHex:    testKey,
	}, testLogger(t, "verifier"))
	if err == nil {
		t.Fatal("New succeeded without PostgreSQL")
	}
	if want := "cannot reach PostgreSQL at " + addr + " (--pg-dsn)"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %q, want prefix %q", err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans several lines: %q", err)
	}
}
