package faulttest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
)

// TestExternalWitnessCluster runs two witness clusters on one PKI: cluster
// B (one node, b1) acts as a C2SP tlog-witness for cluster A's table
// through its own add-checkpoint endpoint (--witness-log naming A's origin
// and log key), and cluster A (w1-w3, --log-key) asks it with
// --external-witness after its own quorum. A's policy requires b1's
// cosignature, so every checkpoint A stores carries it. Killing A's leader
// makes a new leader that does not know what b1 cosigned: its first
// request is answered 409 and it resends from b1's size.
func TestExternalWitnessCluster(t *testing.T) {
	skipShort(t)
	a := &cluster{bin: witnessBinary(t), pkiDir: t.TempDir(), spec: clusterSpec{size: 3, timing: fast, cosign: true}}
	ids := []mtls.Identity{mtls.Service(ingestService), mtls.Witness("b1")}
	for i := range 3 {
		ids = append(ids, mtls.Witness(fmt.Sprintf("w%d", i+1)))
	}
	if err := pki.Init(a.pkiDir, ids, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(a.pkiDir, mtls.Service(ingestService))
	tlsCfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	a.httpc = tlsCfg.HTTPClient()
	b := &cluster{bin: a.bin, pkiDir: a.pkiDir, httpc: a.httpc, spec: clusterSpec{size: 1, timing: fast, cosign: true}}
	dir := t.TempDir()
	write := func(name, text string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	// Cluster A's log key, and the origin of its table.
	logSkey, logVkey, err := checkpoint.GenerateLogKey("witnz/clustera")
	if err != nil {
		t.Fatal(err)
	}
	origin, err := checkpoint.Origin("clustera", table)
	if err != nil {
		t.Fatal(err)
	}

	// Cluster B: one node cosigning for A's log.
	b1, b1Vkey := b.cosigningNode(t, "b1", 0, dir, "clusterb")
	b1.args = append(b1.args, "--bootstrap", fmt.Sprintf("--peer=b1=%s,%s", b1.raft, b1.api),
		"--policy="+write("policy-b", fmt.Sprintf("witness b1 %s\nquorum 1\n", b1Vkey)),
		"--witness-log="+write("logs-b", fmt.Sprintf("%s %s\n", origin, logVkey)))
	b.nodes = []*node{b1}

	// Cluster A: three nodes whose policy needs two of them and b1.
	policy := fmt.Sprintf("log %s\n", logVkey)
	var peers []string
	for i := range 3 {
		n, vkey := a.cosigningNode(t, fmt.Sprintf("w%d", i+1), i, dir, "clustera")
		policy += fmt.Sprintf("witness %s %s\n", n.id, vkey)
		peers = append(peers, fmt.Sprintf("--peer=%s=%s,%s", n.id, n.raft, n.api))
		if i == 0 {
			n.args = append(n.args, "--bootstrap")
		}
		a.nodes = append(a.nodes, n)
	}
	policy += fmt.Sprintf("witness b1 %s\ngroup nodes 2 w1 w2 w3\ngroup both all nodes b1\nquorum both\n", b1Vkey)
	policyA, logKeyFile := write("policy-a", policy), write("log.key", logSkey+"\n")
	for _, n := range a.nodes {
		n.args = append(append(n.args, peers...), "--policy="+policyA, "--log-key="+logKeyFile,
			fmt.Sprintf("--external-witness=b1=%s,%s", b1.api, b1Vkey))
	}
	b.startAll(t)
	a.startAll(t)
	b.leader(t, b1)
	leader := a.leader(t, a.nodes...)
	pol, err := checkpoint.ParsePolicy([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}

	g := newGenerator(a, 9, 8)
	if err := g.register(t.Context()); err != nil {
		t.Fatal(err)
	}
	// storedWithB1 waits for a stored checkpoint at the acknowledged size
	// that meets A's policy, b1's cosignature included.
	storedWithB1 := func(on *node) {
		t.Helper()
		size, _, _ := g.expected()
		pollUntil(t, 20*time.Second, fmt.Sprintf("a checkpoint at size %d cosigned by b1", size), func() error {
			resp, err := on.client.GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: g.table}))
			if err != nil {
				return err
			}
			if resp.Msg.GetSize() != size {
				return fmt.Errorf("checkpoint at size %d", resp.Msg.GetSize())
			}
			_, signers, err := pol.Verify(resp.Msg.GetNote())
			if err != nil {
				return err
			}
			for _, s := range signers {
				if s.Label == "b1" {
					return nil
				}
			}
			return fmt.Errorf("signers %v lack b1", signers)
		})
	}
	if err := g.appendN(t.Context(), 20); err != nil {
		t.Fatal(err)
	}
	storedWithB1(leader)
	if err := g.appendN(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	storedWithB1(leader)

	// A new leader knows nothing of what b1 cosigned.
	if err := leader.kill(); err != nil {
		t.Fatal(err)
	}
	next := a.leader(t, a.others(leader)...)
	if err := g.appendN(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	storedWithB1(next)
	if log := lastRun(t, next); !strings.Contains(log, "external witness answered 409") {
		t.Fatalf("%s did not resync with b1 through a 409:\n%s", next.id, fileTail(next.logPath, 20))
	}
	if log := lastRun(t, b1); !strings.Contains(log, "cosigned an external checkpoint") {
		t.Fatalf("b1 logged no external cosignature:\n%s", fileTail(b1.logPath, 20))
	}
}
