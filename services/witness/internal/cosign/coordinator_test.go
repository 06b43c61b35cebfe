package cosign

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/witnz/witnz/libs/checkpoint"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/witness/internal/fsm"
	"github.com/witnz/witnz/services/witness/internal/node"
)

// leaderNode is the coordinator's view of a Raft node that leads: its
// proposals are applied to one replica at once.
type leaderNode struct {
	mu      sync.Mutex
	r       *replica
	leading bool
	cmds    []*witnessv1.Command
}

func (n *leaderNode) Status() (node.Status, error) {
	st := node.Status{ID: "w1", State: "Follower", LeaderID: "w2"}
	if n.leading {
		st.State, st.LeaderID = "Leader", "w1"
	}
	for _, id := range []string{"w1", "w2", "w3"} {
		st.Members = append(st.Members, node.Member{ID: id, APIAddr: "https://" + id, Voter: true, Leader: id == st.LeaderID})
	}
	return st, nil
}

func (n *leaderNode) Propose(_ context.Context, cmd *witnessv1.Command) (*fsm.Result, uint64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cmds = append(n.cmds, cmd)
	return n.r.apply(cmd), n.r.index, nil
}

// clientFunc is a CosignServiceClient made of a function.
type clientFunc func(context.Context, *witnessv1.CosignRequest) (*witnessv1.CosignResponse, error)

func (f clientFunc) Cosign(ctx context.Context, req *connect.Request[witnessv1.CosignRequest]) (*connect.Response[witnessv1.CosignResponse], error) {
	resp, err := f(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// honest answers like a node whose Signer decides.
func honest(s *Signer, id string) CosignClient {
	return clientFunc(func(ctx context.Context, m *witnessv1.CosignRequest) (*witnessv1.CosignResponse, error) {
		p := Proposal{Table: m.GetTable(), Size: m.GetSize(), Root: [32]byte(m.GetRoot()), AppliedIndex: m.GetAppliedIndex(), PolicyDigest: m.GetPolicySha256(), Proposer: "w1"}
		sig, err := s.Sign(ctx, p)
		var r *RefusalError
		if errors.As(err, &r) {
			cerr := connect.NewError(connect.CodeFailedPrecondition, r)
			d, _ := connect.NewErrorDetail(s.refusalRecord(p, r))
			cerr.AddDetail(d)
			return nil, cerr
		}
		if err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, err)
		}
		return &witnessv1.CosignResponse{NodeId: id, Cosignature: SignatureLine(sig), CosignerKey: s.cfg.Key.VerifierKey()}, nil
	})
}

// forging answers with its honest cosignature, one bit flipped.
func forging(s *Signer, id string) CosignClient {
	h := honest(s, id)
	return clientFunc(func(ctx context.Context, m *witnessv1.CosignRequest) (*witnessv1.CosignResponse, error) {
		resp, err := h.Cosign(ctx, connect.NewRequest(m))
		if err != nil {
			return nil, err
		}
		name, b, _ := strings.Cut(strings.TrimPrefix(resp.Msg.Cosignature, "— "), " ")
		raw, _ := base64.StdEncoding.DecodeString(b)
		raw[len(raw)-1] ^= 1
		resp.Msg.Cosignature = "— " + name + " " + base64.StdEncoding.EncodeToString(raw)
		return resp.Msg, nil
	})
}

// alertSink records the alerts it is sent.
type alertSink struct {
	mu     sync.Mutex
	alerts []*alertv1.Alert
}

func (a *alertSink) IngestAlerts(_ context.Context, req *connect.Request[alertv1.IngestAlertsRequest]) (*connect.Response[alertv1.IngestAlertsResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.alerts = append(a.alerts, req.Msg.GetAlerts()...)
	return connect.NewResponse(&alertv1.IngestAlertsResponse{Stored: uint32(len(req.Msg.GetAlerts()))}), nil
}

func (a *alertSink) ListAlerts(context.Context, *connect.Request[alertv1.ListAlertsRequest]) (*connect.Response[alertv1.ListAlertsResponse], error) {
	return nil, errors.New("not used")
}

func (a *alertSink) list() []*alertv1.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*alertv1.Alert(nil), a.alerts...)
}

type testCluster struct {
	policy  *checkpoint.Policy
	leader  *leaderNode
	signers map[string]*Signer
	clients map[string]CosignClient
	coord   *Coordinator
	alerts  *alertSink
}

