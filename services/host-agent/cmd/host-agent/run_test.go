package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var (
	agentID = mtls.Identity{Kind: mtls.KindAgent, Name: "db1"}
	alertID = mtls.Service("alert")
)

func mustPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Init(dir, []mtls.Identity{agentID, alertID}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func tlsArgs(dir string, id mtls.Identity) []string {
	p := pki.PathsFor(dir, id)
	return []string{"--tls-cert=" + p.Cert, "--tls-key=" + p.Key, "--tls-ca=" + p.CA}
}

// TestRunBadConfig checks that every start-up problem ends run with one
// line naming the fault and the fix.
func TestRunBadConfig(t *testing.T) {
	dir := mustPKI(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := append([]string{"--alert=https://127.0.0.1:7020", "--data-dir=" + t.TempDir()}, tlsArgs(dir, agentID)...)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no flags", nil, "--alert is required"},
		{"listen is not a flag", []string{"--listen=:7000"}, "flag provided but not defined: -listen"},
		{"no data dir", []string{"--alert=https://a:7020"}, "--data-dir is required"},
		{"no tls", []string{"--alert=https://a:7020", "--data-dir=/tmp", "--hostname=db1"}, "--tls-cert is required"},
		{"missing key file", []string{"--alert=https://a:7020", "--data-dir=/tmp", "--hostname=db1", "--tls-cert=" + pki.PathsFor(dir, agentID).Cert, "--tls-key=/nonexistent/k", "--tls-ca=" + pki.PathsFor(dir, agentID).CA}, "read --tls-key: open /nonexistent/k"},
		{"hostname not in certificate", append(base, "--hostname=db2"), "is for spiffe://witnz/agent/db1, but this host runs as spiffe://witnz/agent/db2: issue a certificate for agent/db2"},
		{"service certificate", append([]string{"--alert=https://a:7020", "--data-dir=/tmp", "--hostname=db1"}, tlsArgs(dir, alertID)...), "is for spiffe://witnz/service/alert, but this host runs as spiffe://witnz/agent/db1"},
		{"data dir under a file", append(base, "--hostname=db1", "--data-dir="+filepath.Join(file, "state")), "--data-dir " + filepath.Join(file, "state") + " cannot be created"},
		{"bad admin address", append(base, "--hostname=db1", "--admin-listen=127.0.0.1:99999"), `--admin-listen "127.0.0.1:99999" is not host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), tt.args, env(nil), &bytes.Buffer{})
			if err == nil {
				t.Fatalf("run succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run = %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
}

func TestRunHelp(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, env(nil), &stderr); err != nil {
		t.Fatalf("run -h: %v", err)
	}
	for _, flag := range []string{"-alert", "-data-dir", "-hostname", "-admin-listen", "-tls-cert", "-log-level"} {
		if !strings.Contains(stderr.String(), flag) {
			t.Errorf("usage does not mention %s:\n%s", flag, stderr.String())
		}
	}
}

// ackingAlert registers every agent and acknowledges every event.
type ackingAlert struct {
	stopping <-chan struct{}
}

func (ackingAlert) RegisterAgent(_ context.Context, req *connect.Request[alertv1.RegisterAgentRequest]) (*connect.Response[alertv1.RegisterAgentResponse], error) {
	return connect.NewResponse(&alertv1.RegisterAgentResponse{HostId: "host-" + req.Msg.GetHostname()}), nil
}

func (f ackingAlert) StreamEvents(_ context.Context, stream *connect.BidiStream[alertv1.StreamEventsRequest, alertv1.StreamEventsResponse]) error {
	msgs := make(chan *alertv1.StreamEventsRequest)
	errc := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			m, err := stream.Receive()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-done:
				return
			}
		}
	}()
	for {
		select {
		case <-f.stopping:
			return connect.NewError(connect.CodeUnavailable, errors.New("shutting down"))
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case m := <-msgs:
			if ev := m.GetEvent(); ev != nil {
				ack := &alertv1.ServerCommand{Command: &alertv1.ServerCommand_AckEventId{AckEventId: ev.GetEventId()}}
				if err := stream.Send(&alertv1.StreamEventsResponse{Command: ack}); err != nil {
					return err
				}
			}
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, logs *syncBuffer, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; logs:\n%s", what, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRunConnectsAndReportsReadiness runs the whole agent from the
// environment against an alert service that comes up after it.
func TestRunConnectsAndReportsReadiness(t *testing.T) {
	dir := mustPKI(t)
	p := pki.PathsFor(dir, agentID)
	alertAddr, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	dataDir := filepath.Join(t.TempDir(), "state")
	getenv := env(map[string]string{
		"WITNZ_ALERT":        "https://" + alertAddr,
		"WITNZ_DATA_DIR":     dataDir,
		"WITNZ_HOSTNAME":     "db1",
		"WITNZ_ADMIN_LISTEN": admin,
		"WITNZ_TLS_CERT":     p.Cert,
		"WITNZ_TLS_KEY":      p.Key,
		"WITNZ_TLS_CA":       p.CA,
	})
	ctx, cancel := context.WithCancel(t.Context())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, getenv, &logs) }()

	waitFor(t, "/healthz", &logs, func() bool { code, _ := get("http://" + admin + "/healthz"); return code == http.StatusOK })
	if code, body := get("http://" + admin + "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not registered") {
		t.Errorf("/readyz without the alert service = %d %q, want 503 not registered", code, body)
	}
	if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
		t.Errorf("--data-dir was not created: %v", err)
	}

	alertTLS, err := mtls.Load(mtls.Files(pki.PathsFor(dir, alertID)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := rpcserver.New(rpcserver.Config{Name: "alert", Addr: alertAddr, TLS: alertTLS.Server()})
	if err != nil {
		t.Fatal(err)
	}
	path, h := alertv1connect.NewAgentServiceHandler(ackingAlert{stopping: srv.Stopping()}, srv.HandlerOptions()...)
	srv.Handle(path, h, alertv1connect.AgentServiceName)
	srvCtx, stopSrv := context.WithCancel(context.Background())
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(srvCtx) }()
	defer func() { stopSrv(); <-srvDone }()

	waitFor(t, "/readyz 200", &logs, func() bool { code, _ := get("http://" + admin + "/readyz"); return code == http.StatusOK })
	waitFor(t, "the started event to be acknowledged", &logs, func() bool {
		_, body := get("http://" + admin + "/metrics")
		return strings.Contains(body, "witnz_agent_events_acked_total 1") && strings.Contains(body, "witnz_agent_stream_up 1")
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("logs lack the stop record:\n%s", logs.String())
	}
}
