package cosign

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/tlog"
	"github.com/witnz/witnz/services/witness/internal/fsm"
)

const (
	cluster = "test"
	table   = "public.audit_log"
)

var quiet = slog.New(slog.DiscardHandler)

// replica is a state machine the tests append to through Apply.
type replica struct {
	t     testing.TB
	f     *fsm.FSM
	index uint64
}

func newReplica(t testing.TB, opts ...fsm.Option) *replica {
	r := &replica{t: t, f: fsm.New(opts...)}
	r.apply(&witnessv1.Command{Command: &witnessv1.Command_RegisterTable{RegisterTable: &witnessv1.RegisterTableCommand{Table: table}}})
	return r
}

func (r *replica) apply(cmd *witnessv1.Command) *fsm.Result {
	r.t.Helper()
	b, err := proto.Marshal(cmd)
	if err != nil {
		r.t.Fatal(err)
	}
	r.index++
	return r.f.Apply(&raft.Log{Index: r.index, Type: raft.LogCommand, Data: b}).(*fsm.Result)
}

// grow appends n INSERT entries.
func (r *replica) grow(n int) {
	r.t.Helper()
	lsn := r.index + 1 // one transaction per call, after every earlier one
	var es []*witnessv1.Entry
	for i := range n {
		var k [32]byte
		binary.BigEndian.PutUint64(k[:], lsn*1000+uint64(i))
		d := sha256.Sum256(k[:])
		es = append(es, &witnessv1.Entry{CommitLsn: lsn, TxIndex: uint32(i), Op: witnessv1.Op_OP_INSERT, KeyCommit: k[:], DataCommit: d[:]})
	}
	if res := r.apply(&witnessv1.Command{Command: &witnessv1.Command_Append{Append: &witnessv1.AppendCommand{Table: table, Entries: es}}}); res.Err != nil {
		r.t.Fatal(res.Err)
	}
}

func (r *replica) root(size uint64) [32]byte {
	r.t.Helper()
	v, err := r.f.Table(table)
	if err != nil {
		r.t.Fatal(err)
	}
	root, err := v.RootAt(size)
	if err != nil {
		r.t.Fatal(err)
	}
	return root
}

func mustKey(t testing.TB, name string) *checkpoint.Cosigner {
	t.Helper()
	skey, _, err := checkpoint.GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	k, err := checkpoint.NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustStore(t testing.TB, path string) *Store {
	t.Helper()
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var digest = PolicyDigest([]byte("the policy"))

func newTestSigner(t testing.TB, rep Replica, key *checkpoint.Cosigner, store *Store) *Signer {
	return NewSigner(SignerConfig{
		NodeID: "w2", Cluster: cluster, Key: key, PolicyDigest: digest, Replica: rep, Store: store,
		Log: quiet, WaitApplied: 200 * time.Millisecond,
		Now: func() time.Time { return time.Unix(1_800_000_000, 0) },
	})
}

func proposal(r *replica, size uint64) Proposal {
	return Proposal{Table: table, Size: size, Root: r.root(size), AppliedIndex: r.index, PolicyDigest: digest[:], Proposer: "w1"}
}

// verifies checks sig is key's valid cosignature on the table's checkpoint.
func verifies(t *testing.T, key *checkpoint.Cosigner, size uint64, root [32]byte, sig note.Signature) {
	t.Helper()
	origin, _ := checkpoint.Origin(cluster, table)
	signed, err := checkpoint.Assemble(checkpoint.Checkpoint{Origin: origin, Size: size, Root: root}, sig)
	if err != nil {
		t.Fatal(err)
	}
	v, err := checkpoint.NewCosignatureVerifier(key.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := checkpoint.Open(signed, note.VerifierList(v)); err != nil {
		t.Fatalf("cosignature does not verify: %v", err)
	}
}

func wantRefusal(t *testing.T, err error, kind witnessv1.CosignRefusalKind, text string) {
	t.Helper()
	var r *RefusalError
	if !errors.As(err, &r) || r.Kind != kind || !strings.Contains(r.Reason, text) {
		t.Fatalf("err = %v, want a %v refusal containing %q", err, kind, text)
	}
}

func TestSignChecksItsOwnState(t *testing.T) {
	ctx := t.Context()
	r := newReplica(t)
	r.grow(5)
	key := mustKey(t, "witnz.test/w2")
	path := filepath.Join(t.TempDir(), StoreFile)
	store := mustStore(t, path)
	s := newTestSigner(t, FSMReplica(r.f), key, store)

	// Accept: the root at that size is this node's.
	sig, err := s.Sign(ctx, proposal(r, 3))
	if err != nil {
		t.Fatal(err)
	}
	verifies(t, key, 3, r.root(3), sig)
	origin, _ := checkpoint.Origin(cluster, table)
	if last, ok, err := store.Last(BucketTables, origin); err != nil || !ok || last.Size != 3 || last.Root != r.root(3) || !last.At.Equal(time.Unix(1_800_000_000, 0)) {
		t.Fatalf("recorded %+v %v %v, want size 3", last, ok, err)
	}

	// Refuse another root, and a size beyond its own log.
	p := proposal(r, 5)
	p.Root[0] ^= 1
	_, err = s.Sign(ctx, p)
	root5 := r.root(5)
	wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH, "node w2 computes root "+b64(root5[:])+" for public.audit_log at size 5 from its own log")
	p = proposal(r, 5)
	p.Size = 6
	_, err = s.Sign(ctx, p)
	wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH, "node w2 holds 5 entries of public.audit_log")
	p = proposal(r, 5)
	p.Table = "public.other"
	_, err = s.Sign(ctx, p)
	wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH, "node w2 has no table public.other")

	// Accept an extension; refuse what is older or forks from it.
	if _, err := s.Sign(ctx, proposal(r, 5)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Sign(ctx, proposal(r, 3))
	wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_STALE, "node w2 cosigned public.audit_log at size 5")
	// The same checkpoint again is harmless (a new leader may ask again).
	if _, err := s.Sign(ctx, proposal(r, 5)); err != nil {
		t.Fatalf("the same checkpoint again: %v", err)
	}

	// The record survives a restart: a replayed old checkpoint is refused.
	store.Close()
	s = newTestSigner(t, FSMReplica(r.f), key, mustStore(t, path))
	_, err = s.Sign(ctx, proposal(r, 4))
	wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_STALE, "a checkpoint at the smaller size 4 is a replay or a rollback")
	r.grow(2)
	if _, err := s.Sign(ctx, proposal(r, 7)); err != nil {
		t.Fatalf("extension after restart: %v", err)
	}

	// Another policy, a malformed proposal, no key.
	p = proposal(r, 7)
	p.PolicyDigest = make([]byte, 32)
	_, err = s.Sign(ctx, p)
	wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_POLICY_MISMATCH, "verifies checkpoints with another policy")
	p = proposal(r, 7)
	p.Table = "nodot"
	if _, err := s.Sign(ctx, p); !errors.Is(err, ErrBadProposal) {
		t.Fatalf("bad table: %v", err)
	}
	if _, err := newTestSigner(t, FSMReplica(r.f), nil, nil).Sign(ctx, proposal(r, 7)); !errors.Is(err, ErrNotCosigner) {
		t.Fatalf("no key: %v", err)
	}
}

