package faulttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
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

// newPoolCluster starts voters witness processes (w1 bootstraps) and
// prepares pool standby ones, not started, that belong to no cluster yet
// (their --peer names only themselves); every node lists them in --pool.
// Every node cosigns (a policy naming every key, quorum a majority of the
// voters) and gets extra flags.
func newPoolCluster(t *testing.T, voters, pool int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{bin: witnessBinary(t), pkiDir: t.TempDir(), spec: clusterSpec{size: voters, timing: fast, cosign: true}}
	ids := []mtls.Identity{mtls.Service(ingestService)}
	for i := range voters + pool {
		ids = append(ids, mtls.Witness(fmt.Sprintf("w%d", i+1)))
	}
	if err := pki.Init(c.pkiDir, ids, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(c.pkiDir, mtls.Service(ingestService))
	tlsCfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	c.httpc = tlsCfg.HTTPClient()
	keyDir := t.TempDir()
	policy := "# rotation test cluster\n"
	var peers, poolFlags []string
	for i := range voters + pool {
		n, vkey := c.cosigningNode(t, fmt.Sprintf("w%d", i+1), i, keyDir, "faulttest")
		policy += fmt.Sprintf("witness %s %s\n", n.id, vkey)
		self := fmt.Sprintf("%s=%s,%s", n.id, n.raft, n.api)
		if i < voters {
			peers = append(peers, "--peer="+self)
		} else {
			n.args = append(n.args, "--peer="+self)
			poolFlags = append(poolFlags, "--pool="+self)
		}
		if i == 0 {
			n.args = append(n.args, "--bootstrap")
		}
		c.nodes = append(c.nodes, n)
	}
	policy += fmt.Sprintf("quorum %d\n", voters/2+1)
	policyFile := filepath.Join(keyDir, "policy")
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.nodes {
		if i < voters {
			n.args = append(n.args, peers...)
		}
		n.args = append(append(append(n.args, "--policy="+policyFile), poolFlags...), extra...)
	}
	c.startAll(t, c.nodes[:voters]...)
	c.leader(t, c.nodes[:voters]...)
	return c
}

// cosigningNode makes node id (not started) on loopback with a cosigner
// key written to keyDir, in the cluster named name, and returns it with
// its verifier key. Its certificate must be in c.pkiDir.
func (c *cluster) cosigningNode(t *testing.T, id string, index int, keyDir, name string) (*node, string) {
	t.Helper()
	n := &node{id: id, index: index}
	apiListen, raftListen := testenv.FreeAddr(t), testenv.FreeAddr(t)
	n.api, n.raft = "https://"+apiListen, raftListen
	dir := t.TempDir()
	n.dataDir, n.logPath = filepath.Join(dir, "data"), filepath.Join(dir, "witness.log")
	paths := pki.PathsFor(c.pkiDir, mtls.Witness(n.id))
	skey, vkey, err := checkpoint.GenerateKey("faulttest-" + n.id)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(keyDir, n.id+".key")
	if err := os.WriteFile(keyFile, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.args = append([]string{
		"--node-id=" + n.id, "--data-dir=" + n.dataDir,
		"--listen=" + apiListen, "--raft-listen=" + raftListen,
		"--tls-cert=" + paths.Cert, "--tls-key=" + paths.Key, "--tls-ca=" + paths.CA,
		"--log-level=info", "--log-format=text",
		"--cosign-key=" + keyFile, "--checkpoint-interval=1s", "--cluster=" + name,
	}, fast.flags()...)
	n.client = witnessv1connect.NewWitnessServiceClient(c.httpc, n.api, rpcserver.ClientOptions()...)
	return n, vkey
}

// startAll starts the given nodes (every node of c when none is given)
// and kills every node of c when the test ends.
func (c *cluster) startAll(t *testing.T, nodes ...*node) {
	t.Helper()
	if nodes == nil {
		nodes = c.nodes
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.kill()
		}
		c.httpc.CloseIdleConnections()
		if t.Failed() {
			for _, n := range c.nodes {
				t.Logf("%s log (end):\n%s", n.id, fileTail(n.logPath, 30))
			}
		}
	})
	for _, n := range nodes {
		c.start(t, n)
	}
}

