package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/tlog"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const tbl = "public.audit_log"

// commit returns a distinct 32-byte value for (kind, i).
func commit(kind string, i int) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	h := sha256.Sum256(append([]byte(kind), b[:]...))
	return h[:]
}

// entries returns n INSERT entries, tx_index 0..n-1 of the transaction
// committed at lsn.
func entries(lsn uint64, n int) []*witnessv1.Entry {
	out := make([]*witnessv1.Entry, n)
	for i := range out {
		out[i] = &witnessv1.Entry{
			CommitLsn:        lsn,
			TxIndex:          uint32(i),
			Op:               witnessv1.Op_OP_INSERT,
			KeyCommit:        commit("key", int(lsn)*100000+i),
			DataCommit:       commit("data", int(lsn)*100000+i),
			CommitTimeMicros: 1_700_000_000_000_000 + int64(lsn),
			Xid:              uint32(700 + lsn),
		}
	}
	return out
}

type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
}

func newHarness(t testing.TB) *harness { return &harness{t: t, f: New()} }

func (h *harness) apply(cmd *witnessv1.Command) *Result {
	h.t.Helper()
	b, err := proto.Marshal(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	res, ok := h.f.Apply(&raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: b}).(*Result)
	if !ok {
		h.t.Fatalf("Apply returned %T, want *Result", res)
	}
	return res
}

func (h *harness) register(name string, mode witnessv1.TableMode) *Result {
	h.t.Helper()
	return h.apply(&witnessv1.Command{ProposedAtMicros: int64(h.index), Command: &witnessv1.Command_RegisterTable{
		RegisterTable: &witnessv1.RegisterTableCommand{Table: name, Mode: mode},
	}})
}

func (h *harness) append(name string, es []*witnessv1.Entry) *Result {
	h.t.Helper()
	return h.apply(&witnessv1.Command{ProposedAtMicros: int64(h.index), Command: &witnessv1.Command_Append{
		Append: &witnessv1.AppendCommand{Table: name, Entries: es},
	}})
}

func mustOK(t *testing.T, r *Result) *Result {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("command rejected: %v", r.Err)
	}
	return r
}

func TestRegisterTable(t *testing.T) {
	h := newHarness(t)
	r := mustOK(t, h.register(tbl, witnessv1.TableMode_TABLE_MODE_UNSPECIFIED))
	if !r.Created || r.Table.Mode != witnessv1.TableMode_TABLE_MODE_APPEND_ONLY || r.Table.Buckets != DefaultBuckets {
		t.Fatalf("register = %+v, want created append-only with %d buckets", r, DefaultBuckets)
	}
	if r.Table.Root != sha256.Sum256(nil) {
		t.Fatalf("empty table root = %x, want SHA-256 of nothing", r.Table.Root)
	}
	r = mustOK(t, h.register(tbl, witnessv1.TableMode_TABLE_MODE_APPEND_ONLY))
	if r.Created {
		t.Fatal("second identical RegisterTable created the table again")
	}
	r = h.register(tbl, witnessv1.TableMode_TABLE_MODE_MUTABLE)
	if !errors.Is(r.Err, ErrTableConflict) {
		t.Fatalf("RegisterTable with another mode: err = %v, want ErrTableConflict", r.Err)
	}
	for _, bad := range []string{"", "noschema", ".x", "x.", "a.b\n", strings.Repeat("a", 200) + "." + strings.Repeat("b", 60)} {
		if r := h.register(bad, 0); !errors.Is(r.Err, ErrInvalid) {
			t.Errorf("RegisterTable(%q): err = %v, want ErrInvalid", bad, r.Err)
		}
	}
	if r := h.apply(&witnessv1.Command{Command: &witnessv1.Command_RegisterTable{RegisterTable: &witnessv1.RegisterTableCommand{Table: "a.b", Buckets: 1000}}}); !errors.Is(r.Err, ErrInvalid) {
		t.Errorf("RegisterTable with 1000 buckets: err = %v, want ErrInvalid", r.Err)
	}
	if got := len(h.f.Tables()); got != 1 {
		t.Errorf("%d tables after rejected registrations, want 1", got)
	}
}