// tampered is a replica whose log was altered: every root differs.
type tampered struct{ Replica }

func (t tampered) RootAt(name string, size uint64) ([32]byte, uint64, error) {
	root, n, err := t.Replica.RootAt(name, size)
	root[31] ^= 0xff
	return root, n, err
}

func TestSignRefusesAlteredHistory(t *testing.T) {
	r := newReplica(t)
	r.grow(6)
	key := mustKey(t, "witnz.test/w2")
	store := mustStore(t, filepath.Join(t.TempDir(), StoreFile))
	if _, err := newTestSigner(t, FSMReplica(r.f), key, store).Sign(t.Context(), proposal(r, 4)); err != nil {
		t.Fatal(err)
	}
	// Same state as the proposer now, but this node's history at the size
	// it cosigned changed: it must not cosign on top of it.
	s := newTestSigner(t, tamperedAt{FSMReplica(r.f), 4}, key, store)
	_, err := s.Sign(t.Context(), proposal(r, 6))
	wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK, "but its own log now has root")
	// Every root altered: the proposal's root is not this node's.
	_, err = newTestSigner(t, tampered{FSMReplica(r.f)}, key, store).Sign(t.Context(), proposal(r, 6))
	wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH, "from its own log")
}

// tamperedAt alters only the root at one size.
type tamperedAt struct {
	Replica
	size uint64
}

func (t tamperedAt) RootAt(name string, size uint64) ([32]byte, uint64, error) {
	root, n, err := t.Replica.RootAt(name, size)
	if size == t.size {
		root[0] ^= 1
	}
	return root, n, err
}

// badProof is a replica whose consistency proofs are wrong: the node cannot
// show its log extends what it cosigned.
type badProof struct{ Replica }

func (b badProof) ConsistencyProof(name string, from, to uint64) ([][]byte, error) {
	p, err := b.Replica.ConsistencyProof(name, from, to)
	if len(p) > 0 {
		p[0] = make([]byte, tlog.HashSize)
	}
	return p, err
}

func TestSignRefusesWithoutConsistency(t *testing.T) {
	r := newReplica(t)
	r.grow(5)
	key := mustKey(t, "witnz.test/w2")
	store := mustStore(t, filepath.Join(t.TempDir(), StoreFile))
	if _, err := newTestSigner(t, FSMReplica(r.f), key, store).Sign(t.Context(), proposal(r, 3)); err != nil {
		t.Fatal(err)
	}
	_, err := newTestSigner(t, badProof{FSMReplica(r.f)}, key, store).Sign(t.Context(), proposal(r, 5))
	wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK, "cannot prove from its own log")
}

