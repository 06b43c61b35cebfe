package fsm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

func (h *harness) recordAnchor(r *witnessv1.AnchorReceipt) *Result {
	h.t.Helper()
	return h.apply(&witnessv1.Command{ProposedAtMicros: 1_700_000_000_000_000 + int64(h.index), Command: &witnessv1.Command_RecordAnchor{RecordAnchor: &witnessv1.RecordAnchorCommand{Receipt: r}}})
}

// receipt anchors each table at size with the root f's log has there.
func receipt(t *testing.T, f *FSM, key string, sizes map[string]uint64) *witnessv1.AnchorReceipt {
	t.Helper()
	r := &witnessv1.AnchorReceipt{
		Sink: "s3", Bucket: "witnz-anchors", Key: key, VersionId: "v-" + key, Etag: `"etag"`,
		Sha256: commit("object", len(key)), RetainUntilMicros: 1_800_000_000_000_000, AnchoredAtMicros: 1_700_000_000_000_000,
	}
	for _, name := range []string{tbl, "billing.invoices", "public.empty", "public.protected"} {
		size, ok := sizes[name]
		if !ok {
			continue
		}
		v, err := f.Table(name)
		if err != nil {
			t.Fatal(err)
		}
		root, err := v.RootAt(size)
		if err != nil {
			t.Fatal(err)
		}
		r.Checkpoints = append(r.Checkpoints, &witnessv1.AnchoredCheckpoint{Table: name, Size: size, Root: root[:]})
	}
	return r
}

func TestRecordAnchor(t *testing.T) {
	h := populated(t)
	first := receipt(t, h.f, "a/1.json", map[string]uint64{tbl: 6, "billing.invoices": 4})
	mustOK(t, h.recordAnchor(first))
	firstIndex := h.index
	second := receipt(t, h.f, "a/2.json", map[string]uint64{tbl: 10})
	mustOK(t, h.recordAnchor(second))

	got, total := h.f.AnchorReceipts("", 0, 0)
	if total != 2 || len(got) != 2 {
		t.Fatalf("AnchorReceipts = %d of %d, want 2 of 2", len(got), total)
	}
	if got[0].GetKey() != "a/2.json" || got[1].GetRaftIndex() != firstIndex {
		t.Fatalf("receipts not newest first with their Raft index: %v", got)
	}
	// The filters: a table, and a size the receipt must cover.
	if got, _ := h.f.AnchorReceipts("billing.invoices", 0, 0); len(got) != 1 || got[0].GetKey() != "a/1.json" {
		t.Fatalf("receipts of billing.invoices: %v", got)
	}
	if got, _ := h.f.AnchorReceipts(tbl, 7, 0); len(got) != 1 || got[0].GetKey() != "a/2.json" {
		t.Fatalf("receipts covering entry 6 of %s: %v", tbl, got)
	}
	if got, _ := h.f.AnchorReceipts("", 0, 1); len(got) != 1 {
		t.Fatalf("limit 1 returned %d", len(got))
	}
	// A receipt handed out is a copy.
	got[0].Key = "changed"
	if again, _ := h.f.AnchorReceipts("", 0, 1); again[0].GetKey() != "a/2.json" {
		t.Fatal("a returned receipt shares memory with the state")
	}
}

func TestRecordAnchorRejections(t *testing.T) {
	h := populated(t)
	good := func() *witnessv1.AnchorReceipt {
		return receipt(t, h.f, "a/1.json", map[string]uint64{tbl: 6})
	}
	tests := []struct {
		name   string
		change func(r *witnessv1.AnchorReceipt)
		want   error
		text   string
	}{
		{"no key", func(r *witnessv1.AnchorReceipt) { r.Key = "" }, ErrInvalid, "no sink or no key"},
		{"short checksum", func(r *witnessv1.AnchorReceipt) { r.Sha256 = r.Sha256[:8] }, ErrInvalid, "object checksum of 8 bytes"},
		{"no time", func(r *witnessv1.AnchorReceipt) { r.AnchoredAtMicros = 0 }, ErrInvalid, "no anchoring time"},
		{"no tables", func(r *witnessv1.AnchorReceipt) { r.Checkpoints = nil }, ErrInvalid, "0 anchored checkpoints"},
		{"twice", func(r *witnessv1.AnchorReceipt) { r.Checkpoints = append(r.Checkpoints, r.Checkpoints[0]) }, ErrInvalid, "anchored twice"},
		{"unknown table", func(r *witnessv1.AnchorReceipt) { r.Checkpoints[0].Table = "public.nope" }, ErrUnknownTable, `"public.nope"`},
		{"beyond the log", func(r *witnessv1.AnchorReceipt) { r.Checkpoints[0].Size = 11 }, ErrAnchor, "beyond its log of 10 entries"},
		{"other root", func(r *witnessv1.AnchorReceipt) { r.Checkpoints[0].Root = commit("forged", 1) }, ErrAnchor, "this node's log has"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.change(r)
			res := h.recordAnchor(r)
			if !errors.Is(res.Err, tt.want) || !errors.Is(res.Err, ErrAnchor) || !strings.Contains(res.Err.Error(), tt.text) {
				t.Fatalf("Apply = %v, want %v containing %q", res.Err, tt.want, tt.text)
			}
			if res.Rejection == nil {
				t.Fatal("rejection not recorded")
			}
		})
	}
	if got, total := h.f.AnchorReceipts("", 0, 0); len(got) != 0 || total != 0 {
		t.Fatalf("a rejected receipt was kept: %v", got)
	}
}

