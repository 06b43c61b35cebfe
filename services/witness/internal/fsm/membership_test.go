package fsm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

const operator = "spiffe://witnz/operator/admin"

func (h *harness) member(c *witnessv1.MembershipCommand) *Result {
	h.t.Helper()
	return h.apply(&witnessv1.Command{ProposedAtMicros: 1_700_000_000_000_000 + int64(h.index), Command: &witnessv1.Command_Membership{Membership: c}})
}

func addRecord(phase witnessv1.MembershipPhase, id, raft, api string) *witnessv1.MembershipCommand {
	return &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_ADD_NONVOTER, Phase: phase, NodeId: id, RaftAddress: raft, ApiAddress: api, By: operator}
}

func TestMembershipRecords(t *testing.T) {
	h := newHarness(t)
	started := addRecord(witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")
	started.Members = []*witnessv1.NodeAddress{
		{Id: "w1", RaftAddress: "10.0.0.1:7011", ApiAddress: "https://10.0.0.1:7010"},
		// The leader's --peer list may be stale: it never overrides an
		// address an operator gave.
		{Id: "w4", RaftAddress: "10.9.9.9:1", ApiAddress: "https://10.9.9.9:1"},
	}
	mustOK(t, h.member(started))
	done := addRecord(witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")
	done.ConfigurationIndex, done.Operation = 2, 1
	mustOK(t, h.member(done))

	for id, want := range map[string]string{"w1": "https://10.0.0.1:7010", "w4": "https://10.0.0.4:7010"} {
		if _, api, ok := h.f.MemberAddress(id); !ok || api != want {
			t.Errorf("MemberAddress(%s) = %q, %v; want %q", id, api, ok, want)
		}
	}
	if _, _, ok := h.f.MemberAddress("w9"); ok {
		t.Error("MemberAddress(w9) found an address never recorded")
	}

	// Removal drops the address once it committed, not before.
	rm := &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, NodeId: "w4", By: operator}
	mustOK(t, h.member(rm))
	if _, _, ok := h.f.MemberAddress("w4"); !ok {
		t.Error("a STARTED removal dropped w4's address")
	}
	rmDone := &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE, NodeId: "w4", By: operator, Operation: 3}
	mustOK(t, h.member(rmDone))
	if _, _, ok := h.f.MemberAddress("w4"); ok {
		t.Error("w4's address survived its removal")
	}

	got, total := h.f.MembershipHistory(0)
	if total != 4 || len(got) != 4 {
		t.Fatalf("history has %d of %d records, want 4 of 4", len(got), total)
	}
	want := &witnessv1.MembershipEvent{RaftIndex: 2, AtMicros: 1_700_000_000_000_001, Change: done}
	if diff := cmp.Diff(want, got[1], protocmp.Transform()); diff != "" {
		t.Errorf("second record (-want +got):\n%s", diff)
	}
	if last, _ := h.f.MembershipHistory(1); len(last) != 1 || last[0].RaftIndex != 4 {
		t.Errorf("MembershipHistory(1) = %v, want the record at index 4", last)
	}
	// Callers own what they get.
	got[0].Change.NodeId = "changed"
	if again, _ := h.f.MembershipHistory(0); again[0].Change.NodeId != "w4" {
		t.Error("MembershipHistory returned the state's own records")
	}
}

func TestMembershipHistoryIsBounded(t *testing.T) {
	h := newHarness(t)
	for range KeepMembershipEvents + 5 {
		mustOK(t, h.member(&witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_TRANSFER_LEADERSHIP, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, By: operator}))
	}
	got, total := h.f.MembershipHistory(0)
	if total != KeepMembershipEvents+5 || len(got) != KeepMembershipEvents || got[0].RaftIndex != 6 {
		t.Fatalf("history keeps %d of %d from index %d; want %d of %d from 6", len(got), total, got[0].RaftIndex, KeepMembershipEvents, KeepMembershipEvents+5)
	}
}

