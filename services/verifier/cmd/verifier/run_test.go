package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/testenv"
)

var testKey = hex.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func tlsArgs(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	id := mtls.Service("verifier")
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
	unreachable := testenv.FreeAddr(t)
	base := append([]string{"--listen=127.0.0.1:0", "--witness=https://127.0.0.1:7000"}, tls...)
	keyFile := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(keyFile, []byte("abcd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no flags", nil, nil, "--tls-cert is required"},
		{"unknown flag", []string{"--verbose"}, nil, "flag provided but not defined: -verbose"},
		{"no dsn", base, map[string]string{"WITNZ_COMMIT_KEY": testKey}, "--pg-dsn is required"},
		{"no witness", append(tls, "--pg-dsn=postgres://h:5432/db"), nil, "--witness is required"},
		{"missing key", append(base, "--pg-dsn=postgres://127.0.0.1:5432/db"), nil, "no commitment key: pass --key-file FILE or set WITNZ_COMMIT_KEY"},
		{"bad key env", append(base, "--pg-dsn=postgres://127.0.0.1:5432/db"), map[string]string{"WITNZ_COMMIT_KEY": "zz"}, "WITNZ_COMMIT_KEY: commitment key is neither"},
		{"short key file", append(base, "--pg-dsn=postgres://127.0.0.1:5432/db", "--key-file="+keyFile), nil, "--key-file " + keyFile + ": commitment key has 2 bytes, want 32"},
		{"missing key file", append(base, "--pg-dsn=postgres://127.0.0.1:5432/db", "--key-file=/nonexistent/k"), nil, "read --key-file: open /nonexistent/k"},
		{"missing cert", []string{"--pg-dsn=postgres://127.0.0.1:5432/db", "--witness=https://w:7000", "--tls-cert=/nonexistent/c.crt", "--tls-key=k", "--tls-ca=ca"}, map[string]string{"WITNZ_COMMIT_KEY": testKey}, "read --tls-cert: open /nonexistent/c.crt"},
		{"unreachable postgres", append(base, "--pg-dsn=postgres://verifier@"+unreachable+"/app"), map[string]string{"WITNZ_COMMIT_KEY": testKey}, "cannot reach PostgreSQL at " + unreachable + " (--pg-dsn)"},
		{"bad listen", append(tls, "--listen=127.0.0.1:99999", "--witness=https://w:7000"), nil, `--listen "127.0.0.1:99999" is not host:port`},
		{"bad schedule", append(base, "--pg-dsn=postgres://127.0.0.1:5432/db", "--verify=public.audit_log"), map[string]string{"WITNZ_COMMIT_KEY": testKey}, `--verify "public.audit_log": want SCHEMA.TABLE=INTERVAL`},
		{"missing policy", append(base, "--pg-dsn=postgres://127.0.0.1:5432/db", "--policy=/nonexistent/policy.txt"), map[string]string{"WITNZ_COMMIT_KEY": testKey}, "--policy /nonexistent/policy.txt"},
		{"malformed policy", append(base, "--pg-dsn=postgres://127.0.0.1:5432/db", "--policy="+keyFile), map[string]string{"WITNZ_COMMIT_KEY": testKey}, "--policy " + keyFile},
		{"http alert", append(base, "--pg-dsn=postgres://127.0.0.1:5432/db", "--alert=http://a:7020"), map[string]string{"WITNZ_COMMIT_KEY": testKey}, `--alert "http://a:7020"`},
		{"evidence dir is a file", append(base, "--pg-dsn=postgres://127.0.0.1:5432/db", "--evidence-dir="+keyFile), map[string]string{"WITNZ_COMMIT_KEY": testKey}, "--evidence-dir " + keyFile + " is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(t.Context(), tt.args, env(tt.env), &stderr)
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
	for _, flag := range []string{"-pg-dsn", "-witness", "-key-file", "-listen", "-admin-listen", "-tls-cert", "-log-format"} {
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

// TestRunServesUntilCancelled starts the whole binary's logic against a real
// PostgreSQL and stops it through its context.
func TestRunServesUntilCancelled(t *testing.T) {
	pg := testenv.PostgreSQL(t)
	admin := testenv.FreeAddr(t)
	args := append(tlsArgs(t), "--listen="+testenv.FreeAddr(t), "--admin-listen="+admin,
		"--pg-dsn="+pg.DSN("postgres"), "--witness=https://"+testenv.FreeAddr(t))
	ctx, cancel := context.WithCancel(t.Context())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, env(map[string]string{"WITNZ_COMMIT_KEY": testKey}), &logs) }()

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