func TestAnchorReceiptsAreBounded(t *testing.T) {
	h := populated(t)
	r := receipt(t, h.f, "a/x.json", map[string]uint64{tbl: 10})
	for range KeepAnchors + 3 {
		mustOK(t, h.recordAnchor(r))
	}
	got, total := h.f.AnchorReceipts("", 0, 0)
	if len(got) != KeepAnchors || total != KeepAnchors+3 {
		t.Fatalf("kept %d of %d, want %d of %d", len(got), total, KeepAnchors, KeepAnchors+3)
	}
	if got[0].GetRaftIndex() != h.index {
		t.Fatalf("newest kept receipt has Raft index %d, want %d", got[0].GetRaftIndex(), h.index)
	}
}

// populatedV6 adds anchor receipts to populatedV5.
func populatedV6(t *testing.T) *harness {
	t.Helper()
	h := populatedV5(t)
	mustOK(t, h.recordAnchor(receipt(t, h.f, "witnz/default/anchor-1.json", map[string]uint64{tbl: 6, "public.protected": 5})))
	mustOK(t, h.recordAnchor(receipt(t, h.f, "witnz/default/anchor-2.json", map[string]uint64{tbl: 8})))
	return h
}

type anchorStatus struct {
	Receipts []*witnessv1.AnchorReceipt
	Total    uint64
}

func anchorStatusOf(f *FSM) anchorStatus {
	var st anchorStatus
	st.Receipts, st.Total = f.AnchorReceipts("", 0, 0)
	return st
}

// TestSnapshotV6AnchorsGolden pins the anchors section of version 6: the
// writer must produce the golden file byte for byte, and the file must
// restore to the same receipts and state.
func TestSnapshotV6AnchorsGolden(t *testing.T) {
	src := populatedV6(t).f
	got := persist(t, src)
	path := filepath.Join("testdata", "snapshot-v6-anchors.golden")
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
	if err := f.Restore(nopCloser(want)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(anchorStatusOf(src), anchorStatusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("golden anchors (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(statusOf(src), statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("golden state (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(checkpointStatusOf(src), checkpointStatusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("golden checkpoints (-want +got):\n%s", diff)
	}
}

// TestSnapshotV5GoldensRestore reads the version 5 files, which have no
// anchors section.
func TestSnapshotV5GoldensRestore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "snapshot-v5.golden"))
	if err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := f.Restore(nopCloser(b)); err != nil {
		t.Fatal(err)
	}
	src := populatedV5(t).f
	if diff := cmp.Diff(statusOf(src), statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("v5 golden state (-want +got):\n%s", diff)
	}
	if st := anchorStatusOf(f); len(st.Receipts) != 0 || st.Total != 0 {
		t.Fatalf("v5 restored with anchors: %+v", st)
	}
	b, err = os.ReadFile(filepath.Join("testdata", "snapshot-v5-membership.golden"))
	if err != nil {
		t.Fatal(err)
	}
	f = New()
	if err := f.Restore(nopCloser(b)); err != nil {
		t.Fatal(err)
	}
	if _, total := f.MembershipHistory(0); total != 3 {
		t.Fatalf("v5 membership golden restored %d membership records, want 3", total)
	}
}

// TestRestoreRefusesDoctoredAnchor rewrites a receipt's root in a snapshot
// (checksum recomputed): Restore must check receipts against the logs as
// Apply does.
func TestRestoreRefusesDoctoredAnchor(t *testing.T) {
	h := populatedV6(t)
	h.f.mu.Lock()
	doctored := proto.Clone(h.f.st.anchors.receipts[1]).(*witnessv1.AnchorReceipt)
	doctored.Checkpoints[0].Root = commit("forged", 2)
	h.f.st.anchors.receipts[1] = doctored
	h.f.mu.Unlock()
	b := persist(t, h.f)
	err := New().Restore(nopCloser(b))
	if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), "anchor receipt 1") {
		t.Fatalf("Restore = %v, want a bad snapshot naming anchor receipt 1", err)
	}
}