func TestMembershipRejectsBadRecords(t *testing.T) {
	for name, tc := range map[string]struct {
		c    *witnessv1.MembershipCommand
		want string
	}{
		"unknown op":        {&witnessv1.MembershipCommand{Op: 99, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, NodeId: "w4"}, "unknown op 99"},
		"no phase":          {&witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, NodeId: "w4"}, "unknown phase 0"},
		"bad node id":       {&witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, NodeId: "w 4"}, `node id "w 4"`},
		"rotation alone":    {&witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_ROTATE, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, NodeId: "w1"}, "names no valid replacement"},
		"bad member id":     {&witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, NodeId: "w4", Members: []*witnessv1.NodeAddress{{Id: ""}}}, `member id ""`},
		"oversized address": {&witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_ADD_NONVOTER, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, NodeId: "w4", RaftAddress: strings.Repeat("a", 2000)}, "exceeds 1024"},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			res := h.member(tc.c)
			if !errors.Is(res.Err, ErrBadMembership) || !strings.Contains(res.Err.Error(), tc.want) {
				t.Fatalf("Err = %v, want ErrBadMembership naming %q", res.Err, tc.want)
			}
			if rej, n := h.f.Rejections(); n != 1 || rej[0].RaftIndex != 1 {
				t.Fatalf("rejections %v (%d), want the one at index 1", rej, n)
			}
			if _, total := h.f.MembershipHistory(0); total != 0 {
				t.Fatalf("a rejected record was kept")
			}
		})
	}
}

