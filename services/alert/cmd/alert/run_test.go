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

// TestRunFailsWithOneClearLine checks what an operator sees when a
// dependency is missing: one line naming the problem and the fix.
func TestRunFailsWithOneClearLine(t *testing.T) {
	dir := t.TempDir()
	id := mtls.Service("alert")
	if err := pki.Init(dir, []mtls.Identity{id}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(dir, id)
	pg := testenv.PostgreSQL(t)
	pg.CreateDatabase(t, "alert")
	rs := testenv.Redis(t)
	closedPG := testenv.FreeAddr(t)
	closedRedis := testenv.FreeAddr(t)

	tlsArgs := []string{"--listen", "127.0.0.1:0", "--tls-cert", p.Cert, "--tls-key", p.Key, "--tls-ca", p.CA}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"missing flag", []string{"--tls-cert", p.Cert}, []string{"--tls-key is required"}},
		{"unreadable certificate", []string{"--tls-cert", dir + "/nope.crt", "--tls-key", p.Key, "--tls-ca", p.CA,
			"--pg-dsn", pg.DSN("alert"), "--redis-addr", rs.Addr()}, []string{"--tls-cert", "nope.crt"}},
		{"postgresql unreachable", append(tlsArgs, "--pg-dsn", "postgres://postgres@"+closedPG+"/alert?connect_timeout=2", "--redis-addr", rs.Addr()),
			[]string{"postgresql at " + closedPG + " unreachable", "--pg-dsn"}},
		{"redis unreachable", append(tlsArgs, "--pg-dsn", pg.DSN("alert"), "--redis-addr", closedRedis),
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
