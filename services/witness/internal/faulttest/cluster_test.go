package faulttest

import (
	"bytes"
	"context"
	"fmt"
	"net"
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

// ingestService is the identity allowed to append (the witness default).
const ingestService = "cdc-ingest"

// timing is the Raft timing a cluster runs with, passed as flags.
type timing struct {
	heartbeat, election, lease time.Duration
}

// fast keeps elections short on loopback: a quarter of the production
// defaults (2s/2s/1s), still well above what a loaded 2-core machine needs.
var fast = timing{heartbeat: time.Second, election: time.Second, lease: 500 * time.Millisecond}

// failoverBound is how long a leader's death may stop appends: a follower
// notices after a randomized [HT, 2·HT), a candidate may need a second
// randomized [ET, 2·ET) round after a split vote, plus a second for the
// client to find the new leader on a loaded machine.
func (tm timing) failoverBound() time.Duration {
	return 2*tm.heartbeat + 2*tm.election + time.Second
}

func (tm timing) flags() []string {
	return []string{
		"--raft-heartbeat-timeout=" + tm.heartbeat.String(),
		"--raft-election-timeout=" + tm.election.String(),
		"--raft-leader-lease-timeout=" + tm.lease.String(),
	}
}

// clusterSpec describes a cluster to start. The zero value of every hook
// means loopback addresses on free ports in the test's own namespace.
type clusterSpec struct {
	size   int
	timing timing
	// net runs every node in its own network namespace; nil: loopback.
	net *topology
	// raftAdvertise returns the Raft address node i is reached on, given
	// the one it listens on (a delaying proxy in front of it, say).
	raftAdvertise func(i int, listen string) string
	// cosign gives every node a cosigner key, a policy requiring a
	// majority of them, and a one-second checkpoint interval.
	cosign bool
}

// node is one witness process (or its absence between a kill and a restart).
type node struct {
	id      string
	index   int
	ns      string // network namespace, "" for the test's own
	api     string // https://host:port
	raft    string // advertised Raft address
	dataDir string
	logPath string
	args    []string
	client  witnessv1connect.WitnessServiceClient

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	starts  int
}

// cluster is a set of witness processes sharing one PKI.
type cluster struct {
	bin    string
	pkiDir string
	nodes  []*node
	httpc  *http.Client
	spec   clusterSpec
}

// newCluster starts spec.size witness processes (w1 bootstraps), waits for
// a leader and kills every process when the test ends.
func newCluster(t *testing.T, spec clusterSpec) *cluster {
	t.Helper()
	c := &cluster{bin: witnessBinary(t), pkiDir: t.TempDir(), spec: spec}
	ids := []mtls.Identity{mtls.Service(ingestService)}
	for i := range spec.size {
		ids = append(ids, mtls.Witness(fmt.Sprintf("w%d", i+1)))
	}
	var opts pki.Options
	if spec.net != nil {
		opts.Hosts = spec.net.ips[:spec.size]
	}
	if err := pki.Init(c.pkiDir, ids, opts); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(c.pkiDir, mtls.Service(ingestService))
	tlsCfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	c.httpc = tlsCfg.HTTPClient()
	tr := c.httpc.Transport.(*http.Transport)
	// A dead or partitioned peer's connection is dropped within seconds
	// instead of holding every later request.
	tr.HTTP2 = &http.HTTP2Config{SendPingTimeout: time.Second, PingTimeout: time.Second}
	if spec.net != nil {
		tr.DialContext = spec.net.dialContext
	}

	var peers []string
	for i := range spec.size {
		n := &node{id: fmt.Sprintf("w%d", i+1), index: i}
		var apiListen, raftListen string
		if spec.net != nil {
			n.ns = spec.net.nodeNS[i]
			apiListen = net.JoinHostPort(spec.net.ips[i], "7010")
			raftListen = net.JoinHostPort(spec.net.ips[i], "7011")
		} else {
			apiListen, raftListen = testenv.FreeAddr(t), testenv.FreeAddr(t)
		}
		n.api = "https://" + apiListen
		n.raft = raftListen
		if spec.raftAdvertise != nil {
			n.raft = spec.raftAdvertise(i, raftListen)
		}
		dir := t.TempDir()
		n.dataDir, n.logPath = filepath.Join(dir, "data"), filepath.Join(dir, "witness.log")
		paths := pki.PathsFor(c.pkiDir, mtls.Witness(n.id))
		n.args = append([]string{
			"--node-id=" + n.id,
			"--data-dir=" + n.dataDir,
			"--listen=" + apiListen,
			"--raft-listen=" + raftListen,
			"--raft-advertise=" + n.raft,
			"--tls-cert=" + paths.Cert, "--tls-key=" + paths.Key, "--tls-ca=" + paths.CA,
			"--log-level=info", "--log-format=text",
		}, spec.timing.flags()...)
		if i == 0 {
			n.args = append(n.args, "--bootstrap")
		}
		n.client = witnessv1connect.NewWitnessServiceClient(c.httpc, n.api, rpcserver.ClientOptions()...)
		peers = append(peers, fmt.Sprintf("--peer=%s=%s,%s", n.id, n.raft, n.api))
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.args = append(n.args, peers...)
	}
	if spec.cosign {
		c.configureCosigning(t)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.kill()
		}
		tr.CloseIdleConnections()
		if t.Failed() {
			for _, n := range c.nodes {
				t.Logf("%s log (end):\n%s", n.id, fileTail(n.logPath, 25))
			}
		}
	})
	for _, n := range c.nodes {
		c.start(t, n)
	}
	c.leader(t, c.nodes...)
	return c
}

