package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/statedigest"
)

func (h *harness) registerBuckets(name string, mode witnessv1.TableMode, buckets uint32) *Result {
	h.t.Helper()
	return h.apply(&witnessv1.Command{ProposedAtMicros: int64(h.index), Command: &witnessv1.Command_RegisterTable{
		RegisterTable: &witnessv1.RegisterTableCommand{Table: name, Mode: mode, Buckets: buckets},
	}})
}

// change returns one entry of the transaction at lsn for row i: an
// UPDATE from version old to version v, a DELETE of version old, or an
// INSERT of version v. withOld controls whether old_data_commit is sent.
func change(lsn uint64, tx uint32, op witnessv1.Op, row, v, old int, withOld bool) *witnessv1.Entry {
	e := &witnessv1.Entry{CommitLsn: lsn, TxIndex: tx, Op: op, KeyCommit: commit("key", row), Xid: uint32(lsn)}
	if op != witnessv1.Op_OP_DELETE {
		e.DataCommit = commit("data", row*1000+v)
	}
	if withOld && (op == witnessv1.Op_OP_UPDATE || op == witnessv1.Op_OP_DELETE) {
		e.OldDataCommit = commit("data", row*1000+old)
	}
	return e
}

// inserts returns rows [from, to) inserted at version 0, one transaction.
func inserts(lsn uint64, from, to int) []*witnessv1.Entry {
	var out []*witnessv1.Entry
	for i := from; i < to; i++ {
		out = append(out, change(lsn, uint32(i-from), witnessv1.Op_OP_INSERT, i, 0, 0, false))
	}
	return out
}

// churn is a mutable table's history: inserts, updates, deletes, a
// re-insert, and non-row ops, among them a TRUNCATE (seq 46) that empties
// the table.
func churn() [][]*witnessv1.Entry {
	return [][]*witnessv1.Entry{
		inserts(10, 0, 40),
		{
			change(11, 0, witnessv1.Op_OP_UPDATE, 3, 1, 0, true),
			change(11, 1, witnessv1.Op_OP_DELETE, 7, 0, 0, true),
			change(11, 2, witnessv1.Op_OP_UPDATE, 3, 2, 1, true),
			{CommitLsn: 11, TxIndex: 3, Op: witnessv1.Op_OP_HEARTBEAT},
		},
		{
			change(12, 0, witnessv1.Op_OP_INSERT, 7, 5, 0, false),
			change(12, 1, witnessv1.Op_OP_DELETE, 20, 0, 0, true),
			{CommitLsn: 12, TxIndex: 2, Op: witnessv1.Op_OP_TRUNCATE},
		},
		inserts(13, 40, 50),
	}
}

// churnWithoutTruncate is churn without its TRUNCATE: every row change
// stays in the expected state.
func churnWithoutTruncate() [][]*witnessv1.Entry {
	c := churn()
	c[2] = c[2][:2]
	return c
}

// resetsState is the reset rule of docs/design/0004, spelled out again
// for the tests: a PROTECT, or a TRUNCATE on a mutable table, empties the
// expected state.
func resetsState(op commitment.Op, mode statedigest.Mode) bool {
	return op == commitment.OpProtect || (op == commitment.OpTruncate && mode == statedigest.Mutable)
}

