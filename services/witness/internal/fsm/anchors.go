package fsm

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/tlog"
)

// Anchor receipts. The anchor service writes the cosigned checkpoints of
// every table to write-once storage, then proposes a RecordAnchorCommand
// with the store's receipt so every node holds it. Apply re-checks the
// anchored sizes and roots against this replica's own logs: a receipt the
// logs do not support is rejected, never kept. docs/design/0010-anchoring.md
// has the rules.

// ErrAnchor is wrapped by every rejection of an anchor receipt.
var ErrAnchor = errors.New("anchor receipt refused")

// Limits of the anchor state.
const (
	// KeepAnchors is how many anchor receipts the state keeps; older ones
	// stay in the anchor service's own store and in the sink.
	KeepAnchors = 1024
	// MaxAnchorTables bounds the tables one receipt may anchor.
	MaxAnchorTables = 4096
	// MaxAnchorField bounds the text fields of a receipt, in bytes.
	MaxAnchorField = 1024
)

// anchorState is the part of the state this file owns: the last
// KeepAnchors receipts, oldest first, and how many there have been.
type anchorState struct {
	receipts []*witnessv1.AnchorReceipt
	total    uint64
}

func (f *FSM) applyRecordAnchor(index uint64, at int64, c *witnessv1.RecordAnchorCommand) *Result {
	r := c.GetReceipt()
	if err := ValidateAnchorReceipt(r); err != nil {
		return f.reject(index, at, "", err)
	}
	if err := checkAnchoredLogs(f.st, r); err != nil {
		return f.reject(index, at, err.table, err)
	}
	r = proto.Clone(r).(*witnessv1.AnchorReceipt)
	r.RaftIndex = index
	f.st.anchors.add(r)
	return &Result{}
}

func (s *anchorState) add(r *witnessv1.AnchorReceipt) {
	s.receipts = append(s.receipts, r)
	s.total++
	if n := len(s.receipts); n > KeepAnchors {
		s.receipts = append([]*witnessv1.AnchorReceipt(nil), s.receipts[n-KeepAnchors:]...)
	}
}

// ValidateAnchorReceipt checks what Apply re-checks of a receipt without
// looking at the logs: the fields are present and within bounds, and each
// table is named once.
func ValidateAnchorReceipt(r *witnessv1.AnchorReceipt) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %w: %s", ErrAnchor, ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case r == nil:
		return fail("no receipt")
	case r.GetSink() == "" || r.GetKey() == "":
		return fail("receipt names no sink or no key")
	case len(r.GetSink()) > MaxAnchorField || len(r.GetBucket()) > MaxAnchorField || len(r.GetKey()) > MaxAnchorField ||
		len(r.GetVersionId()) > MaxAnchorField || len(r.GetEtag()) > MaxAnchorField:
		return fail("a text field of the receipt exceeds %d bytes", MaxAnchorField)
	case len(r.GetSha256()) != tlog.HashSize:
		return fail("object checksum of %d bytes, want %d (SHA-256)", len(r.GetSha256()), tlog.HashSize)
	case r.GetAnchoredAtMicros() <= 0:
		return fail("receipt has no anchoring time")
	case r.GetRetainUntilMicros() < 0:
		return fail("negative retain-until")
	case len(r.GetCheckpoints()) == 0 || len(r.GetCheckpoints()) > MaxAnchorTables:
		return fail("%d anchored checkpoints, want 1 to %d", len(r.GetCheckpoints()), MaxAnchorTables)
	}
	seen := make(map[string]bool, len(r.GetCheckpoints()))
	for i, cp := range r.GetCheckpoints() {
		if err := ValidateTableName(cp.GetTable()); err != nil {
			return fail("anchored checkpoint %d: %v", i, err)
		}
		if seen[cp.GetTable()] {
			return fail("table %s is anchored twice", cp.GetTable())
		}
		seen[cp.GetTable()] = true
		if len(cp.GetRoot()) != tlog.HashSize {
			return fail("anchored checkpoint of %s has a root of %d bytes, want %d", cp.GetTable(), len(cp.GetRoot()), tlog.HashSize)
		}
	}
	return nil
}

// anchorError names the table a receipt disagrees about.
type anchorError struct {
	table string
	err   error
}

func (e *anchorError) Error() string { return e.err.Error() }
func (e *anchorError) Unwrap() error { return e.err }

