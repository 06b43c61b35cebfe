package node

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/witness/internal/fsm"
)

// record applies a membership record to f at index.
func record(t *testing.T, f *fsm.FSM, index uint64, at int64, c *witnessv1.MembershipCommand) {
	t.Helper()
	b, err := proto.Marshal(&witnessv1.Command{ProposedAtMicros: at, Command: &witnessv1.Command_Membership{Membership: c}})
	if err != nil {
		t.Fatal(err)
	}
	if res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: b}).(*fsm.Result); res.Err != nil {
		t.Fatal(res.Err)
	}
}

func TestRotationPicks(t *testing.T) {
	f := fsm.New()
	n := &Node{id: "w2", fsm: f, peers: map[string]Peer{}, rot: &rotation{cfg: RotationConfig{Pool: []Peer{
		{ID: "w9", RaftAddr: "w9:7011", APIAddr: "https://w9:7010"},
		{ID: "w5", RaftAddr: "w5:7011", APIAddr: "https://w5:7010"},
	}}}}
	for _, id := range []string{"w1", "w2", "w3", "w6"} {
		n.peers[id] = Peer{ID: id, RaftAddr: id + ":7011", APIAddr: "https://" + id + ":7010"}
	}
	done := witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE
	// w5 was promoted (at 200), then w4 (at 100: recorded earlier in time
	// than w5 but later in the log), and w1 rotated out to the pool.
	record(t, f, 1, 200, &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE, Phase: done, NodeId: "w5"})
	record(t, f, 2, 100, &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE, Phase: done, NodeId: "w4"})
	record(t, f, 3, 300, &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, Phase: done, NodeId: "w1", RaftAddress: "w1:7011", ApiAddress: "https://w1:7010", ToPool: true})

	cfg := config([]string{"w5", "w4", "w3", "w2"}, "w7")
	// Bootstrap voters (no recorded promotion) serve longest, by id.
	if got, want := n.longestServing(cfg), []string{"w2", "w3", "w4", "w5"}; !slices.Equal(got, want) {
		t.Fatalf("longestServing = %v, want %v", got, want)
	}
	// --pool first, then the replicated pool, then --peer nodes; members
	// (w5 is a voter) never.
	var ids []string
	for _, p := range n.standby(cfg) {
		ids = append(ids, p.ID)
	}
	if want := []string{"w9", "w1", "w6"}; !slices.Equal(ids, want) {
		t.Fatalf("standby = %v, want %v", ids, want)
	}
	// A standby node whose Raft address a member uses is left out.
	cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Nonvoter, ID: "w8", Address: "w9:7011"})
	ids = ids[:0]
	for _, p := range n.standby(cfg) {
		ids = append(ids, p.ID)
	}
	if want := []string{"w1", "w6"}; !slices.Equal(ids, want) {
		t.Fatalf("standby with w9's address taken = %v, want %v", ids, want)
	}
}

func TestNoReachableStandby(t *testing.T) {
	dir := t.TempDir()
	if err := pki.Init(dir, []mtls.Identity{mtls.Witness("w1")}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := mtls.Load(mtls.Files(pki.PathsFor(dir, mtls.Witness("w1"))))
	if err != nil {
		t.Fatal(err)
	}
	m := &membership{n: &Node{id: "w1", log: slog.New(slog.DiscardHandler)}, tls: tlsCfg}
	_, err = m.reachableStandby(t.Context(), nil)
	if !errors.Is(err, ErrNoStandby) || !strings.Contains(err.Error(), "the pool is empty") {
		t.Fatalf("empty pool: %v", err)
	}
	// Nothing listens there: the TLS handshake fails or times out.
	down := Peer{ID: "w4", RaftAddr: testenv.FreeAddr(t), APIAddr: "https://" + testenv.FreeAddr(t)}
	_, err = m.reachableStandby(t.Context(), []Peer{down})
	if !errors.Is(err, ErrNoStandby) || !strings.Contains(err.Error(), "w4: ") {
		t.Fatalf("unreachable standby: %v", err)
	}
}
