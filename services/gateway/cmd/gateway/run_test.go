package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/testenv"
)

// TestRunFailsWithOneClearLine checks what an operator sees when the
// configuration is wrong or Redis is missing: one line naming the problem
// and the fix.
func TestRunFailsWithOneClearLine(t *testing.T) {
	dir := t.TempDir()
	id := mtls.Service("gateway")
	if err := pki.Init(dir, []mtls.Identity{id}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(dir, id)
	closedRedis := testenv.FreeAddr(t)
	base := []string{"--listen", "127.0.0.1:0", "--tls-cert", p.Cert, "--tls-key", p.Key, "--tls-ca", p.CA, "--alert", "https://127.0.0.1:7040"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"missing flag", []string{"--tls-cert", p.Cert}, []string{"--tls-key is required"}},
		{"bad witness", append(base, "--redis-addr", closedRedis, "--witness", "w1:7011"), []string{"--witness", "https://host:port"}},
		{"wrong key", []string{"--listen", "127.0.0.1:0", "--tls-cert", p.Cert, "--tls-key", p.CA, "--tls-ca", p.CA,
			"--alert", "https://127.0.0.1:7040", "--redis-addr", closedRedis}, []string{"key"}},
		{"redis unreachable", append(base, "--redis-addr", closedRedis),
			[]string{"redis at " + closedRedis + " unreachable", "is redis-server running? check --redis-addr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), tc.args, func(string) string { return "" }, &stderr)
			if err == nil {
				t.Fatal("run succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q; want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
}
