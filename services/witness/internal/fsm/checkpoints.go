package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/tlog"
)

// Cosigned checkpoints. The leader collects cosignatures on a table's
// checkpoint (package cosign) and proposes a StoreCheckpointCommand; Apply
// re-checks the note against this replica's own log before storing it, so
// a leader cannot store a checkpoint the log does not support. Refusals to
// cosign are recorded as evidence (RecordCosignRefusalsCommand), like
// rejections. docs/design/0009-cosigning.md has the rules.

// Errors of rejected StoreCheckpoint commands. Each wraps ErrCheckpoint.
var (
	// ErrCheckpoint is wrapped by every rejection of a checkpoint.
	ErrCheckpoint = errors.New("checkpoint refused")
	// ErrStaleCheckpoint: the checkpoint is not newer than the stored one
	// (a replay of an old checkpoint, or of the stored one).
	ErrStaleCheckpoint = fmt.Errorf("%w: not newer than the stored checkpoint", ErrCheckpoint)
	// ErrCheckpointMismatch: the checkpoint's size or root is not what
	// this replica's log holds.
	ErrCheckpointMismatch = fmt.Errorf("%w: does not match this node's log", ErrCheckpoint)
	// ErrCheckpointPolicy: the note does not meet the checkpoint policy
	// (too few cosignatures, or an invalid signature by a policy key).
	ErrCheckpointPolicy = fmt.Errorf("%w: checkpoint policy not met", ErrCheckpoint)
)

// Limits of the checkpoint state.
const (
	// KeepRefusals is how many cosigning refusals the state remembers.
	KeepRefusals = 100
	// MaxNote bounds the size of a stored checkpoint note.
	MaxNote = 64 << 10
	// MaxRefusalsPerCommand bounds the refusals one command records.
	MaxRefusalsPerCommand = 256
	// MaxRefusalReason bounds the reason of one refusal, in bytes.
	MaxRefusalReason = 4 << 10
)

// CheckpointPolicy verifies a cosigned checkpoint note;
// *checkpoint.Policy implements it.
type CheckpointPolicy interface {
	Verify(note []byte) (checkpoint.Checkpoint, []checkpoint.Signer, error)
}

// Option configures a state machine.
type Option func(*FSM)

// WithCheckpoints makes Apply require that a stored checkpoint's origin is
// checkpoint.Origin(cluster, table) and, with a non-nil policy, that the
// note meets the policy. Every node of a cluster must be given the same
// cluster name and policy: Apply must decide the same everywhere.
func WithCheckpoints(cluster string, policy CheckpointPolicy) Option {
	return func(f *FSM) { f.cluster, f.policy = cluster, policy }
}

// Checkpoint is a table's latest cosigned checkpoint.
type Checkpoint struct {
	Table string
	// Note is the signed note: the checkpoint text and its signature lines.
	Note []byte
	Size uint64
	Root [tlog.HashSize]byte
	// CreatedAtMicros is when the leader proposed storing it.
	CreatedAtMicros int64
	// RaftIndex is the index of the command that stored it.
	RaftIndex uint64
}

// checkpointState is the part of the state this file owns.
type checkpointState struct {
	checkpoints map[string]*Checkpoint
	refusals    []*witnessv1.CosignRefusal
	refused     uint64
}

func (f *FSM) applyStoreCheckpoint(index uint64, at int64, c *witnessv1.StoreCheckpointCommand) *Result {
	t, ok := f.st.tables[c.GetTable()]
	if !ok {
		return f.reject(index, at, c.GetTable(), fmt.Errorf("%w: checkpoint for %q", ErrUnknownTable, c.GetTable()))
	}
	cp, err := f.checkCheckpoint(t, c.GetNote())
	if err != nil {
		return f.reject(index, at, t.name, err)
	}
	if prev := f.st.checkpoints[t.name]; prev != nil && cp.Size <= prev.Size {
		return f.reject(index, at, t.name, fmt.Errorf("%w: checkpoint of %s at size %d is not above the stored one at size %d (stored at Raft index %d): a replayed or out-of-date checkpoint is never stored", ErrStaleCheckpoint, t.name, cp.Size, prev.Size, prev.RaftIndex))
	}
	if f.policy != nil {
		if _, _, err := f.policy.Verify(c.GetNote()); err != nil {
			return f.reject(index, at, t.name, fmt.Errorf("%w: checkpoint of %s at size %d: %v", ErrCheckpointPolicy, t.name, cp.Size, err))
		}
	}
	cp.Note = bytes.Clone(c.GetNote())
	cp.CreatedAtMicros, cp.RaftIndex = at, index
	if f.st.checkpoints == nil {
		f.st.checkpoints = map[string]*Checkpoint{}
	}
	f.st.checkpoints[t.name] = cp
	return &Result{Table: t.info()}
}

