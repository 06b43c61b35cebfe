package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/statedigest"
	"github.com/witnz/witnz/libs/tlog"
)

// Snapshot layout, version 6 (integers big-endian; "bytes" is a uint32
// length followed by that many bytes):
//
//	magic "wzfsm\x00\x00\x06"
//	applied     uint64   last Raft index applied
//	rejected    uint64   rejections in all
//	nrej        uint32   then nrej × bytes (witness.v1.Rejection, protobuf)
//	ntables     uint32   then, per table in name order:
//	  name      bytes
//	  mode      uint32
//	  buckets   uint32
//	  has_last  uint8, last commit_lsn uint64, last tx_index uint32
//	  size      uint64
//	  root      [32]byte
//	  chain     [32]byte
//	  entries   size × commitment.EntrySize bytes
//	  log       uint64 length, then tlog serialization at size
//	  digest    uint64 length, then statedigest encoding (MarshalBinary)
//	  unavailable uint8, unavailable_seq uint64, reason bytes
//	  protection  uint32   witness.v1.Protection
//	  epoch_seq   uint64, baseline_lsn uint64, baseline_rows uint64
//	  has_schema  uint8, schema_commit [32]byte (zeros when has_schema is 0)
//	  has_reset   uint8, reset_seq uint64
//	checkpoints section (checkpoints.go): each table's cosigned checkpoint,
//	            then the cosigning refusals
//	membership  bytes    witness.v1.MembershipState, protobuf (membership.go)
//	anchors section (anchors.go): the anchor receipts
//	end         "wzend\x00\x00\x06"
//	checksum    SHA-256 of everything before it
//
// Version 5 is the same without the anchors section, with magic and end
// marker ending in \x05.
// Version 4 is the same without the checkpoints section, with magic and
// end marker ending in \x04. Version 3 has the layout of version 4, but its digests hold LtHash states of
// expansion version 1 (SHAKE-128; libs/lthash); version 4 digests hold
// expansion version 2. Version 2 is the same without the fields from
// protection on, with magic and end marker ending in \x02; version 1 also
// lacks the digest and unavailable fields and ends in \x01. Restore reads
// all six; Persist writes version 6 only. The digests of versions 2 and 3
// cannot be compared with today's expansion: they are rebuilt from the
// entries, like version 1's, and only the digests of version 4 on are checked.
//
// Restore verifies the checksum, decodes every entry strictly and checks it
// against the log: its seq, its leaf hash, and the recorded root and chain
// head. It then replays the entries through the rules Apply uses (protection
// epochs, resets, state digest) and requires the recorded fields to equal
// the result: one LtHash expansion (2 KiB of output) per row entry, about
// 0.35 µs, so some 0.4 s per million entries on one core, plus the
// digest encodings (about 2 MiB per table at the default bucket count) read
// and compared. The state restored is always the replay's, so a replica
// restored from an older version agrees with one that applied the same
// entries. A version 2 digest was built without the resets (PROTECT and
// mutable TRUNCATE changed nothing then): it is checked against a replay
// without them, and then replaced by the replay with them. Tables of
// versions 1 and 2 come back in the protection state their entries give,
// PROTECTION_UNSPECIFIED with zero epoch fields for logs without PROTECT.
var (
	snapMagic   = []byte("wzfsm\x00\x00\x06")
	snapEnd     = []byte("wzend\x00\x00\x06")
	snapMagicV5 = []byte("wzfsm\x00\x00\x05")
	snapEndV5   = []byte("wzend\x00\x00\x05")
	snapMagicV4 = []byte("wzfsm\x00\x00\x04")
	snapEndV4   = []byte("wzend\x00\x00\x04")
	snapMagicV3 = []byte("wzfsm\x00\x00\x03")
	snapEndV3   = []byte("wzend\x00\x00\x03")
	snapMagicV2 = []byte("wzfsm\x00\x00\x02")
	snapEndV2   = []byte("wzend\x00\x00\x02")
	snapMagicV1 = []byte("wzfsm\x00\x00\x01")
	snapEndV1   = []byte("wzend\x00\x00\x01")
)

