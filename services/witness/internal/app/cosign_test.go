package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/libs/tlog"
	"github.com/witnz/witnz/services/witness/internal/config"
	"github.com/witnz/witnz/services/witness/internal/cosign"
)

// alertSink is a stand-in for the alert service (which needs PostgreSQL
// and Redis): it records what witness identities send it.
type alertSink struct {
	mu     sync.Mutex
	alerts []*alertv1.Alert
	from   []mtls.Identity
}

func (s *alertSink) IngestAlerts(ctx context.Context, req *connect.Request[alertv1.IngestAlertsRequest]) (*connect.Response[alertv1.IngestAlertsResponse], error) {
	id, _ := mtls.PeerIdentity(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alerts = append(s.alerts, req.Msg.GetAlerts()...)
	s.from = append(s.from, id)
	return connect.NewResponse(&alertv1.IngestAlertsResponse{Stored: uint32(len(req.Msg.GetAlerts()))}), nil
}

func (s *alertSink) ListAlerts(context.Context, *connect.Request[alertv1.ListAlertsRequest]) (*connect.Response[alertv1.ListAlertsResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, nil)
}

func (s *alertSink) snapshot() ([]*alertv1.Alert, []mtls.Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*alertv1.Alert(nil), s.alerts...), append([]mtls.Identity(nil), s.from...)
}

// cosignCluster is a three-node cluster whose nodes cosign checkpoints
// every second under a 2-of-3 policy, report to alerts, and witness the
// external log testOrigin.
type cosignCluster struct {
	*cluster
	policy *checkpoint.Policy
	keys   map[string]*checkpoint.Cosigner
	alerts *alertSink
	log    *extLog
}

const testOrigin = "example.com/log"

// extLog is an external log cosigned through add-checkpoint.
type extLog struct {
	tree   *tlog.Log
	signer note.Signer
}