// configureCosigning writes a cosigner key per node and a policy naming
// them all with a majority quorum, and passes them to every node.
func (c *cluster) configureCosigning(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	policy := "# fault test cluster\n"
	for _, n := range c.nodes {
		skey, vkey, err := checkpoint.GenerateKey("faulttest-" + n.id)
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(dir, n.id+".key")
		if err := os.WriteFile(keyFile, []byte(skey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		n.args = append(n.args, "--cosign-key="+keyFile)
		policy += fmt.Sprintf("witness %s %s\n", n.id, vkey)
	}
	policy += fmt.Sprintf("quorum %d\n", len(c.nodes)/2+1)
	policyFile := filepath.Join(dir, "policy")
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		n.args = append(n.args, "--policy="+policyFile, "--checkpoint-interval=1s", "--cluster=faulttest")
	}
}

// cosigningFlags reports whether the witness binary takes the cosigning
// flags (--cosign-key, --policy, --checkpoint-interval).
func cosigningFlags(t *testing.T) bool {
	t.Helper()
	out, _ := exec.Command(witnessBinary(t), "--help").CombinedOutput()
	for _, f := range []string{"--cosign-key", "--policy", "--checkpoint-interval"} {
		if !strings.Contains(string(out), f) {
			return false
		}
	}
	return true
}

// start runs the node's process; its stderr goes to its log file.
func (c *cluster) start(t *testing.T, n *node) {
	t.Helper()
	if n.running() {
		t.Fatalf("%s is already running", n.id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n.starts++
	fmt.Fprintf(logf, "=== start %d of %s at %s\n", n.starts, n.id, time.Now().Format(time.RFC3339Nano))
	var cmd *exec.Cmd
	if n.ns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", n.ns, c.bin}, n.args...)...)
	} else {
		cmd = exec.Command(c.bin, n.args...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// The witness dies with the test process, even if that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", n.id, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.exitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		close(done)
	}()
}

// running reports whether the node's process is alive.
func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// exited returns a channel closed when the current process ends.
func (n *node) exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.done
}

// kill sends SIGKILL (no shutdown, no leadership transfer) and reaps the
// process. It does nothing when the node is not running.
func (n *node) kill() error {
	return n.signal(syscall.SIGKILL, 10*time.Second)
}

// stop asks the process to shut down (SIGTERM) and kills it if it has not
// within 30s.
func (n *node) stop() error {
	if err := n.signal(syscall.SIGTERM, 30*time.Second); err != nil {
		n.kill()
		return err
	}
	return nil
}

func (n *node) signal(sig syscall.Signal, wait time.Duration) error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		return fmt.Errorf("%s did not exit within %s of %s", n.id, wait, sig)
	}
	n.mu.Lock()
	n.cmd = nil
	n.mu.Unlock()
	return nil
}

// exitError is how the last process ended.
func (n *node) exitError() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exitErr
}

// status asks one node for its view, with a short deadline so that a dead
// or partitioned node costs little.
func (n *node) status(ctx context.Context) (*witnessv1.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := n.client.GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.id, err)
	}
	return resp.Msg, nil
}

// tableInfo is the node's view of one table.
func (n *node) tableInfo(ctx context.Context, table string) (*witnessv1.TableInfo, error) {
	st, err := n.status(ctx)
	if err != nil {
		return nil, err
	}
	for _, ti := range st.Tables {
		if ti.Name == table {
			return ti, nil
		}
	}
	return nil, fmt.Errorf("%s has no table %s", n.id, table)
}

