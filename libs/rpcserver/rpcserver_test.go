package rpcserver_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
)

func mustLoad(t *testing.T, dir string, id mtls.Identity) *mtls.Config {
	t.Helper()
	p := pki.PathsFor(dir, id)
	cfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startServer(t *testing.T, cfg *mtls.Config) (*rpcserver.Server, context.CancelFunc, <-chan error) {
	t.Helper()
	srv, err := rpcserver.New(rpcserver.Config{Name: "test", Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", TLS: cfg.Server()})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle("/whoami", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := mtls.PeerIdentity(r.Context())
		fmt.Fprint(w, id.Kind+"/"+id.Name)
	}))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() { done <- srv.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	return srv, cancel, done
}

func get(t *testing.T, c *http.Client, url string) (int, string, error) {
	t.Helper()
	var lastErr error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := c.Get(url)
		if err != nil {
			lastErr = err
			if strings.Contains(err.Error(), "connection refused") {
				continue
			}
			return 0, "", err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b), nil
	}
	return 0, "", lastErr
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	svc, cli := mtls.Service("alert"), mtls.Service("cdc-ingest")
	if err := pki.Init(dir, []mtls.Identity{svc, cli}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := pki.Init(other, []mtls.Identity{cli}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	srv, _, _ := startServer(t, mustLoad(t, dir, svc))
	base := "https://" + srv.Addr().String()

	code, body, err := get(t, mustLoad(t, dir, cli).HTTPClient(), base+"/whoami")
	if err != nil || code != 200 || body != "service/cdc-ingest" {
		t.Fatalf("valid client: %d %q %v", code, body, err)
	}

	// No client certificate: refused during the handshake.
	srvCA := mustLoad(t, dir, svc).Client().RootCAs
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srvCA, MinVersion: tls.VersionTLS13}}}
	if _, _, err := get(t, noCert, base+"/whoami"); err == nil {
		t.Fatal("client without certificate was served")
	}

	// A certificate from another CA: refused too.
	foreign := mustLoad(t, other, cli).Client()
	foreign.RootCAs = srvCA
	if _, _, err := get(t, &http.Client{Transport: &http.Transport{TLSClientConfig: foreign}}, base+"/whoami"); err == nil {
		t.Fatal("client with a foreign certificate was served")
	}
}

func TestReadinessAndShutdown(t *testing.T) {
	dir := t.TempDir()
	id := mtls.Service("gateway")
	if err := pki.Init(dir, []mtls.Identity{id}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	srv, cancel, done := startServer(t, mustLoad(t, dir, id))
	var notReady = errors.New("redis unreachable at 127.0.0.1:1")
	failing := true
	srv.AddReadinessCheck("redis", func(context.Context) error {
		if failing {
			return notReady
		}
		return nil
	})
	admin := "http://" + srv.AdminAddr().String()
	code, body, err := get(t, http.DefaultClient, admin+"/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "redis: redis unreachable") {
		t.Fatalf("/readyz while failing: %d %q %v", code, body, err)
	}
	failing = false
	if code, _, err := get(t, http.DefaultClient, admin+"/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz when ready: %d %v", code, err)
	}
	if code, _, err := get(t, http.DefaultClient, admin+"/metrics"); err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	select {
	case <-srv.Stopping():
	default:
		t.Fatal("Stopping not closed after shutdown")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	id := mtls.Service("alert")
	if err := pki.Init(dir, []mtls.Identity{id}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(dir, id)
	for _, tc := range []struct {
		files mtls.Files
		want  string
	}{
		{mtls.Files{Key: p.Key, CA: p.CA}, "--tls-cert is required"},
		{mtls.Files{Cert: filepath.Join(dir, "nope.crt"), Key: p.Key, CA: p.CA}, "read --tls-cert"},
		{mtls.Files{Cert: p.Cert, Key: p.CA, CA: p.CA}, "load key pair"},
		{mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.Key}, "holds no PEM certificate"},
	} {
		if _, err := mtls.Load(tc.files); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%+v) = %v, want %q", tc.files, err, tc.want)
		}
	}
}
