// Package testcluster runs, for the verifier's tests, what the verifier
// checks against: a real PostgreSQL (libs/testenv), a real witness cluster
// of 1 or 3 nodes with cosigning keys and a checkpoint policy, and a real
// cdc-ingest protecting the test's tables — the witness and cdc-ingest
// binaries built from this repository. Alerts from cdc-ingest go to a small
// in-process sink that records them.
package testcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
)

// Database is the protected database's name.
const Database = "app"

// Operator is the identity tests call the APIs with.
var Operator = mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}

// Options shape a cluster.
type Options struct {
	// Witnesses is the number of witness nodes (default 1).
	Witnesses int
	// Setup runs in the database before cdc-ingest starts (CREATE TABLE...).
	Setup string
	// Protect lists "schema.table:mode" protected from cdc-ingest's start.
	Protect []string
	// CheckpointInterval of the witnesses (default 1 s).
	CheckpointInterval time.Duration
}

// Cluster is a running deployment.
type Cluster struct {
	PG  *testenv.PG
	DSN string
	// KeyHex is the commitment key, 64 hex characters, and KeyFile holds it.
	KeyHex  string
	Key     commitment.Key
	KeyFile string
	PKI     string
	// WitnessIDs and WitnessURLs name the nodes, in the same order.
	WitnessIDs  []string
	WitnessURLs []string
	// PolicyFile is the checkpoint policy every node uses (what `witnz
	// proof verify --policy` needs).
	PolicyFile string
	IngestURL  string
	Alerts     *AlertSink

	dir   string
	procs map[string]*proc
}

// Start brings a cluster up and stops it when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Witnesses == 0 {
		opts.Witnesses = 1
	}
	if opts.CheckpointInterval == 0 {
		opts.CheckpointInterval = time.Second
	}
	bin := binaries(t)
	c := &Cluster{dir: t.TempDir(), procs: map[string]*proc{}}
	c.PG = testenv.PostgreSQL(t)
	c.PG.CreateDatabase(t, Database)
	c.DSN = c.PG.DSN(Database)
	if opts.Setup != "" {
		c.PG.Exec(t, Database, opts.Setup)
	}

	var key commitment.Key
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	c.Key, c.KeyHex = key, hex.EncodeToString(key[:])
	c.KeyFile = filepath.Join(c.dir, "commit.key")
	mustWrite(t, c.KeyFile, c.KeyHex+"\n", 0o600)

	ids := []mtls.Identity{mtls.Service("verifier"), mtls.Service("cdc-ingest"), mtls.Service("alert"), mtls.Service("gateway"), mtls.Service("anchor"), Operator, {Kind: mtls.KindAgent, Name: "host1"}}
	for i := range opts.Witnesses {
		c.WitnessIDs = append(c.WitnessIDs, fmt.Sprintf("w%d", i+1))
		ids = append(ids, mtls.Witness(c.WitnessIDs[i]))
	}
	c.PKI = filepath.Join(c.dir, "pki")
	if err := pki.Init(c.PKI, ids, pki.Options{}); err != nil {
		t.Fatal(err)
	}

	// Cosigning keys and a policy that needs a majority of the nodes.
	var policy strings.Builder
	keys := map[string]string{}
	for _, id := range c.WitnessIDs {
		skey, vkey, err := checkpoint.GenerateKey("witnz.test/" + id)
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = filepath.Join(c.dir, id+".key")
		mustWrite(t, keys[id], skey+"\n", 0o600)
		fmt.Fprintf(&policy, "witness %s %s\n", id, vkey)
	}
	fmt.Fprintf(&policy, "quorum %d\n", opts.Witnesses/2+1)
	c.PolicyFile = filepath.Join(c.dir, "policy.txt")
	mustWrite(t, c.PolicyFile, policy.String(), 0o644)

	c.Alerts = startAlertSink(t, c.tls(t, mtls.Service("alert")))

	type ports struct{ api, raft, admin string }
	wp := map[string]ports{}
	var peers []string
	for _, id := range c.WitnessIDs {
		p := ports{testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)}
		wp[id] = p
		c.WitnessURLs = append(c.WitnessURLs, "https://"+p.api)
		peers = append(peers, "--peer", fmt.Sprintf("%s=%s,https://%s", id, p.raft, p.api))
	}
	for i, id := range c.WitnessIDs {
		p := wp[id]
		args := append(c.tlsArgs(mtls.Witness(id), p.api, p.admin),
			"--node-id", id, "--data-dir", filepath.Join(c.dir, id), "--raft-listen", p.raft,
			"--cosign-key", keys[id], "--policy", c.PolicyFile, "--checkpoint-interval", opts.CheckpointInterval.String(),
			"--raft-heartbeat-timeout", "500ms", "--raft-election-timeout", "500ms", "--raft-leader-lease-timeout", "250ms")
		args = append(args, peers...)
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		c.procs[id] = c.newProc(t, id, filepath.Join(bin, "witness"), args, p.admin)
	}
	for _, id := range c.WitnessIDs {
		c.procs[id].start(t)
	}
	for _, id := range c.WitnessIDs {
		c.procs[id].waitReady(t)
	}

	ingestAPI, ingestAdmin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	c.IngestURL = "https://" + ingestAPI
	args := append(c.tlsArgs(mtls.Service("cdc-ingest"), ingestAPI, ingestAdmin),
		"--pg-dsn", c.DSN, "--key-file", c.KeyFile, "--alert", c.Alerts.URL,
		"--heartbeat-interval", "1s", "--check-interval", "1s")
	for _, u := range c.WitnessURLs {
		args = append(args, "--witness", u)
	}
	for _, p := range opts.Protect {
		args = append(args, "--protect", p)
	}
	c.procs["cdc-ingest"] = c.newProc(t, "cdc-ingest", filepath.Join(bin, "cdc-ingest"), args, ingestAdmin)
	c.StartIngest(t)
	return c
}