// Bounds that keep a damaged snapshot from asking for absurd allocations.
const (
	maxSnapTables     = 1 << 20
	maxSnapRejections = 1 << 16
	maxSnapRecord     = 1 << 20
)

type tableSnapshot struct {
	info              TableInfo
	entries           entryRange
	log               *tlog.Log
	digest            []byte
	unavailableReason string
}

type snapshot struct {
	applied    uint64
	rejected   uint64
	rejections []*witnessv1.Rejection
	tables     []tableSnapshot
	checkpointSnapshot
	// membership is the encoded membership state (membership.go).
	membership []byte
	anchors    anchorState
}

// Persist writes the snapshot to sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.writeTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("witness fsm: persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release is a no-op: the snapshot shares immutable prefixes.
func (s *snapshot) Release() {}

type writer struct {
	w   *bufio.Writer
	sum hash.Hash
	err error
	buf [8]byte
}

func (w *writer) write(b []byte) {
	if w.err == nil {
		w.sum.Write(b)
		_, w.err = w.w.Write(b)
	}
}
func (w *writer) u8(v uint8) { w.write([]byte{v}) }
func (w *writer) u32(v uint32) {
	binary.BigEndian.PutUint32(w.buf[:4], v)
	w.write(w.buf[:4])
}
func (w *writer) u64(v uint64) {
	binary.BigEndian.PutUint64(w.buf[:8], v)
	w.write(w.buf[:8])
}
func (w *writer) bytes(b []byte) {
	w.u32(uint32(len(b)))
	w.write(b)
}

func (s *snapshot) writeTo(dst io.Writer) error {
	w := &writer{w: bufio.NewWriterSize(dst, 1<<16), sum: sha256.New()}
	w.write(snapMagic)
	w.u64(s.applied)
	w.u64(s.rejected)
	w.u32(uint32(len(s.rejections)))
	for _, r := range s.rejections {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return err
		}
		w.bytes(b)
	}
	w.u32(uint32(len(s.tables)))
	for _, t := range s.tables {
		w.bytes([]byte(t.info.Name))
		w.u32(uint32(t.info.Mode))
		w.u32(t.info.Buckets)
		w.u8(boolByte(t.info.HasLast))
		w.u64(t.info.Last.CommitLSN)
		w.u32(t.info.Last.TxIndex)
		w.u64(t.info.Size)
		w.write(t.info.Root[:])
		w.write(t.info.ChainHead[:])
		t.entries.each(w.write)
		blob, err := t.log.MarshalAt(t.info.Size)
		if err != nil {
			return err
		}
		w.u64(uint64(len(blob)))
		w.write(blob)
		w.u64(uint64(len(t.digest)))
		w.write(t.digest)
		w.u8(boolByte(t.info.DigestUnavailable))
		w.u64(t.info.UnavailableSeq)
		w.bytes([]byte(t.unavailableReason))
		w.u32(uint32(t.info.Protection))
		w.u64(t.info.EpochSeq)
		w.u64(t.info.BaselineLSN)
		w.u64(t.info.BaselineRows)
		w.u8(boolByte(t.info.HasSchemaCommit))
		w.write(t.info.SchemaCommit[:])
		w.u8(boolByte(t.info.HasReset))
		w.u64(t.info.ResetSeq)
	}
	if err := s.checkpointSnapshot.writeTo(w); err != nil {
		return err
	}
	w.bytes(s.membership)
	if err := s.anchors.writeTo(w); err != nil {
		return err
	}
	w.write(snapEnd)
	w.write(w.sum.Sum(nil))
	if w.err != nil {
		return w.err
	}
	return w.w.Flush()
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// ErrBadSnapshot is wrapped by every error about a snapshot's content.
var ErrBadSnapshot = errors.New("bad snapshot")

