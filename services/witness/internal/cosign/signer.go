// Package cosign makes the witness cluster's cosigned checkpoints.
//
// Every node holds its own Ed25519 cosigner key. After each checkpoint
// interval the leader (Coordinator) proposes, for every table whose log
// grew, a checkpoint (size, root) to every voter, itself included, over
// witness.v1.CosignService. Each node (Signer) decides alone: it recomputes
// the root at that size from its own replica, checks that the checkpoint
// extends the last one it cosigned for the table (kept in a local, fsync'd
// Store, so a replayed old checkpoint is refused even after a restart), and
// only then returns its timestamped cosignature. The leader verifies every
// cosignature against the policy, stores the checkpoint through Raft once
// the policy's quorum is met, and records every refusal in the replicated
// state and raises an alert naming the node.
//
// The node also serves the C2SP tlog-witness add-checkpoint endpoint
// (TLogWitness) to cosign other logs' checkpoints.
//
// docs/design/0009-cosigning.md describes the protocol and its rules.
package cosign

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/tlog"
	"github.com/witnz/witnz/services/witness/internal/fsm"
)

// DefaultWaitApplied bounds how long a node waits to apply the Raft index
// a proposal was read at.
const DefaultWaitApplied = 5 * time.Second

// Errors of Sign besides *RefusalError.
var (
	// ErrBehind: the node has not applied the proposal's Raft index in
	// time. Not a disagreement: it may simply lag.
	ErrBehind = errors.New("this node has not applied the proposal's Raft index yet")
	// ErrNotCosigner: the node has no cosigner key (--cosign-key).
	ErrNotCosigner = errors.New("this node has no cosigner key (--cosign-key) and cosigns nothing")
	// ErrBadProposal: the proposal is malformed.
	ErrBadProposal = errors.New("malformed cosigning proposal")
)

// RefusalError is a node's refusal to cosign: its own state disagrees with
// the proposal, or the proposal does not extend what it cosigned before.
type RefusalError struct {
	Kind   witnessv1.CosignRefusalKind
	Reason string
}

func (e *RefusalError) Error() string { return "cosigning refused: " + e.Reason }

func refuse(kind witnessv1.CosignRefusalKind, format string, args ...any) *RefusalError {
	return &RefusalError{Kind: kind, Reason: fmt.Sprintf(format, args...)}
}

// Replica is the replicated state a cosigner checks proposals against.
type Replica interface {
	// Applied is the last Raft index applied.
	Applied() uint64
	// RootAt returns the root of a table's log at size and the log's
	// current size; fsm.ErrUnknownTable for an unknown table,
	// fsm.ErrOutOfRange beyond the log.
	RootAt(table string, size uint64) (root [tlog.HashSize]byte, logSize uint64, err error)
	// ConsistencyProof proves the table's tree of size to extends the
	// tree of size from.
	ConsistencyProof(table string, from, to uint64) ([][]byte, error)
	// StoredCheckpoint returns the note of the table's latest checkpoint
	// stored in the replicated state; false when there is none.
	StoredCheckpoint(table string) ([]byte, bool)
}

// FSMReplica reads a node's own state machine.
func FSMReplica(f *fsm.FSM) Replica { return fsmReplica{f} }

type fsmReplica struct{ f *fsm.FSM }

func (r fsmReplica) Applied() uint64 { return r.f.Applied() }

func (r fsmReplica) RootAt(table string, size uint64) ([tlog.HashSize]byte, uint64, error) {
	v, err := r.f.Table(table)
	if err != nil {
		return [tlog.HashSize]byte{}, 0, err
	}
	root, err := v.RootAt(size)
	return root, v.Info.Size, err
}

func (r fsmReplica) StoredCheckpoint(table string) ([]byte, bool) {
	cp, ok := r.f.Checkpoint(table)
	if !ok {
		return nil, false
	}
	return cp.Note, true
}

