package stack_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/tools/witnz/internal/cli"
	"github.com/witnz/witnz/tools/witnz/internal/stack"
)

// TestLocalStack starts the whole local stack from the real service
// binaries and proves the foundation end to end: commitments reach every
// witness, tampering raises a live alert within 2 s, strangers are refused
// at the TLS handshake, crashed services come back, and stopping leaves no
// process behind.
func TestLocalStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, Redis and nine witnz processes; skipped with -short")
	}
	bin := serviceBinaries(t)
	dir := stackDir(t)
	out := &syncBuffer{}
	started := time.Now()
	st, err := stack.Start(t.Context(), stack.Config{Dir: dir, BinDir: bin, Out: out})
	if err != nil {
		t.Fatalf("start stack: %v\nsupervisor output:\n%s", err, out)
	}
	t.Cleanup(func() {
		st.Stop()
		if t.Failed() {
			t.Logf("supervisor output:\n%s", out)
		}
	})
	t.Logf("stack up in %s", time.Since(started).Round(time.Millisecond))
	info := st.Info()
	stackFile := filepath.Join(dir, stack.InfoFile)
	if onDisk, err := stack.ReadInfo(stackFile); err != nil || onDisk.Gateway != info.Gateway || onDisk.PID != os.Getpid() {
		t.Fatalf("stack file %s = %+v, %v; want the running stack", stackFile, onDisk, err)
	}
	operator, err := mtls.Load(mtls.Files{Cert: info.TLS.Cert, Key: info.TLS.Key, CA: info.TLS.CA})
	if err != nil {
		t.Fatal(err)
	}
	httpClient := operator.HTTPClient()

	t.Run("second up refuses", func(t *testing.T) {
		err := cli.Run(t.Context(), []string{"up", "--dir", dir, "--bin", bin}, noEnv, &bytes.Buffer{}, &bytes.Buffer{})
		if !errors.Is(err, stack.ErrRunning) {
			t.Errorf("second witnz up: %v, want ErrRunning", err)
		}
	})

	t.Run("witnesses agree on 1000 rows", func(t *testing.T) {
		mustExec(t, info.Postgres.DSN, `INSERT INTO audit_log (actor, action, detail)
			SELECT 'user' || g, 'login', jsonb_build_object('n', g) FROM generate_series(1, 1000) g`)

		// The log opens with the empty table's PROTECT and SCHEMA entries.
		const size = 1000 + 2
		var views map[string]*witnessv1.TableInfo
		waitFor(t, 60*time.Second, "all witnesses at size 1002 with one root", func() (bool, string) {
			views = map[string]*witnessv1.TableInfo{}
			for _, w := range info.Witnesses {
				c := witnessv1connect.NewWitnessServiceClient(httpClient, w.URL, rpcserver.ClientOptions()...)
				resp, err := c.GetStatus(t.Context(), connect.NewRequest(&witnessv1.GetStatusRequest{}))
				if err != nil {
					return false, fmt.Sprintf("%s: %v", w.ID, err)
				}
				for _, tb := range resp.Msg.GetTables() {
					if tb.GetName() == stack.DemoTable {
						views[w.ID] = tb
					}
				}
			}
			return agree(views, size)
		})

		var stdout bytes.Buffer
		if err := cli.Run(t.Context(), []string{"status", "--json", "--stack", stackFile}, noEnv, &stdout, &bytes.Buffer{}); err != nil {
			t.Fatalf("witnz status --json: %v", err)
		}
		var got cli.Status
		if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
			t.Fatalf("witnz status --json is not JSON: %v\n%s", err, stdout.String())
		}
		if len(got.Witnesses) != 3 {
			t.Errorf("status lists %d witnesses, want 3:\n%s", len(got.Witnesses), stdout.String())
		}
		for _, w := range got.Witnesses {
			if !w.Reachable {
				t.Errorf("witness %s unreachable: %s", w.ID, w.Error)
			}
		}
		i := slices.IndexFunc(got.Tables, func(tb cli.TableStatus) bool { return tb.Name == stack.DemoTable })
		if i < 0 {
			t.Fatalf("status has no table %s:\n%s", stack.DemoTable, stdout.String())
		}
		tb := got.Tables[i]
		if !tb.Agree || tb.Size != size || tb.Mode != "append-only" || len(tb.Nodes) != 3 {
			t.Errorf("table status = %+v, want agree, size %d, append-only, 3 nodes", tb, size)
		}
		if tb.Root != fmt.Sprintf("%x", views["w1"].GetRoot()) {
			t.Errorf("status root %s, witness w1 root %x", tb.Root, views["w1"].GetRoot())
		}
		if !got.Ingest.Reachable || got.Ingest.Slot != "witnz" || got.Ingest.Publication != "witnz" || !got.Ingest.Streaming {
			t.Errorf("ingest status = %+v, want reachable, streaming slot and publication witnz", got.Ingest)
		}
	})

	t.Run("tampering alerts live within 2s", func(t *testing.T) {
		gw := gatewayv1connect.NewGatewayServiceClient(httpClient, info.Gateway, rpcserver.ClientOptions()...)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		stream, err := gw.SubscribeAlerts(ctx, connect.NewRequest(&gatewayv1.SubscribeAlertsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		alerts := make(chan *alertv1.Alert, 64)
		go func() {
			defer close(alerts)
			for stream.Receive() {
				alerts <- stream.Msg().GetAlert()
			}
		}()
		// A unary call on the same connection after the stream's request
		// makes it very likely the subscription is in place before the
		// tampering below.
		if _, err := gw.GetStatus(ctx, connect.NewRequest(&gatewayv1.GetStatusRequest{})); err != nil {
			t.Fatal(err)
		}

		for _, tc := range []struct{ sql, typ string }{
			{"UPDATE audit_log SET action = 'tampered' WHERE id = 42", "cdc.update_on_append_only"},
			{"DELETE FROM audit_log WHERE id = 43", "cdc.delete_on_append_only"},
		} {
			start := time.Now()
			mustExec(t, info.Postgres.DSN, tc.sql)
			a := awaitAlert(t, alerts, tc.typ, 15*time.Second)
			elapsed := time.Since(start)
			t.Logf("%s arrived on the gateway stream %s after the statement", tc.typ, elapsed.Round(time.Millisecond))
			if elapsed > 2*time.Second {
				t.Errorf("%s took %s to arrive, want ≤ 2s", tc.typ, elapsed)
			}
			if a.GetSeverity() != alertv1.Severity_SEVERITY_CRITICAL || a.GetTable() != stack.DemoTable || a.GetSource() != "cdc-ingest" {
				t.Errorf("alert = %v, want CRITICAL from cdc-ingest on %s", a, stack.DemoTable)
			}
		}

		var stdout bytes.Buffer
		if err := cli.Run(t.Context(), []string{"alerts", "--json", "--since", "1h", "--stack", stackFile}, noEnv, &stdout, &bytes.Buffer{}); err != nil {
			t.Fatalf("witnz alerts --json: %v", err)
		}
		var listed []cli.Alert
		if err := json.Unmarshal(stdout.Bytes(), &listed); err != nil {
			t.Fatalf("witnz alerts --json is not a JSON array: %v\n%s", err, stdout.String())
		}
		for _, typ := range []string{"cdc.update_on_append_only", "cdc.delete_on_append_only"} {
			i := slices.IndexFunc(listed, func(a cli.Alert) bool { return a.Type == typ })
			if i < 0 {
				t.Errorf("witnz alerts --json lacks %s:\n%s", typ, stdout.String())
				continue
			}
			if a := listed[i]; a.Severity != "critical" || a.Table != stack.DemoTable || a.OccurredAt == "" || a.Detail["op"] == nil {
				t.Errorf("listed alert = %+v, want critical on %s with a time and detail.op", a, stack.DemoTable)
			}
		}
	})

	t.Run("strangers are refused at the handshake", func(t *testing.T) {
		caPEM, err := os.ReadFile(info.TLS.CA)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(caPEM)
		otherDir := t.TempDir()
		if err := pki.Init(otherDir, []mtls.Identity{stack.Operator}, pki.Options{}); err != nil {
			t.Fatal(err)
		}
		op := pki.PathsFor(otherDir, stack.Operator)
		otherCert, err := tls.LoadX509KeyPair(op.Cert, op.Key)
		if err != nil {
			t.Fatal(err)
		}
		strangers := []struct {
			name string
			cfg  *tls.Config
			want string // the server's TLS alert
		}{
			{"no certificate", &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}, "tls: certificate required"},
			{"another CA's certificate", &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{otherCert}}, "tls: unknown certificate authority"},
		}
		for target, url := range map[string]string{"witness w1": info.Witnesses[0].URL, "alert": info.Services["alert"].URL} {
			// The operator's certificate is let in: the refusals below are
			// about the client certificate, not the server.
			resp, err := httpClient.Get(url + "/healthz")
			if err != nil {
				t.Errorf("%s with the operator certificate: %v, want an answer", target, err)
			} else {
				resp.Body.Close()
			}
			for _, c := range strangers {
				if err := handshake(strings.TrimPrefix(url, "https://"), c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("%s with %s: %v, want the handshake refused with %q", target, c.name, err, c.want)
				}
			}
		}
	})

	t.Run("a killed gateway is restarted", func(t *testing.T) {
		old := st.PID("gateway")
		if old == 0 {
			t.Fatal("gateway is not running")
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		readyz := info.Services["gateway"].Admin + "/readyz"
		waitFor(t, 30*time.Second, "a new gateway process to be ready", func() (bool, string) {
			pid := st.PID("gateway")
			if pid == 0 || pid == old {
				return false, fmt.Sprintf("gateway pid %d", pid)
			}
			resp, err := http.Get(readyz)
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, resp.Status
		})
		if !strings.Contains(out.String(), "gateway exited (killed by signal killed)") {
			t.Errorf("supervisor did not log the gateway's exit status:\n%s", out)
		}
	})

	t.Run("stop leaves no process", func(t *testing.T) {
		pids := map[string]int{}
		for _, name := range st.Processes() {
			pids[name] = st.PID(name)
		}
		for i, pid := range childPIDs(pids["postgres"]) {
			pids["postgres backend "+strconv.Itoa(i)] = pid
		}
		stopped := time.Now()
		st.Stop()
		t.Logf("stack stopped in %s", time.Since(stopped).Round(time.Millisecond))
		for name, pid := range pids {
			if pid == 0 {
				t.Errorf("%s was not running before the stop", name)
			} else if alive(pid) {
				t.Errorf("%s (pid %d) still running after Stop", name, pid)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, stack.PIDFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pid file left after Stop: %v", err)
		}
	})
}

func noEnv(string) string { return "" }

// handshake completes a TLS handshake with addr and reads once. In TLS 1.3
// the server judges the client certificate after the client has finished
// its side, so a refusal arrives as an alert on the first read.
func handshake(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}

// serviceBinaries builds every service binary once, or uses WITNZ_BIN.
func serviceBinaries(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("WITNZ_BIN"); d != "" {
		return d
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(root, "go.work")); err == nil {
			break
		}
		if root == filepath.Dir(root) {
			t.Fatal("no go.work above the test directory: set WITNZ_BIN to a directory of built service binaries (make build)")
		}
		root = filepath.Dir(root)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, b := range stack.Binaries {
		args = append(args, "github.com/witnz/witnz/services/"+b+"/cmd/"+b)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"))
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the service binaries (go %s): %v\n%s", strings.Join(args, " "), err, b)
	}
	t.Logf("built %d service binaries in %s", len(stack.Binaries), time.Since(start).Round(time.Millisecond))
	return dir
}

// stackDir is a fresh directory PostgreSQL (user postgres when we are root)
// can reach: t.TempDir's parents are private to the test's user.
func stackDir(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	for d := tmp; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(tmp, "stack")
}

func mustExec(t *testing.T, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// agree reports whether every witness has the table at size with one root.
func agree(views map[string]*witnessv1.TableInfo, size uint64) (bool, string) {
	var roots []string
	ok := len(views) == 3
	for id, v := range views {
		roots = append(roots, fmt.Sprintf("%s: size %d root %x", id, v.GetSize(), v.GetRoot()))
		ok = ok && v.GetSize() == size && bytes.Equal(v.GetRoot(), views["w1"].GetRoot())
	}
	slices.Sort(roots)
	return ok, strings.Join(roots, "; ")
}

func awaitAlert(t *testing.T, alerts <-chan *alertv1.Alert, typ string, timeout time.Duration) *alertv1.Alert {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case a, ok := <-alerts:
			if !ok {
				t.Fatalf("alert stream ended before %s arrived", typ)
			}
			if a.GetType() == typ {
				return a
			}
		case <-deadline:
			t.Fatalf("no %s alert on the gateway stream within %s", typ, timeout)
		}
	}
}

// waitFor polls cond until it holds; on timeout the test fails with the
// last state cond described.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// childPIDs lists the live processes whose parent is ppid.
func childPIDs(ppid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
