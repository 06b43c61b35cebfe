package app_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// witnessBinary builds the witness command once per test run (without
// -race: the nodes run at production speed) or takes $WITNZ_BIN/witness.
func witnessBinary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("WITNZ_BIN"); d != "" {
		return filepath.Join(d, "witness")
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "witnz-anchor-test-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "witness")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/witnz/witnz/services/witness/cmd/witness")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build the witness binary: %v\n%s", err, strings.TrimSpace(string(out)))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// stack is the PKI, keys and policy shared by the witness clusters of a
// test and the anchor service.
type stack struct {
	pkiDir string
	// keys holds each node's cosigner key file; policy is the file naming
	// their verifier keys with a majority quorum.
	keys   map[string]string
	policy string
}

func newStack(t *testing.T, nodes int) *stack {
	t.Helper()
	s := &stack{pkiDir: t.TempDir(), keys: map[string]string{}}
	ids := []mtls.Identity{mtls.Service("anchor"), mtls.Service("cdc-ingest"), mtls.Service("gateway"), mtls.Service("verifier"), mtls.Service("alert"), operator}
	for i := range nodes {
		ids = append(ids, mtls.Witness(fmt.Sprintf("w%d", i+1)))
	}
	if err := pki.Init(s.pkiDir, ids, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	s.keys, s.policy = cosignerKeys(t, nodes)
	return s
}

// cosignerKeys writes a cosigner key per node and a policy naming them
// with a majority quorum.
func cosignerKeys(t *testing.T, nodes int) (map[string]string, string) {
	t.Helper()
	dir := t.TempDir()
	keys := map[string]string{}
	policy := "# anchor test cluster\n"
	for i := range nodes {
		id := fmt.Sprintf("w%d", i+1)
		skey, vkey, err := checkpoint.GenerateKey("anchortest-" + id)
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = filepath.Join(dir, id+".key")
		if err := os.WriteFile(keys[id], []byte(skey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		policy += fmt.Sprintf("witness %s %s\n", id, vkey)
	}
	policy += fmt.Sprintf("quorum %d\n", nodes/2+1)
	path := filepath.Join(dir, "policy")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	return keys, path
}

func (s *stack) tls(t *testing.T, id mtls.Identity) *mtls.Config {
	t.Helper()
	p := pki.PathsFor(s.pkiDir, id)
	c, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// node is one witness process.
type node struct {
	id, api, dataDir, logPath string
	args                      []string
	client                    witnessv1connect.WitnessServiceClient
	cmd                       *exec.Cmd
	done                      chan struct{}
}

// cluster is a set of witness processes.
type cluster struct {
	s      *stack
	bin    string
	nodes  []*node
	ingest witnessv1connect.WitnessServiceClient
	httpc  *http.Client
}

// newCluster starts n cosigning witness nodes (w1 bootstraps) with the
// stack's keys and policy, and kills them when the test ends.
func newCluster(t *testing.T, s *stack, n int) *cluster {
	t.Helper()
	c := &cluster{s: s, bin: witnessBinary(t)}
	c.httpc = s.tls(t, mtls.Service("cdc-ingest")).HTTPClient()
	var peers []string
	for i := range n {
		nd := &node{id: fmt.Sprintf("w%d", i+1)}
		apiListen, raftListen := testenv.FreeAddr(t), testenv.FreeAddr(t)
		nd.api = "https://" + apiListen
		dir := t.TempDir()
		nd.dataDir, nd.logPath = filepath.Join(dir, "data"), filepath.Join(dir, "witness.log")
		p := pki.PathsFor(s.pkiDir, mtls.Witness(nd.id))
		nd.args = []string{
			"--node-id=" + nd.id, "--data-dir=" + nd.dataDir, "--listen=" + apiListen, "--raft-listen=" + raftListen,
			"--tls-cert=" + p.Cert, "--tls-key=" + p.Key, "--tls-ca=" + p.CA, "--log-level=info", "--log-format=text",
			"--raft-heartbeat-timeout=1s", "--raft-election-timeout=1s", "--raft-leader-lease-timeout=500ms",
			"--cosign-key=" + s.keys[nd.id], "--policy=" + s.policy, "--checkpoint-interval=1s", "--cluster=anchortest",
		}
		if i == 0 {
			nd.args = append(nd.args, "--bootstrap")
		}
		nd.client = witnessv1connect.NewWitnessServiceClient(c.httpc, nd.api, rpcserver.ClientOptions()...)
		peers = append(peers, fmt.Sprintf("--peer=%s=%s,%s", nd.id, raftListen, nd.api))
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		nd.args = append(nd.args, peers...)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			nd.kill()
		}
		if t.Failed() {
			for _, nd := range c.nodes {
				b, _ := os.ReadFile(nd.logPath)
				lines := strings.Split(string(b), "\n")
				t.Logf("%s log (end):\n%s", nd.id, strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
		}
	})
	for _, nd := range c.nodes {
		c.start(t, nd)
	}
	c.waitLeader(t)
	return c
}

func (c *cluster) urls() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.api)
	}
	return out
}

func (c *cluster) start(t *testing.T, nd *node) {
	t.Helper()
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(c.bin, nd.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", nd.id, err)
	}
	nd.cmd, nd.done = cmd, make(chan struct{})
	done := nd.done
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
}

func (nd *node) kill() {
	if nd.cmd == nil {
		return
	}
	_ = nd.cmd.Process.Kill()
	<-nd.done
	nd.cmd = nil
}

// stop ends the node with SIGTERM and waits.
func (nd *node) stop(t *testing.T) {
	t.Helper()
	_ = nd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-nd.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not stop after SIGTERM", nd.id)
	}
	nd.cmd = nil
}