// leaves reads every leaf hash of a table from one node.
func (n *node) leaves(ctx context.Context, table string) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := n.client.GetEntries(ctx, connect.NewRequest(&witnessv1.GetEntriesRequest{Table: table}))
	if err != nil {
		return nil, fmt.Errorf("%s: GetEntries: %w", n.id, err)
	}
	defer stream.Close()
	var out [][]byte
	for stream.Receive() {
		for _, e := range stream.Msg().Entries {
			if e.Seq != uint64(len(out)) {
				return nil, fmt.Errorf("%s: GetEntries sent seq %d at position %d", n.id, e.Seq, len(out))
			}
			out = append(out, e.LeafHash)
		}
	}
	if err := stream.Err(); err != nil {
		return nil, fmt.Errorf("%s: GetEntries: %w", n.id, err)
	}
	return out, nil
}

// byAPI finds the node behind an API URL.
func (c *cluster) byAPI(api string) *node {
	for _, n := range c.nodes {
		if n.api == api {
			return n
		}
	}
	return nil
}

// leader polls until one of the given nodes is leader and every one of
// them names it with the same term, and returns it with that term.
func (c *cluster) leader(t *testing.T, among ...*node) *node {
	t.Helper()
	l, _ := c.leaderTerm(t, among...)
	return l
}

func (c *cluster) leaderTerm(t *testing.T, among ...*node) (*node, uint64) {
	t.Helper()
	var leader *node
	var term uint64
	pollUntil(t, 30*time.Second, "a leader the nodes agree on", func() error {
		leader, term = nil, 0
		names, terms := map[string]bool{}, map[uint64]bool{}
		for _, n := range among {
			st, err := n.status(t.Context())
			if err != nil {
				return err
			}
			names[st.LeaderId] = true
			terms[st.Term] = true
			if st.State == "Leader" {
				leader, term = n, st.Term
			}
		}
		if leader == nil || len(names) != 1 || !names[leader.id] || len(terms) != 1 {
			return fmt.Errorf("leader %v; the nodes name %v in terms %v", leader, keys(names), keys(terms))
		}
		return nil
	})
	return leader, term
}

// others is every node but the ones given.
func (c *cluster) others(except ...*node) []*node {
	var out []*node
	for _, n := range c.nodes {
		skip := false
		for _, x := range except {
			skip = skip || x == n
		}
		if !skip {
			out = append(out, n)
		}
	}
	return out
}

// sameLog polls until every given node holds exactly the generator's
// acknowledged log (size and root), then reads every node's leaves and
// compares them one by one with the ones the test computed.
func (c *cluster) sameLog(t *testing.T, g *generator, timeout time.Duration, nodes ...*node) {
	t.Helper()
	size, root, leaves := g.expected()
	pollUntil(t, timeout, fmt.Sprintf("the acknowledged log (size %d) on %d nodes", size, len(nodes)), func() error {
		for _, n := range nodes {
			ti, err := n.tableInfo(t.Context(), g.table)
			if err != nil {
				return err
			}
			if ti.Size != size || !bytes.Equal(ti.Root, root) {
				return fmt.Errorf("%s holds size %d root %x; want size %d root %x", n.id, ti.Size, ti.Root, size, root)
			}
		}
		return nil
	})
	for _, n := range nodes {
		got, err := n.leaves(t.Context(), g.table)
		if err != nil {
			t.Fatal(err)
		}
		if err := compareLeaves(got, leaves); err != nil {
			t.Fatalf("%s: %v", n.id, err)
		}
	}
}

// compareLeaves checks a node's leaves against the acknowledged ones.
func compareLeaves(got, want [][]byte) error {
	for i := range min(len(got), len(want)) {
		if !bytes.Equal(got[i], want[i]) {
			return fmt.Errorf("leaf %d is %x; the acknowledged entry's is %x", i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("holds %d leaves; %d entries were acknowledged", len(got), len(want))
	}
	return nil
}

func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
		}
		time.Sleep(25 * time.Millisecond) // polling interval, not a wait for an event
	}
}

func keys[K comparable](m map[K]bool) []K {
	var out []K
	for k := range m {
		out = append(out, k)
	}
	return out
}

// fileTail is the last n lines of a file.
func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// lastRun is what the node's latest process wrote.
func lastRun(t *testing.T, n *node) string {
	t.Helper()
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	if i := strings.LastIndex(out, "=== start "); i >= 0 {
		out = out[i:]
	}
	return strings.TrimRight(out, "\n")
}