func newCosignCluster(t *testing.T) *cosignCluster {
	t.Helper()
	c := &cluster{t: t, pkiDir: t.TempDir(), logs: &syncWriter{t: t}}
	t.Cleanup(func() {
		c.logs.mu.Lock()
		c.logs.closed = true
		c.logs.mu.Unlock()
	})
	ids := []string{"w1", "w2", "w3"}
	identities := []mtls.Identity{mtls.Service("cdc-ingest"), mtls.Service("alert"), mtls.Service("anchor")}
	for _, id := range ids {
		identities = append(identities, mtls.Witness(id))
	}
	if err := pki.Init(c.pkiDir, identities, pki.Options{}); err != nil {
		t.Fatal(err)
	}

	// The alert service stand-in, over mutual TLS like the real one.
	cc := &cosignCluster{cluster: c, keys: map[string]*checkpoint.Cosigner{}, alerts: &alertSink{}}
	_, h := alertv1connect.NewAlertServiceHandler(cc.alerts)
	alertSrv := httptest.NewUnstartedServer(mtls.WithPeerIdentity(h))
	alertSrv.TLS = mustTLS(t, c.pkiDir, mtls.Service("alert")).Server()
	alertSrv.EnableHTTP2 = true
	alertSrv.StartTLS()
	t.Cleanup(alertSrv.Close)

	keyDir := t.TempDir()
	var policy strings.Builder
	for _, id := range ids {
		skey, vkey, err := checkpoint.GenerateKey("witnz.test/" + id)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(keyDir, id+".key"), []byte(skey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		k, _ := checkpoint.NewCosigner(skey)
		cc.keys[id] = k
		fmt.Fprintf(&policy, "witness %s %s\n", id, vkey)
	}
	policy.WriteString("quorum 2\n")
	policyFile := filepath.Join(keyDir, "policy.txt")
	if err := os.WriteFile(policyFile, []byte(policy.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := checkpoint.ParsePolicy([]byte(policy.String()))
	if err != nil {
		t.Fatal(err)
	}
	cc.policy = p

	lskey, lvkey, err := checkpoint.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := checkpoint.NewLogSigner(lskey)
	if err != nil {
		t.Fatal(err)
	}
	cc.log = &extLog{tree: tlog.New(), signer: ls}
	logsFile := filepath.Join(keyDir, "logs.txt")
	if err := os.WriteFile(logsFile, []byte(testOrigin+" "+lvkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	type addrs struct{ raft, api string }
	a := map[string]addrs{}
	var peerArgs []string
	for _, id := range ids {
		a[id] = addrs{testenv.FreeAddr(t), testenv.FreeAddr(t)}
		peerArgs = append(peerArgs, fmt.Sprintf("--peer=%s=%s,https://%s", id, a[id].raft, a[id].api))
	}
	for i, id := range ids {
		args := append([]string{
			"--node-id=" + id,
			"--data-dir=" + filepath.Join(t.TempDir(), id),
			"--listen=" + a[id].api,
			"--raft-listen=" + a[id].raft,
			"--log-level=debug",
			"--cluster=test",
			"--cosign-key=" + filepath.Join(keyDir, id+".key"),
			"--policy=" + policyFile,
			"--checkpoint-interval=1s",
			"--alert=" + alertSrv.URL,
			"--witness-log=" + logsFile,
		}, tlsFiles(c.pkiDir, mtls.Witness(id))...)
		args = append(args, peerArgs...)
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		cfg, err := config.Parse(args, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		cfg.Raft = config.RaftTuning{
			HeartbeatTimeout:   800 * time.Millisecond,
			ElectionTimeout:    800 * time.Millisecond,
			LeaderLeaseTimeout: 400 * time.Millisecond,
			SnapshotInterval:   100 * time.Millisecond,
			SnapshotThreshold:  4,
			TrailingLogs:       2,
		}
		c.nodes = append(c.nodes, &testNode{id: id, cfg: cfg})
	}
	c.ingest = mustTLS(t, c.pkiDir, mtls.Service("cdc-ingest")).HTTPClient()
	for _, n := range c.nodes {
		c.start(n)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
		}
	})
	return cc
}

// checkpointOn polls GetCheckpoint on n until it reports at least size
// entries with want cosigners, and returns it.
func (cc *cosignCluster) checkpointOn(n *testNode, size uint64, want int) *witnessv1.GetCheckpointResponse {
	cc.t.Helper()
	var out *witnessv1.GetCheckpointResponse
	pollUntil(cc.t, 30*time.Second, fmt.Sprintf("a checkpoint of size %d cosigned by %d on %s", size, want, n.id), func() error {
		resp, err := cc.ingestClient(n).GetCheckpoint(context.Background(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: table}))
		if err != nil {
			return err
		}
		_, signers, err := cc.policy.Verify(resp.Msg.GetNote())
		if err != nil {
			return err
		}
		if resp.Msg.GetSize() < size || len(signers) != want {
			return fmt.Errorf("checkpoint at size %d with %d cosigners", resp.Msg.GetSize(), len(signers))
		}
		out = resp.Msg
		return nil
	})
	return out
}

// tamperedReplica is the replica of a node whose log was altered: every
// root it computes differs from the others'.
type tamperedReplica struct{ cosign.Replica }

func (t tamperedReplica) RootAt(name string, size uint64) ([32]byte, uint64, error) {
	root, n, err := t.Replica.RootAt(name, size)
	root[0] ^= 0x80
	return root, n, err
}

func TestCosignedCheckpoints(t *testing.T) {
	// w3's state is altered halfway through.
	tamper := false
	var tamperMu sync.Mutex
	testHookReplica = func(id string, r cosign.Replica) cosign.Replica {
		if id != "w3" {
			return r
		}
		return switchable{r, func() bool { tamperMu.Lock(); defer tamperMu.Unlock(); return tamper }}
	}
	t.Cleanup(func() { testHookReplica = nil })

	cc := newCosignCluster(t)
	leader := cc.leader()
	cl := cc.ingestClient(leader)
	rows := newRowSource(t)
	want := &expected{log: tlog.New()}

	if _, err := cl.RegisterTable(t.Context(), connect.NewRequest(&witnessv1.RegisterTableRequest{Table: table, Buckets: buckets})); err != nil {
		t.Fatal(err)
	}
	t.Run("no checkpoint before the first", func(t *testing.T) {
		_, err := cl.GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: table}))
		if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "no cosigned checkpoint of public.audit_log yet") {
			t.Fatalf("GetCheckpoint before any: %v, want NotFound", err)
		}
		_, err = cl.GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: "public.nope"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetCheckpoint of an unknown table: %v, want NotFound", err)
		}
	})

	var first *witnessv1.GetCheckpointResponse
	t.Run("every node cosigns and serves the checkpoint", func(t *testing.T) {
		es := rows.batch(t, 20)
		want.add(t, es)
		appendBatch(t, cl, es)
		for _, n := range cc.nodes {
			got := cc.checkpointOn(n, 20, 3)
			c, _, err := checkpoint.Parse(got.GetNote())
			if err != nil {
				t.Fatal(err)
			}
			if got.GetSize() != 20 || !bytes.Equal(got.GetRoot(), want.root()) || c.Origin != "witnz/test/"+table || got.GetCreatedAt().AsTime().Before(time.Now().Add(-time.Minute)) {
				t.Fatalf("%s serves %v (origin %s), want size 20 root %x", n.id, got, c.Origin, want.root())
			}
			if first != nil && !bytes.Equal(first.GetNote(), got.GetNote()) {
				t.Fatalf("%s serves another note than %s", n.id, cc.nodes[0].id)
			}
			first = got
			st, err := cc.status(n)
			if err != nil {
				t.Fatal(err)
			}
			if st.GetCosignerKey() != cc.keys[n.id].VerifierKey() || st.GetCosignRefusalsTotal() != 0 {
				t.Fatalf("%s status: cosigner key %q, %d refusals", n.id, st.GetCosignerKey(), st.GetCosignRefusalsTotal())
			}
		}
	})

	t.Run("a node whose state disagrees refuses and is reported", func(t *testing.T) {
		tamperMu.Lock()
		tamper = true
		tamperMu.Unlock()
		es := rows.batch(t, 10)
		want.add(t, es)
		appendBatch(t, cc.ingestClient(cc.leader()), es)
		// w1 and w2 still meet the 2-of-3 policy.
		got := cc.checkpointOn(cc.nodes[0], 30, 2)
		if !bytes.Equal(got.GetRoot(), want.root()) || strings.Contains(string(got.GetNote()), "witnz.test/w3 ") {
			t.Fatalf("checkpoint after the refusal: %v", got)
		}
		// The new checkpoint extends the first.
		proof, err := cl.GetConsistencyProof(t.Context(), connect.NewRequest(&witnessv1.GetConsistencyProofRequest{Table: table, FromSize: 20, ToSize: 30}))
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.VerifyConsistency(20, 30, proof.Msg.GetProof(), first.GetRoot(), got.GetRoot()); err != nil {
			t.Fatal(err)
		}
		// Every node's replicated state names w3.
		for _, n := range cc.nodes {
			pollUntil(t, 20*time.Second, "the refusal recorded on "+n.id, func() error {
				st, err := cc.status(n)
				if err != nil {
					return err
				}
				for _, r := range st.GetCosignRefusals() {
					if r.GetNodeId() == "w3" && r.GetTable() == table && r.GetKind() == witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH &&
						strings.Contains(r.GetReason(), "node w3 computes root") && r.GetRaftIndex() != 0 {
						return nil
					}
				}
				return fmt.Errorf("refusals: %v", st.GetCosignRefusals())
			})
		}
		// And the alert service heard of it, from witness identities.
		pollUntil(t, 20*time.Second, "an alert naming w3", func() error {
			alerts, from := cc.alerts.snapshot()
			for i, a := range alerts {
				if a.GetType() == cosign.TypeCosignRefused && a.GetDetail().GetFields()["node_id"].GetStringValue() == "w3" &&
					strings.HasPrefix(a.GetMessage(), "witness node w3 refused to cosign the checkpoint of public.audit_log") {
					if from[min(i, len(from)-1)].Kind != mtls.KindWitness {
						return fmt.Errorf("alert sent by %v", from)
					}
					return nil
				}
			}
			return fmt.Errorf("alerts: %v", alerts)
		})
	})

	t.Run("add-checkpoint cosigns an external log", func(t *testing.T) {
		hc := mustTLS(t, cc.pkiDir, mtls.Service("anchor")).HTTPClient()
		l := cc.log
		for i := range 12 {
			l.tree.Append([32]byte{byte(i), 1})
		}
		body := func(old, size uint64) string {
			root, _ := l.tree.RootAt(size)
			c := checkpoint.Checkpoint{Origin: testOrigin, Size: size, Root: root}
			sig, err := checkpoint.Sign(c, l.signer)
			if err != nil {
				t.Fatal(err)
			}
			signed, _ := checkpoint.Assemble(c, sig)
			var b strings.Builder
			fmt.Fprintf(&b, "old %d\n", old)
			if old > 0 {
				proof, _ := l.tree.ConsistencyProof(old, size)
				for _, h := range proof {
					b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
				}
			}
			b.WriteString("\n")
			b.Write(signed)
			return b.String()
		}
		post := func(n *testNode, b string) (int, string) {
			resp, err := hc.Post("https://"+n.cfg.Listen+cosign.AddCheckpointPath, "text/plain", strings.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			out, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(out)
		}
		n := cc.nodes[1]
		if code, out := post(n, body(0, 8)); code != http.StatusOK || !strings.HasPrefix(out, "— witnz.test/w2 ") {
			t.Fatalf("first checkpoint: %d %q", code, out)
		}
		if code, out := post(n, body(8, 12)); code != http.StatusOK {
			t.Fatalf("extension: %d %q", code, out)
		}
		if code, out := post(n, body(0, 8)); code != http.StatusConflict || out != "12\n" {
			t.Fatalf("replayed old checkpoint: %d %q, want 409 naming 12", code, out)
		}
	})
}

// switchable alters every root once on() says so.
type switchable struct {
	cosign.Replica
	on func() bool
}

func (s switchable) RootAt(name string, size uint64) ([32]byte, uint64, error) {
	if s.on() {
		return tamperedReplica{s.Replica}.RootAt(name, size)
	}
	return s.Replica.RootAt(name, size)
}