func (r fsmReplica) ConsistencyProof(table string, from, to uint64) ([][]byte, error) {
	v, err := r.f.Table(table)
	if err != nil {
		return nil, err
	}
	return v.ConsistencyProof(from, to)
}

// PolicyDigest is the digest nodes compare to make sure they verify
// checkpoints with the same policy: SHA-256 of the policy file.
func PolicyDigest(policyFile []byte) [sha256.Size]byte { return sha256.Sum256(policyFile) }

// SignerConfig configures a Signer.
type SignerConfig struct {
	NodeID  string
	Cluster string
	// Key is the node's cosigner key; nil makes every request fail with
	// ErrNotCosigner.
	Key          *checkpoint.Cosigner
	PolicyDigest [sha256.Size]byte
	// Policy verifies the stored checkpoints a node checks before its
	// first cosignature of a table (history.go).
	Policy  HistoryVerifier
	Replica Replica
	Store   *Store
	// Alerts, if set, receives an alert for every refusal.
	Alerts      *Alerter
	Log         *slog.Logger
	Now         func() time.Time
	WaitApplied time.Duration
}

// Signer is a node's self-checking cosigner. It implements
// witnessv1connect.CosignServiceHandler.
type Signer struct {
	cfg     SignerConfig
	history historyState
}

var _ witnessv1connect.CosignServiceHandler = (*Signer)(nil)

// NewSigner returns the cosigner of one node.
func NewSigner(cfg SignerConfig) *Signer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WaitApplied == 0 {
		cfg.WaitApplied = DefaultWaitApplied
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Signer{cfg: cfg}
}

// Proposal is a checkpoint the leader asks a node to cosign.
type Proposal struct {
	Table        string
	Size         uint64
	Root         [tlog.HashSize]byte
	AppliedIndex uint64
	PolicyDigest []byte
	// Proposer is the id of the node that proposed it.
	Proposer string
}

// Sign decides on a proposal from this node's own state and, if it agrees,
// records it as the last checkpoint cosigned for the table and returns the
// cosignature. It refuses with a *RefusalError when the root at that size
// differs from its own log's, when its own log no longer holds the last
// checkpoint it cosigned, when the proposal is older than that checkpoint
// or forks from it, or when the proposer's policy is not this node's.
func (s *Signer) Sign(ctx context.Context, p Proposal) (note.Signature, error) {
	if s.cfg.Key == nil {
		return note.Signature{}, ErrNotCosigner
	}
	if err := fsm.ValidateTableName(p.Table); err != nil {
		return note.Signature{}, fmt.Errorf("%w: %v", ErrBadProposal, err)
	}
	if len(p.PolicyDigest) != sha256.Size || [sha256.Size]byte(p.PolicyDigest) != s.cfg.PolicyDigest {
		return note.Signature{}, refuse(witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_POLICY_MISMATCH,
			"node %s verifies checkpoints with another policy (its --policy file has SHA-256 %x, the proposer's %x): give every node the same --policy file", s.cfg.NodeID, s.cfg.PolicyDigest, p.PolicyDigest)
	}
	if err := s.waitApplied(ctx, p.AppliedIndex); err != nil {
		return note.Signature{}, err
	}
	origin, err := checkpoint.Origin(s.cfg.Cluster, p.Table)
	if err != nil {
		return note.Signature{}, fmt.Errorf("%w: %v", ErrBadProposal, err)
	}
	rc := s.cfg.Replica
	root, logSize, err := rc.RootAt(p.Table, p.Size)
	switch {
	case errors.Is(err, fsm.ErrUnknownTable):
		return note.Signature{}, refuse(witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH,
			"node %s has no table %s in its replica at Raft index %d or later", s.cfg.NodeID, p.Table, p.AppliedIndex)
	case errors.Is(err, fsm.ErrOutOfRange):
		return note.Signature{}, refuse(witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH,
			"node %s holds %d entries of %s after applying Raft index %d; the proposal is at size %d", s.cfg.NodeID, logSize, p.Table, p.AppliedIndex, p.Size)
	case err != nil:
		return note.Signature{}, fmt.Errorf("root of %s at size %d: %w", p.Table, p.Size, err)
	case root != p.Root:
		return note.Signature{}, refuse(witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_ROOT_MISMATCH,
			"node %s computes root %s for %s at size %d from its own log; the proposal says %s", s.cfg.NodeID, b64(root[:]), p.Table, p.Size, b64(p.Root[:]))
	}
	now := s.cfg.Now().Truncate(time.Second)
	next := Cosigned{Size: p.Size, Root: p.Root, At: now}
	err = s.cfg.Store.Advance(BucketTables, origin, next, func(last Cosigned, ok bool) error {
		if !ok {
			return s.verifyHistory(p, origin)
		}
		s.noteNotNeeded(p.Table)
		return s.checkExtends(p, last)
	})
	if err != nil {
		return note.Signature{}, err
	}
	sig, err := checkpoint.Cosign(checkpoint.Checkpoint{Origin: origin, Size: p.Size, Root: p.Root}, s.cfg.Key, now)
	if err != nil {
		return note.Signature{}, fmt.Errorf("cosign %s at size %d: %w", p.Table, p.Size, err)
	}
	return sig, nil
}