// digestOf builds a digest directly from the first n entries of a view,
// starting again from empty at every reset.
func digestOf(t *testing.T, v *View, mode statedigest.Mode, buckets int, n uint64) *statedigest.Digest {
	t.Helper()
	d, err := statedigest.New(buckets)
	if err != nil {
		t.Fatal(err)
	}
	for seq := range n {
		enc, _, err := v.Entry(seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := commitment.DecodeEntry(enc)
		if err != nil {
			t.Fatal(err)
		}
		if resetsState(e.Op, mode) {
			d, _ = statedigest.New(buckets)
			continue
		}
		if err := d.Apply(statedigest.ChangeOf(e), mode); err != nil {
			t.Fatalf("entry %d: %v", seq, err)
		}
	}
	return d
}

// rootsByPrefix returns, for every X up to the view's size, the root of a
// digest built directly from the first X entries, and the seq of the last
// reset (-1 if none).
func rootsByPrefix(t *testing.T, v *View, mode statedigest.Mode, buckets int) ([][32]byte, int64) {
	t.Helper()
	d, err := statedigest.New(buckets)
	if err != nil {
		t.Fatal(err)
	}
	roots := [][32]byte{d.Root()}
	lastReset := int64(-1)
	for seq := range v.Info.Size {
		enc, _, err := v.Entry(seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := commitment.DecodeEntry(enc)
		if err != nil {
			t.Fatal(err)
		}
		if resetsState(e.Op, mode) {
			d, _ = statedigest.New(buckets)
			lastReset = int64(seq)
		} else if err := d.Apply(statedigest.ChangeOf(e), mode); err != nil {
			t.Fatalf("entry %d: %v", seq, err)
		}
		roots = append(roots, d.Root())
	}
	return roots, lastReset
}

func TestStateDigestFollowsLog(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history [][]*witnessv1.Entry
		buckets uint32
		rows    uint64
	}{
		{"default buckets", churnWithoutTruncate(), 0, 49}, // 50 inserted, 2 deleted, 1 re-inserted
		{"8 buckets", churnWithoutTruncate(), 8, 49},
		{"truncated", churn(), 8, 10}, // the 10 inserted after the TRUNCATE
	} {
		h := newHarness(t)
		mustOK(t, h.registerBuckets(tbl, witnessv1.TableMode_TABLE_MODE_MUTABLE, tc.buckets))
		for _, b := range tc.history {
			mustOK(t, h.append(tbl, b))
		}
		// Replays change nothing.
		if r := mustOK(t, h.append(tbl, tc.history[1])); r.Duplicates != 4 {
			t.Fatalf("replay: %+v", r)
		}
		v, err := h.f.Table(tbl)
		if err != nil {
			t.Fatal(err)
		}
		nb := int(v.Info.Buckets)
		got, size, err := h.f.StateDigest(tbl, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := digestOf(t, v, statedigest.Mutable, nb, v.Info.Size)
		if size != v.Info.Size || got.Buckets() != nb || !got.Equal(want) || got.Root() != want.Root() {
			t.Fatalf("%s: FSM digest at %d differs from one built from the entries", tc.name, size)
		}
		if got.Rows() != tc.rows {
			t.Fatalf("%s: digest holds %d rows, want %d", tc.name, got.Rows(), tc.rows)
		}
		// As of every earlier size: the digest after the first X entries,
		// or, at or before the last reset, an error naming it.
		wantAt, lastReset := rootsByPrefix(t, v, statedigest.Mutable, nb)
		if gotReset := int64(v.Info.ResetSeq); v.Info.HasReset != (lastReset >= 0) || (lastReset >= 0 && gotReset != lastReset) {
			t.Fatalf("%s: table reports reset %v at %d, want %d", tc.name, v.Info.HasReset, v.Info.ResetSeq, lastReset)
		}
		for x := uint64(1); x <= v.Info.Size; x++ {
			old, at, err := h.f.StateDigest(tbl, x)
			if int64(x) <= lastReset {
				if !errors.Is(err, ErrBeforeReset) || !errors.Is(err, ErrDigestUnavailable) || !strings.Contains(err.Error(), fmt.Sprintf("entry %d (TRUNCATE", lastReset)) {
					t.Fatalf("%s: as of %d, before the reset at %d: %v, want ErrBeforeReset naming the entry", tc.name, x, lastReset, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: as of %d: %v", tc.name, x, err)
			}
			if at != x || old.Root() != wantAt[x] {
				t.Fatalf("%s: as of %d: root %x at %d, want %x", tc.name, x, old.Root(), at, wantAt[x])
			}
		}
		if _, _, err := h.f.StateDigest(tbl, v.Info.Size+1); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("as of beyond the log: %v, want ErrOutOfRange", err)
		}
		if _, _, err := h.f.StateDigest("public.nope", 0); !errors.Is(err, ErrUnknownTable) {
			t.Fatalf("unknown table: %v, want ErrUnknownTable", err)
		}
	}
}

func TestStateDigestAppendOnlyKeepsOriginals(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.registerBuckets(tbl, witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, 16))
	mustOK(t, h.append(tbl, inserts(1, 0, 20)))
	before, _, err := h.f.StateDigest(tbl, 0)
	if err != nil {
		t.Fatal(err)
	}
	// With or without old_data_commit: the original rows stay expected.
	r := mustOK(t, h.append(tbl, []*witnessv1.Entry{
		change(2, 0, witnessv1.Op_OP_UPDATE, 1, 1, 0, true),
		change(2, 1, witnessv1.Op_OP_UPDATE, 2, 1, 0, false),
		change(2, 2, witnessv1.Op_OP_DELETE, 3, 0, 0, true),
		change(2, 3, witnessv1.Op_OP_DELETE, 4, 0, 0, false),
	}))
	if r.Appended != 4 || r.Table.DigestUnavailable {
		t.Fatalf("append = %+v", r)
	}
	after, size, err := h.f.StateDigest(tbl, 0)
	if err != nil {
		t.Fatal(err)
	}
	if size != 24 || !after.Equal(before) || after.Rows() != 20 {
		t.Fatalf("UPDATE/DELETE on an append-only table changed its digest (size %d, %d rows)", size, after.Rows())
	}
}

func TestStateDigestUnavailable(t *testing.T) {
	tests := []struct {
		name  string
		batch []*witnessv1.Entry
		want  []string
	}{
		{"update without old data", []*witnessv1.Entry{
			change(2, 0, witnessv1.Op_OP_INSERT, 50, 0, 0, false),
			change(2, 1, witnessv1.Op_OP_UPDATE, 1, 1, 0, false),
		}, []string{tbl, "entry 6 is a UPDATE without old_data_commit", "ALTER TABLE " + tbl + " REPLICA IDENTITY FULL"}},
		{"delete without old data", []*witnessv1.Entry{
			change(2, 0, witnessv1.Op_OP_DELETE, 1, 0, 0, false),
		}, []string{tbl, "entry 5 is a DELETE without old_data_commit", "REPLICA IDENTITY FULL"}},
		{"delete of a row never logged", []*witnessv1.Entry{
			{CommitLsn: 2, Op: witnessv1.Op_OP_DELETE, KeyCommit: append(make([]byte, 31), 1), OldDataCommit: commit("x", 1)},
		}, []string{tbl, "entry 5 removes a row from an empty bucket", "re-baseline"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			mustOK(t, h.registerBuckets(tbl, witnessv1.TableMode_TABLE_MODE_MUTABLE, 1024))
			mustOK(t, h.append(tbl, inserts(1, 0, 5)))
			r := h.append(tbl, tt.batch)
			if r.Err != nil || r.Appended != uint32(len(tt.batch)) {
				t.Fatalf("the batch was not logged: %+v", r)
			}
			if !r.Table.DigestUnavailable || r.Table.UnavailableSeq != 5+uint64(len(tt.batch))-1 {
				t.Fatalf("table = %+v, want the digest unavailable since the last entry", r.Table)
			}
			// Logging goes on.
			if r := mustOK(t, h.append(tbl, inserts(3, 100, 103))); r.Table.Size != 5+uint64(len(tt.batch))+3 || r.Table.UnavailableSeq != 5+uint64(len(tt.batch))-1 {
				t.Fatalf("append after: %+v", r.Table)
			}
			if rej, n := h.f.Rejections(); n != 0 {
				t.Fatalf("rejections: %v", rej)
			}
			_, _, err := h.f.StateDigest(tbl, 0)
			if !errors.Is(err, ErrDigestUnavailable) {
				t.Fatalf("StateDigest: %v, want ErrDigestUnavailable", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// The state survives a snapshot, and replicas agree.
			f := New()
			if err := f.Restore(nopCloser(persist(t, h.f))); err != nil {
				t.Fatal(err)
			}
			if _, _, err2 := f.StateDigest(tbl, 0); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("after restore: %v, want %v", err2, err)
			}
		})
	}
}

// populatedV2 builds a state that exercises every snapshot field: small
// bucket counts keep the golden file short.
func populatedV2(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	mustOK(t, h.registerBuckets(tbl, 0, 2))
	mustOK(t, h.registerBuckets("billing.invoices", witnessv1.TableMode_TABLE_MODE_MUTABLE, 1))
	mustOK(t, h.registerBuckets("billing.broken", witnessv1.TableMode_TABLE_MODE_MUTABLE, 1))
	mustOK(t, h.registerBuckets("public.empty", 0, 1))
	mustOK(t, h.append(tbl, entries(1, 7)))
	mustOK(t, h.append(tbl, []*witnessv1.Entry{change(2, 0, witnessv1.Op_OP_UPDATE, 100001, 1, 0, false)}))
	for _, b := range churn() {
		mustOK(t, h.append("billing.invoices", b))
	}
	mustOK(t, h.append("billing.broken", inserts(1, 0, 3)))
	mustOK(t, h.append("billing.broken", []*witnessv1.Entry{change(2, 0, witnessv1.Op_OP_UPDATE, 1, 1, 0, false)}))
	mustOK(t, h.append("billing.broken", inserts(3, 3, 5)))
	h.append("public.missing", entries(1, 1))
	return h
}

func nopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