// checkCheckpoint checks what every replica can check alike: the note's
// syntax, its origin, and its size and root against the table's log.
func (f *FSM) checkCheckpoint(t *table, note []byte) (*Checkpoint, error) {
	if len(note) > MaxNote {
		return nil, fmt.Errorf("%w: %w: note of %d bytes exceeds %d", ErrCheckpoint, ErrInvalid, len(note), MaxNote)
	}
	c, _, err := checkpoint.Parse(note)
	if err != nil {
		return nil, fmt.Errorf("%w: %w: %v", ErrCheckpoint, ErrInvalid, err)
	}
	if err := f.checkOrigin(t.name, c.Origin); err != nil {
		return nil, err
	}
	size := t.log.Size()
	if c.Size > size {
		return nil, fmt.Errorf("%w: checkpoint of %s at size %d is beyond its log of %d entries", ErrCheckpointMismatch, t.name, c.Size, size)
	}
	root, err := t.log.RootAt(c.Size)
	if err != nil {
		return nil, fmt.Errorf("%w: root of %s at size %d: %v", ErrCheckpointMismatch, t.name, c.Size, err)
	}
	if root != c.Root {
		return nil, fmt.Errorf("%w: checkpoint of %s at size %d has root %x, this node's log has %x", ErrCheckpointMismatch, t.name, c.Size, c.Root, root)
	}
	return &Checkpoint{Table: t.name, Size: c.Size, Root: c.Root}, nil
}

// checkOrigin accepts the origin of the table's log: witnz/<cluster>/<table>,
// with this node's cluster name when it has one.
func (f *FSM) checkOrigin(name, origin string) error {
	if f.cluster != "" {
		want, err := checkpoint.Origin(f.cluster, name)
		if err != nil {
			return fmt.Errorf("%w: %w: %v", ErrCheckpoint, ErrInvalid, err)
		}
		if origin != want {
			return fmt.Errorf("%w: %w: origin %q is not %q, the log of %s in cluster %s", ErrCheckpoint, ErrInvalid, origin, want, name, f.cluster)
		}
		return nil
	}
	_, tableName, err := checkpoint.ParseOrigin(origin)
	if err != nil {
		return fmt.Errorf("%w: %w: %v", ErrCheckpoint, ErrInvalid, err)
	}
	if tableName != name {
		return fmt.Errorf("%w: %w: origin %q names table %q, not %s", ErrCheckpoint, ErrInvalid, origin, tableName, name)
	}
	return nil
}

func (f *FSM) applyCosignRefusals(index uint64, at int64, c *witnessv1.RecordCosignRefusalsCommand) *Result {
	refusals := c.GetRefusals()
	if err := ValidateRefusals(refusals); err != nil {
		return f.reject(index, at, "", err)
	}
	for _, r := range refusals {
		r = proto.Clone(r).(*witnessv1.CosignRefusal)
		r.RaftIndex = index
		f.st.refusals = append(f.st.refusals, r)
		f.st.refused++
	}
	if n := len(f.st.refusals); n > KeepRefusals {
		f.st.refusals = append([]*witnessv1.CosignRefusal(nil), f.st.refusals[n-KeepRefusals:]...)
	}
	return &Result{}
}

// ValidateRefusals checks what Apply re-checks for a
// RecordCosignRefusalsCommand.
func ValidateRefusals(refusals []*witnessv1.CosignRefusal) error {
	if len(refusals) == 0 || len(refusals) > MaxRefusalsPerCommand {
		return fmt.Errorf("%w: %d cosigning refusals in one command, want 1 to %d", ErrInvalid, len(refusals), MaxRefusalsPerCommand)
	}
	for i, r := range refusals {
		switch {
		case r.GetNodeId() == "":
			return fmt.Errorf("%w: cosigning refusal %d names no node", ErrInvalid, i)
		case ValidateTableName(r.GetTable()) != nil:
			return fmt.Errorf("%w: cosigning refusal %d: %v", ErrInvalid, i, ValidateTableName(r.GetTable()))
		case len(r.GetRoot()) != tlog.HashSize:
			return fmt.Errorf("%w: cosigning refusal %d has a root of %d bytes, want %d", ErrInvalid, i, len(r.GetRoot()), tlog.HashSize)
		case r.GetKind() == witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_UNSPECIFIED || witnessv1.CosignRefusalKind_name[int32(r.GetKind())] == "":
			return fmt.Errorf("%w: cosigning refusal %d has unknown kind %d", ErrInvalid, i, r.GetKind())
		case len(r.GetReason()) > MaxRefusalReason || len(r.GetNodeId()) > MaxTableName || len(r.GetProposerId()) > MaxTableName:
			return fmt.Errorf("%w: cosigning refusal %d is too long (reason at most %d bytes)", ErrInvalid, i, MaxRefusalReason)
		}
	}
	return nil
}

