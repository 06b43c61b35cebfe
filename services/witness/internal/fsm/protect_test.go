package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/statedigest"
)

const (
	baselining  = witnessv1.Protection_PROTECTION_BASELINING
	protected   = witnessv1.Protection_PROTECTION_PROTECTED
	unprotected = witnessv1.Protection_PROTECTION_UNPROTECTED
	unspecified = witnessv1.Protection_PROTECTION_UNSPECIFIED
)

// protectEntry is the PROTECT that starts an epoch at B = lsn.
func protectEntry(lsn uint64) *witnessv1.Entry {
	return &witnessv1.Entry{CommitLsn: lsn, TxIndex: 0, Op: witnessv1.Op_OP_PROTECT}
}

// baseline returns the BASELINE entries of rows [from, to) at B = lsn,
// tx_index 1+i for row i (version 0 of each row, as change writes it).
func baseline(lsn uint64, from, to int) []*witnessv1.Entry {
	var out []*witnessv1.Entry
	for i := from; i < to; i++ {
		out = append(out, &witnessv1.Entry{
			CommitLsn: lsn, TxIndex: uint32(1 + i), Op: witnessv1.Op_OP_BASELINE,
			KeyCommit: commit("key", i), DataCommit: commit("data", i*1000),
		})
	}
	return out
}

// schemaEntry is a SCHEMA entry whose data_commit is schema version v.
func schemaEntry(lsn uint64, tx uint32, v int) *witnessv1.Entry {
	return &witnessv1.Entry{CommitLsn: lsn, TxIndex: tx, Op: witnessv1.Op_OP_SCHEMA, DataCommit: commit("schema", v)}
}

// tableOp is a table-level entry (no commitments).
func tableOp(lsn uint64, tx uint32, op witnessv1.Op) *witnessv1.Entry {
	return &witnessv1.Entry{CommitLsn: lsn, TxIndex: tx, Op: op}
}

// protectFlow is the whole flow at B = lsn for rows [0, n), schema v.
func protectFlow(lsn uint64, n, v int) []*witnessv1.Entry {
	out := append([]*witnessv1.Entry{protectEntry(lsn)}, baseline(lsn, 0, n)...)
	return append(out, schemaEntry(lsn, uint32(n+1), v))
}

// rowsDigest is the digest of rows [from, to) at version 0, built without
// the FSM.
func rowsDigest(t *testing.T, buckets int, from, to int) *statedigest.Digest {
	t.Helper()
	d, err := statedigest.New(buckets)
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < to; i++ {
		d.Add(commitment.Commitment(commit("key", i)), commitment.Commitment(commit("data", i*1000)))
	}
	return d
}

func mustDigest(t *testing.T, f *FSM, name string, asOf uint64) *statedigest.Digest {
	t.Helper()
	d, _, err := f.StateDigest(name, asOf)
	if err != nil {
		t.Fatalf("StateDigest(%s, %d): %v", name, asOf, err)
	}
	return d
}

func mustInfo(t *testing.T, f *FSM, name string) TableInfo {
	t.Helper()
	v, err := f.Table(name)
	if err != nil {
		t.Fatal(err)
	}
	return v.Info
}

func mustReject(t *testing.T, h *harness, name string, es []*witnessv1.Entry, want ...string) {
	t.Helper()
	before := h.f.Tables()
	_, nBefore := h.f.Rejections()
	r := h.append(name, es)
	if !errors.Is(r.Err, ErrProtection) {
		t.Fatalf("err = %v, want ErrProtection", r.Err)
	}
	for _, w := range want {
		if !strings.Contains(r.Err.Error(), w) {
			t.Errorf("error %q does not contain %q", r.Err, w)
		}
	}
	rej, n := h.f.Rejections()
	if n != nBefore+1 || r.Rejection == nil || r.Rejection.Table != name || r.Rejection.Reason != r.Err.Error() || r.Rejection.RaftIndex != h.index || rej[len(rej)-1].Reason != r.Err.Error() {
		t.Fatalf("rejection not recorded: %v (%d in all, %d before)", r.Rejection, n, nBefore)
	}
	if diff := cmp.Diff(before, h.f.Tables()); diff != "" {
		t.Fatalf("a rejected batch changed the tables (-before +after):\n%s", diff)
	}
}