// checkExtends accepts a proposal that extends last, the checkpoint this
// node cosigned before for the table, as this node's own log shows.
func (s *Signer) checkExtends(p Proposal, last Cosigned) error {
	at := last.At.Format(time.RFC3339)
	switch {
	case p.Size < last.Size:
		return refuse(witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_STALE,
			"node %s cosigned %s at size %d (root %s) at %s; a checkpoint at the smaller size %d is a replay or a rollback, never cosigned", s.cfg.NodeID, p.Table, last.Size, b64(last.Root[:]), at, p.Size)
	case p.Size == last.Size && p.Root != last.Root:
		return refuse(witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK,
			"node %s cosigned %s at size %d with root %s at %s; the proposal has root %s at the same size", s.cfg.NodeID, p.Table, last.Size, b64(last.Root[:]), at, b64(p.Root[:]))
	}
	own, _, err := s.cfg.Replica.RootAt(p.Table, last.Size)
	if err != nil {
		return fmt.Errorf("root of %s at the last cosigned size %d: %w", p.Table, last.Size, err)
	}
	if own != last.Root {
		return refuse(witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK,
			"node %s cosigned %s at size %d with root %s at %s, but its own log now has root %s at that size: its history changed", s.cfg.NodeID, p.Table, last.Size, b64(last.Root[:]), at, b64(own[:]))
	}
	if p.Size == last.Size {
		return nil
	}
	proof, err := s.cfg.Replica.ConsistencyProof(p.Table, last.Size, p.Size)
	if err != nil {
		return fmt.Errorf("consistency proof of %s from %d to %d: %w", p.Table, last.Size, p.Size, err)
	}
	if err := tlog.VerifyConsistency(last.Size, p.Size, proof, last.Root[:], p.Root[:]); err != nil {
		return refuse(witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_FORK,
			"node %s cannot prove from its own log that %s at size %d extends the checkpoint at size %d it cosigned at %s: %v", s.cfg.NodeID, p.Table, p.Size, last.Size, at, err)
	}
	return nil
}

// waitApplied waits until the replica applied index, or fails with
// ErrBehind.
func (s *Signer) waitApplied(ctx context.Context, index uint64) error {
	if s.cfg.Replica.Applied() >= index {
		return nil
	}
	deadline := time.NewTimer(s.cfg.WaitApplied)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrBehind, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("%w: applied %d, the proposal was read at %d (waited %v)", ErrBehind, s.cfg.Replica.Applied(), index, s.cfg.WaitApplied)
		case <-tick.C:
			if s.cfg.Replica.Applied() >= index {
				return nil
			}
		}
	}
}

