package fsm

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

const cluster = "test"

// fixedCosigner returns a cosigner whose key is derived from seed, so that
// golden files holding its signatures stay the same.
func fixedCosigner(t testing.TB, name string, seed byte) *checkpoint.Cosigner {
	t.Helper()
	s := bytes.Repeat([]byte{seed}, ed25519.SeedSize)
	pub := ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey)
	h := sha256.Sum256(append([]byte(name+"\n\x04"), pub...))
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, binary.BigEndian.Uint32(h[:4]), base64.StdEncoding.EncodeToString(append([]byte{0x04}, s...)))
	c, err := checkpoint.NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cosigners are three fixed witness keys; testPolicy needs two of them.
func cosigners(t testing.TB) []*checkpoint.Cosigner {
	return []*checkpoint.Cosigner{fixedCosigner(t, "witnz.test/w1", 1), fixedCosigner(t, "witnz.test/w2", 2), fixedCosigner(t, "witnz.test/w3", 3)}
}

func testPolicy(t testing.TB) *checkpoint.Policy {
	t.Helper()
	var b strings.Builder
	for i, c := range cosigners(t) {
		fmt.Fprintf(&b, "witness w%d %s\n", i+1, c.VerifierKey())
	}
	b.WriteString("quorum 2\n")
	p, err := checkpoint.ParsePolicy([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// signedCheckpoint returns the note of a table's log at size, cosigned by
// the given keys at a fixed time.
func signedCheckpoint(t testing.TB, f *FSM, table string, size uint64, keys ...*checkpoint.Cosigner) []byte {
	t.Helper()
	v, err := f.Table(table)
	if err != nil {
		t.Fatal(err)
	}
	root, err := v.RootAt(size)
	if err != nil {
		t.Fatal(err)
	}
	return signCheckpoint(t, table, size, root, keys...)
}

func signCheckpoint(t testing.TB, table string, size uint64, root [32]byte, keys ...*checkpoint.Cosigner) []byte {
	t.Helper()
	origin, err := checkpoint.Origin(cluster, table)
	if err != nil {
		t.Fatal(err)
	}
	c := checkpoint.Checkpoint{Origin: origin, Size: size, Root: root}
	var sigs []note.Signature
	for _, k := range keys {
		s, err := checkpoint.Cosign(c, k, time.Unix(1_700_000_000, 0))
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, s)
	}
	n, err := checkpoint.Assemble(c, sigs...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (h *harness) storeCheckpoint(table string, n []byte) *Result {
	h.t.Helper()
	return h.apply(&witnessv1.Command{ProposedAtMicros: 1_700_000_000_000_000 + int64(h.index), Command: &witnessv1.Command_StoreCheckpoint{
		StoreCheckpoint: &witnessv1.StoreCheckpointCommand{Table: table, Note: n},
	}})
}

func (h *harness) recordRefusals(rs ...*witnessv1.CosignRefusal) *Result {
	h.t.Helper()
	return h.apply(&witnessv1.Command{ProposedAtMicros: int64(h.index), Command: &witnessv1.Command_RecordCosignRefusals{
		RecordCosignRefusals: &witnessv1.RecordCosignRefusalsCommand{Refusals: rs},
	}})
}

func newCheckpointHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, f: New(WithCheckpoints(cluster, testPolicy(t)))}
	mustOK(t, h.register(tbl, 0))
	mustOK(t, h.append(tbl, entries(1, 10)))
	return h
}

func TestStoreCheckpoint(t *testing.T) {
	h := newCheckpointHarness(t)
	if _, ok := h.f.Checkpoint(tbl); ok {
		t.Fatal("a checkpoint before any was stored")
	}
	k := cosigners(t)
	n := signedCheckpoint(t, h.f, tbl, 6, k[0], k[2])
	mustOK(t, h.storeCheckpoint(tbl, n))
	cp, ok := h.f.Checkpoint(tbl)
	v, _ := h.f.Table(tbl)
	root6, _ := v.RootAt(6)
	want := Checkpoint{Table: tbl, Note: n, Size: 6, Root: root6, CreatedAtMicros: 1_700_000_000_000_000 + 2, RaftIndex: 3}
	if !ok {
		t.Fatal("no checkpoint after storing one")
	}
	if diff := cmp.Diff(want, cp); diff != "" {
		t.Fatalf("stored checkpoint (-want +got):\n%s", diff)
	}
	// The stored note meets the policy a reader would use.
	if _, _, err := testPolicy(t).Verify(cp.Note); err != nil {
		t.Fatal(err)
	}
	// A later checkpoint replaces it.
	mustOK(t, h.storeCheckpoint(tbl, signedCheckpoint(t, h.f, tbl, 10, k[1], k[2])))
	if cp, _ := h.f.Checkpoint(tbl); cp.Size != 10 {
		t.Fatalf("checkpoint at size %d, want 10", cp.Size)
	}
}

func TestStoreCheckpointRejections(t *testing.T) {
	k := cosigners(t)
	other := fixedCosigner(t, "witnz.test/intruder", 9)
	tests := []struct {
		name string
		// note builds the command's note from the harness, where the
		// stored checkpoint is at size 6.
		note  func(h *harness) []byte
		table string
		want  error
		text  string
	}{
		{"replay of the stored checkpoint", func(h *harness) []byte { return signedCheckpoint(t, h.f, tbl, 6, k[0], k[1]) }, tbl, ErrStaleCheckpoint, "not above the stored one at size 6"},
		{"older checkpoint", func(h *harness) []byte { return signedCheckpoint(t, h.f, tbl, 4, k[0], k[1]) }, tbl, ErrStaleCheckpoint, "checkpoint of public.audit_log at size 4 is not above the stored one at size 6"},
		{"other root", func(h *harness) []byte { return signCheckpoint(t, tbl, 8, [32]byte{1}, k[0], k[1]) }, tbl, ErrCheckpointMismatch, "has root 01000000"},
		{"beyond the log", func(h *harness) []byte { return signCheckpoint(t, tbl, 11, [32]byte{1}, k[0], k[1]) }, tbl, ErrCheckpointMismatch, "at size 11 is beyond its log of 10 entries"},
		{"too few cosignatures", func(h *harness) []byte { return signedCheckpoint(t, h.f, tbl, 8, k[0]) }, tbl, ErrCheckpointPolicy, "have 1 of 2 needed cosignatures"},
		{"cosignature by another key", func(h *harness) []byte { return signedCheckpoint(t, h.f, tbl, 8, k[0], other) }, tbl, ErrCheckpointPolicy, "ignored signatures by keys not in the policy: witnz.test/intruder"},
		{"forged cosignature", func(h *harness) []byte { return forge(t, signedCheckpoint(t, h.f, tbl, 8, k[0], k[1]), 1) }, tbl, ErrCheckpointPolicy, "invalid signature by witness w2"},
		{"malformed note", func(h *harness) []byte { return []byte("witnz/test/public.audit_log\n8\n") }, tbl, ErrInvalid, "malformed checkpoint"},
		{"other cluster", func(h *harness) []byte {
			n := signedCheckpoint(t, h.f, tbl, 8, k[0], k[1])
			return bytes.Replace(n, []byte("witnz/test/"), []byte("witnz/prod/"), 1)
		}, tbl, ErrInvalid, `origin "witnz/prod/public.audit_log" is not "witnz/test/public.audit_log"`},
		{"unknown table", func(h *harness) []byte { return signedCheckpoint(t, h.f, tbl, 8, k[0], k[1]) }, "public.nope", ErrUnknownTable, "public.nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newCheckpointHarness(t)
			mustOK(t, h.storeCheckpoint(tbl, signedCheckpoint(t, h.f, tbl, 6, k[0], k[1])))
			before, _ := h.f.Checkpoint(tbl)
			r := h.storeCheckpoint(tt.table, tt.note(h))
			if !errors.Is(r.Err, tt.want) || !strings.Contains(r.Err.Error(), tt.text) {
				t.Fatalf("err = %v, want %v containing %q", r.Err, tt.want, tt.text)
			}
			if after, _ := h.f.Checkpoint(tbl); !bytes.Equal(after.Note, before.Note) {
				t.Fatal("a refused checkpoint replaced the stored one")
			}
			rej, n := h.f.Rejections()
			if n != 1 || rej[0].GetReason() != r.Err.Error() || rej[0].GetRaftIndex() != h.index {
				t.Fatalf("rejection not recorded: %v (%d in all)", rej, n)
			}
		})
	}
}

// forge flips a bit in the signature of the i-th signature line.
func forge(t testing.TB, n []byte, i int) []byte {
	t.Helper()
	c, sigs, err := checkpoint.Parse(n)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(sigs[i].Base64)
	raw[len(raw)-1] ^= 1
	sigs[i].Base64 = base64.StdEncoding.EncodeToString(raw)
	out, err := checkpoint.Assemble(c, sigs...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Without a policy a replica still checks everything its own log decides.
func TestStoreCheckpointWithoutPolicy(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.register(tbl, 0))
	mustOK(t, h.append(tbl, entries(1, 5)))
	k := cosigners(t)
	mustOK(t, h.storeCheckpoint(tbl, signedCheckpoint(t, h.f, tbl, 3, k[0])))
	if r := h.storeCheckpoint(tbl, signCheckpoint(t, tbl, 5, [32]byte{}, k[0])); !errors.Is(r.Err, ErrCheckpointMismatch) {
		t.Fatalf("other root without a policy: %v", r.Err)
	}
	if r := h.storeCheckpoint(tbl, signedCheckpoint(t, h.f, tbl, 2, k[0])); !errors.Is(r.Err, ErrStaleCheckpoint) {
		t.Fatalf("older checkpoint without a policy: %v", r.Err)
	}
}

func refusal(node string, size uint64) *witnessv1.CosignRefusal {
	return &witnessv1.CosignRefusal{
		NodeId: node, ProposerId: "w1", Table: tbl, Size: size, Root: bytes.Repeat([]byte{7}, 32),
		Kind: witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH, Reason: "node " + node + " computes another root", AtMicros: 42,
	}
}

func TestRecordCosignRefusals(t *testing.T) {
	h := newHarness(t)
	r1, r2 := refusal("w2", 5), refusal("w3", 5)
	r2.Kind = witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_INVALID_COSIGNATURE
	mustOK(t, h.recordRefusals(r1, r2))
	got, n := h.f.CosignRefusals()
	w1, w2 := refusal("w2", 5), refusal("w3", 5)
	w2.Kind = witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_INVALID_COSIGNATURE
	w1.RaftIndex, w2.RaftIndex = 1, 1
	if diff := cmp.Diff([]*witnessv1.CosignRefusal{w1, w2}, got, protocmp.Transform()); diff != "" || n != 2 {
		t.Fatalf("refusals (%d in all) (-want +got):\n%s", n, diff)
	}
	for i := range KeepRefusals {
		mustOK(t, h.recordRefusals(refusal("w2", uint64(10+i))))
	}
	got, n = h.f.CosignRefusals()
	if len(got) != KeepRefusals || n != KeepRefusals+2 || got[0].GetSize() != 10 {
		t.Fatalf("kept %d of %d refusals, oldest at size %d; want the last %d", len(got), n, got[0].GetSize(), KeepRefusals)
	}
	for name, bad := range map[string]*witnessv1.CosignRefusal{
		"no node":      {Table: tbl, Root: make([]byte, 32), Kind: witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK},
		"bad table":    {NodeId: "w2", Table: "nodot", Root: make([]byte, 32), Kind: witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK},
		"short root":   {NodeId: "w2", Table: tbl, Root: make([]byte, 3), Kind: witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK},
		"no kind":      {NodeId: "w2", Table: tbl, Root: make([]byte, 32)},
		"unknown kind": {NodeId: "w2", Table: tbl, Root: make([]byte, 32), Kind: 99},
	} {
		if r := h.recordRefusals(bad); !errors.Is(r.Err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, r.Err)
		}
	}
	if r := h.recordRefusals(); !errors.Is(r.Err, ErrInvalid) {
		t.Errorf("no refusals: err = %v, want ErrInvalid", r.Err)
	}
	if _, n := h.f.CosignRefusals(); n != KeepRefusals+2 {
		t.Fatalf("invalid refusals were recorded: %d in all", n)
	}
}

// populatedV5 adds stored checkpoints (one replaced by a later one) and
// cosigning refusals to populatedV3.
func populatedV5(t *testing.T) *harness {
	t.Helper()
	h := populatedV3(t)
	k := cosigners(t)
	mustOK(t, h.storeCheckpoint(tbl, signedCheckpoint(t, h.f, tbl, 6, k[0], k[1])))
	mustOK(t, h.storeCheckpoint(tbl, signedCheckpoint(t, h.f, tbl, 8, k[0], k[1], k[2])))
	mustOK(t, h.storeCheckpoint("public.protected", signedCheckpoint(t, h.f, "public.protected", 5, k[2])))
	mustOK(t, h.recordRefusals(refusal("w2", 6), refusal("w3", 8)))
	if r := h.storeCheckpoint(tbl, signedCheckpoint(t, h.f, tbl, 6, k[0], k[1])); !errors.Is(r.Err, ErrStaleCheckpoint) {
		t.Fatalf("replayed checkpoint: %v", r.Err)
	}
	return h
}

type checkpointStatus struct {
	Checkpoints map[string]Checkpoint
	Refusals    []*witnessv1.CosignRefusal
	Refused     uint64
}

func checkpointStatusOf(f *FSM) checkpointStatus {
	st := checkpointStatus{Checkpoints: map[string]Checkpoint{}}
	for _, info := range f.Tables() {
		if cp, ok := f.Checkpoint(info.Name); ok {
			st.Checkpoints[info.Name] = cp
		}
	}
	st.Refusals, st.Refused = f.CosignRefusals()
	return st
}

func TestSnapshotCheckpointsRoundTrip(t *testing.T) {
	src := populatedV5(t).f
	f := New()
	if err := f.Restore(nopCloser(persist(t, src))); err != nil {
		t.Fatal(err)
	}
	want := checkpointStatusOf(src)
	if len(want.Checkpoints) != 2 || want.Refused != 2 {
		t.Fatalf("populatedV5 holds %d checkpoints and %d refusals, want 2 and 2", len(want.Checkpoints), want.Refused)
	}
	if diff := cmp.Diff(want, checkpointStatusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("restored checkpoints (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(statusOf(src), statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("restored state (-want +got):\n%s", diff)
	}
	// The stale-checkpoint rule holds after a restore.
	h := &harness{t: t, f: f, index: src.Applied()}
	if r := h.storeCheckpoint(tbl, signedCheckpoint(t, f, tbl, 8, cosigners(t)...)); !errors.Is(r.Err, ErrStaleCheckpoint) {
		t.Fatalf("replay after restore: %v", r.Err)
	}
}

// TestSnapshotV5GoldenCheckpoints checks what TestSnapshotGolden does not
// compare: the checkpoints and refusals the version 5 golden file holds.
func TestSnapshotV5GoldenCheckpoints(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "snapshot-v5.golden"))
	if err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := f.Restore(nopCloser(b)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(checkpointStatusOf(populatedV5(t).f), checkpointStatusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("v5 golden checkpoints (-want +got):\n%s", diff)
	}
}

// TestSnapshotV4GoldenRestores reads version 4, which has no checkpoints.
func TestSnapshotV4GoldenRestores(t *testing.T) {
	v4, err := os.ReadFile(filepath.Join("testdata", "snapshot-v4.golden"))
	if err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := f.Restore(nopCloser(v4)); err != nil {
		t.Fatal(err)
	}
	src := populatedV3(t).f
	if diff := cmp.Diff(statusOf(src), statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("v4 golden snapshot restores to a different state (-want +got):\n%s", diff)
	}
	if st := checkpointStatusOf(f); len(st.Checkpoints) != 0 || st.Refused != 0 {
		t.Fatalf("v4 restored with checkpoints: %+v", st)
	}
	if out := persist(t, f); !bytes.Equal(out, persist(t, src)) {
		t.Fatal("a state restored from v4 does not persist like the original")
	}
}

// A snapshot whose checkpoint does not match its table's log is refused,
// even with a valid checksum (a doctored file).
func TestRestoreRefusesDoctoredCheckpoint(t *testing.T) {
	h := newCheckpointHarness(t)
	k := cosigners(t)
	mustOK(t, h.storeCheckpoint(tbl, signedCheckpoint(t, h.f, tbl, 6, k[0], k[1])))
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	s := snap.(*snapshot)
	s.checkpoints[0].Note = signCheckpoint(t, tbl, 6, [32]byte{9}, k[0], k[1])
	var sink memSink
	if err := s.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if err := New().Restore(nopCloser(sink.Bytes())); !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), "does not match this node's log") {
		t.Fatalf("doctored checkpoint: err = %v, want ErrBadSnapshot naming the mismatch", err)
	}
}
