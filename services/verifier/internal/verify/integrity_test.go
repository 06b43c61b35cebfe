package verify

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/tlog"
)

// The integrity checks against witnesses that misbehave in ways a real
// cluster cannot be made to (a replayed checkpoint, a fork): small fake
// nodes over real logs (libs/tlog) and real signed checkpoints.

const itable = "public.audit_log"

// fakeNode answers GetStatus, GetConsistencyProof and GetCheckpoint from a
// real log; other calls are not made by the integrity checks.
type fakeNode struct {
	witnessv1connect.WitnessServiceClient
	id     string
	leader bool
	down   bool
	log    *tlog.Log
	note   []byte // nil: no checkpoint
}

func (n *fakeNode) GetStatus(context.Context, *connect.Request[witnessv1.GetStatusRequest]) (*connect.Response[witnessv1.GetStatusResponse], error) {
	if n.down {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("connection refused"))
	}
	state := "Follower"
	if n.leader {
		state = "Leader"
	}
	root := n.log.Root()
	return connect.NewResponse(&witnessv1.GetStatusResponse{NodeId: n.id, State: state, Tables: []*witnessv1.TableInfo{{
		Name: itable, Size: n.log.Size(), Root: root[:], Protection: witnessv1.Protection_PROTECTION_PROTECTED,
	}}}), nil
}

func (n *fakeNode) GetConsistencyProof(_ context.Context, req *connect.Request[witnessv1.GetConsistencyProofRequest]) (*connect.Response[witnessv1.GetConsistencyProofResponse], error) {
	from, to := req.Msg.GetFromSize(), req.Msg.GetToSize()
	if to == 0 {
		to = n.log.Size()
	}
	if to > n.log.Size() || from > to {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("sizes %d..%d beyond %d", from, to, n.log.Size()))
	}
	proof, err := n.log.ConsistencyProof(from, to)
	if err != nil {
		return nil, err
	}
	r1, _ := n.log.RootAt(from)
	r2, _ := n.log.RootAt(to)
	return connect.NewResponse(&witnessv1.GetConsistencyProofResponse{FromSize: from, ToSize: to, FromRoot: r1[:], ToRoot: r2[:], Proof: proof}), nil
}

func (n *fakeNode) GetCheckpoint(context.Context, *connect.Request[witnessv1.GetCheckpointRequest]) (*connect.Response[witnessv1.GetCheckpointResponse], error) {
	if n.note == nil {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no cosigned checkpoint yet"))
	}
	cp, _, err := checkpoint.Parse(n.note)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&witnessv1.GetCheckpointResponse{Note: n.note, Size: cp.Size, Root: cp.Root[:]}), nil
}