func TestAppendAssignsSeqAndHashes(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.register(tbl, 0))
	es := entries(10, 5)
	es[4].Op = witnessv1.Op_OP_DELETE
	es[4].DataCommit = nil
	es[4].OldDataCommit = commit("old", 4)
	r := mustOK(t, h.append(tbl, es))
	if r.Appended != 5 || r.Duplicates != 0 || r.Table.Size != 5 {
		t.Fatalf("append = %+v, want 5 appended, size 5", r)
	}
	v, err := h.f.Table(tbl)
	if err != nil {
		t.Fatal(err)
	}
	want := tlog.New()
	for i, e := range es {
		enc, leaf, err := v.Entry(uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		d, err := commitment.DecodeEntry(enc)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if d.Seq != uint64(i) || d.CommitLSN != e.CommitLsn || d.TxIndex != e.TxIndex || d.Op != commitment.Op(e.Op) || d.XID != e.Xid || d.CommitTimeMicros != e.CommitTimeMicros {
			t.Fatalf("entry %d decodes to %+v, from %v", i, d, e)
		}
		if !bytes.Equal(d.KeyCommit[:], e.KeyCommit) || (e.DataCommit == nil) != (d.DataCommit == nil) || (e.OldDataCommit == nil) != (d.OldDataCommit == nil) {
			t.Fatalf("entry %d commitments differ: %+v", i, d)
		}
		if leaf != sha256.Sum256(append([]byte{0}, enc...)) {
			t.Fatalf("entry %d leaf hash is not SHA-256(0x00 || encoding)", i)
		}
		if err := want.Append(leaf); err != nil {
			t.Fatal(err)
		}
	}
	if r.Table.Root != want.Root() || r.Table.ChainHead != want.ChainHead() {
		t.Fatalf("root/chain head differ from a log built from the same leaves")
	}
	if !r.Table.HasLast || r.Table.Last != (Position{10, 4}) {
		t.Fatalf("last position = %+v, want (10, 4)", r.Table.Last)
	}
}

func TestApplyTwiceIsIdempotent(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.register(tbl, 0))
	batch := append(entries(100, 50), entries(101, 50)...)
	first := mustOK(t, h.append(tbl, batch))
	second := mustOK(t, h.append(tbl, batch))
	if first.Appended != 100 || first.Duplicates != 0 {
		t.Fatalf("first apply: %d appended, %d duplicates; want 100, 0", first.Appended, first.Duplicates)
	}
	if second.Appended != 0 || second.Duplicates != 100 {
		t.Fatalf("second apply: %d appended, %d duplicates; want 0, 100", second.Appended, second.Duplicates)
	}
	if second.Table.Size != 100 || second.Table.Root != first.Table.Root || second.Table.ChainHead != first.Table.ChainHead {
		t.Fatalf("replay changed the log: %+v then %+v", first.Table, second.Table)
	}
	// A replay that overlaps new changes keeps the new ones only.
	mixed := append(entries(101, 50)[40:], entries(102, 10)...)
	r := mustOK(t, h.append(tbl, mixed))
	if r.Duplicates != 10 || r.Appended != 10 || r.Table.Size != 110 {
		t.Fatalf("overlapping replay: %+v, want 10 duplicates, 10 appended, size 110", r)
	}
	if rej, n := h.f.Rejections(); n != 0 || len(rej) != 0 {
		t.Fatalf("duplicates were recorded as rejections: %v", rej)
	}
}