// newTestCluster has three nodes sharing one replica (their states agree),
// each with its own key and record; the policy needs two of them.
func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	r := newReplica(t)
	tc := &testCluster{leader: &leaderNode{r: r, leading: true}, signers: map[string]*Signer{}, clients: map[string]CosignClient{}, alerts: &alertSink{}}
	var policy strings.Builder
	for _, id := range []string{"w1", "w2", "w3"} {
		key := mustKey(t, "witnz.test/"+id)
		fmt.Fprintf(&policy, "witness %s %s\n", id, key.VerifierKey())
		s := newTestSigner(t, FSMReplica(r.f), key, mustStore(t, filepath.Join(t.TempDir(), StoreFile)))
		s.cfg.NodeID = id
		tc.signers[id] = s
		tc.clients[id] = honest(s, id)
	}
	policy.WriteString("quorum 2\n")
	p, err := checkpoint.ParsePolicy([]byte(policy.String()))
	if err != nil {
		t.Fatal(err)
	}
	tc.policy = p
	alerter := NewAlerter(tc.alerts, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { alerter.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	tc.coord = NewCoordinator(CoordinatorConfig{
		NodeID: "w1", Cluster: cluster, Interval: time.Hour, Policy: p, PolicyDigest: digest,
		Node: tc.leader, FSM: r.f, Alerts: alerter, Log: quiet,
		Now:    func() time.Time { return time.Unix(1_800_000_100, 0) },
		Client: func(m node.Member) CosignClient { return tc.clients[m.ID] },
	})
	return tc
}

func (tc *testCluster) round(t *testing.T) []TableResult {
	t.Helper()
	return tc.coord.Round(t.Context())
}

func TestCoordinatorStoresCosignedCheckpoints(t *testing.T) {
	tc := newTestCluster(t)
	r := tc.leader.r
	if res := tc.round(t); len(res) != 0 {
		t.Fatalf("round on an empty log: %+v", res)
	}
	r.grow(5)
	res := tc.round(t)
	if len(res) != 1 || !res[0].Stored || strings.Join(res[0].Cosigners, ",") != "w1,w2,w3" || len(res[0].Refusals) != 0 {
		t.Fatalf("round: %+v", res)
	}
	cp, ok := r.f.Checkpoint(table)
	if !ok || cp.Size != 5 || cp.Root != r.root(5) {
		t.Fatalf("stored %+v", cp)
	}
	c, signers, err := tc.policy.Verify(cp.Note)
	if err != nil || len(signers) != 3 || c.Size != 5 {
		t.Fatalf("the stored note does not meet the policy: %v (%d signers)", err, len(signers))
	}
	// Nothing grew: nothing to do. Then an extension.
	if res := tc.round(t); len(res) != 0 {
		t.Fatalf("round without growth: %+v", res)
	}
	r.grow(3)
	if res := tc.round(t); len(res) != 1 || !res[0].Stored || res[0].Size != 8 {
		t.Fatalf("round after growth: %+v", res)
	}
	// A follower makes no checkpoints.
	tc.leader.leading = false
	r.grow(1)
	if res := tc.round(t); res != nil {
		t.Fatalf("round on a follower: %+v", res)
	}
}

func TestCoordinatorRefusesForgedCosignature(t *testing.T) {
	tc := newTestCluster(t)
	tc.clients["w3"] = forging(tc.signers["w3"], "w3")
	r := tc.leader.r
	r.grow(4)
	res := tc.round(t)
	if len(res) != 1 || !res[0].Stored || strings.Join(res[0].Cosigners, ",") != "w1,w2" {
		t.Fatalf("round: %+v", res)
	}
	if len(res[0].Refusals) != 1 || res[0].Refusals[0].GetNodeId() != "w3" || res[0].Refusals[0].GetKind() != witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_INVALID_COSIGNATURE ||
		!strings.Contains(res[0].Refusals[0].GetReason(), "leader w1 refused the cosignature of node w3: the cosignature by key witnz.test/w3") {
		t.Fatalf("refusals: %v", res[0].Refusals)
	}
	// Recorded in the replicated state, and the forged line is not in the
	// stored note.
	recorded, n := r.f.CosignRefusals()
	if n != 1 || recorded[0].GetNodeId() != "w3" || recorded[0].GetRaftIndex() == 0 {
		t.Fatalf("recorded refusals: %v", recorded)
	}
	cp, _ := r.f.Checkpoint(table)
	if strings.Contains(string(cp.Note), "witnz.test/w3") {
		t.Fatalf("stored note carries the forged cosignature:\n%s", cp.Note)
	}
	waitAlert(t, tc.alerts, TypeCosignatureInvalid, "witness node w3 returned an invalid cosignature")
}

func TestCoordinatorRecordsRefusals(t *testing.T) {
	tc := newTestCluster(t)
	r := tc.leader.r
	r.grow(4)
	// w2's log was altered: every root it computes differs.
	tc.signers["w2"].cfg.Replica = tampered{FSMReplica(r.f)}
	tc.clients["w3"] = forging(tc.signers["w3"], "w3")
	res := tc.round(t)
	if len(res) != 1 || res[0].Stored || !errors.Is(res[0].Err, checkpoint.ErrQuorum) {
		t.Fatalf("round: %+v", res)
	}
	if _, ok := r.f.Checkpoint(table); ok {
		t.Fatal("a checkpoint without quorum was stored")
	}
	recorded, n := r.f.CosignRefusals()
	if n != 2 || recorded[0].GetNodeId() != "w2" || recorded[0].GetKind() != witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH ||
		recorded[0].GetProposerId() != "w1" || recorded[1].GetNodeId() != "w3" {
		t.Fatalf("recorded refusals: %v", recorded)
	}
	waitAlert(t, tc.alerts, TypeCosignRefused, "witness node w2 refused to cosign the checkpoint of public.audit_log at size 4 proposed by w1: node w2 computes root")
}

func TestCoordinatorSkipsUnansweredNodes(t *testing.T) {
	tc := newTestCluster(t)
	tc.clients["w3"] = clientFunc(func(context.Context, *witnessv1.CosignRequest) (*witnessv1.CosignResponse, error) {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("down"))
	})
	tc.leader.r.grow(2)
	res := tc.round(t)
	if len(res) != 1 || !res[0].Stored || res[0].Unanswered["w3"] == nil || len(res[0].Refusals) != 0 {
		t.Fatalf("round: %+v", res)
	}
	if _, n := tc.leader.r.f.CosignRefusals(); n != 0 {
		t.Fatal("an unreachable node was recorded as refusing")
	}
}