// checkAnchoredLogs checks each anchored checkpoint against the table's
// log in st: registered, size within the log, root equal to the log's root
// at that size.
func checkAnchoredLogs(st *state, r *witnessv1.AnchorReceipt) *anchorError {
	for _, cp := range r.GetCheckpoints() {
		t, ok := st.tables[cp.GetTable()]
		if !ok {
			return &anchorError{cp.GetTable(), fmt.Errorf("%w: %w: anchored checkpoint of %q", ErrAnchor, ErrUnknownTable, cp.GetTable())}
		}
		size := t.log.Size()
		if cp.GetSize() > size {
			return &anchorError{t.name, fmt.Errorf("%w: anchored checkpoint of %s at size %d is beyond its log of %d entries", ErrAnchor, t.name, cp.GetSize(), size)}
		}
		root, err := t.log.RootAt(cp.GetSize())
		if err != nil {
			return &anchorError{t.name, fmt.Errorf("%w: root of %s at size %d: %v", ErrAnchor, t.name, cp.GetSize(), err)}
		}
		if string(root[:]) != string(cp.GetRoot()) {
			return &anchorError{t.name, fmt.Errorf("%w: anchored checkpoint of %s at size %d has root %x, this node's log has %x", ErrAnchor, t.name, cp.GetSize(), cp.GetRoot(), root)}
		}
	}
	return nil
}

// AnchorReceipts returns the kept anchor receipts, newest first, and how
// many have been recorded in all. With table set, only receipts anchoring
// that table at a size of at least minSize; limit 0 means no limit.
func (f *FSM) AnchorReceipts(table string, minSize uint64, limit int) ([]*witnessv1.AnchorReceipt, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*witnessv1.AnchorReceipt
	for i := len(f.st.anchors.receipts) - 1; i >= 0; i-- {
		r := f.st.anchors.receipts[i]
		if table != "" && !anchors(r, table, minSize) {
			continue
		}
		out = append(out, proto.Clone(r).(*witnessv1.AnchorReceipt))
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, f.st.anchors.total
}

func anchors(r *witnessv1.AnchorReceipt, table string, minSize uint64) bool {
	for _, cp := range r.GetCheckpoints() {
		if cp.GetTable() == table {
			return cp.GetSize() >= minSize
		}
	}
	return false
}

// snapshot copies the anchor state; the caller holds the lock. Receipts
// are never changed once kept, so sharing them is safe.
func (s *anchorState) snapshot() anchorState {
	return anchorState{receipts: append([]*witnessv1.AnchorReceipt(nil), s.receipts...), total: s.total}
}

// Snapshot section of version 6, after the membership record:
//
//	anchored   uint64   receipts in all
//	nreceipts  uint32   then nreceipts × bytes (witness.v1.AnchorReceipt,
//	                    protobuf, deterministic), oldest first
func (s *anchorState) writeTo(w *writer) error {
	w.u64(s.total)
	w.u32(uint32(len(s.receipts)))
	for _, r := range s.receipts {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return err
		}
		w.bytes(b)
	}
	return nil
}

// readAnchors reads the version 6 section into st, whose tables are
// already read and checked. Every receipt is checked as Apply checked it:
// its fields, and its sizes and roots against the logs.
func readAnchors(r *reader, st *state) error {
	st.anchors.total = r.u64()
	n := r.u32()
	if r.err == nil && (n > KeepAnchors || uint64(n) > st.anchors.total) {
		return fmt.Errorf("%w: %d anchor receipts kept of %d", ErrBadSnapshot, n, st.anchors.total)
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		b := r.bytes(maxSnapRecord)
		if r.err != nil {
			break
		}
		rec := &witnessv1.AnchorReceipt{}
		if err := proto.Unmarshal(b, rec); err != nil {
			return fmt.Errorf("%w: anchor receipt %d: %v", ErrBadSnapshot, i, err)
		}
		if err := ValidateAnchorReceipt(rec); err != nil {
			return fmt.Errorf("%w: anchor receipt %d: %v", ErrBadSnapshot, i, err)
		}
		if err := checkAnchoredLogs(st, rec); err != nil {
			return fmt.Errorf("%w: anchor receipt %d: %v", ErrBadSnapshot, i, err)
		}
		st.anchors.receipts = append(st.anchors.receipts, rec)
	}
	return r.err
}
