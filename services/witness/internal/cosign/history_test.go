package cosign

import (
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/witness/internal/fsm"
)

// historyFixture is a replica whose state machine checks no policy (so a
// test can store any note, as a snapshot from a lying leader could carry
// it), the keys of three nodes and the policy that needs two of them.
type historyFixture struct {
	r      *replica
	keys   []*checkpoint.Cosigner
	policy *checkpoint.Policy
}

func newHistoryFixture(t *testing.T) *historyFixture {
	t.Helper()
	h := &historyFixture{r: newReplica(t, fsm.WithCheckpoints(cluster, nil))}
	var policy strings.Builder
	for _, id := range []string{"w1", "w2", "w3"} {
		k := mustKey(t, "witnz.test/"+id)
		h.keys = append(h.keys, k)
		fmt.Fprintf(&policy, "witness %s %s\n", id, k.VerifierKey())
	}
	policy.WriteString("quorum 2\n")
	p, err := checkpoint.ParsePolicy([]byte(policy.String()))
	if err != nil {
		t.Fatal(err)
	}
	h.policy = p
	return h
}

// store stores a checkpoint at size cosigned by w1 and w2; forge flips a
// bit of w2's cosignature.
func (h *historyFixture) store(t *testing.T, size uint64, forge bool) {
	t.Helper()
	origin, _ := checkpoint.Origin(cluster, table)
	cp := checkpoint.Checkpoint{Origin: origin, Size: size, Root: h.r.root(size)}
	var sigs []note.Signature
	for i, k := range h.keys[:2] {
		sig, err := checkpoint.Cosign(cp, k, time.Unix(1_800_000_000, 0))
		if err != nil {
			t.Fatal(err)
		}
		if forge && i == 1 {
			raw, _ := base64.StdEncoding.DecodeString(sig.Base64)
			raw[len(raw)-1] ^= 1
			sig.Base64 = base64.StdEncoding.EncodeToString(raw)
		}
		sigs = append(sigs, sig)
	}
	signed, err := checkpoint.Assemble(cp, sigs...)
	if err != nil {
		t.Fatal(err)
	}
	if res := h.r.apply(&witnessv1.Command{Command: &witnessv1.Command_StoreCheckpoint{StoreCheckpoint: &witnessv1.StoreCheckpointCommand{Table: table, Note: signed}}}); res.Err != nil {
		t.Fatal(res.Err)
	}
}

// newcomer is w3 with an empty record: it never cosigned.
func (h *historyFixture) newcomer(t *testing.T) *Signer {
	t.Helper()
	s := newTestSigner(t, FSMReplica(h.r.f), h.keys[2], mustStore(t, filepath.Join(t.TempDir(), StoreFile)))
	s.cfg.NodeID, s.cfg.Policy = "w3", h.policy
	return s
}

func historyOf(t *testing.T, s *Signer) *witnessv1.CosignerTable {
	t.Helper()
	for _, tb := range s.Status().GetTables() {
		if tb.GetTable() == table {
			return tb
		}
	}
	t.Fatalf("status has no table %s: %v", table, s.Status())
	return nil
}

func TestNewNodeVerifiesHistoryBeforeCosigning(t *testing.T) {
	h := newHistoryFixture(t)
	h.r.grow(10)
	h.store(t, 6, false)
	h.r.grow(5)
	s := h.newcomer(t)

	if _, err := s.Sign(t.Context(), proposal(h.r, 15)); err != nil {
		t.Fatalf("first cosignature over a verified history: %v", err)
	}
	got := historyOf(t, s)
	if got.GetHistory() != witnessv1.HistoryCheck_HISTORY_CHECK_VERIFIED || got.GetCheckedSize() != 6 || got.GetLastCosignedSize() != 15 ||
		!strings.Contains(got.GetDetail(), "[w1 w2]") {
		t.Fatalf("history status %v, want VERIFIED at size 6 by w1 and w2, last cosigned 15", got)
	}
	// Once it cosigned, its own record carries the history: the status
	// keeps how it was checked.
	h.r.grow(1)
	if _, err := s.Sign(t.Context(), proposal(h.r, 16)); err != nil {
		t.Fatal(err)
	}
	if got := historyOf(t, s); got.GetHistory() != witnessv1.HistoryCheck_HISTORY_CHECK_VERIFIED || got.GetLastCosignedSize() != 16 {
		t.Fatalf("history status %v, want VERIFIED, last cosigned 16", got)
	}
	// A node restarted with its record reports that no check was needed.
	again := newTestSigner(t, FSMReplica(h.r.f), h.keys[2], s.cfg.Store)
	again.cfg.Policy = h.policy
	h.r.grow(1)
	if _, err := again.Sign(t.Context(), proposal(h.r, 17)); err != nil {
		t.Fatal(err)
	}
	if got := historyOf(t, again); got.GetHistory() != witnessv1.HistoryCheck_HISTORY_CHECK_NOT_NEEDED || got.GetLastCosignedSize() != 17 {
		t.Fatalf("history status %v, want NOT_NEEDED, last cosigned 17", got)
	}
}

func TestNewNodeRefusesForgedHistory(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, h *historyFixture)
		size  uint64
		want  string
	}{
		{
			name:  "forged cosignature",
			setup: func(t *testing.T, h *historyFixture) { h.store(t, 8, true) },
			size:  12, want: "does not meet this node's policy",
		},
		{
			name:  "proposal behind the stored checkpoint",
			setup: func(t *testing.T, h *historyFixture) { h.store(t, 10, false) },
			size:  9, want: "older than the stored checkpoint",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHistoryFixture(t)
			h.r.grow(12)
			tc.setup(t, h)
			s := h.newcomer(t)
			_, err := s.Sign(t.Context(), proposal(h.r, tc.size))
			wantRefusal(t, err, witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_HISTORY_UNVERIFIED, tc.want)
			if !strings.Contains(err.Error(), "node w3 never cosigned "+table) {
				t.Fatalf("refusal does not name the node: %v", err)
			}
			if got := historyOf(t, s); got.GetHistory() != witnessv1.HistoryCheck_HISTORY_CHECK_FAILED || got.GetLastCosignedSize() != 0 {
				t.Fatalf("history status %v, want FAILED with nothing cosigned", got)
			}
			// Nothing was recorded: the node still refuses.
			if _, err := s.Sign(t.Context(), proposal(h.r, 12)); err == nil && tc.name == "forged cosignature" {
				t.Fatal("cosigned over a forged history on the second try")
			}
		})
	}
}