func TestProtectFlow(t *testing.T) {
	for _, mode := range []witnessv1.TableMode{witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, witnessv1.TableMode_TABLE_MODE_MUTABLE} {
		t.Run(mode.String(), func(t *testing.T) {
			const B, n = 0x1_0000_0100, 25
			h := newHarness(t)
			mustOK(t, h.registerBuckets(tbl, mode, 8))
			// Rows logged before the table was protected (a deployment from
			// before protection epochs) do not survive the new epoch.
			mustOK(t, h.append(tbl, inserts(5, 1000, 1010)))
			if info := mustInfo(t, h.f, tbl); info.Protection != unspecified || info.HasReset {
				t.Fatalf("before PROTECT: %+v", info)
			}

			r := mustOK(t, h.append(tbl, []*witnessv1.Entry{protectEntry(B)}))
			if got := r.Table; got.Protection != baselining || got.EpochSeq != 10 || got.BaselineLSN != B || got.BaselineRows != 0 || !got.HasReset || got.ResetSeq != 10 {
				t.Fatalf("after PROTECT: %+v", got)
			}
			if d := mustDigest(t, h.f, tbl, 0); d.Rows() != 0 {
				t.Fatalf("after PROTECT the digest holds %d rows, want 0", d.Rows())
			}
			// The baseline arrives in several batches.
			flow := protectFlow(B, n, 1)
			for _, chunk := range [][]*witnessv1.Entry{flow[1:10], flow[10:20], flow[20 : n+1]} {
				r = mustOK(t, h.append(tbl, chunk))
			}
			if r.Table.Protection != baselining || r.Table.BaselineRows != n {
				t.Fatalf("after the BASELINE entries: %+v, want baselining with %d rows so far", r.Table, n)
			}
			r = mustOK(t, h.append(tbl, flow[n+1:]))
			got := r.Table
			if got.Protection != protected || got.BaselineRows != n || got.EpochSeq != 10 || got.BaselineLSN != B ||
				!got.HasSchemaCommit || !bytes.Equal(got.SchemaCommit[:], commit("schema", 1)) || got.Size != 10+1+n+1 ||
				got.Last != (Position{B, n + 1}) {
				t.Fatalf("after SCHEMA: %+v", got)
			}
			want := rowsDigest(t, 8, 0, n)
			if d := mustDigest(t, h.f, tbl, 0); !d.Equal(want) || d.Root() != want.Root() {
				t.Fatalf("digest after the baseline (%d rows) differs from one built from the %d baseline rows", d.Rows(), n)
			}

			// Replaying the whole flow changes nothing.
			if r := mustOK(t, h.append(tbl, flow)); r.Duplicates != uint32(len(flow)) || r.Appended != 0 || r.Table.Root != got.Root {
				t.Fatalf("replay of the protect flow: %+v", r)
			}
			// Changes are accepted now.
			r = mustOK(t, h.append(tbl, inserts(B+10, n, n+5)))
			if d := mustDigest(t, h.f, tbl, 0); !d.Equal(rowsDigest(t, 8, 0, n+5)) {
				t.Fatal("digest after INSERTs on the protected table is not baseline + inserts")
			}
			// As of the end of the baseline, of the PROTECT, and before it.
			if d := mustDigest(t, h.f, tbl, 10+1+n+1); !d.Equal(want) {
				t.Fatal("digest as of the end of the baseline differs from the baseline's rows")
			}
			if d := mustDigest(t, h.f, tbl, 11); d.Rows() != 0 {
				t.Fatalf("digest as of just after the PROTECT holds %d rows, want 0", d.Rows())
			}
			for _, asOf := range []uint64{1, 10} {
				_, _, err := h.f.StateDigest(tbl, asOf)
				if !errors.Is(err, ErrBeforeReset) || !errors.Is(err, ErrDigestUnavailable) {
					t.Fatalf("as of %d: %v, want ErrBeforeReset", asOf, err)
				}
				for _, w := range []string{tbl, fmt.Sprintf("as of size %d", asOf), "entry 10 (PROTECT at commit_lsn 1/100, tx_index 0)", "above 10"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
			}
		})
	}
}

func TestProtectAgainStartsNewEpoch(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.registerBuckets(tbl, witnessv1.TableMode_TABLE_MODE_MUTABLE, 4))
	// A crash after part of the baseline: the epoch stays BASELINING.
	partial := append([]*witnessv1.Entry{protectEntry(100)}, baseline(100, 0, 30)...)
	mustOK(t, h.append(tbl, partial))
	if info := mustInfo(t, h.f, tbl); info.Protection != baselining || info.BaselineRows != 30 {
		t.Fatalf("after the partial baseline: %+v", info)
	}
	// cdc-ingest resends what it had not seen confirmed: duplicates.
	if r := mustOK(t, h.append(tbl, partial[20:])); r.Duplicates != 11 || r.Appended != 0 {
		t.Fatalf("replay of the partial baseline: %+v", r)
	}
	// The next start runs the flow again, at a later B, over other rows.
	r := mustOK(t, h.append(tbl, append([]*witnessv1.Entry{protectEntry(200)}, baseline(200, 100, 140)...)))
	if got := r.Table; got.Protection != baselining || got.EpochSeq != 31 || got.BaselineLSN != 200 || got.BaselineRows != 40 || got.ResetSeq != 31 {
		t.Fatalf("after the second PROTECT and its rows: %+v", got)
	}
	r = mustOK(t, h.append(tbl, []*witnessv1.Entry{schemaEntry(200, 141, 2)}))
	if got := r.Table; got.Protection != protected || got.BaselineRows != 40 || got.Size != 31+1+40+1 {
		t.Fatalf("after the SCHEMA: %+v", got)
	}
	// The first epoch stays in the log; the digest holds only the second.
	if d := mustDigest(t, h.f, tbl, 0); !d.Equal(rowsDigest(t, 4, 100, 140)) {
		t.Fatalf("digest holds %d rows, want only the 40 of the second epoch", d.Rows())
	}
	v, _ := h.f.Table(tbl)
	if enc, _, err := v.Entry(5); err != nil || commitment.Op(enc[1]) != commitment.OpBaseline {
		t.Fatalf("entry 5 of the first epoch is gone: %v", err)
	}
	// Protecting a PROTECTED table again starts a new epoch too.
	r = mustOK(t, h.append(tbl, protectFlow(300, 3, 3)))
	if got := r.Table; got.Protection != protected || got.EpochSeq != 73 || got.BaselineRows != 3 || got.BaselineLSN != 300 {
		t.Fatalf("after a third epoch: %+v", got)
	}
	if d := mustDigest(t, h.f, tbl, 0); !d.Equal(rowsDigest(t, 4, 0, 3)) {
		t.Fatalf("digest holds %d rows, want the 3 of the third epoch", d.Rows())
	}
}