func TestRejectionsAreRecorded(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.register(tbl, 0))
	mustOK(t, h.append(tbl, entries(1, 3)))
	before := h.f.Tables()

	short := entries(2, 3)
	short[1].KeyCommit = short[1].KeyCommit[:31]
	longData := entries(2, 3)
	longData[2].DataCommit = append(longData[2].DataCommit, 0)
	badOp := entries(2, 1)
	badOp[0].Op = witnessv1.Op(99)
	unordered := entries(2, 3)
	unordered[1], unordered[2] = unordered[2], unordered[1]
	tests := []struct {
		name  string
		table string
		es    []*witnessv1.Entry
		want  error
	}{
		{"short key commit", tbl, short, ErrInvalid},
		{"long data commit", tbl, longData, ErrInvalid},
		{"unknown op", tbl, badOp, ErrInvalid},
		{"out of order", tbl, unordered, ErrOutOfOrder},
		{"empty batch", tbl, nil, ErrInvalid},
		{"unknown table", "public.other", entries(2, 1), ErrUnknownTable},
	}
	for i, tc := range tests {
		r := h.append(tc.table, tc.es)
		if !errors.Is(r.Err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, r.Err, tc.want)
			continue
		}
		if r.Rejection == nil || r.Rejection.RaftIndex != h.index || r.Rejection.Table != tc.table || r.Rejection.Reason != r.Err.Error() {
			t.Errorf("%s: rejection = %v", tc.name, r.Rejection)
		}
		if rej, n := h.f.Rejections(); n != uint64(i+1) || !proto.Equal(rej[len(rej)-1], r.Rejection) {
			t.Errorf("%s: recorded rejections (%d in all) end with %v, want %v", tc.name, n, rej[len(rej)-1], r.Rejection)
		}
	}
	if diff := cmp.Diff(before, h.f.Tables()); diff != "" {
		t.Fatalf("rejected batches changed the tables (-before +after):\n%s", diff)
	}
	// Only the last KeepRejections are kept.
	for range KeepRejections + 5 {
		h.append("public.other", entries(1, 1))
	}
	rej, n := h.f.Rejections()
	if len(rej) != KeepRejections || n != uint64(len(tests)+KeepRejections+5) || rej[len(rej)-1].RaftIndex != h.index {
		t.Fatalf("kept %d rejections of %d, last at %d; want %d kept, last at %d", len(rej), n, rej[len(rej)-1].RaftIndex, KeepRejections, h.index)
	}
}

func TestUndecodableCommandPanics(t *testing.T) {
	unknown, err := proto.Marshal(&witnessv1.Command{ProposedAtMicros: 5})
	if err != nil {
		t.Fatal(err)
	}
	// Field 15 is not part of Command: what a newer version's command
	// looks like to this one.
	future := protowireAppend(unknown, 15, []byte{1, 2, 3})
	for name, data := range map[string][]byte{
		"garbage":        {0xff, 0xff, 0xff},
		"no command":     unknown,
		"future command": future,
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("Apply did not panic")
				}
			}()
			New().Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data})
		})
	}
}

// protowireAppend appends a length-delimited field to a protobuf message.
func protowireAppend(b []byte, field int, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(field)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// populated builds a state with two tables, duplicates and a rejection.
func populated(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	mustOK(t, h.register(tbl, 0))
	mustOK(t, h.register("billing.invoices", witnessv1.TableMode_TABLE_MODE_MUTABLE))
	mustOK(t, h.register("public.empty", 0))
	mustOK(t, h.append(tbl, entries(1, 7)))
	mustOK(t, h.append(tbl, entries(2, 3)))
	mustOK(t, h.append("billing.invoices", entries(5, 4)))
	h.append("public.missing", entries(1, 1))
	return h
}

type status struct {
	Applied    uint64
	Tables     []TableInfo
	Rejections []*witnessv1.Rejection
	Rejected   uint64
	// Digests is each table's encoded state digest, or the error saying
	// why it is unavailable.
	Digests map[string]string
}

func statusOf(f *FSM) status {
	rej, n := f.Rejections()
	st := status{Applied: f.Applied(), Tables: f.Tables(), Rejections: rej, Rejected: n, Digests: map[string]string{}}
	for _, t := range st.Tables {
		d, _, err := f.StateDigest(t.Name, 0)
		if err != nil {
			st.Digests[t.Name] = err.Error()
			continue
		}
		b, _ := d.MarshalBinary()
		st.Digests[t.Name] = fmt.Sprintf("%x", sha256.Sum256(b))
	}
	return st
}

// memSink is a raft.SnapshotSink into memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func persist(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := populated(t)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := statusOf(h.f)
	// Commands applied after Snapshot must not leak into it.
	mustOK(t, h.append(tbl, entries(3, 2)))
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	restored := New()
	mustOK(t, (&harness{t: t, f: restored}).register("public.gone", 0)) // state Restore must replace
	if err := restored.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, statusOf(restored), protocmp.Transform()); diff != "" {
		t.Fatalf("restored status differs (-want +got):\n%s", diff)
	}
	// Entries, proofs and dedupe survive the round trip.
	v, err := restored.Table(tbl)
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.InclusionProof(3, v.Info.Size)
	if err != nil {
		t.Fatal(err)
	}
	_, leaf, _ := v.Entry(3)
	if err := tlog.VerifyInclusion(3, v.Info.Size, leaf[:], p, v.Info.Root[:]); err != nil {
		t.Fatal(err)
	}
	h2 := &harness{t: t, f: restored, index: want.Applied}
	if r := mustOK(t, h2.append(tbl, entries(2, 3))); r.Duplicates != 3 || r.Appended != 0 {
		t.Fatalf("replay after restore: %+v, want 3 duplicates", r)
	}
	orig, _ := h.f.Table(tbl)
	if r := mustOK(t, h2.append(tbl, entries(3, 2))); r.Table.Root != orig.Info.Root {
		t.Fatalf("restored replica diverged from the original after the same command")
	}
}

