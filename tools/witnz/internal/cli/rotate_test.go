package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
)

// fakeMembership plays one witness node: a follower sends every change
// to leaderURL, the leader answers with canned results.
type fakeMembership struct {
	witnessv1connect.UnimplementedMembershipServiceHandler
	id, leaderURL string
	leader        bool

	mu      sync.Mutex
	rotates []*witnessv1.RotateRequest
	callers []string
}

func (f *fakeMembership) redirect() error {
	err := connect.NewError(connect.CodeFailedPrecondition, errors.New("not the leader; leader is w2 at "+f.leaderURL))
	err.Meta().Set("witnz-leader", f.leaderURL)
	return err
}

var fakeMembers = []*witnessv1.Member{
	{Id: "w2", RaftAddress: "127.0.0.1:7021", ApiAddress: "https://127.0.0.1:7020", Voter: true, Leader: true},
	{Id: "w3", RaftAddress: "127.0.0.1:7031", ApiAddress: "https://127.0.0.1:7030", Voter: true},
	{Id: "w4", RaftAddress: "127.0.0.1:7041", ApiAddress: "https://127.0.0.1:7040", Voter: true},
}

func (f *fakeMembership) Rotate(ctx context.Context, req *connect.Request[witnessv1.RotateRequest]) (*connect.Response[witnessv1.RotateResponse], error) {
	if !f.leader {
		return nil, f.redirect()
	}
	id, _ := mtls.PeerIdentity(ctx)
	f.mu.Lock()
	f.rotates, f.callers = append(f.rotates, req.Msg), append(f.callers, id.String())
	f.mu.Unlock()
	if req.Msg.OutId == "w9" {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("not a member of the cluster: w9 (members: w1 (voter), w2 (voter), w3 (voter))"))
	}
	return connect.NewResponse(&witnessv1.RotateResponse{
		Steps:         []string{"added w4 as a non-voter", "w4 caught up: applied index 40", "promoted w4 to voter", "removed w1"},
		CaughtUpIndex: 40,
		Members:       fakeMembers,
	}), nil
}

func (f *fakeMembership) ListMembers(context.Context, *connect.Request[witnessv1.ListMembersRequest]) (*connect.Response[witnessv1.ListMembersResponse], error) {
	resp := &witnessv1.ListMembersResponse{
		NodeId: f.id, LeaderId: "w2", LeaderApiAddress: f.leaderURL, Term: 3, ConfigurationIndex: 41, MinVoters: 3,
		Members:      fakeMembers,
		HistoryTotal: 2,
		History: []*witnessv1.MembershipEvent{
			{RaftIndex: 30, AtMicros: 1_767_225_600_000_000, Change: &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_ROTATE, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, NodeId: "w1", ReplacementId: "w4", By: "spiffe://witnz/operator/admin"}},
			{RaftIndex: 41, AtMicros: 1_767_225_601_000_000, Change: &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE, NodeId: "w1", By: "spiffe://witnz/operator/admin", ConfigurationIndex: 41, Operation: 30}},
		},
	}
	if f.leader {
		resp.Unreachable = []string{"w3"}
		resp.Rotation = &witnessv1.RotationStatus{RotateEverySeconds: 86400, ActiveCount: 3, Pool: []string{"w4"}, LastRunMicros: 1_767_225_601_000_000, LastResult: "rotated w1 out and w4 in", Rotations: 1}
	}
	return connect.NewResponse(resp), nil
}