type reader struct {
	r   *bufio.Reader
	sum hash.Hash
	err error
	buf [8]byte
}

func (r *reader) full(b []byte) {
	if r.err == nil {
		if _, err := io.ReadFull(r.r, b); err != nil {
			r.err = fmt.Errorf("%w: truncated: %v", ErrBadSnapshot, err)
			return
		}
		r.sum.Write(b)
	}
}
func (r *reader) u8() uint8 {
	r.full(r.buf[:1])
	return r.buf[0]
}
func (r *reader) u32() uint32 {
	r.full(r.buf[:4])
	if r.err != nil {
		return 0
	}
	return binary.BigEndian.Uint32(r.buf[:4])
}
func (r *reader) u64() uint64 {
	r.full(r.buf[:8])
	if r.err != nil {
		return 0
	}
	return binary.BigEndian.Uint64(r.buf[:8])
}

// flag reads a uint8 that must be 0 or 1.
func (r *reader) flag(table, what string) bool {
	v := r.u8()
	if r.err == nil && v > 1 {
		r.err = fmt.Errorf("%w: table %q: %s flag %d", ErrBadSnapshot, table, what, v)
	}
	return v == 1
}

func (r *reader) bytes(limit uint32) []byte {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if n > limit {
		r.err = fmt.Errorf("%w: record of %d bytes exceeds %d", ErrBadSnapshot, n, limit)
		return nil
	}
	b := make([]byte, n)
	r.full(b)
	return b
}

// readN reads n bytes without trusting n for the allocation up front.
func (r *reader) readN(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	var b bytes.Buffer
	if _, err := io.CopyN(io.MultiWriter(&b, r.sum), r.r, int64(n)); err != nil {
		r.err = fmt.Errorf("%w: truncated: %v", ErrBadSnapshot, err)
		return nil
	}
	return b.Bytes()
}

func readSnapshot(src io.Reader) (*state, error) {
	r := &reader{r: bufio.NewReaderSize(src, 1<<16), sum: sha256.New()}
	magic := make([]byte, len(snapMagic))
	r.full(magic)
	var version int
	wantEnd := snapEnd
	switch {
	case r.err != nil:
		return nil, r.err
	case bytes.Equal(magic, snapMagic):
		version = 6
	case bytes.Equal(magic, snapMagicV5):
		version, wantEnd = 5, snapEndV5
	case bytes.Equal(magic, snapMagicV4):
		version, wantEnd = 4, snapEndV4
	case bytes.Equal(magic, snapMagicV3):
		version, wantEnd = 3, snapEndV3
	case bytes.Equal(magic, snapMagicV2):
		version, wantEnd = 2, snapEndV2
	case bytes.Equal(magic, snapMagicV1):
		version, wantEnd = 1, snapEndV1
	default:
		return nil, fmt.Errorf("%w: unknown format %q", ErrBadSnapshot, magic)
	}
	st := newState()
	st.applied = r.u64()
	st.rejected = r.u64()
	nrej := r.u32()
	if nrej > maxSnapRejections {
		return nil, fmt.Errorf("%w: %d rejections", ErrBadSnapshot, nrej)
	}
	for i := uint32(0); i < nrej && r.err == nil; i++ {
		b := r.bytes(maxSnapRecord)
		rej := &witnessv1.Rejection{}
		if r.err == nil {
			if err := proto.Unmarshal(b, rej); err != nil {
				return nil, fmt.Errorf("%w: rejection %d: %v", ErrBadSnapshot, i, err)
			}
		}
		st.rejections = append(st.rejections, rej)
	}
	ntables := r.u32()
	if ntables > maxSnapTables {
		return nil, fmt.Errorf("%w: %d tables", ErrBadSnapshot, ntables)
	}
	for i := uint32(0); i < ntables && r.err == nil; i++ {
		t, err := readTable(r, version)
		if err != nil {
			return nil, err
		}
		if _, dup := st.tables[t.name]; dup {
			return nil, fmt.Errorf("%w: table %q appears twice", ErrBadSnapshot, t.name)
		}
		st.tables[t.name] = t
	}
	if version >= 5 && r.err == nil {
		if err := readCheckpoints(r, st); err != nil {
			return nil, err
		}
	}
	if version >= 5 && r.err == nil {
		if err := readMembership(r, st); err != nil {
			return nil, err
		}
	}
	if version >= 6 && r.err == nil {
		if err := readAnchors(r, st); err != nil {
			return nil, err
		}
	}
	end := make([]byte, len(wantEnd))
	r.full(end)
	if r.err != nil {
		return nil, r.err
	}
	if !bytes.Equal(end, wantEnd) {
		return nil, fmt.Errorf("%w: missing end marker", ErrBadSnapshot)
	}
	want := r.sum.Sum(nil)
	got := make([]byte, len(want))
	r.full(got)
	if r.err != nil {
		return nil, r.err
	}
	if !bytes.Equal(got, want) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the end marker", ErrBadSnapshot)
	}
	return st, nil
}