func TestProtectionRejections(t *testing.T) {
	rowOps := []*witnessv1.Entry{
		change(500, 0, witnessv1.Op_OP_INSERT, 1, 0, 0, false),
		change(500, 0, witnessv1.Op_OP_UPDATE, 1, 1, 0, true),
		change(500, 0, witnessv1.Op_OP_DELETE, 1, 0, 0, true),
		tableOp(500, 0, witnessv1.Op_OP_TRUNCATE),
		{CommitLsn: 500, Op: witnessv1.Op_OP_ACCEPT, KeyCommit: commit("key", 1), DataCommit: commit("data", 1)},
	}

	t.Run("baseline outside a baseline", func(t *testing.T) {
		h := newHarness(t)
		mustOK(t, h.register(tbl, 0))
		mustReject(t, h, tbl, baseline(10, 0, 1), "entry 0 of the batch", "BASELINE at commit_lsn 0/A, tx_index 1", "table "+tbl+" is not protected by an epoch", "PROTECT")
		mustOK(t, h.append(tbl, protectFlow(20, 2, 1)))
		mustReject(t, h, tbl, baseline(30, 5, 7), "table "+tbl+" is protected", "it would be seq 4")
		mustOK(t, h.append(tbl, []*witnessv1.Entry{tableOp(40, 0, witnessv1.Op_OP_UNPROTECT)}))
		mustReject(t, h, tbl, baseline(50, 0, 1), "table "+tbl+" is unprotected")
		// A BASELINE replayed after the baseline ended is a duplicate:
		// dedupe comes before the protection rules.
		if r := mustOK(t, h.append(tbl, baseline(20, 0, 2))); r.Duplicates != 2 {
			t.Fatalf("replayed BASELINE: %+v", r)
		}
	})
	t.Run("changes while baselining", func(t *testing.T) {
		h := newHarness(t)
		mustOK(t, h.register(tbl, witnessv1.TableMode_TABLE_MODE_MUTABLE))
		mustOK(t, h.append(tbl, inserts(5, 0, 3)))
		mustOK(t, h.append(tbl, append([]*witnessv1.Entry{protectEntry(100)}, baseline(100, 0, 2)...)))
		for _, e := range rowOps {
			op := commitment.Op(e.Op).String()
			mustReject(t, h, tbl, []*witnessv1.Entry{e}, "entry 0 of the batch ("+op+" at commit_lsn 0/1F4, tx_index 0; it would be seq 6)",
				"table "+tbl+" is baselining (the epoch started by the PROTECT at seq 3, commit_lsn 0/64)", "SCHEMA")
		}
		// Heartbeats and anchors say nothing about rows.
		mustOK(t, h.append(tbl, []*witnessv1.Entry{tableOp(150, 0, witnessv1.Op_OP_HEARTBEAT), tableOp(160, 0, witnessv1.Op_OP_ANCHOR)}))
	})
	t.Run("change in the batch that starts the epoch", func(t *testing.T) {
		h := newHarness(t)
		mustOK(t, h.register(tbl, 0))
		batch := append(protectFlow(100, 2, 1)[:3], change(100, 3, witnessv1.Op_OP_INSERT, 9, 0, 0, false))
		mustReject(t, h, tbl, batch, "entry 3 of the batch (INSERT", "it would be seq 3", "the epoch started by the PROTECT at seq 0, commit_lsn 0/64")
		if info := mustInfo(t, h.f, tbl); info.Size != 0 || info.Protection != unspecified {
			t.Fatalf("a rejected batch left %+v", info)
		}
		// The same flow completed in one batch, then a change, is fine.
		batch = append(protectFlow(100, 2, 1), change(110, 0, witnessv1.Op_OP_INSERT, 9, 0, 0, false))
		if r := mustOK(t, h.append(tbl, batch)); r.Table.Protection != protected || r.Table.Size != 5 {
			t.Fatalf("flow and change in one batch: %+v", r.Table)
		}
	})
	t.Run("unprotected", func(t *testing.T) {
		h := newHarness(t)
		mustOK(t, h.register(tbl, 0))
		mustOK(t, h.append(tbl, protectFlow(100, 2, 1)))
		mustOK(t, h.append(tbl, inserts(110, 10, 12)))
		r := mustOK(t, h.append(tbl, []*witnessv1.Entry{tableOp(120, 0, witnessv1.Op_OP_UNPROTECT)}))
		if r.Table.Protection != unprotected || r.Table.EpochSeq != 0 || r.Table.BaselineRows != 2 {
			t.Fatalf("after UNPROTECT: %+v", r.Table)
		}
		for _, e := range rowOps {
			mustReject(t, h, tbl, []*witnessv1.Entry{e}, "table "+tbl+" is unprotected", "protect it again")
		}
		// A schema change or a heartbeat is still logged.
		mustOK(t, h.append(tbl, []*witnessv1.Entry{schemaEntry(130, 0, 2), tableOp(140, 0, witnessv1.Op_OP_HEARTBEAT)}))
		// Protecting it again admits changes again.
		mustOK(t, h.append(tbl, protectFlow(200, 1, 3)))
		r = mustOK(t, h.append(tbl, inserts(210, 20, 21)))
		if r.Table.Protection != protected || r.Table.EpochSeq != 9 {
			t.Fatalf("after protecting again: %+v", r.Table)
		}
	})
	t.Run("never protected", func(t *testing.T) {
		// What deployments from before protection epochs do: register and
		// append changes.
		h := newHarness(t)
		mustOK(t, h.register(tbl, witnessv1.TableMode_TABLE_MODE_MUTABLE))
		mustOK(t, h.append(tbl, inserts(1, 0, 3)))
		mustOK(t, h.append(tbl, []*witnessv1.Entry{
			change(10, 0, witnessv1.Op_OP_UPDATE, 1, 1, 0, true),
			{CommitLsn: 10, TxIndex: 1, Op: witnessv1.Op_OP_ACCEPT, KeyCommit: commit("key", 1), DataCommit: commit("data", 1)},
		}))
		if info := mustInfo(t, h.f, tbl); info.Protection != unspecified || info.Size != 5 {
			t.Fatalf("%+v", info)
		}
	})
	if rej, _ := New().Rejections(); len(rej) != 0 {
		t.Fatal("a new FSM has rejections")
	}
}