// testLog returns a log of size leaves; leaf i is derived from seed and i.
func testLog(t *testing.T, size int, seed string, alter int) *tlog.Log {
	t.Helper()
	l := tlog.New()
	for i := range size {
		s := seed
		if i == alter {
			s += "-altered"
		}
		if err := l.Append(sha256.Sum256(fmt.Appendf(nil, "%s/%d", s, i))); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

type signer struct {
	c    *checkpoint.Cosigner
	vkey string
}

func newSigner(t *testing.T, name string) signer {
	t.Helper()
	skey, vkey, err := checkpoint.GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := checkpoint.NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return signer{c, vkey}
}

// note is a checkpoint of l at size cosigned by s.
func (s signer) note(t *testing.T, l *tlog.Log, size uint64) []byte {
	t.Helper()
	origin, err := checkpoint.Origin("default", itable)
	if err != nil {
		t.Fatal(err)
	}
	root, err := l.RootAt(size)
	if err != nil {
		t.Fatal(err)
	}
	cp := checkpoint.Checkpoint{Origin: origin, Size: size, Root: root}
	sig, err := checkpoint.Cosign(cp, s.c, time.Unix(1_800_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	n, err := checkpoint.Assemble(cp, sig)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func policyOf(t *testing.T, s signer) *checkpoint.Policy {
	t.Helper()
	p, err := checkpoint.ParsePolicy([]byte("witness w1 " + s.vkey + "\nquorum 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fakeVerifier(p *checkpoint.Policy, store CheckpointStore, nodes ...*fakeNode) *Verifier {
	c := &cluster{}
	for _, n := range nodes {
		c.urls = append(c.urls, "https://"+n.id+".test:7010")
		c.clients = append(c.clients, n)
	}
	if store == nil {
		store = &memCheckpoints{m: map[string]SeenCheckpoint{}}
	}
	return &Verifier{witness: c, opts: Options{Policy: p, Checkpoints: store}}
}

func kinds(ps []IntegrityProblem) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Kind.String()+"@"+p.Witness)
	}
	return strings.Join(out, " ")
}

func TestIntegrityChecks(t *testing.T) {
	s := newSigner(t, "witnz.test/w1")
	policy := policyOf(t, s)
	good := testLog(t, 12, "a", -1)
	three := func(notes ...[]byte) []*fakeNode {
		var out []*fakeNode
		for i := range 3 {
			out = append(out, &fakeNode{id: fmt.Sprintf("w%d", i+1), leader: i == 0, log: testLog(t, 12, "a", -1), note: notes[0]})
		}
		return out
	}
	check := func(t *testing.T, v *Verifier, want string) []IntegrityProblem {
		t.Helper()
		ps, warns, err := v.integrity(t.Context(), itable, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := kinds(ps); got != want {
			t.Errorf("problems [%s], want [%s]; warnings %q", got, want, warns)
			for _, p := range ps {
				t.Logf("  %s", p.Problem)
			}
		}
		return ps
	}

	t.Run("honest cluster, then a replayed older checkpoint", func(t *testing.T) {
		store := &memCheckpoints{m: map[string]SeenCheckpoint{}}
		nodes := three(s.note(t, good, 10))
		check(t, fakeVerifier(policy, store, nodes...), "")
		if cp, ok, _ := store.LastCheckpoint(itable); !ok || cp.Size != 10 {
			t.Fatalf("accepted checkpoint %+v, %v; want size 10", cp, ok)
		}
		// A newer one extends it.
		nodes[0].note = s.note(t, good, 12)
		check(t, fakeVerifier(policy, store, nodes...), "")
		// The leader serves the checkpoint of size 10 again.
		nodes[0].note = s.note(t, good, 10)
		ps := check(t, fakeVerifier(policy, store, nodes...), "checkpoint_stale@w1")
		if len(ps) == 1 && !strings.Contains(ps[0].Problem, "older than the one of size 12") {
			t.Errorf("problem %q does not say what it replays", ps[0].Problem)
		}
		if cp, _, _ := store.LastCheckpoint(itable); cp.Size != 12 {
			t.Errorf("a stale checkpoint replaced the accepted one: size %d", cp.Size)
		}
		// Without a checkpoint at all, once one was accepted.
		nodes[0].note = nil
		check(t, fakeVerifier(policy, store, nodes...), "checkpoint_missing@w1")
	})

	t.Run("checkpoint of a fork", func(t *testing.T) {
		store := &memCheckpoints{m: map[string]SeenCheckpoint{}}
		check(t, fakeVerifier(policy, store, three(s.note(t, good, 10))...), "")
		// Every node now holds another log, and cosigned checkpoints of it.
		other := testLog(t, 12, "b", -1)
		nodes := three(s.note(t, other, 12))
		for _, n := range nodes {
			n.log = testLog(t, 12, "b", -1)
		}
		check(t, fakeVerifier(policy, store, nodes...), "checkpoint_fork@w1")
	})

	t.Run("checkpoint not meeting the policy", func(t *testing.T) {
		mallory := newSigner(t, "witnz.test/w1")
		check(t, fakeVerifier(policy, nil, three(mallory.note(t, good, 10))...), "checkpoint_policy@w1 checkpoint_policy@w2 checkpoint_policy@w3")
		// Only a follower serves the forged one.
		nodes := three(s.note(t, good, 10))
		nodes[2].note = mallory.note(t, good, 12)
		ps := check(t, fakeVerifier(policy, nil, nodes...), "checkpoint_policy@w3")
		if len(ps) == 1 && strings.Contains(ps[0].Problem, "\n") {
			t.Errorf("problem on several lines: %q", ps[0].Problem)
		}
	})

	t.Run("checkpoint of another root", func(t *testing.T) {
		check(t, fakeVerifier(policy, nil, three(s.note(t, testLog(t, 12, "a", 3), 10))...), "checkpoint_root@w1 checkpoint_root@w2 checkpoint_root@w3")
		nodes := three(s.note(t, good, 10))
		nodes[1].note = s.note(t, testLog(t, 12, "a", 3), 12)
		ps := check(t, fakeVerifier(policy, nil, nodes...), "checkpoint_root@w2")
		if len(ps) == 1 && strings.Contains(ps[0].Problem, "\n") {
			t.Errorf("problem on several lines: %q", ps[0].Problem)
		}
	})

	t.Run("followers behind the leader's checkpoint", func(t *testing.T) {
		store := &memCheckpoints{m: map[string]SeenCheckpoint{}}
		nodes := three(s.note(t, good, 12))
		check(t, fakeVerifier(policy, store, nodes...), "")
		// The followers still serve an older checkpoint, or none: they lag.
		nodes[1].note = s.note(t, good, 10)
		nodes[2].note = nil
		check(t, fakeVerifier(policy, store, nodes...), "")
	})

	t.Run("a node with an altered entry", func(t *testing.T) {
		nodes := three(nil)
		nodes[2].log = testLog(t, 12, "a", 5)
		ps := check(t, fakeVerifier(nil, nil, nodes...), "root_mismatch@w3")
		if len(ps) == 1 && (ps[0].URL != "https://w3.test:7010" || ps[0].Size != 12) {
			t.Errorf("problem = %+v, want w3's URL and size 12", ps[0])
		}
	})

	t.Run("a node behind with an altered entry", func(t *testing.T) {
		nodes := three(nil)
		nodes[2].log = testLog(t, 9, "a", 5)
		check(t, fakeVerifier(nil, nil, nodes...), "root_mismatch@w3")
		nodes[2].log = testLog(t, 9, "a", -1)
		check(t, fakeVerifier(nil, nil, nodes...), "")
	})

	t.Run("unreachable nodes", func(t *testing.T) {
		nodes := three(nil)
		nodes[1].down = true
		ps, warns, err := fakeVerifier(nil, nil, nodes...).integrity(t.Context(), itable, nil)
		if err != nil || len(ps) != 0 || len(warns) != 1 || !strings.Contains(warns[0], "w2.test") {
			t.Errorf("one node down: problems %v, warnings %q, %v; want one warning naming it", ps, warns, err)
		}
		nodes[2].down = true
		check(t, fakeVerifier(nil, nil, nodes...), "no_majority@")
	})

	t.Run("no root held by a majority", func(t *testing.T) {
		nodes := three(nil)
		nodes[1].log = testLog(t, 12, "a", 2)
		nodes[2].log = testLog(t, 12, "a", 7)
		check(t, fakeVerifier(nil, nil, nodes...), "no_majority@")
	})
}