// TestSnapshotGolden pins today's format, version 6: the writer must
// produce the golden file byte for byte, and the file must restore.
// anchors_test.go pins version 6 with anchor receipts in it and checks that
// the version 5 golden files still restore.
func TestSnapshotGolden(t *testing.T) {
	src := populatedV5(t).f
	got := persist(t, src)
	path := filepath.Join("testdata", "snapshot-v6.golden")
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
	// And the golden file restores to the state that wrote it.
	f := New()
	if err := f.Restore(io.NopCloser(bytes.NewReader(want))); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(statusOf(src), statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("golden snapshot restores to a different state (-want +got):\n%s", diff)
	}
}

// TestSnapshotV3GoldenRestores reads version 3, written when LtHash
// expanded elements with SHAKE-128: its digests cannot be checked with
// today's expansion, so they are rebuilt from the entries, and the state is
// the one today's writer records.
func TestSnapshotV3GoldenRestores(t *testing.T) {
	v3, err := os.ReadFile(filepath.Join("testdata", "snapshot-v3.golden"))
	if err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := f.Restore(nopCloser(v3)); err != nil {
		t.Fatal(err)
	}
	src := populatedV3(t).f
	if diff := cmp.Diff(statusOf(src), statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("v3 golden snapshot restores to a different state (-want +got):\n%s", diff)
	}
	if out := persist(t, f); !bytes.Equal(out, persist(t, src)) {
		t.Fatal("a state restored from v3 does not persist like the original")
	}
}