// TLS returns the client configuration of an identity of the cluster's PKI.
func (c *Cluster) TLS(t testing.TB, id mtls.Identity) *mtls.Config { return c.tls(t, id) }

func (c *Cluster) tls(t testing.TB, id mtls.Identity) *mtls.Config {
	t.Helper()
	cfg, err := mtls.Load(c.Files(id))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Files are the certificate files of an identity.
func (c *Cluster) Files(id mtls.Identity) mtls.Files {
	p := pki.PathsFor(c.PKI, id)
	return mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA}
}

func (c *Cluster) tlsArgs(id mtls.Identity, api, admin string) []string {
	f := c.Files(id)
	return []string{"--listen", api, "--admin-listen", admin, "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA, "--log-format", "text"}
}

// Exec runs SQL in the protected database as the superuser.
func (c *Cluster) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %s: %v", sql, err)
	}
}

// Protect protects a table through cdc-ingest's API.
func (c *Cluster) Protect(t testing.TB, table string, mode witnessv1.TableMode) *ingestv1.ProtectResponse {
	t.Helper()
	cl := ingestv1connect.NewIngestServiceClient(c.tls(t, Operator).HTTPClient(), c.IngestURL, rpcserver.ClientOptions()...)
	resp, err := cl.Protect(t.Context(), connect.NewRequest(&ingestv1.ProtectRequest{Table: table, Mode: mode}))
	if err != nil {
		t.Fatalf("protect %s: %v", table, err)
	}
	return resp.Msg
}

// Witness returns a client of witness node i.
func (c *Cluster) Witness(t testing.TB, i int) witnessv1connect.WitnessServiceClient {
	return witnessv1connect.NewWitnessServiceClient(c.tls(t, Operator).HTTPClient(), c.WitnessURLs[i], rpcserver.ClientOptions()...)
}

// TableInfo is a table's info on witness node i (nil if absent).
func (c *Cluster) TableInfo(t testing.TB, i int, table string) *witnessv1.TableInfo {
	t.Helper()
	resp, err := c.Witness(t, i).GetStatus(t.Context(), connect.NewRequest(&witnessv1.GetStatusRequest{}))
	if err != nil {
		return nil
	}
	for _, tb := range resp.Msg.GetTables() {
		if tb.GetName() == table {
			return tb
		}
	}
	return nil
}

// WitnessDataDir is node id's --data-dir (its raft.db holds the whole
// state within a test's time).
func (c *Cluster) WitnessDataDir(id string) string { return filepath.Join(c.dir, id) }

// StopWitness stops node id; StartWitness starts it again.
func (c *Cluster) StopWitness(t testing.TB, id string) { c.procs[id].stop(t) }