func TestSignWaitsForTheProposalsIndex(t *testing.T) {
	r := newReplica(t)
	r.grow(3)
	s := newTestSigner(t, FSMReplica(r.f), mustKey(t, "witnz.test/w2"), mustStore(t, filepath.Join(t.TempDir(), StoreFile)))
	p := proposal(r, 3)
	p.AppliedIndex = r.index + 1
	if _, err := s.Sign(t.Context(), p); !errors.Is(err, ErrBehind) {
		t.Fatalf("err = %v, want ErrBehind", err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.Sign(t.Context(), p); done <- err }()
	r.apply(&witnessv1.Command{Command: &witnessv1.Command_RegisterTable{RegisterTable: &witnessv1.RegisterTableCommand{Table: "public.later"}}})
	if err := <-done; err != nil {
		t.Fatalf("once the index is applied: %v", err)
	}
}

// TestCosignService calls the handler over mutual TLS through the
// generated client: witness identities only; refusals carry their record.
func TestCosignService(t *testing.T) {
	dir := t.TempDir()
	ids := []mtls.Identity{mtls.Witness("w1"), mtls.Witness("w2"), mtls.Service("cdc-ingest")}
	if err := pki.Init(dir, ids, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	load := func(id mtls.Identity) *mtls.Config {
		p := pki.PathsFor(dir, id)
		c, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	r := newReplica(t)
	r.grow(4)
	key := mustKey(t, "witnz.test/w2")
	s := newTestSigner(t, FSMReplica(r.f), key, mustStore(t, filepath.Join(t.TempDir(), StoreFile)))
	_, h := witnessv1connect.NewCosignServiceHandler(s)
	srv := httptest.NewUnstartedServer(mtls.WithPeerIdentity(h))
	srv.TLS = load(mtls.Witness("w2")).Server()
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := func(id mtls.Identity) witnessv1connect.CosignServiceClient {
		return witnessv1connect.NewCosignServiceClient(load(id).HTTPClient(), srv.URL, connect.WithGRPC())
	}
	req := func(size uint64) *connect.Request[witnessv1.CosignRequest] {
		p := proposal(r, size)
		return connect.NewRequest(&witnessv1.CosignRequest{Table: table, Size: size, Root: p.Root[:], AppliedIndex: p.AppliedIndex, PolicySha256: digest[:]})
	}

	resp, err := client(mtls.Witness("w1")).Cosign(t.Context(), req(4))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Msg.GetNodeId() != "w2" || resp.Msg.GetCosignerKey() != key.VerifierKey() {
		t.Fatalf("response %v", resp.Msg)
	}
	origin, _ := checkpoint.Origin(cluster, table)
	sig, err := ParseSignatureLine(checkpoint.Checkpoint{Origin: origin, Size: 4, Root: r.root(4)}, resp.Msg.GetCosignature())
	if err != nil {
		t.Fatal(err)
	}
	verifies(t, key, 4, r.root(4), sig)

	_, err = client(mtls.Service("cdc-ingest")).Cosign(t.Context(), req(4))
	if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "Cosign requires a witness identity") {
		t.Fatalf("service identity: %v", err)
	}

	_, err = client(mtls.Witness("w1")).Cosign(t.Context(), req(2))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("replayed checkpoint: %v, want FAILED_PRECONDITION", err)
	}
	rec := refusalDetail(err)
	if rec == nil || rec.GetKind() != witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_STALE || rec.GetNodeId() != "w2" || rec.GetProposerId() != "w1" || rec.GetSize() != 2 {
		t.Fatalf("refusal detail %v", rec)
	}

	bad := req(4)
	bad.Msg.Root = []byte{1}
	if _, err := client(mtls.Witness("w1")).Cosign(t.Context(), bad); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("short root: %v", err)
	}
	behind := req(4)
	behind.Msg.AppliedIndex = r.index + 100
	if _, err := client(mtls.Witness("w1")).Cosign(t.Context(), behind); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("behind: %v", err)
	}
}

func TestParseSignatureLine(t *testing.T) {
	c := checkpoint.Checkpoint{Origin: "witnz/test/public.t", Size: 1}
	k := mustKey(t, "witnz.test/w1")
	sig, err := checkpoint.Cosign(c, k, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSignatureLine(c, SignatureLine(sig)+"\n")
	if err != nil || got != sig {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	for _, bad := range []string{"", "— x", "- name AAAA", SignatureLine(sig) + "\n" + SignatureLine(sig) + "x"} {
		if _, err := ParseSignatureLine(c, bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