func TestTruncateResetsOnlyMutable(t *testing.T) {
	t.Run("mutable", func(t *testing.T) {
		h := newHarness(t)
		mustOK(t, h.registerBuckets(tbl, witnessv1.TableMode_TABLE_MODE_MUTABLE, 4))
		mustOK(t, h.append(tbl, protectFlow(10, 5, 1)))
		// The digest is unavailable (UPDATE without old data) until the
		// TRUNCATE empties the table.
		mustOK(t, h.append(tbl, []*witnessv1.Entry{change(20, 0, witnessv1.Op_OP_UPDATE, 1, 1, 0, false)}))
		if _, _, err := h.f.StateDigest(tbl, 0); !errors.Is(err, ErrDigestUnavailable) || errors.Is(err, ErrBeforeReset) {
			t.Fatalf("after an UPDATE without old data: %v", err)
		}
		r := mustOK(t, h.append(tbl, []*witnessv1.Entry{tableOp(30, 0, witnessv1.Op_OP_TRUNCATE)}))
		if got := r.Table; !got.HasReset || got.ResetSeq != 8 || got.DigestUnavailable || got.EpochSeq != 0 || got.Protection != protected {
			t.Fatalf("after TRUNCATE: %+v", got)
		}
		if d := mustDigest(t, h.f, tbl, 0); d.Rows() != 0 {
			t.Fatalf("after TRUNCATE the digest holds %d rows, want 0", d.Rows())
		}
		mustOK(t, h.append(tbl, inserts(40, 50, 53)))
		if d := mustDigest(t, h.f, tbl, 0); !d.Equal(rowsDigest(t, 4, 50, 53)) {
			t.Fatalf("digest after TRUNCATE and 3 INSERTs holds %d rows", d.Rows())
		}
		_, _, err := h.f.StateDigest(tbl, 8)
		if !errors.Is(err, ErrBeforeReset) || !strings.Contains(err.Error(), "entry 8 (TRUNCATE at commit_lsn 0/1E") {
			t.Fatalf("as of 8: %v, want ErrBeforeReset naming the TRUNCATE", err)
		}
		if d := mustDigest(t, h.f, tbl, 9); d.Rows() != 0 {
			t.Fatalf("as of 9: %d rows, want 0", d.Rows())
		}
	})
	t.Run("append-only", func(t *testing.T) {
		h := newHarness(t)
		mustOK(t, h.registerBuckets(tbl, witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, 4))
		mustOK(t, h.append(tbl, protectFlow(10, 5, 1)))
		r := mustOK(t, h.append(tbl, []*witnessv1.Entry{tableOp(30, 0, witnessv1.Op_OP_TRUNCATE)}))
		if got := r.Table; got.ResetSeq != 0 || got.Protection != protected {
			t.Fatalf("after TRUNCATE: %+v", got)
		}
		if d := mustDigest(t, h.f, tbl, 0); !d.Equal(rowsDigest(t, 4, 0, 5)) {
			t.Fatalf("TRUNCATE on an append-only table changed its digest (%d rows)", d.Rows())
		}
		// As of sizes across the TRUNCATE, back to just after the PROTECT.
		for asOf := uint64(1); asOf <= 8; asOf++ {
			if d := mustDigest(t, h.f, tbl, asOf); d.Rows() != min(asOf-1, 5) {
				t.Fatalf("as of %d: %d rows, want %d", asOf, d.Rows(), min(asOf-1, 5))
			}
		}
	})
}