func (n *node) members(ctx context.Context, c *cluster) (*witnessv1.ListMembersResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := witnessv1connect.NewMembershipServiceClient(c.httpc, n.api, rpcserver.ClientOptions()...).
		ListMembers(ctx, connect.NewRequest(&witnessv1.ListMembersRequest{}))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.id, err)
	}
	return resp.Msg, nil
}

// currentLeader asks every node and returns the leader one of them names.
func (c *cluster) currentLeader(ctx context.Context) (*node, *witnessv1.ListMembersResponse, error) {
	var last error
	for _, n := range c.nodes {
		m, err := n.members(ctx, c)
		if err != nil {
			last = err
			continue
		}
		if m.GetLeaderId() == n.id {
			return n, m, nil
		}
		last = fmt.Errorf("%s names leader %q", n.id, m.GetLeaderId())
	}
	return nil, nil, fmt.Errorf("no leader answers: %v", last)
}

// TestScheduledRotation runs 3 voters and 1 standby node with a rotation
// every 2s under a steady stream of appends. While the standby node is
// down the schedule skips, saying so; once it runs, rotations happen
// (recorded in the replicated membership history, by the leader's
// identity), appends go on throughout, every acknowledged entry is on
// every voter, and the standby node verified the table's stored
// checkpoint before its first cosignature.
func TestScheduledRotation(t *testing.T) {
	skipShort(t)
	c := newPoolCluster(t, 3, 1, "--rotate-every=2s")
	w4 := c.nodes[3]
	g := newGenerator(c, 6, 8)
	if err := g.register(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Appends stop between batches, so that every batch sent is
	// acknowledged (a cancelled one could commit unacknowledged).
	var halt atomic.Bool
	appendErr := make(chan error, 1)
	go func() {
		for !halt.Load() {
			if err := g.appendOne(t.Context(), g.nextBatch()); err != nil {
				appendErr <- err
				return
			}
		}
		appendErr <- nil
	}()
	stopAppends := func() {
		t.Helper()
		halt.Store(true)
		if err := <-appendErr; err != nil {
			t.Fatalf("appends stopped during the rotations: %v", err)
		}
	}
	defer halt.Store(true)

	// Before w4 runs, a checkpoint is stored and the schedule skips.
	pollUntil(t, 20*time.Second, "a stored checkpoint and a skipped rotation", func() error {
		l, _, err := c.currentLeader(t.Context())
		if err != nil {
			return err
		}
		if _, err := l.client.GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: g.table})); err != nil {
			return err
		}
		for _, n := range c.nodes[:3] {
			if strings.Contains(lastRun(t, n), "rotation skipped") && strings.Contains(lastRun(t, n), "no standby node of the rotation pool is reachable") {
				return nil
			}
		}
		return errors.New("no voter logged a skipped rotation")
	})
	c.start(t, w4)

	// Wait for a completed rotation that brought w4 in.
	var rotated *witnessv1.MembershipEvent
	pollUntil(t, 25*time.Second, "a scheduled rotation bringing w4 in", func() error {
		select {
		case err := <-appendErr:
			appendErr <- err
			return nil
		default:
		}
		_, m, err := c.currentLeader(t.Context())
		if err != nil {
			return err
		}
		for _, e := range m.GetHistory() {
			ch := e.GetChange()
			if ch.GetOp() == witnessv1.MembershipOp_MEMBERSHIP_OP_ROTATE && ch.GetPhase() == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE && ch.GetReplacementId() == "w4" {
				rotated = e
				return nil
			}
		}
		return fmt.Errorf("no completed rotation in %d records", len(m.GetHistory()))
	})
	before := g.acked.Load()
	pollUntil(t, 10*time.Second, "appends after the rotation", func() error {
		if n := g.acked.Load(); n < before+20 {
			return fmt.Errorf("%d batches acknowledged since, want 20", n-before)
		}
		return nil
	})
	stopAppends()
	if rotated == nil {
		t.Fatal("appends failed before a rotation completed")
	}
	ch := rotated.GetChange()
	if !strings.HasPrefix(ch.GetBy(), "spiffe://witnz/witness/") || !slices.Contains([]string{"w1", "w2", "w3"}, ch.GetNodeId()) {
		t.Fatalf("rotation record %v: want one of w1-w3 rotated out by a witness identity", ch)
	}
	t.Logf("rotation: %s out, %s in, by %s; %d batches acknowledged", ch.GetNodeId(), ch.GetReplacementId(), ch.GetBy(), g.acked.Load())

	// Every acknowledged entry is on every voter.
	size, root, leaves := g.expected()
	var voters []*node
	pollUntil(t, 15*time.Second, fmt.Sprintf("the acknowledged log (size %d) on every voter", size), func() error {
		_, m, err := c.currentLeader(t.Context())
		if err != nil {
			return err
		}
		voters = voters[:0]
		for _, mem := range m.GetMembers() {
			if !mem.GetVoter() {
				continue
			}
			n := c.byAPI(mem.GetApiAddress())
			if n == nil {
				return fmt.Errorf("voter %s at unknown API %s", mem.GetId(), mem.GetApiAddress())
			}
			ti, err := n.tableInfo(t.Context(), g.table)
			if err != nil {
				return err
			}
			if ti.Size != size || string(ti.Root) != string(root) {
				return fmt.Errorf("%s holds size %d; want %d", n.id, ti.Size, size)
			}
			voters = append(voters, n)
		}
		if len(voters) < 3 {
			return fmt.Errorf("%d voters", len(voters))
		}
		return nil
	})
	for _, n := range voters {
		got, err := n.leaves(t.Context(), g.table)
		if err != nil {
			t.Fatal(err)
		}
		if err := compareLeaves(got, leaves); err != nil {
			t.Fatalf("%s: %v", n.id, err)
		}
	}

	// w4 checked the history it received before cosigning.
	cs := witnessv1connect.NewCosignServiceClient(c.httpc, w4.api, rpcserver.ClientOptions()...)
	pollUntil(t, 10*time.Second, "w4's history check", func() error {
		resp, err := cs.GetCosignerStatus(t.Context(), connect.NewRequest(&witnessv1.GetCosignerStatusRequest{}))
		if err != nil {
			return err
		}
		for _, tb := range resp.Msg.GetTables() {
			if tb.GetTable() == g.table && tb.GetHistory() == witnessv1.HistoryCheck_HISTORY_CHECK_VERIFIED {
				if tb.GetCheckedSize() == 0 || !strings.Contains(tb.GetDetail(), "verify under the policy") {
					t.Fatalf("w4 verified no stored checkpoint: %v", tb)
				}
				return nil
			}
		}
		return fmt.Errorf("w4 reports %v", resp.Msg.GetTables())
	})
	if log := lastRun(t, w4); !strings.Contains(log, "verified the history of a table before cosigning it for the first time") {
		t.Fatalf("w4's log has no history check line:\n%s", fileTail(w4.logPath, 20))
	}
}

// TestActiveCountGrows runs 3 voters with --active-count 4 and one standby
// node: the schedule adds it as a fourth voter, recorded by the leader.
func TestActiveCountGrows(t *testing.T) {
	skipShort(t)
	c := newPoolCluster(t, 3, 1, "--rotate-every=1s", "--active-count=4")
	c.start(t, c.nodes[3])
	pollUntil(t, 20*time.Second, "w4 promoted to a fourth voter by the schedule", func() error {
		_, m, err := c.currentLeader(t.Context())
		if err != nil {
			return err
		}
		var voters []string
		for _, mem := range m.GetMembers() {
			if mem.GetVoter() {
				voters = append(voters, mem.GetId())
			}
		}
		if len(voters) != 4 || !slices.Contains(voters, "w4") {
			return fmt.Errorf("voters %v", voters)
		}
		for _, e := range m.GetHistory() {
			ch := e.GetChange()
			if ch.GetOp() == witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE && ch.GetPhase() == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE &&
				ch.GetNodeId() == "w4" && strings.HasPrefix(ch.GetBy(), "spiffe://witnz/witness/") {
				return nil
			}
		}
		return errors.New("no promotion of w4 by a witness identity in the history")
	})
}