// TestSnapshotV1GoldenRestores reads the version 1 format, which has no
// state digests: they are rebuilt from the entries.
func TestSnapshotV1GoldenRestores(t *testing.T) {
	v1, err := os.ReadFile(filepath.Join("testdata", "snapshot-v1.golden"))
	if err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := f.Restore(io.NopCloser(bytes.NewReader(v1))); err != nil {
		t.Fatal(err)
	}
	src := populated(t).f
	if diff := cmp.Diff(statusOf(src), statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("v1 golden snapshot restores to a different state (-want +got):\n%s", diff)
	}
	for _, name := range []string{tbl, "billing.invoices", "public.empty"} {
		want, size, err := src.StateDigest(name, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := f.StateDigest(name, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.Root() != want.Root() || got.Rows() != size {
			t.Errorf("%s: digest root %x with %d rows after restoring v1, want %x with %d", name, got.Root(), got.Rows(), want.Root(), size)
		}
	}
	// Persisting again writes today's version.
	if out := persist(t, f); !bytes.Equal(out, persist(t, src)) {
		t.Fatal("a state restored from v1 does not persist like the original")
	}
}

// TestSnapshotV2GoldenRestores reads the version 2 format, which has no
// protection fields. Its tables come back never protected, and their
// expected state follows today's rules: billing.invoices, a mutable table
// with a TRUNCATE, restores with the state reset at that TRUNCATE,
// although the file's digest still holds the rows from before it.
func TestSnapshotV2GoldenRestores(t *testing.T) {
	v2, err := os.ReadFile(filepath.Join("testdata", "snapshot-v2.golden"))
	if err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := f.Restore(nopCloser(v2)); err != nil {
		t.Fatal(err)
	}
	src := populatedV2(t).f
	if diff := cmp.Diff(statusOf(src), statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("v2 golden snapshot restores to a different state (-want +got):\n%s", diff)
	}
	for _, info := range f.Tables() {
		if info.Protection != witnessv1.Protection_PROTECTION_UNSPECIFIED || info.EpochSeq != 0 || info.BaselineLSN != 0 || info.BaselineRows != 0 || info.HasSchemaCommit {
			t.Errorf("%s restored from v2 with protection fields: %+v", info.Name, info)
		}
	}
	inv := mustInfo(t, f, "billing.invoices")
	if !inv.HasReset || inv.ResetSeq != 46 {
		t.Fatalf("billing.invoices restored from v2: %+v, want the TRUNCATE at 46 as its reset", inv)
	}
	if d := mustDigest(t, f, "billing.invoices", 0); d.Rows() != 10 {
		t.Fatalf("billing.invoices restored from v2 holds %d rows, want the 10 inserted after the TRUNCATE", d.Rows())
	}
	// Persisting again writes today's version.
	if out := persist(t, f); !bytes.Equal(out, persist(t, src)) {
		t.Fatal("a state restored from v2 does not persist like the original")
	}
	// Its digests (LtHash expansion version 1) are rebuilt, not compared:
	// TestRestoreRefusesDamage covers a damaged digest of today's version.
}

func TestRestoreRefusesDamage(t *testing.T) {
	good := persist(t, populatedV5(t).f)
	// A flipped byte anywhere must be refused, never loaded. Every restore
	// replays the entries, so a spread of offsets (every one at each end,
	// a stride with a moving phase between) keeps the test fast.
	for off := range damageOffsets(len(good)) {
		bad := append([]byte{}, good...)
		bad[off] ^= 0x40
		if err := New().Restore(io.NopCloser(bytes.NewReader(bad))); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("byte %d of %d flipped: err = %v, want ErrBadSnapshot", off, len(good), err)
		}
	}
	for _, n := range []int{0, 5, len(good) / 2, len(good) - 1} {
		if err := New().Restore(io.NopCloser(bytes.NewReader(good[:n]))); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("truncated to %d bytes: err = %v, want ErrBadSnapshot", n, err)
		}
	}
	if err := New().Restore(io.NopCloser(bytes.NewReader(append(good, 0)))); !errors.Is(err, ErrBadSnapshot) {
		t.Errorf("trailing byte: err = %v, want ErrBadSnapshot", err)
	}
}

// damageOffsets yields every offset of the first and last 128 bytes and
// about 400 more spread over the rest.
func damageOffsets(n int) func(func(int) bool) {
	return func(yield func(int) bool) {
		stride := max(1, n/400)
		for off := 0; off < n; {
			if !yield(off) {
				return
			}
			switch {
			case off < 128 || off >= n-128:
				off++
			default:
				off += stride + off%3
			}
		}
	}
}

func FuzzRestore(f *testing.F) {
	h := newHarness(f)
	h.register(tbl, 0)
	h.append(tbl, entries(1, 3))
	var sink memSink
	snap, _ := h.f.Snapshot()
	_ = snap.Persist(&sink)
	f.Add(sink.Bytes())
	f.Add([]byte("wzfsm\x00\x00\x04"))
	for _, name := range []string{"snapshot-v1.golden", "snapshot-v2.golden", "snapshot-v3.golden", "snapshot-v4.golden", "snapshot-v5.golden", "snapshot-v6.golden", "snapshot-v6-anchors.golden"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fsm := New()
		if err := fsm.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
			return
		}
		// Whatever restored must snapshot again to the same bytes.
		var out memSink
		s, _ := fsm.Snapshot()
		if err := s.Persist(&out); err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(b, snapMagic) && !bytes.Equal(out.Bytes(), b) {
			t.Fatalf("restored snapshot re-encodes differently")
		}
	})
}