func waitAlert(t *testing.T, sink *alertSink, typ, message string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, a := range sink.list() {
			if a.GetType() == typ && strings.HasPrefix(a.GetMessage(), message) {
				if a.GetSource() != Source || a.GetTable() != table || a.GetSeverity() != alertv1.Severity_SEVERITY_CRITICAL || a.GetDetail().GetFields()["node_id"].GetStringValue() == "" {
					t.Fatalf("alert %v", a)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s alert %q; got %v", typ, message, sink.list())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func TestRefusalAlertID(t *testing.T) {
	r := &witnessv1.CosignRefusal{NodeId: "w2", ProposerId: "w1", Table: table, Size: 5, Root: make([]byte, 32), Kind: witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK}
	a := RefusalAlert(cluster, r)
	// The refusing node and the leader raise the same alert id.
	other := &witnessv1.CosignRefusal{NodeId: "w2", ProposerId: "w1", Table: table, Size: 5, Root: make([]byte, 32), Kind: witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK, Reason: "different words", AtMicros: 9}
	if RefusalAlert(cluster, other).GetAlertId() != a.GetAlertId() {
		t.Fatal("the same refusal gets two alert ids")
	}
	r2 := proto.Clone(r).(*witnessv1.CosignRefusal)
	r2.NodeId = "w3"
	if RefusalAlert(cluster, r2).GetAlertId() == a.GetAlertId() {
		t.Fatal("refusals by two nodes share an alert id")
	}
}

// With a log key the leader signs every checkpoint as the log, and a
// policy naming the log key is met.
func TestCoordinatorSignsAsTheLog(t *testing.T) {
	tc := newTestCluster(t)
	skey, vkey, err := checkpoint.GenerateLogKey("witnz/" + cluster)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := checkpoint.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	fmt.Fprintf(&text, "log %s\n", vkey)
	for _, id := range []string{"w1", "w2", "w3"} {
		fmt.Fprintf(&text, "witness %s %s\n", id, tc.signers[id].cfg.Key.VerifierKey())
	}
	text.WriteString("quorum 2\n")
	p, err := checkpoint.ParsePolicy([]byte(text.String()))
	if err != nil {
		t.Fatal(err)
	}
	tc.coord.cfg.Policy, tc.coord.cfg.LogSigner = p, ls
	tc.leader.r.grow(3)
	if res := tc.round(t); len(res) != 1 || !res[0].Stored {
		t.Fatalf("round: %+v", res)
	}
	cp, _ := tc.leader.r.f.Checkpoint(table)
	_, signers, err := p.Verify(cp.Note)
	if err != nil || signers[0].Role != checkpoint.RoleLog || len(signers) != 4 {
		t.Fatalf("stored note: %v, signers %+v", err, signers)
	}
}