func TestSchemaCommitTracking(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.register(tbl, 0))
	// Without an epoch a SCHEMA only records the commitment.
	r := mustOK(t, h.append(tbl, []*witnessv1.Entry{schemaEntry(1, 0, 1)}))
	if got := r.Table; got.Protection != unspecified || !got.HasSchemaCommit || !bytes.Equal(got.SchemaCommit[:], commit("schema", 1)) {
		t.Fatalf("SCHEMA before any epoch: %+v", got)
	}
	// PROTECT keeps the last one until the baseline's SCHEMA replaces it.
	r = mustOK(t, h.append(tbl, append([]*witnessv1.Entry{protectEntry(10)}, baseline(10, 0, 2)...)))
	if !bytes.Equal(r.Table.SchemaCommit[:], commit("schema", 1)) {
		t.Fatalf("PROTECT changed the schema commitment: %+v", r.Table)
	}
	r = mustOK(t, h.append(tbl, []*witnessv1.Entry{schemaEntry(10, 3, 2)}))
	if got := r.Table; got.Protection != protected || !bytes.Equal(got.SchemaCommit[:], commit("schema", 2)) {
		t.Fatalf("baseline SCHEMA: %+v", got)
	}
	// A schema change while protected: recorded, still protected, same
	// baseline.
	r = mustOK(t, h.append(tbl, append(inserts(20, 5, 6), schemaEntry(30, 0, 3))))
	if got := r.Table; got.Protection != protected || got.BaselineRows != 2 || !bytes.Equal(got.SchemaCommit[:], commit("schema", 3)) {
		t.Fatalf("SCHEMA while protected: %+v", got)
	}
	// A SCHEMA without data_commit leaves none.
	r = mustOK(t, h.append(tbl, []*witnessv1.Entry{tableOp(40, 0, witnessv1.Op_OP_SCHEMA)}))
	if got := r.Table; got.HasSchemaCommit || !got.SchemaCommit.IsZero() {
		t.Fatalf("SCHEMA without data_commit: %+v", got)
	}
}