// StartWitness starts node id again (it does not wait for a leader).
func (c *Cluster) StartWitness(t testing.TB, id string) { c.procs[id].start(t) }

// StopIngest stops cdc-ingest.
func (c *Cluster) StopIngest(t testing.TB) { c.procs["cdc-ingest"].stop(t) }

// StartIngest starts cdc-ingest and waits until it is ready.
func (c *Cluster) StartIngest(t testing.TB) {
	t.Helper()
	p := c.procs["cdc-ingest"]
	p.start(t)
	p.waitReady(t)
}

// LogTail returns the end of a process's log ("w1", "cdc-ingest").
func (c *Cluster) LogTail(name string) string {
	b, _ := os.ReadFile(c.procs[name].logPath)
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

func mustWrite(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// proc is a child process of the cluster.
type proc struct {
	name, path, logPath, admin string
	args                       []string
	mu                         sync.Mutex
	cmd                        *exec.Cmd
	done                       chan struct{}
}

func (c *Cluster) newProc(t testing.TB, name, path string, args []string, admin string) *proc {
	p := &proc{name: name, path: path, args: args, admin: admin, logPath: filepath.Join(c.dir, name+".log")}
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", name, c.LogTail(name))
		}
	})
	return p
}

func (p *proc) start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		t.Fatalf("%s is already running", p.name)
	}
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = childEnv()
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
}

// stop sends SIGTERM, then SIGKILL after 15 s, and waits.
func (p *proc) stop(t testing.TB) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

var readyClient = &http.Client{Timeout: 2 * time.Second}

func (p *proc) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	last := ""
	for {
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		select {
		case <-done:
			t.Fatalf("%s exited while starting; log:\n%s", p.name, tail(p.logPath))
		default:
		}
		resp, err := readyClient.Get("http://" + p.admin + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 90s (%s); log:\n%s", p.name, last, tail(p.logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 6<<10 {
		b = b[len(b)-6<<10:]
	}
	return string(b)
}

// childEnv drops WITNZ_* variables so the flags are the whole
// configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WITNZ_") {
			env = append(env, kv)
		}
	}
	return env
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds the witness and cdc-ingest binaries once per test
// process (WITNZ_BIN names a directory of prebuilt ones instead).
func binaries(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("WITNZ_BIN"); d != "" {
		return d
	}
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
		if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
			buildErr = fmt.Errorf("no go.work at %s: set WITNZ_BIN to a directory holding the witness and cdc-ingest binaries (make build)", root)
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "witnz-verifier-test-bin-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", buildDir+string(filepath.Separator),
			"github.com/witnz/witnz/services/witness/cmd/witness", "github.com/witnz/witnz/services/cdc-ingest/cmd/cdc-ingest")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"))
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build witness and cdc-ingest: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// Cleanup removes the binaries built for the test process; call it from
// TestMain after m.Run.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// AlertSink is an alert service that only records what it receives.
type AlertSink struct {
	URL string
	mu  sync.Mutex
	all []*alertv1.Alert
	alertv1connect.UnimplementedAlertServiceHandler
}

func startAlertSink(t testing.TB, tlsCfg *mtls.Config) *AlertSink {
	t.Helper()
	addr := testenv.FreeAddr(t)
	s := &AlertSink{URL: "https://" + addr}
	srv, err := rpcserver.New(rpcserver.Config{Name: "alert", Addr: addr, TLS: tlsCfg.Server(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	path, h := alertv1connect.NewAlertServiceHandler(s, srv.HandlerOptions()...)
	srv.Handle(path, h, alertv1connect.AlertServiceName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("alert sink: %v", err)
		}
	})
	return s
}

// IngestAlerts records the alerts.
func (s *AlertSink) IngestAlerts(_ context.Context, req *connect.Request[alertv1.IngestAlertsRequest]) (*connect.Response[alertv1.IngestAlertsResponse], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, req.Msg.GetAlerts()...)
	return connect.NewResponse(&alertv1.IngestAlertsResponse{Stored: uint32(len(req.Msg.GetAlerts()))}), nil
}

// Types lists the types of the alerts received so far.
func (s *AlertSink) Types() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, a := range s.all {
		out = append(out, a.GetType())
	}
	return out
}

// Alerts returns the alerts received so far.
func (s *AlertSink) Alerts() []*alertv1.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.all)
}
