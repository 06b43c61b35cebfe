package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/testenv"
)

func noEnv(string) string { return "" }

func certArgs(dir string, id mtls.Identity) []string {
	p := pki.PathsFor(dir, id)
	return []string{"--tls-cert=" + p.Cert, "--tls-key=" + p.Key, "--tls-ca=" + p.CA}
}

// nodeArgs is a single-node cluster w1 on free ports.
func nodeArgs(t *testing.T, dir string, id mtls.Identity) (args []string, admin string) {
	api, raftAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	admin = testenv.FreeAddr(t)
	args = append([]string{
		"--node-id=w1",
		"--data-dir=" + filepath.Join(t.TempDir(), "w1"),
		"--listen=" + api,
		"--admin-listen=" + admin,
		"--raft-listen=" + raftAddr,
		"--peer=w1=" + raftAddr + "," + api,
		"--bootstrap",
		"--log-level=warn",
	}, certArgs(dir, id)...)
	return args, admin
}

func TestRunBadConfig(t *testing.T) {
	dir := t.TempDir()
	if err := pki.Init(dir, []mtls.Identity{mtls.Witness("w1"), mtls.Service("gateway")}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	good, _ := nodeArgs(t, dir, mtls.Witness("w1"))
	wrongID, _ := nodeArgs(t, dir, mtls.Service("gateway"))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no flags", nil, "--node-id is required"},
		{"missing certificate", append(append([]string{}, good...), "--tls-cert=/nonexistent/w1.crt"), "read --tls-cert: open /nonexistent/w1.crt"},
		{"certificate of a service", wrongID, `--tls-cert ` + pki.PathsFor(dir, mtls.Service("gateway")).Cert + ` is issued to spiffe://witnz/service/gateway, but node "w1" needs a certificate for spiffe://witnz/witness/w1`},
		{"raft port taken", replaceFlag(good, "--raft-listen", busy.Addr().String(), "--raft-advertise", flagValue(good, "--raft-listen")), "listen on " + busy.Addr().String() + ": "},
		{"api port taken", replaceFlag(good, "--listen", busy.Addr().String(), "--api-advertise", flagValue(good, "--listen")), "(pick a free address with --listen)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(t.Context(), tt.args, noEnv, &stderr)
			if err == nil {
				t.Fatalf("run succeeded, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q\nwant one line containing %q", err, tt.want)
			}
		})
	}
}

// replaceFlag returns args with --name set to v and extra flags appended.
func replaceFlag(args []string, name, v string, extra ...string) []string {
	out := []string{}
	for _, a := range args {
		if !strings.HasPrefix(a, name+"=") {
			out = append(out, a)
		}
	}
	out = append(out, name+"="+v)
	for i := 0; i+1 < len(extra); i += 2 {
		out = append(out, extra[i]+"="+extra[i+1])
	}
	return out
}

func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func TestRunHelp(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, noEnv, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "usage: witness --node-id ID") {
		t.Fatalf("help output: %s", stderr.String())
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	if err := pki.Init(dir, []mtls.Identity{mtls.Witness("w1")}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	args, admin := nodeArgs(t, dir, mtls.Witness("w1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, noEnv, io.Discard) }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://%s/readyz", admin))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("single-node cluster not ready within 20s (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	// A second node on the same data directory is refused, not corrupted.
	api2, raft2 := testenv.FreeAddr(t), testenv.FreeAddr(t)
	second := replaceFlag(args, "--listen", api2, "--raft-listen", raft2)
	second = replaceFlag(second, "--peer", "w1="+raft2+","+api2, "--admin-listen", testenv.FreeAddr(t))
	err := run(t.Context(), second, noEnv, io.Discard)
	if want := "--data-dir " + flagValue(args, "--data-dir") + " is in use"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second node on the same --data-dir: %v, want %q", err, want)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30s of cancel")
	}
}
