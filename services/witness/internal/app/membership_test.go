package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/libs/tlog"
	"github.com/witnz/witnz/services/witness/internal/config"
)

var admin = mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}

// addNode starts a node that is not in the cluster: its --peer list names
// only itself, so whatever it knows of the others it learns from the
// replicated state.
func (c *cluster) addNode(id string) *testNode {
	c.t.Helper()
	raftAddr, apiAddr := testenv.FreeAddr(c.t), testenv.FreeAddr(c.t)
	args := append([]string{
		"--node-id=" + id,
		"--data-dir=" + filepath.Join(c.t.TempDir(), id),
		"--listen=" + apiAddr,
		"--raft-listen=" + raftAddr,
		"--log-level=debug",
		fmt.Sprintf("--peer=%s=%s,https://%s", id, raftAddr, apiAddr),
	}, tlsFiles(c.pkiDir, mtls.Witness(id))...)
	cfg, err := config.Parse(args, func(string) string { return "" })
	if err != nil {
		c.t.Fatal(err)
	}
	cfg.Raft = c.nodes[0].cfg.Raft
	n := &testNode{id: id, cfg: cfg}
	c.nodes = append(c.nodes, n)
	c.start(n)
	return n
}

func (c *cluster) members(n *testNode, hc *http.Client) witnessv1connect.MembershipServiceClient {
	return witnessv1connect.NewMembershipServiceClient(hc, apiURL(n), rpcserver.ClientOptions()...)
}

func apiURL(n *testNode) string { return "https://" + n.cfg.Listen }

// byURL finds the node serving an API URL.
func (c *cluster) byURL(url string) *testNode {
	for _, n := range c.nodes {
		if apiURL(n) == url {
			return n
		}
	}
	return nil
}

// redirect returns the node a FAILED_PRECONDITION answer names in its
// witnz-leader header, or nil.
func (c *cluster) redirect(err error) *testNode {
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeFailedPrecondition {
		return nil
	}
	return c.byURL(cerr.Meta().Get("witnz-leader"))
}

// wantCode fails unless err has code and its message contains every part.
func wantCode(t *testing.T, what string, err error, code connect.Code, parts ...string) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("%s: %v, want %v", what, err, code)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("%s: %q does not say %q", what, err, p)
		}
	}
}

func voters(ms []*witnessv1.Member) []string {
	var out []string
	for _, m := range ms {
		if m.Voter {
			out = append(out, m.Id)
		}
	}
	slices.Sort(out)
	return out
}

// appender appends pre-built batches in order, each until it is
// acknowledged, following the leader wherever it goes, until stopped.
type appender struct {
	c       *cluster
	batches [][]*witnessv1.Entry
	stop    chan struct{}
	done    chan struct{}

	mu    sync.Mutex
	acked int
	sizes []uint64
	err   error
}

func (c *cluster) startAppender(batches [][]*witnessv1.Entry, at *testNode) *appender {
	a := &appender{c: c, batches: batches, stop: make(chan struct{}), done: make(chan struct{})}
	go a.run(at)
	return a
}

func (a *appender) ackedCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acked
}

func (a *appender) run(target *testNode) {
	defer close(a.done)
	fail := func(err error) {
		a.mu.Lock()
		a.err = err
		a.mu.Unlock()
	}
	for i, b := range a.batches {
		select {
		case <-a.stop:
			return
		default:
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := a.c.ingestClient(target).Append(ctx, connect.NewRequest(&witnessv1.AppendRequest{Table: table, Entries: b}))
			cancel()
			if err == nil {
				a.mu.Lock()
				a.acked, a.sizes = i+1, append(a.sizes, resp.Msg.Size)
				a.mu.Unlock()
				break
			}
			if time.Now().After(deadline) {
				fail(fmt.Errorf("batch %d not acknowledged within 60s: %v", i, err))
				return
			}
			if n := a.c.redirect(err); n != nil {
				target = n
				continue
			}
			// No leader known, a lost leadership (resending is safe:
			// replays are deduplicated) or a node going away: try the
			// next running node after a moment.
			running := a.c.running()
			target = running[(slices.Index(running, target)+1)%len(running)]
			time.Sleep(50 * time.Millisecond) // retry pacing, not a wait for an event
		}
	}
}