// Cosign serves witness.v1.CosignService.Cosign to witness identities.
func (s *Signer) Cosign(ctx context.Context, req *connect.Request[witnessv1.CosignRequest]) (*connect.Response[witnessv1.CosignResponse], error) {
	id, ok := mtls.PeerIdentity(ctx)
	if !ok {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("a client certificate is required"))
	}
	if id.Kind != mtls.KindWitness {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("Cosign requires a witness identity (spiffe://witnz/witness/<id>); this client is %s", id))
	}
	m := req.Msg
	if len(m.GetRoot()) != tlog.HashSize {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("root has %d bytes, want %d", len(m.GetRoot()), tlog.HashSize))
	}
	p := Proposal{
		Table: m.GetTable(), Size: m.GetSize(), Root: [tlog.HashSize]byte(m.GetRoot()),
		AppliedIndex: m.GetAppliedIndex(), PolicyDigest: m.GetPolicySha256(), Proposer: id.Name,
	}
	sig, err := s.Sign(ctx, p)
	var refusal *RefusalError
	switch {
	case errors.As(err, &refusal):
		r := s.refusalRecord(p, refusal)
		s.cfg.Log.Error("refused to cosign a checkpoint: this node's state disagrees with the proposal", "table", p.Table, "size", p.Size, "proposer", p.Proposer, "kind", refusal.Kind.String(), "reason", refusal.Reason)
		s.cfg.Alerts.Raise(RefusalAlert(s.cfg.Cluster, r))
		cerr := connect.NewError(connect.CodeFailedPrecondition, refusal)
		if d, derr := connect.NewErrorDetail(r); derr == nil {
			cerr.AddDetail(d)
		}
		return nil, cerr
	case errors.Is(err, ErrBehind):
		return nil, connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, ErrNotCosigner):
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, ErrBadProposal):
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	case err != nil:
		s.cfg.Log.Error("cosign", "table", p.Table, "size", p.Size, "error", err)
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("node %s could not cosign: %v", s.cfg.NodeID, err))
	}
	s.cfg.Log.Debug("cosigned a checkpoint", "table", p.Table, "size", p.Size, "proposer", p.Proposer)
	return connect.NewResponse(&witnessv1.CosignResponse{
		NodeId:      s.cfg.NodeID,
		Cosignature: SignatureLine(sig),
		CosignerKey: s.cfg.Key.VerifierKey(),
	}), nil
}

func (s *Signer) refusalRecord(p Proposal, r *RefusalError) *witnessv1.CosignRefusal {
	return &witnessv1.CosignRefusal{
		NodeId: s.cfg.NodeID, ProposerId: p.Proposer, Table: p.Table, Size: p.Size, Root: p.Root[:],
		Kind: r.Kind, Reason: r.Reason, AtMicros: s.cfg.Now().UnixMicro(),
	}
}

// SignatureLine formats a note signature as its line, without the newline:
// "— <name> <base64>".
func SignatureLine(s note.Signature) string { return "— " + s.Name + " " + s.Base64 }

// ParseSignatureLine reads a signature line of c's note (with or without
// its newline), checking its syntax only.
func ParseSignatureLine(c checkpoint.Checkpoint, line string) (note.Signature, error) {
	text, err := c.Text()
	if err != nil {
		return note.Signature{}, err
	}
	if len(line) > 0 && line[len(line)-1] == '\n' {
		line = line[:len(line)-1]
	}
	_, sigs, err := checkpoint.Parse([]byte(string(text) + "\n" + line + "\n"))
	if err != nil {
		return note.Signature{}, err
	}
	if len(sigs) != 1 {
		return note.Signature{}, fmt.Errorf("%w: want one signature line", checkpoint.ErrMalformed)
	}
	return sigs[0], nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