func TestProtectClearsUnavailableDigest(t *testing.T) {
	h := newHarness(t)
	mustOK(t, h.registerBuckets(tbl, witnessv1.TableMode_TABLE_MODE_MUTABLE, 2))
	mustOK(t, h.append(tbl, inserts(1, 0, 3)))
	mustOK(t, h.append(tbl, []*witnessv1.Entry{change(2, 0, witnessv1.Op_OP_DELETE, 1, 0, 0, false)}))
	if info := mustInfo(t, h.f, tbl); !info.DigestUnavailable {
		t.Fatalf("%+v", info)
	}
	r := mustOK(t, h.append(tbl, []*witnessv1.Entry{protectEntry(10)}))
	if r.Table.DigestUnavailable || r.Table.UnavailableSeq != 0 {
		t.Fatalf("PROTECT left the digest unavailable: %+v", r.Table)
	}
	mustOK(t, h.append(tbl, append(baseline(10, 0, 4), schemaEntry(10, 5, 1))))
	if d := mustDigest(t, h.f, tbl, 0); !d.Equal(rowsDigest(t, 2, 0, 4)) {
		t.Fatalf("digest after re-protecting holds %d rows", d.Rows())
	}
	// As of a size inside the unavailable stretch before the epoch: the
	// reset is what the error names.
	if _, _, err := h.f.StateDigest(tbl, 4); !errors.Is(err, ErrBeforeReset) {
		t.Fatalf("as of 4: %v, want ErrBeforeReset", err)
	}
}

// populatedV3 is populatedV2 and then tables in every protection state,
// resets of both kinds, schema commitments, a digest made available again
// by an epoch, and a protection rejection.
func populatedV3(t *testing.T) *harness {
	t.Helper()
	h := populatedV2(t)
	mustOK(t, h.registerBuckets("public.protected", 0, 2))
	mustOK(t, h.registerBuckets("billing.ledger", witnessv1.TableMode_TABLE_MODE_MUTABLE, 1))
	mustOK(t, h.registerBuckets("public.baselining", 0, 1))
	mustOK(t, h.registerBuckets("billing.repaired", witnessv1.TableMode_TABLE_MODE_MUTABLE, 1))

	mustOK(t, h.append("public.protected", inserts(50, 0, 2)))
	mustOK(t, h.append("public.protected", protectFlow(100, 3, 1)))
	mustOK(t, h.append("public.protected", append(inserts(101, 10, 12), schemaEntry(102, 0, 2), tableOp(103, 0, witnessv1.Op_OP_TRUNCATE))))

	mustOK(t, h.append("billing.ledger", protectFlow(100, 2, 1)))
	mustOK(t, h.append("billing.ledger", []*witnessv1.Entry{
		change(101, 0, witnessv1.Op_OP_INSERT, 5, 0, 0, false),
		change(101, 1, witnessv1.Op_OP_UPDATE, 5, 1, 0, true),
		tableOp(102, 0, witnessv1.Op_OP_TRUNCATE),
		change(103, 0, witnessv1.Op_OP_INSERT, 6, 0, 0, false),
		tableOp(104, 0, witnessv1.Op_OP_UNPROTECT),
	}))
	if r := h.append("billing.ledger", inserts(105, 7, 8)); !errors.Is(r.Err, ErrProtection) {
		t.Fatalf("INSERT on an unprotected table: %v", r.Err)
	}

	mustOK(t, h.append("public.baselining", append([]*witnessv1.Entry{protectEntry(100)}, baseline(100, 0, 3)...)))
	mustOK(t, h.append("public.baselining", append([]*witnessv1.Entry{protectEntry(200)}, baseline(200, 0, 1)...)))

	mustOK(t, h.append("billing.repaired", inserts(1, 0, 2)))
	mustOK(t, h.append("billing.repaired", []*witnessv1.Entry{change(2, 0, witnessv1.Op_OP_UPDATE, 1, 1, 0, false)}))
	mustOK(t, h.append("billing.repaired", protectFlow(10, 2, 4)))
	return h
}