func TestMembershipStateRoundTrip(t *testing.T) {
	h := newHarness(t)
	started := addRecord(witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")
	started.Members = []*witnessv1.NodeAddress{{Id: "w2", RaftAddress: "10.0.0.2:7011", ApiAddress: "https://10.0.0.2:7010"}, {Id: "w1", RaftAddress: "10.0.0.1:7011", ApiAddress: "https://10.0.0.1:7010"}}
	mustOK(t, h.member(started))
	mustOK(t, h.member(addRecord(witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")))
	b, err := h.f.st.membership.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := h.f.st.membership.marshal(); string(again) != string(b) {
		t.Fatal("membership encoding is not deterministic")
	}
	m, err := unmarshalMembership(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h.f.st.membership.events, m.events, protocmp.Transform()); diff != "" || m.total != 2 {
		t.Fatalf("records differ after the round trip (total %d) (-want +got):\n%s", m.total, diff)
	}
	if diff := cmp.Diff(h.f.st.membership.addrs, m.addrs, protocmp.Transform()); diff != "" {
		t.Fatalf("addresses differ after the round trip (-want +got):\n%s", diff)
	}

	// Damage is refused.
	bad := m
	bad.events = append(bad.events[:1:1], bad.events[0]) // index goes backwards
	bad.total = 3
	b2, _ := bad.marshal()
	if _, err := unmarshalMembership(b2); !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), "out of Raft order") {
		t.Fatalf("records out of order: %v", err)
	}
	if _, err := unmarshalMembership([]byte{0xff, 0xff}); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestMembershipSurvivesSnapshots(t *testing.T) {
	h := populated(t)
	mustOK(t, h.member(addRecord(witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")))
	mustOK(t, h.member(addRecord(witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")))
	restored := New()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	want, wantTotal := h.f.MembershipHistory(0)
	got, total := restored.MembershipHistory(0)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" || total != wantTotal {
		t.Fatalf("records after restore (total %d, want %d) (-want +got):\n%s", total, wantTotal, diff)
	}
	if _, api, ok := restored.MemberAddress("w4"); !ok || api != "https://10.0.0.4:7010" {
		t.Fatalf("w4's address after restore: %q, %v", api, ok)
	}
}

// TestMembershipSnapshotGolden pins the membership section of today's
// snapshot format (version 6) with records in it; anchors_test.go checks
// that the version 5 file still restores.
func TestMembershipSnapshotGolden(t *testing.T) {
	h := populated(t)
	started := addRecord(witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")
	started.Members = []*witnessv1.NodeAddress{{Id: "w1", RaftAddress: "10.0.0.1:7011", ApiAddress: "https://10.0.0.1:7010"}}
	mustOK(t, h.member(started))
	done := addRecord(witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")
	done.ConfigurationIndex, done.Operation = 9, 8
	mustOK(t, h.member(done))
	mustOK(t, h.member(&witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_TRANSFER_LEADERSHIP, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_FAILED, NodeId: "w4", By: operator, Error: "leadership transfer timeout"}))
	got := persist(t, h.f)
	path := filepath.Join("testdata", "snapshot-v6-membership.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("snapshot encoding changed (%d bytes, golden %d): a format change needs a new version and a migration; run go test -update only if that is intended", len(got), len(want))
	}
	f := New()
	if err := f.Restore(io.NopCloser(bytes.NewReader(want))); err != nil {
		t.Fatal(err)
	}
	wantHist, wantTotal := h.f.MembershipHistory(0)
	gotHist, total := f.MembershipHistory(0)
	if diff := cmp.Diff(wantHist, gotHist, protocmp.Transform()); diff != "" || total != wantTotal || total != 3 {
		t.Fatalf("golden snapshot restores other records (total %d) (-want +got):\n%s", total, diff)
	}
	if _, api, ok := f.MemberAddress("w1"); !ok || api != "https://10.0.0.1:7010" {
		t.Fatalf("w1's address after restore: %q, %v", api, ok)
	}
}

// TestVoterSinceAndPool follows a rotation: the promoted node is timed by
// its promotion record, the node rotated out goes to the pool, and both
// survive a snapshot.
func TestVoterSinceAndPool(t *testing.T) {
	h := newHarness(t)
	phase := func(c *witnessv1.MembershipCommand, p witnessv1.MembershipPhase) *witnessv1.MembershipCommand {
		c.Phase = p
		return c
	}
	started, done := witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE
	promote := func() *witnessv1.MembershipCommand {
		return &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE, NodeId: "w4", RaftAddress: "10.0.0.4:7011", ApiAddress: "https://10.0.0.4:7010", By: operator}
	}
	remove := func() *witnessv1.MembershipCommand {
		return &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, NodeId: "w1", RaftAddress: "10.0.0.1:7011", ApiAddress: "https://10.0.0.1:7010", By: operator, ToPool: true}
	}
	mustOK(t, h.member(addRecord(started, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")))
	mustOK(t, h.member(addRecord(done, "w4", "10.0.0.4:7011", "https://10.0.0.4:7010")))
	mustOK(t, h.member(phase(promote(), started)))
	if got := h.f.VoterSince(); len(got) != 0 {
		t.Fatalf("VoterSince before the promotion committed: %v", got)
	}
	mustOK(t, h.member(phase(promote(), done)))
	mustOK(t, h.member(phase(remove(), started)))
	if got := h.f.RotationPool(); len(got) != 0 {
		t.Fatalf("pool before the removal committed: %v", got)
	}
	mustOK(t, h.member(phase(remove(), done)))

	wantSince := map[string]int64{"w4": 1_700_000_000_000_003}
	wantPool := []*witnessv1.NodeAddress{{Id: "w1", RaftAddress: "10.0.0.1:7011", ApiAddress: "https://10.0.0.1:7010"}}
	check := func(f *FSM, when string) {
		t.Helper()
		if diff := cmp.Diff(wantSince, f.VoterSince()); diff != "" {
			t.Fatalf("VoterSince %s (-want +got):\n%s", when, diff)
		}
		if diff := cmp.Diff(wantPool, f.RotationPool(), protocmp.Transform()); diff != "" {
			t.Fatalf("RotationPool %s (-want +got):\n%s", when, diff)
		}
	}
	check(h.f, "after the rotation")
	restored := New()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	check(restored, "after a snapshot")

	// w1 joins again: it leaves the pool; w4 removed without to_pool
	// loses its time and does not join the pool.
	mustOK(t, h.member(addRecord(done, "w1", "10.0.0.1:7011", "https://10.0.0.1:7010")))
	rm4 := &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, Phase: done, NodeId: "w4", By: operator}
	mustOK(t, h.member(rm4))
	if got, pool := h.f.VoterSince(), h.f.RotationPool(); len(got) != 0 || len(pool) != 0 {
		t.Fatalf("after w1 rejoined and w4 left: VoterSince %v, pool %v", got, pool)
	}
}
