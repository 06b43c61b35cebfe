package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/testenv"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func tlsArgs(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	id := mtls.Service("anchor")
	if err := pki.Init(dir, []mtls.Identity{id}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(dir, id)
	return []string{"--tls-cert=" + p.Cert, "--tls-key=" + p.Key, "--tls-ca=" + p.CA}
}

// TestRunBadConfig checks that every start-up problem ends run with one
// line naming the fault and the fix.
func TestRunBadConfig(t *testing.T) {
	tls := tlsArgs(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	policy := writePolicy(t)
	bad := filepath.Join(t.TempDir(), "bad-policy")
	if err := os.WriteFile(bad, []byte("quorum 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := append([]string{"--listen=127.0.0.1:0", "--witness=https://127.0.0.1:7000", "--data-dir=" + t.TempDir(), "--policy=" + policy}, tls...)
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no flags", nil, "--tls-cert is required"},
		{"unknown flag", []string{"--bucket=b"}, "flag provided but not defined: -bucket"},
		{"no sink dir", base, "--sink-dir is required with --sink dir"},
		{"s3 sink without bucket", with("--sink=s3"), "--s3-bucket is required with --sink s3"},
		{"no policy", append(tls, "--witness=https://w:7000", "--sink-dir=/tmp", "--data-dir=/tmp"), "--policy is required"},
		{"missing policy", with("--sink-dir="+t.TempDir(), "--policy=/nonexistent/policy"), "--policy /nonexistent/policy cannot be read: no such file or directory"},
		{"bad policy", with("--sink-dir="+t.TempDir(), "--policy="+bad), "--policy " + bad + ": invalid policy"},
		{"data dir is a file", with("--sink-dir="+t.TempDir(), "--data-dir="+file), "--data-dir " + file + " cannot be created"},
		{"sink dir is a file", with("--sink-dir=" + filepath.Join(file, "anchors")), "--sink-dir " + filepath.Join(file, "anchors") + " cannot be created"},
		{"missing cert", []string{"--witness=https://w:7000", "--sink-dir=/tmp", "--data-dir=/tmp", "--policy=" + policy, "--tls-cert=/nonexistent/c.crt", "--tls-key=k", "--tls-ca=ca"}, "read --tls-cert: open /nonexistent/c.crt"},
		{"no witness", append(tls, "--sink-dir=/tmp"), "--witness is required"},
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

// writePolicy writes a checkpoint policy with one fresh witness key.
func writePolicy(t *testing.T) string {
	t.Helper()
	_, vkey, err := checkpoint.GenerateKey("w1")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(path, []byte("witness w1 "+vkey+"\nquorum 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunHelp(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, env(nil), &stderr); err != nil {
		t.Fatalf("run -h: %v", err)
	}
	for _, flag := range []string{"-witness", "-sink", "-sink-dir", "-listen", "-admin-listen", "-tls-ca", "-log-level", "-data-dir", "-policy", "-interval", "-alert", "-s3-bucket", "-s3-endpoint", "-s3-region", "-s3-path-style", "-s3-retain"} {
		if !strings.Contains(stderr.String(), flag) {
			t.Errorf("usage does not mention %s:\n%s", flag, stderr.String())
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

// TestRunServesUntilCancelled starts the whole binary's logic from the
// environment alone and stops it through its context.
func TestRunServesUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	id := mtls.Service("anchor")
	if err := pki.Init(dir, []mtls.Identity{id}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(dir, id)
	admin := testenv.FreeAddr(t)
	getenv := env(map[string]string{
		"WITNZ_LISTEN":       testenv.FreeAddr(t),
		"WITNZ_ADMIN_LISTEN": admin,
		"WITNZ_TLS_CERT":     p.Cert,
		"WITNZ_TLS_KEY":      p.Key,
		"WITNZ_TLS_CA":       p.CA,
		"WITNZ_WITNESS":      "https://" + testenv.FreeAddr(t),
		"WITNZ_SINK_DIR":     filepath.Join(t.TempDir(), "anchors"),
		"WITNZ_DATA_DIR":     t.TempDir(),
		"WITNZ_POLICY":       writePolicy(t),
	})
	ctx, cancel := context.WithCancel(t.Context())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, getenv, &logs) }()

	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz never answered 200; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
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