func TestViewIsFrozen(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.register(tbl, 0))
	mustOK(t, h.append(tbl, entries(1, 10)))
	v, err := h.f.Table(tbl)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, h.append(tbl, entries(2, 10)))
	if v.Info.Size != 10 {
		t.Fatalf("view size = %d, want 10", v.Info.Size)
	}
	if _, _, err := v.Entry(10); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Entry(10) on a view of 10: err = %v, want ErrOutOfRange", err)
	}
	root, err := v.RootAt(10)
	if err != nil || root != v.Info.Root {
		t.Fatalf("RootAt(10) = %x, %v; want the view's root", root, err)
	}
	p, err := v.ConsistencyProof(4, 10)
	if err != nil {
		t.Fatal(err)
	}
	r4, _ := v.RootAt(4)
	if err := tlog.VerifyConsistency(4, 10, p, r4[:], root[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := h.f.Table("public.nope"); !errors.Is(err, ErrUnknownTable) {
		t.Fatalf("Table of an unknown table: err = %v, want ErrUnknownTable", err)
	}
}

func (h *harness) appendAfter(name string, after Position, es []*witnessv1.Entry) *Result {
	h.t.Helper()
	return h.apply(&witnessv1.Command{ProposedAtMicros: int64(h.index), Command: &witnessv1.Command_Append{
		Append: &witnessv1.AppendCommand{Table: name, Entries: es, AfterCommitLsn: after.CommitLSN, AfterTxIndex: after.TxIndex},
	}})
}

// TestAppendAfterPredecessor is the pipelining rule: a batch that names
// the position it follows is applied only once the log has reached it, so
// a batch whose predecessor failed is refused rather than logged past the
// gap (where the missing changes would later be dropped as replays).
func TestAppendAfterPredecessor(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.register(tbl, 0))

	// The first batch of a pipeline follows nothing.
	b1, b2, b3 := entries(100, 5), entries(101, 5), entries(102, 5)
	after1 := Position{CommitLSN: 100, TxIndex: 4}
	after2 := Position{CommitLSN: 101, TxIndex: 4}

	// b2 arrives before b1 (b1 failed on its way): refused, log untouched,
	// nothing recorded; on an empty log too.
	r := h.appendAfter(tbl, after1, b2)
	if !errors.Is(r.Err, ErrPredecessorPending) || r.Rejection != nil || r.Table.Size != 0 {
		t.Fatalf("b2 before b1 on an empty log: err %v, rejection %v, size %d; want ErrPredecessorPending, none, 0", r.Err, r.Rejection, r.Table.Size)
	}
	mustOK(t, h.append(tbl, b1))
	if r := h.appendAfter(tbl, after2, b3); !errors.Is(r.Err, ErrPredecessorPending) || r.Table.Size != 5 {
		t.Fatalf("b3 before b2: err %v, size %d; want ErrPredecessorPending, 5", r.Err, r.Table.Size)
	} else if !strings.Contains(r.Err.Error(), "(0/65, 4)") || !strings.Contains(r.Err.Error(), "ends at (0/64, 4)") {
		t.Fatalf("refusal does not name both positions: %v", r.Err)
	}
	// Once the predecessor is in, the batches go in order.
	if r := mustOK(t, h.appendAfter(tbl, after1, b2)); r.Appended != 5 || r.Table.Size != 10 {
		t.Fatalf("b2 after b1: %+v", r)
	}
	if r := mustOK(t, h.appendAfter(tbl, after2, b3)); r.Appended != 5 || r.Table.Size != 15 {
		t.Fatalf("b3 after b2: %+v", r)
	}
	// A predecessor the log has passed (a resent batch, or replays after a
	// reconnect) is fine: its entries are replays.
	if r := mustOK(t, h.appendAfter(tbl, after1, b2)); r.Appended != 0 || r.Duplicates != 5 {
		t.Fatalf("resent b2: %+v; want 5 duplicates", r)
	}
	if rej, n := h.f.Rejections(); n != 0 || len(rej) != 0 {
		t.Fatalf("pending predecessors were recorded as rejections: %v", rej)
	}
	// Every batch applied in order equals the log built without pipelining.
	ref := newHarness(t)
	mustOK(t, ref.register(tbl, 0))
	want := mustOK(t, ref.append(tbl, append(append(entries(100, 5), entries(101, 5)...), entries(102, 5)...)))
	if got := h.f.Tables()[0]; got.Root != want.Table.Root || got.ChainHead != want.Table.ChainHead {
		t.Fatalf("pipelined log differs from the sequential one")
	}
}