// serveFake serves a fake node with a witness certificate and returns its
// URL.
func serveFake(t *testing.T, dir string, f *fakeMembership) string {
	t.Helper()
	p := pki.PathsFor(dir, mtls.Witness(f.id))
	cfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := rpcserver.New(rpcserver.Config{Name: "fake-witness", Addr: "127.0.0.1:0", TLS: cfg.Server(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	path, h := witnessv1connect.NewMembershipServiceHandler(f, srv.HandlerOptions()...)
	srv.Handle(path, h, witnessv1connect.MembershipServiceName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return "https://" + srv.Addr().String()
}

func TestWitnessMembershipCommands(t *testing.T) {
	dir := t.TempDir()
	if err := pki.Init(dir, []mtls.Identity{mtls.Witness("w1"), mtls.Witness("w2"), {Kind: mtls.KindOperator, Name: "admin"}}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	leader := &fakeMembership{id: "w2", leader: true}
	leaderURL := serveFake(t, dir, leader)
	leader.leaderURL = leaderURL
	follower := &fakeMembership{id: "w1", leaderURL: leaderURL}
	followerURL := serveFake(t, dir, follower)
	op := pki.PathsFor(dir, mtls.Identity{Kind: mtls.KindOperator, Name: "admin"})
	tlsFlags := []string{"--tls-cert", op.Cert, "--tls-key", op.Key, "--tls-ca", op.CA}
	// The first URL answers nothing: the command moves on to the next.
	witnesses := []string{"--witness", "https://127.0.0.1:1", "--witness", followerURL}

	t.Run("rotate follows the leader", func(t *testing.T) {
		out, _, err := run(t, noEnv, append(append([]string{"witness", "rotate", "--out", "w1", "--in", "w4=127.0.0.1:7041,https://127.0.0.1:7040"}, witnesses...), tlsFlags...)...)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"added w4 as a non-voter\n", "removed w1\n", "ID  ROLE   LEADER  RAFT            API", "w2  voter  *       127.0.0.1:7021  https://127.0.0.1:7020"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		leader.mu.Lock()
		defer leader.mu.Unlock()
		if len(leader.rotates) != 1 || leader.rotates[0].OutId != "w1" || leader.rotates[0].InId != "w4" || leader.rotates[0].InRaftAddress != "127.0.0.1:7041" || leader.rotates[0].InApiAddress != "https://127.0.0.1:7040" {
			t.Fatalf("the leader got %v", leader.rotates)
		}
		if leader.callers[0] != "spiffe://witnz/operator/admin" {
			t.Fatalf("the leader was called by %s", leader.callers[0])
		}
	})

	t.Run("rotate without a pair lets the leader pick from its pool", func(t *testing.T) {
		if _, _, err := run(t, noEnv, append(append([]string{"witness", "rotate"}, witnesses...), tlsFlags...)...); err != nil {
			t.Fatal(err)
		}
		leader.mu.Lock()
		defer leader.mu.Unlock()
		last := leader.rotates[len(leader.rotates)-1]
		if last.OutId != "" || last.InId != "" || last.InRaftAddress != "" || last.InApiAddress != "" {
			t.Fatalf("the leader got %v, want an empty request", last)
		}
	})

	t.Run("rotate --json", func(t *testing.T) {
		out, _, err := run(t, noEnv, append(append([]string{"witness", "rotate", "--json", "--out", "w1", "--in", "w4=127.0.0.1:7041,https://127.0.0.1:7040"}, witnesses...), tlsFlags...)...)
		if err != nil {
			t.Fatal(err)
		}
		var got ChangeResult
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if got.CaughtUpIndex != 40 || len(got.Steps) != 4 || len(got.Members) != 3 || !got.Members[0].Leader {
			t.Fatalf("rotate --json = %+v", got)
		}
	})

	t.Run("the cluster's refusal is one line", func(t *testing.T) {
		_, _, err := run(t, noEnv, append(append([]string{"witness", "rotate", "--out", "w9", "--in", "w4=127.0.0.1:7041,https://127.0.0.1:7040"}, witnesses...), tlsFlags...)...)
		if err == nil || err.Error() != "rotate w9 out, w4 in on witness "+leaderURL+": not a member of the cluster: w9 (members: w1 (voter), w2 (voter), w3 (voter))" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("members --json asks the leader", func(t *testing.T) {
		out, _, err := run(t, noEnv, append(append([]string{"witness", "members", "--json"}, witnesses...), tlsFlags...)...)
		if err != nil {
			t.Fatal(err)
		}
		var got MembersResult
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		want := MembersResult{
			NodeID: "w2", LeaderID: "w2", LeaderAPIAddress: leaderURL, Term: 3, ConfigurationIndex: 41, MinVoters: 3,
			Members: memberInfos(fakeMembers), Unreachable: []string{"w3"}, HistoryTotal: 2,
			History: []MembershipRecord{
				{RaftIndex: 30, At: "2026-01-01T00:00:00Z", Op: "rotate", Phase: "started", NodeID: "w1", ReplacementID: "w4", By: "spiffe://witnz/operator/admin"},
				{RaftIndex: 41, At: "2026-01-01T00:00:01Z", Op: "remove", Phase: "done", NodeID: "w1", By: "spiffe://witnz/operator/admin", ConfigurationIndex: 41, Operation: 30},
			},
			Rotation: &RotationInfo{EverySeconds: 86400, ActiveCount: 3, Pool: []string{"w4"}, LastRun: "2026-01-01T00:00:01Z", LastResult: "rotated w1 out and w4 in", Rotations: 1},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("members --json (-want +got):\n%s", diff)
		}
	})

	t.Run("members", func(t *testing.T) {
		out, _, err := run(t, noEnv, append(append([]string{"witness", "members"}, witnesses...), tlsFlags...)...)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"members as w2 sees them (leader w2, term 3, configuration index 41, --min-voters 3)", "HEARTBEATS", "FAILING", "membership changes (last 2 of 2):", "rotate  started  w1 -> w4  by spiffe://witnz/operator/admin", "configuration index 41",
			"rotation: every 24h0m0s, keeping 3 voters; standby nodes: w4", "last scheduled step (2026-01-01T00:00:01Z): rotated w1 out and w4 in (1 completed)"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
}

func TestWitnessMembershipErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"witness", "frob"}, "unknown subcommand `witnz witness frob`"},
		{[]string{"witness", "rotate", "--in", "w4=a:1,b:2"}, "--out is required"},
		{[]string{"witness", "rotate", "--out", "w1"}, "--in is required"},
		{[]string{"witness", "rotate", "--out", "w1", "--in", "w4"}, `--in "w4": want ID=RAFT_HOST:PORT,API_HOST:PORT`},
		{[]string{"witness", "add"}, "--node is required"},
		{[]string{"witness", "remove"}, "--node is required"},
		{[]string{"witness", "members", "--witness", "http://x:1"}, "must be an https:// URL"},
		{[]string{"witness", "members", "--stack", "/nonexistent/stack.json"}, "make up"},
	} {
		_, _, err := run(t, noEnv, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("witnz %s: error %v, want one line containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	// Without a stack file or --witness the command says where to look.
	t.Chdir(t.TempDir())
	if _, _, err := run(t, noEnv, "witness", "members"); err == nil || !strings.Contains(err.Error(), "no witness to ask") {
		t.Errorf("witnz witness members without witnesses: %v", err)
	}
	out, _, err := run(t, noEnv, "witness", "-h")
	if err != nil || !strings.Contains(out, "witnz witness rotate [--out ID --in ID=RAFT_ADDR,API_ADDR]") {
		t.Errorf("witnz witness -h = %q, %v", out, err)
	}
}