func (c *cluster) waitLeader(t *testing.T) {
	t.Helper()
	waitFor(t, "a witness leader", func() (bool, string) {
		for _, nd := range c.nodes {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			st, err := nd.client.GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
			cancel()
			if err == nil && st.Msg.GetState() == "Leader" {
				return true, ""
			}
		}
		return false, "no node is Leader"
	})
}

// leaderCall runs fn against each node until one succeeds (the leader).
func (c *cluster) leaderCall(t *testing.T, what string, fn func(witnessv1connect.WitnessServiceClient) error) {
	t.Helper()
	waitFor(t, what, func() (bool, string) {
		var last error
		for _, nd := range c.nodes {
			if last = fn(nd.client); last == nil {
				return true, ""
			}
		}
		return false, last.Error()
	})
}

// commit32 is a distinct 32-byte commitment for (kind, i, salt).
func commit32(kind string, i int, salt string) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	h := sha256.Sum256(append([]byte(kind+salt), b[:]...))
	return h[:]
}

// appendRows registers table (once) and appends n INSERT entries starting
// at lsn; salt makes the commitments differ between histories.
func (c *cluster) appendRows(t *testing.T, table string, lsn uint64, n int, salt string) {
	t.Helper()
	c.leaderCall(t, "RegisterTable "+table, func(cl witnessv1connect.WitnessServiceClient) error {
		_, err := cl.RegisterTable(t.Context(), connect.NewRequest(&witnessv1.RegisterTableRequest{Table: table, Mode: witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, Buckets: 16}))
		return err
	})
	var es []*witnessv1.Entry
	for i := range n {
		es = append(es, &witnessv1.Entry{
			CommitLsn: lsn, TxIndex: uint32(i), Op: witnessv1.Op_OP_INSERT,
			KeyCommit: commit32("key", int(lsn)*1000+i, salt), DataCommit: commit32("data", int(lsn)*1000+i, salt),
			CommitTimeMicros: 1_700_000_000_000_000 + int64(lsn), Xid: uint32(lsn),
		})
	}
	c.leaderCall(t, "Append to "+table, func(cl witnessv1connect.WitnessServiceClient) error {
		_, err := cl.Append(t.Context(), connect.NewRequest(&witnessv1.AppendRequest{Table: table, Entries: es}))
		return err
	})
}

// waitCheckpoint waits until every node serves a cosigned checkpoint of
// table at size.
func (c *cluster) waitCheckpoint(t *testing.T, table string, size uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a cosigned checkpoint of %s at size %d on every node", table, size), func() (bool, string) {
		for _, nd := range c.nodes {
			r, err := nd.client.GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: table}))
			if err != nil {
				return false, nd.id + ": " + err.Error()
			}
			if r.Msg.GetSize() != size {
				return false, fmt.Sprintf("%s: size %d", nd.id, r.Msg.GetSize())
			}
		}
		return true, ""
	})
}