// Checkpoint returns a table's latest cosigned checkpoint; false when the
// table has none yet.
func (f *FSM) Checkpoint(table string) (Checkpoint, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	cp := f.st.checkpoints[table]
	if cp == nil {
		return Checkpoint{}, false
	}
	out := *cp
	out.Note = bytes.Clone(cp.Note)
	return out, true
}

// CosignRefusals returns the last KeepRefusals cosigning refusals, oldest
// first, and how many there have been in all.
func (f *FSM) CosignRefusals() ([]*witnessv1.CosignRefusal, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*witnessv1.CosignRefusal, len(f.st.refusals))
	for i, r := range f.st.refusals {
		out[i] = proto.Clone(r).(*witnessv1.CosignRefusal)
	}
	return out, f.st.refused
}

// checkpointSnapshot is the checkpoint state captured by Snapshot.
type checkpointSnapshot struct {
	checkpoints []Checkpoint
	refusals    []*witnessv1.CosignRefusal
	refused     uint64
}

// snapshotCheckpoints copies the checkpoint state; the caller holds the
// lock. Stored checkpoints are replaced, never changed, so sharing their
// notes is safe.
func (s *checkpointState) snapshot() checkpointSnapshot {
	out := checkpointSnapshot{refused: s.refused}
	for _, cp := range s.checkpoints {
		out.checkpoints = append(out.checkpoints, *cp)
	}
	sort.Slice(out.checkpoints, func(i, j int) bool { return out.checkpoints[i].Table < out.checkpoints[j].Table })
	for _, r := range s.refusals {
		out.refusals = append(out.refusals, proto.Clone(r).(*witnessv1.CosignRefusal))
	}
	return out
}

// Snapshot section of version 5, after the tables:
//
//	ncheckpoints uint32   then, per checkpoint in table name order:
//	  table      bytes
//	  note       bytes
//	  created_at uint64   (int64 microseconds)
//	  raft_index uint64
//	refused      uint64   refusals in all
//	nrefusals    uint32   then nrefusals × bytes (witness.v1.CosignRefusal, protobuf)
func (s *checkpointSnapshot) writeTo(w *writer) error {
	w.u32(uint32(len(s.checkpoints)))
	for _, cp := range s.checkpoints {
		w.bytes([]byte(cp.Table))
		w.bytes(cp.Note)
		w.u64(uint64(cp.CreatedAtMicros))
		w.u64(cp.RaftIndex)
	}
	w.u64(s.refused)
	w.u32(uint32(len(s.refusals)))
	for _, r := range s.refusals {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return err
		}
		w.bytes(b)
	}
	return nil
}

// readCheckpoints reads the version 5 section into st, whose tables are
// already read and checked. Each checkpoint must parse, name its table, and
// match the table's log at its size. Signatures are not checked again: the
// policy that admitted a checkpoint may have been replaced since, and
// readers verify notes with their own policy anyway.
func readCheckpoints(r *reader, st *state) error {
	n := r.u32()
	if r.err == nil && n > maxSnapTables {
		return fmt.Errorf("%w: %d checkpoints", ErrBadSnapshot, n)
	}
	check := &FSM{st: st}
	for i := uint32(0); i < n && r.err == nil; i++ {
		name := string(r.bytes(MaxTableName))
		note := r.bytes(MaxNote)
		at := int64(r.u64())
		index := r.u64()
		if r.err != nil {
			return r.err
		}
		t, ok := st.tables[name]
		if !ok {
			return fmt.Errorf("%w: checkpoint of unknown table %q", ErrBadSnapshot, name)
		}
		if st.checkpoints[name] != nil {
			return fmt.Errorf("%w: table %q has two checkpoints", ErrBadSnapshot, name)
		}
		cp, err := check.checkCheckpoint(t, note)
		if err != nil {
			return fmt.Errorf("%w: checkpoint of %q: %v", ErrBadSnapshot, name, err)
		}
		cp.Note, cp.CreatedAtMicros, cp.RaftIndex = note, at, index
		if st.checkpoints == nil {
			st.checkpoints = map[string]*Checkpoint{}
		}
		st.checkpoints[name] = cp
	}
	st.refused = r.u64()
	nref := r.u32()
	if r.err == nil && (nref > KeepRefusals || uint64(nref) > st.refused) {
		return fmt.Errorf("%w: %d cosigning refusals kept of %d", ErrBadSnapshot, nref, st.refused)
	}
	for i := uint32(0); i < nref && r.err == nil; i++ {
		b := r.bytes(maxSnapRecord)
		if r.err != nil {
			break
		}
		ref := &witnessv1.CosignRefusal{}
		if err := proto.Unmarshal(b, ref); err != nil {
			return fmt.Errorf("%w: cosigning refusal %d: %v", ErrBadSnapshot, i, err)
		}
		st.refusals = append(st.refusals, ref)
	}
	return r.err
}