func TestPopulatedV3CoversEveryField(t *testing.T) {
	h := populatedV3(t)
	seen := map[witnessv1.Protection]bool{}
	var resets, schemas, unavailable, epochs int
	for _, info := range h.f.Tables() {
		seen[info.Protection] = true
		if info.HasReset {
			resets++
		}
		if info.HasSchemaCommit {
			schemas++
		}
		if info.DigestUnavailable {
			unavailable++
		}
		if info.EpochSeq != 0 && info.BaselineRows != 0 {
			epochs++
		}
	}
	if len(seen) != 4 || resets < 4 || schemas < 3 || unavailable < 1 || epochs < 3 {
		t.Fatalf("populatedV3 misses a case: protection %v, %d resets, %d schema commitments, %d unavailable, %d epochs", seen, resets, schemas, unavailable, epochs)
	}
	ledger := mustInfo(t, h.f, "billing.ledger")
	if ledger.Protection != unprotected || ledger.ResetSeq != 6 || ledger.EpochSeq != 0 || ledger.BaselineRows != 2 {
		t.Fatalf("billing.ledger: %+v", ledger)
	}
	if b := mustInfo(t, h.f, "public.baselining"); b.Protection != baselining || b.EpochSeq != 4 || b.BaselineLSN != 200 || b.BaselineRows != 1 {
		t.Fatalf("public.baselining: %+v", b)
	}
}

func TestSnapshotRoundTripProtection(t *testing.T) {
	h := populatedV3(t)
	want := statusOf(h.f)
	f := New()
	if err := f.Restore(nopCloser(persist(t, h.f))); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("restored status differs (-want +got):\n%s", diff)
	}
	// The rules carry on from the restored state exactly as on the
	// original.
	h2 := &harness{t: t, f: f, index: h.index}
	for _, tc := range []struct {
		table string
		es    []*witnessv1.Entry
	}{
		{"public.baselining", inserts(300, 0, 1)},
		{"billing.ledger", inserts(300, 0, 1)},
		{"public.protected", baseline(300, 0, 1)},
	} {
		r1, r2 := h.append(tc.table, tc.es), h2.append(tc.table, tc.es)
		if !errors.Is(r2.Err, ErrProtection) || r1.Err.Error() != r2.Err.Error() {
			t.Fatalf("%s after restore: %v, want %v", tc.table, r2.Err, r1.Err)
		}
	}
	for _, tc := range []struct {
		table string
		es    []*witnessv1.Entry
	}{
		{"public.baselining", append(baseline(200, 1, 4), schemaEntry(200, 5, 9))},
		{"public.protected", inserts(300, 0, 4)},
		{"billing.ledger", protectFlow(400, 2, 1)},
	} {
		mustOK(t, h.append(tc.table, tc.es))
		mustOK(t, h2.append(tc.table, tc.es))
	}
	if diff := cmp.Diff(statusOf(h.f), statusOf(f), protocmp.Transform()); diff != "" {
		t.Fatalf("restored replica diverged from the original (-original +restored):\n%s", diff)
	}
}