// readTable reads one table of a snapshot of the given version.
func readTable(r *reader, version int) (*table, error) {
	t := &table{name: string(r.bytes(MaxTableName))}
	t.mode = witnessv1.TableMode(r.u32())
	t.buckets = r.u32()
	t.hasLast = r.u8() == 1
	t.last.CommitLSN = r.u64()
	t.last.TxIndex = r.u32()
	size := r.u64()
	var root, chain [tlog.HashSize]byte
	r.full(root[:])
	r.full(chain[:])
	if r.err != nil {
		return nil, r.err
	}
	if size > (1<<63)/commitment.EntrySize {
		return nil, fmt.Errorf("%w: table %q claims %d entries", ErrBadSnapshot, t.name, size)
	}
	t.entries = storeFrom(r.readN(size*commitment.EntrySize), size)
	blobLen := r.u64()
	if r.err == nil && blobLen != 4+4+8+size*tlog.HashSize+2*tlog.HashSize {
		return nil, fmt.Errorf("%w: table %q: log of %d bytes for %d entries", ErrBadSnapshot, t.name, blobLen, size)
	}
	blob := r.readN(blobLen)
	if r.err != nil {
		return nil, r.err
	}
	if _, _, err := NormalizeRegister(&witnessv1.RegisterTableCommand{Table: t.name, Mode: t.mode, Buckets: t.buckets}); err != nil || t.mode == witnessv1.TableMode_TABLE_MODE_UNSPECIFIED || t.buckets == 0 {
		return nil, fmt.Errorf("%w: table %q has invalid settings (mode %d, %d buckets)", ErrBadSnapshot, t.name, t.mode, t.buckets)
	}
	var (
		digestEnc       []byte
		unavailable     bool
		unavailableSeq  uint64
		unavailableText string
		recorded        TableInfo
	)
	if version >= 2 {
		n := r.u64()
		if want := uint64(statedigest.EncodedSize(int(t.buckets))); r.err == nil && n != want {
			return nil, fmt.Errorf("%w: table %q: digest of %d bytes for %d buckets, want %d", ErrBadSnapshot, t.name, n, t.buckets, want)
		}
		digestEnc = r.readN(n)
		unavailable = r.flag(t.name, "unavailable")
		unavailableSeq = r.u64()
		unavailableText = string(r.bytes(maxSnapRecord))
	}
	if version >= 3 {
		recorded.Protection = witnessv1.Protection(r.u32())
		recorded.EpochSeq = r.u64()
		recorded.BaselineLSN = r.u64()
		recorded.BaselineRows = r.u64()
		recorded.HasSchemaCommit = r.flag(t.name, "schema commitment")
		r.full(recorded.SchemaCommit[:])
		recorded.HasReset = r.flag(t.name, "reset")
		recorded.ResetSeq = r.u64()
	}
	if r.err != nil {
		return nil, r.err
	}
	log, err := tlog.Unmarshal(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: table %q: %v", ErrBadSnapshot, t.name, err)
	}
	t.log = log
	st := log.State()
	if st.Size != size || st.Root != root || st.ChainHead != chain {
		return nil, fmt.Errorf("%w: table %q: log is at size %d root %x, snapshot records size %d root %x", ErrBadSnapshot, t.name, st.Size, st.Root, size, root)
	}
	// Everything else is rebuilt from the entries, as Apply built it.
	t.expected = newExpected(t.name, t.buckets)
	var prev Position
	for seq := uint64(0); seq < size; seq++ {
		enc := t.entries.prefix(size).at(seq)
		e, err := commitment.DecodeEntry(enc)
		if err != nil {
			return nil, fmt.Errorf("%w: table %q entry %d: %v", ErrBadSnapshot, t.name, seq, err)
		}
		leaf, _ := log.LeafHash(seq)
		if e.Seq != seq || e.LeafHash() != leaf {
			return nil, fmt.Errorf("%w: table %q entry %d does not match its leaf in the log", ErrBadSnapshot, t.name, seq)
		}
		p := Position{CommitLSN: e.CommitLSN, TxIndex: e.TxIndex}
		if seq > 0 && !p.After(prev) {
			return nil, fmt.Errorf("%w: table %q entry %d is out of order", ErrBadSnapshot, t.name, seq)
		}
		prev = p
		t.apply(seq, e)
	}
	if size > 0 && (!t.hasLast || t.last != prev) {
		return nil, fmt.Errorf("%w: table %q: recorded last position does not match its last entry", ErrBadSnapshot, t.name)
	}
	if version >= 2 {
		stored, err := statedigest.Unmarshal(digestEnc)
		if err != nil {
			return nil, fmt.Errorf("%w: table %q: %v", ErrBadSnapshot, t.name, err)
		}
		want := &t.expected
		if version == 2 && t.hasReset {
			legacy, err := replayWithoutResets(t)
			if err != nil {
				return nil, err
			}
			want = legacy
		}
		if version >= 4 && !stored.Equal(want.digest) {
			return nil, fmt.Errorf("%w: table %q: recorded state digest differs from the one its entries produce", ErrBadSnapshot, t.name)
		}
		if unavailable != want.unavailable || unavailableSeq != want.unavailableSeq || unavailableText != want.unavailableReason {
			return nil, fmt.Errorf("%w: table %q: recorded digest availability differs from the one its entries produce", ErrBadSnapshot, t.name)
		}
	}
	if version >= 3 {
		got := t.info()
		if recorded.Protection != got.Protection || recorded.EpochSeq != got.EpochSeq || recorded.BaselineLSN != got.BaselineLSN ||
			recorded.BaselineRows != got.BaselineRows || recorded.HasSchemaCommit != got.HasSchemaCommit || recorded.SchemaCommit != got.SchemaCommit ||
			recorded.HasReset != got.HasReset || recorded.ResetSeq != got.ResetSeq {
			return nil, fmt.Errorf("%w: table %q: recorded protection state differs from the one its entries produce", ErrBadSnapshot, t.name)
		}
	}
	return t, nil
}

// replayWithoutResets rebuilds a table's expected state by the rules of
// snapshot version 2, under which no entry reset it. The entries were
// checked by the first replay.
func replayWithoutResets(t *table) (*expected, error) {
	x := newExpected(t.name, t.buckets)
	for seq := uint64(0); seq < t.log.Size(); seq++ {
		e, err := commitment.DecodeEntry(t.entries.prefix(t.log.Size()).at(seq))
		if err != nil {
			return nil, fmt.Errorf("%w: table %q entry %d: %v", ErrBadSnapshot, t.name, seq, err)
		}
		x.applyDigest(t.name, t.mode, seq, e)
	}
	return &x, nil
}
