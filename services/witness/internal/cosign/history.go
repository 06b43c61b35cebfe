package cosign

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/tlog"
)

// A node that never cosigned a table (a node that joined by AddNode or
// Rotate, or one whose cosign.db is new) holds a replica it received from
// others: a snapshot restore re-checks each stored checkpoint's size and
// root against the restored log but not its signatures. Before its first
// cosignature for the table it therefore checks the history it received:
// the stored checkpoint's note must meet its own policy (every signature
// by a policy key verifies, the quorum is met), name the table's origin,
// have the root of its own log at that size, and be extended by the
// proposal (a consistency proof from its own log). Only then does it
// cosign; a failure is a HISTORY_UNVERIFIED refusal, raised as an alert
// naming the node like every refusal. Once it cosigned, its own record
// (cosign.db) carries the history forward: each later proposal must extend
// what it cosigned.

// HistoryVerifier verifies a stored checkpoint note; *checkpoint.Policy
// implements it.
type HistoryVerifier interface {
	Verify(note []byte) (checkpoint.Checkpoint, []checkpoint.Signer, error)
}

// historyState is what the node found, per table.
type historyState struct {
	mu     sync.Mutex
	tables map[string]*witnessv1.CosignerTable
}

func (h *historyState) set(t *witnessv1.CosignerTable) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tables == nil {
		h.tables = map[string]*witnessv1.CosignerTable{}
	}
	h.tables[t.Table] = t
}

func (h *historyState) get(table string) (*witnessv1.CosignerTable, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.tables[table]
	if !ok {
		return nil, false
	}
	return proto.Clone(t).(*witnessv1.CosignerTable), true
}

// verifyHistory checks the checkpoint stored in the replica for p.Table
// before this node's first cosignature of the table. It returns a
// HISTORY_UNVERIFIED refusal when the stored history does not hold.
func (s *Signer) verifyHistory(p Proposal, origin string) error {
	now := s.cfg.Now()
	res := &witnessv1.CosignerTable{Table: p.Table, CheckedAtMicros: now.UnixMicro()}
	err := s.checkHistory(p, origin, res)
	if err != nil {
		var r *RefusalError
		if errors.As(err, &r) {
			res.History, res.Detail = witnessv1.HistoryCheck_HISTORY_CHECK_FAILED, r.Reason
			s.history.set(res)
		}
		return err
	}
	res.History = witnessv1.HistoryCheck_HISTORY_CHECK_VERIFIED
	s.history.set(res)
	s.cfg.Log.Info("verified the history of a table before cosigning it for the first time", "table", p.Table, "checked_size", res.CheckedSize, "size", p.Size, "detail", res.Detail)
	return nil
}

func (s *Signer) checkHistory(p Proposal, origin string, res *witnessv1.CosignerTable) error {
	unverified := func(format string, args ...any) error {
		return refuse(witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_HISTORY_UNVERIFIED,
			"node %s never cosigned %s and does not trust the history it received: "+format, append([]any{s.cfg.NodeID, p.Table}, args...)...)
	}
	stored, ok := s.cfg.Replica.StoredCheckpoint(p.Table)
	if !ok {
		res.Detail = "no checkpoint stored yet"
		return nil
	}
	if s.cfg.Policy == nil {
		return unverified("it has no policy to verify the stored checkpoint with")
	}
	c, signers, err := s.cfg.Policy.Verify(stored)
	if err != nil {
		return unverified("the stored checkpoint does not meet this node's policy: %v", err)
	}
	res.CheckedSize = c.Size
	if c.Origin != origin {
		return unverified("the stored checkpoint names origin %q, not %q", c.Origin, origin)
	}
	own, logSize, err := s.cfg.Replica.RootAt(p.Table, c.Size)
	switch {
	case err != nil:
		return unverified("its own log (%d entries) has no root at the stored checkpoint's size %d: %v", logSize, c.Size, err)
	case own != c.Root:
		return unverified("the stored checkpoint at size %d has root %s, its own log %s", c.Size, b64(c.Root[:]), b64(own[:]))
	case p.Size < c.Size:
		return unverified("the proposal at size %d is older than the stored checkpoint at size %d", p.Size, c.Size)
	case p.Size == c.Size && p.Root != c.Root:
		return unverified("the proposal at size %d has another root than the stored checkpoint", p.Size)
	case p.Size > c.Size && c.Size > 0:
		proof, err := s.cfg.Replica.ConsistencyProof(p.Table, c.Size, p.Size)
		if err != nil {
			return fmt.Errorf("consistency proof of %s from %d to %d: %w", p.Table, c.Size, p.Size, err)
		}
		if err := tlog.VerifyConsistency(c.Size, p.Size, proof, c.Root[:], p.Root[:]); err != nil {
			return unverified("the proposal at size %d does not extend the stored checkpoint at size %d: %v", p.Size, c.Size, err)
		}
	}
	names := make([]string, 0, len(signers))
	for _, sg := range signers {
		names = append(names, sg.Label)
	}
	slices.Sort(names)
	res.Detail = fmt.Sprintf("stored checkpoint at size %d: signatures by %v verify under the policy, root matches its own log, the proposal at size %d extends it", c.Size, names, p.Size)
	return nil
}

// noteNotNeeded records that the node had cosigned the table before.
func (s *Signer) noteNotNeeded(table string) {
	if t, ok := s.history.get(table); ok && t.History != witnessv1.HistoryCheck_HISTORY_CHECK_FAILED {
		return
	}
	s.history.set(&witnessv1.CosignerTable{
		Table: table, History: witnessv1.HistoryCheck_HISTORY_CHECK_NOT_NEEDED,
		Detail: "cosigned before: each proposal must extend the checkpoint this node last cosigned", CheckedAtMicros: s.cfg.Now().UnixMicro(),
	})
}

// Status reports per table how this node checked the history and what it
// cosigned last.
func (s *Signer) Status() *witnessv1.GetCosignerStatusResponse {
	out := &witnessv1.GetCosignerStatusResponse{NodeId: s.cfg.NodeID}
	if s.cfg.Key != nil {
		out.CosignerKey = s.cfg.Key.VerifierKey()
	}
	s.history.mu.Lock()
	names := make([]string, 0, len(s.history.tables))
	for n := range s.history.tables {
		names = append(names, n)
	}
	s.history.mu.Unlock()
	slices.Sort(names)
	for _, n := range names {
		t, _ := s.history.get(n)
		if s.cfg.Store != nil {
			if origin, err := checkpoint.Origin(s.cfg.Cluster, n); err == nil {
				if last, ok, err := s.cfg.Store.Last(BucketTables, origin); err == nil && ok {
					t.LastCosignedSize = last.Size
				}
			}
		}
		out.Tables = append(out.Tables, t)
	}
	return out
}

// GetCosignerStatus serves witness.v1.CosignService.GetCosignerStatus to
// any witnz identity.
func (s *Signer) GetCosignerStatus(ctx context.Context, _ *connect.Request[witnessv1.GetCosignerStatusRequest]) (*connect.Response[witnessv1.GetCosignerStatusResponse], error) {
	if _, ok := mtls.PeerIdentity(ctx); !ok {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("a client certificate is required"))
	}
	return connect.NewResponse(s.Status()), nil
}