// finish stops the appender and returns how many batches were acknowledged.
func (a *appender) finish(t *testing.T) int {
	t.Helper()
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		t.Fatal(a.err)
	}
	for i := 1; i < len(a.sizes); i++ {
		if a.sizes[i] <= a.sizes[i-1] {
			t.Fatalf("acknowledged sizes went from %d to %d", a.sizes[i-1], a.sizes[i])
		}
	}
	return a.acked
}

type recordSummary struct {
	op, phase, node, replacement string
}

func summarize(events []*witnessv1.MembershipEvent) []recordSummary {
	out := make([]recordSummary, len(events))
	for i, e := range events {
		c := e.Change
		out[i] = recordSummary{
			op:          strings.TrimPrefix(c.Op.String(), "MEMBERSHIP_OP_"),
			phase:       strings.TrimPrefix(c.Phase.String(), "MEMBERSHIP_PHASE_"),
			node:        c.NodeId,
			replacement: c.ReplacementId,
		}
	}
	return out
}

func TestMembership(t *testing.T) {
	c := newCluster(t)
	if err := pki.Init(c.pkiDir, []mtls.Identity{admin, mtls.Witness("w4"), mtls.Witness("w5")}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	op := mustTLS(t, c.pkiDir, admin).HTTPClient()
	gateway := mustTLS(t, c.pkiDir, mtls.Service("gateway")).HTTPClient()
	rows := newRowSource(t)
	want := &expected{log: tlog.New()}
	leader := c.leader()

	if _, err := c.ingestClient(leader).RegisterTable(t.Context(), connect.NewRequest(&witnessv1.RegisterTableRequest{Table: table, Buckets: buckets})); err != nil {
		t.Fatal(err)
	}
	appendN := func(n int) {
		t.Helper()
		for range n {
			es := rows.batch(t, 50)
			want.add(t, es)
			appendBatch(t, c.ingestClient(leader), es)
		}
	}
	appendN(12)
	// The leader's log is compacted behind a snapshot, so a node that joins
	// now can only catch up from the snapshot.
	pollUntil(t, 10*time.Second, "a leader snapshot past the first entries", func() error {
		if snap, _ := strconv.ParseUint(leader.app.node.Raft().Stats()["last_snapshot_index"], 10, 64); snap < 10 {
			return fmt.Errorf("last snapshot at %d", snap)
		}
		return nil
	})
	followers := func() []*testNode {
		var out []*testNode
		for _, n := range c.running() {
			if n != leader {
				out = append(out, n)
			}
		}
		return out
	}

	t.Run("refusals", func(t *testing.T) {
		ctx := t.Context()
		_, err := c.members(leader, gateway).AddNode(ctx, connect.NewRequest(&witnessv1.AddNodeRequest{Id: "w4", RaftAddress: "127.0.0.1:1", ApiAddress: "https://127.0.0.1:2"}))
		wantCode(t, "AddNode as gateway", err, connect.CodePermissionDenied, "AddNode requires an operator identity (spiffe://witnz/operator/<name>); this client is spiffe://witnz/service/gateway")
		_, err = c.members(leader, c.ingest).RemoveNode(ctx, connect.NewRequest(&witnessv1.RemoveNodeRequest{Id: "w2"}))
		wantCode(t, "RemoveNode as cdc-ingest", err, connect.CodePermissionDenied, "spiffe://witnz/service/cdc-ingest")
		// Reads are open to any witnz identity; over the Connect protocol
		// here, gRPC everywhere else.
		if _, err := witnessv1connect.NewMembershipServiceClient(gateway, apiURL(leader)).ListMembers(ctx, connect.NewRequest(&witnessv1.ListMembersRequest{})); err != nil {
			t.Fatalf("ListMembers as gateway: %v", err)
		}

		f := followers()[0]
		_, err = c.members(f, op).RemoveNode(ctx, connect.NewRequest(&witnessv1.RemoveNodeRequest{Id: "w2"}))
		wantCode(t, "RemoveNode on a follower", err, connect.CodeFailedPrecondition, fmt.Sprintf("not the leader; leader is %s at %s", leader.id, apiURL(leader)))
		if got := c.redirect(err); got != leader {
			t.Fatalf("follower's witnz-leader header names %v, want %s", got, leader.id)
		}

		m := c.members(leader, op)
		other := followers()[0].id
		_, err = m.RemoveNode(ctx, connect.NewRequest(&witnessv1.RemoveNodeRequest{Id: other}))
		wantCode(t, "removing a voter of 3", err, connect.CodeFailedPrecondition, fmt.Sprintf("removing voter %s would leave 2 voters, fewer than the minimum of 3 (--min-voters)", other))
		_, err = m.RemoveNode(ctx, connect.NewRequest(&witnessv1.RemoveNodeRequest{Id: leader.id}))
		wantCode(t, "removing the leader of 3", err, connect.CodeFailedPrecondition, "fewer than the minimum of 3")
		_, err = m.RemoveNode(ctx, connect.NewRequest(&witnessv1.RemoveNodeRequest{Id: "w9"}))
		wantCode(t, "removing an unknown node", err, connect.CodeNotFound, "not a member of the cluster: w9 (members: w1 (voter), w2 (voter), w3 (voter))")
		_, err = m.TransferLeadership(ctx, connect.NewRequest(&witnessv1.TransferLeadershipRequest{ToId: "w9"}))
		wantCode(t, "transfer to an unknown node", err, connect.CodeNotFound, "w9")
		_, err = m.AddNode(ctx, connect.NewRequest(&witnessv1.AddNodeRequest{Id: "w 4", RaftAddress: "127.0.0.1:1", ApiAddress: "https://127.0.0.1:2"}))
		wantCode(t, "AddNode with a bad id", err, connect.CodeInvalidArgument, `id "w 4" must be 1-63 letters`)
		_, err = m.AddNode(ctx, connect.NewRequest(&witnessv1.AddNodeRequest{Id: "w4", RaftAddress: c.nodes[1].cfg.RaftAdvertise, ApiAddress: "https://127.0.0.1:2"}))
		wantCode(t, "AddNode at a member's Raft address", err, connect.CodeAlreadyExists, "the Raft address "+c.nodes[1].cfg.RaftAdvertise+" belongs to member w2")
		_, err = m.Rotate(ctx, connect.NewRequest(&witnessv1.RotateRequest{OutId: "w9", InId: "w4", InRaftAddress: "127.0.0.1:1", InApiAddress: "https://127.0.0.1:2"}))
		wantCode(t, "rotating an unknown node out", err, connect.CodeNotFound, "w9")

		resp, err := m.ListMembers(ctx, connect.NewRequest(&witnessv1.ListMembersRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Msg.HistoryTotal != 0 || resp.Msg.MinVoters != 3 || len(resp.Msg.Members) != 3 {
			t.Fatalf("after refusals: %v; want no records, min_voters 3 and 3 members", resp.Msg)
		}
	})

	t.Run("a node that does not catch up stays a non-voter", func(t *testing.T) {
		raftAddr, apiAddr := testenv.FreeAddr(t), testenv.FreeAddr(t) // nothing serves them
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		m := c.members(leader, op)
		_, err := m.AddNode(ctx, connect.NewRequest(&witnessv1.AddNodeRequest{Id: "w6", RaftAddress: raftAddr, ApiAddress: apiAddr, Voter: true}))
		wantCode(t, "AddNode of a node that is not running", err, connect.CodeDeadlineExceeded,
			"the new node did not catch up: w6 at https://"+apiAddr+" did not reach the leader's commit index", "it stays a non-voter")
		lm, err := m.ListMembers(t.Context(), connect.NewRequest(&witnessv1.ListMembersRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if got := voters(lm.Msg.Members); len(lm.Msg.Members) != 4 || !slices.Equal(got, []string{"w1", "w2", "w3"}) {
			t.Fatalf("members %v, want w6 as a non-voter", lm.Msg.Members)
		}
		if _, err := m.RemoveNode(t.Context(), connect.NewRequest(&witnessv1.RemoveNodeRequest{Id: "w6"})); err != nil {
			t.Fatalf("removing the non-voter: %v", err)
		}
	})

	var w4 *testNode
	t.Run("a fourth node joins from a snapshot", func(t *testing.T) {
		w4 = c.addNode("w4")
		resp, err := c.members(leader, op).AddNode(t.Context(), connect.NewRequest(&witnessv1.AddNodeRequest{
			Id: "w4", RaftAddress: w4.cfg.RaftAdvertise, ApiAddress: w4.cfg.Listen, Voter: true,
		}))
		if err != nil {
			t.Fatal(err)
		}
		if got := voters(resp.Msg.Members); !slices.Equal(got, []string{"w1", "w2", "w3", "w4"}) || resp.Msg.CaughtUpIndex == 0 || len(resp.Msg.Steps) != 3 {
			t.Fatalf("AddNode = voters %v, caught up at %d, steps %q", got, resp.Msg.CaughtUpIndex, resp.Msg.Steps)
		}
		// It caught up from an installed snapshot, not from the log.
		if snap := w4.app.node.Raft().Stats()["last_snapshot_index"]; snap == "0" || snap == "" {
			t.Fatalf("w4 has no snapshot (last_snapshot_index %q)", snap)
		}
		appendN(2)
		c.sameLog(uint64(len(want.entries)), want.root(), c.running()...)

		// Every node knows every API address: w4 learned the others' from
		// the records, the others learned w4's.
		for _, n := range c.running() {
			lm, err := c.members(n, gateway).ListMembers(t.Context(), connect.NewRequest(&witnessv1.ListMembersRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range lm.Msg.Members {
				if want := apiURL(c.byID(m.Id)); m.ApiAddress != want {
					t.Errorf("%s knows %s at %q, want %q", n.id, m.Id, m.ApiAddress, want)
				}
			}
			if lm.Msg.LeaderApiAddress != apiURL(leader) {
				t.Errorf("%s names the leader at %q", n.id, lm.Msg.LeaderApiAddress)
			}
		}
	})

	t.Run("leadership transfer", func(t *testing.T) {
		// Not to a node the leader cannot reach.
		var down *testNode
		for _, n := range followers() {
			if n != w4 {
				down = n
				break
			}
		}
		c.stop(down)
		m := c.members(leader, op)
		pollUntil(t, 20*time.Second, "the leader reports "+down.id+" unreachable", func() error {
			lm, err := m.ListMembers(t.Context(), connect.NewRequest(&witnessv1.ListMembersRequest{}))
			if err != nil {
				return err
			}
			if !slices.Equal(lm.Msg.Unreachable, []string{down.id}) {
				return fmt.Errorf("unreachable %v", lm.Msg.Unreachable)
			}
			return nil
		})
		_, err := m.TransferLeadership(t.Context(), connect.NewRequest(&witnessv1.TransferLeadershipRequest{ToId: down.id}))
		wantCode(t, "transfer to a stopped node", err, connect.CodeFailedPrecondition, down.id+" does not answer the leader's heartbeats; pick another voter")
		c.start(down)
		c.sameLog(uint64(len(want.entries)), want.root(), c.running()...)

		old := leader
		resp, err := c.members(leader, op).TransferLeadership(t.Context(), connect.NewRequest(&witnessv1.TransferLeadershipRequest{ToId: "w4"}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Msg.PreviousLeaderId != old.id || resp.Msg.LeaderId != "w4" || resp.Msg.LeaderApiAddress != apiURL(w4) {
			t.Fatalf("TransferLeadership = %v", resp.Msg)
		}
		if leader = c.leader(); leader != w4 {
			t.Fatalf("leader is %s, want w4", leader.id)
		}
		// w4 is in no node's --peer list: the old leader names it from the
		// replicated state.
		_, err = c.ingestClient(old).Append(t.Context(), connect.NewRequest(&witnessv1.AppendRequest{Table: table, Entries: rows.batch(t, 1)}))
		wantCode(t, "Append on the old leader", err, connect.CodeFailedPrecondition, "not the leader; leader is w4 at "+apiURL(w4))
		if c.redirect(err) != w4 {
			t.Fatalf("witnz-leader header does not name w4: %v", err)
		}
		appendN(1)
	})

	t.Run("a leader asked to remove itself hands leadership over first", func(t *testing.T) {
		_, err := c.members(w4, op).RemoveNode(t.Context(), connect.NewRequest(&witnessv1.RemoveNodeRequest{Id: "w4"}))
		wantCode(t, "RemoveNode w4 on w4", err, connect.CodeFailedPrecondition, "remove w4: this node led the cluster and handed leadership to", "send the request to the new leader")
		next := c.redirect(err)
		if next == nil || next == w4 {
			t.Fatalf("the answer names no other leader: %v", err)
		}
		resp, err := c.members(next, op).RemoveNode(t.Context(), connect.NewRequest(&witnessv1.RemoveNodeRequest{Id: "w4"}))
		if err != nil {
			t.Fatal(err)
		}
		if got := voters(resp.Msg.Members); !slices.Equal(got, []string{"w1", "w2", "w3"}) || len(resp.Msg.Members) != 3 {
			t.Fatalf("members after removing w4: %v", resp.Msg.Members)
		}
		c.stop(w4)
		leader = c.leader()
		appendN(1)
		c.sameLog(uint64(len(want.entries)), want.root(), c.running()...)
	})

	var w5 *testNode
	t.Run("rotate w1 out and w5 in under a stream of appends", func(t *testing.T) {
		w1 := c.byID("w1")
		w5 = c.addNode("w5")
		var batches [][]*witnessv1.Entry
		for range 400 {
			batches = append(batches, rows.batch(t, 5))
		}
		a := c.startAppender(batches, leader)
		pollUntil(t, 20*time.Second, "appends flowing", func() error {
			if a.ackedCount() < 5 {
				return errors.New("fewer than 5 batches acknowledged")
			}
			return nil
		})
		// The node rotated out leads: it must hand leadership over first.
		if l := c.leader(w5); l != w1 { // w5 knows no leader until it joins
			if _, err := c.members(l, op).TransferLeadership(t.Context(), connect.NewRequest(&witnessv1.TransferLeadershipRequest{ToId: "w1"})); err != nil {
				t.Fatal(err)
			}
		}
		req := &witnessv1.RotateRequest{OutId: "w1", InId: "w5", InRaftAddress: w5.cfg.RaftAdvertise, InApiAddress: apiURL(w5)}
		_, err := c.members(w1, op).Rotate(t.Context(), connect.NewRequest(req))
		wantCode(t, "Rotate on w1", err, connect.CodeFailedPrecondition, "rotate w1 out: this node led the cluster and handed leadership to", "send the request to the new leader")
		target := c.redirect(err)
		if target == nil || target == w1 {
			t.Fatalf("the answer names no other leader: %v", err)
		}
		resp, err := c.members(target, op).Rotate(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		if got := voters(resp.Msg.Members); !slices.Equal(got, []string{"w2", "w3", "w5"}) || len(resp.Msg.Members) != 3 {
			t.Fatalf("members after the rotation: %v (steps %q)", resp.Msg.Members, resp.Msg.Steps)
		}
		wantSteps := []string{"added w5 as a non-voter", "w5 caught up", "promoted w5 to voter", "removed w1"}
		if len(resp.Msg.Steps) != len(wantSteps) {
			t.Fatalf("steps %q", resp.Msg.Steps)
		}
		for i, s := range wantSteps {
			if !strings.HasPrefix(resp.Msg.Steps[i], s) {
				t.Fatalf("step %d is %q, want %q...", i, resp.Msg.Steps[i], s)
			}
		}
		// Appends go on through the change.
		at := a.ackedCount()
		pollUntil(t, 20*time.Second, "appends after the rotation", func() error {
			if a.ackedCount() < at+5 {
				return fmt.Errorf("%d batches acknowledged, want %d", a.ackedCount(), at+5)
			}
			return nil
		})
		acked := a.finish(t)
		c.stop(w1)
		for _, b := range batches[:acked] {
			want.add(t, b)
		}
		leader = c.leader()
		// Every acknowledged entry is there, in order, on every node.
		c.sameLog(uint64(len(want.entries)), want.root(), c.running()...)
		t.Logf("rotation under load: %d batches acknowledged, log of %d entries", acked, len(want.entries))
	})

	t.Run("the history lists every change and who made it", func(t *testing.T) {
		wantRecords := []recordSummary{
			{"ADD_NONVOTER", "STARTED", "w6", ""}, {"ADD_NONVOTER", "DONE", "w6", ""},
			{"PROMOTE", "FAILED", "w6", ""},
			{"REMOVE", "STARTED", "w6", ""}, {"REMOVE", "DONE", "w6", ""},
			{"ADD_NONVOTER", "STARTED", "w4", ""}, {"ADD_NONVOTER", "DONE", "w4", ""},
			{"PROMOTE", "STARTED", "w4", ""}, {"PROMOTE", "DONE", "w4", ""},
			{"TRANSFER_LEADERSHIP", "STARTED", "w4", ""},
			{"TRANSFER_LEADERSHIP", "STARTED", "", ""},
			{"REMOVE", "STARTED", "w4", ""}, {"REMOVE", "DONE", "w4", ""},
		}
		rotation := []recordSummary{
			{"ROTATE", "STARTED", "w1", "w5"},
			{"ADD_NONVOTER", "STARTED", "w5", ""}, {"ADD_NONVOTER", "DONE", "w5", ""},
			{"PROMOTE", "STARTED", "w5", ""}, {"PROMOTE", "DONE", "w5", ""},
			{"REMOVE", "STARTED", "w1", ""}, {"REMOVE", "DONE", "w1", ""},
			{"ROTATE", "DONE", "w1", "w5"},
		}
		for _, n := range c.running() {
			resp, err := c.members(n, gateway).ListMembers(t.Context(), connect.NewRequest(&witnessv1.ListMembersRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			got := summarize(resp.Msg.History)
			// Leadership moved to w1 unless it already led, then away
			// from it.
			if i := len(wantRecords); len(got) > i && got[i] == (recordSummary{"TRANSFER_LEADERSHIP", "STARTED", "w1", ""}) {
				got = slices.Delete(got, i, i+1)
			}
			if i := len(wantRecords); len(got) > i && got[i] == (recordSummary{"TRANSFER_LEADERSHIP", "STARTED", "", ""}) {
				got = slices.Delete(got, i, i+1)
			} else {
				t.Fatalf("%s: no record of w1 handing leadership over before the rotation: %v", n.id, got)
			}
			if !slices.Equal(got, append(slices.Clone(wantRecords), rotation...)) {
				t.Fatalf("%s history:\n%v\nwant\n%v", n.id, got, append(slices.Clone(wantRecords), rotation...))
			}
			if resp.Msg.HistoryTotal != uint64(len(resp.Msg.History)) {
				t.Fatalf("%s: %d records of %d", n.id, len(resp.Msg.History), resp.Msg.HistoryTotal)
			}
			var rotationStart uint64
			for _, e := range resp.Msg.History {
				if e.Change.By != admin.String() || e.AtMicros == 0 || e.RaftIndex == 0 {
					t.Fatalf("%s: record %v does not name the operator, its time and its index", n.id, e)
				}
				if e.Change.Op == witnessv1.MembershipOp_MEMBERSHIP_OP_ROTATE && e.Change.Phase == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED {
					rotationStart = e.RaftIndex
				} else if rotationStart != 0 && e.Change.Operation != rotationStart {
					t.Fatalf("%s: rotation step %v is not filed under the rotation at %d", n.id, e, rotationStart)
				}
				if e.Change.Phase == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE && e.Change.Op != witnessv1.MembershipOp_MEMBERSHIP_OP_ROTATE && e.Change.ConfigurationIndex == 0 {
					t.Fatalf("%s: %v names no configuration index", n.id, e)
				}
			}
		}
		// w5 caught up from a snapshot that holds the first records: they
		// travel in snapshots.
		if snap := w5.app.node.Raft().Stats()["last_snapshot_index"]; snap == "0" || snap == "" {
			t.Fatalf("w5 has no snapshot (last_snapshot_index %q)", snap)
		}
	})
}

func (c *cluster) byID(id string) *testNode {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}
