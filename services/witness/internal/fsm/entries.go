package fsm

import (
	"fmt"

	"github.com/witnz/witnz/libs/commitment"
)

// chunkEntries is how many encoded entries one chunk holds (1 MiB).
const chunkEntries = 8192

const chunkBytes = chunkEntries * commitment.EntrySize

// entryStore holds a table's encoded entries back to back in chunks of
// chunkEntries, each allocated once at its full length. Appending writes
// only the bytes of the new entry: nothing stored is copied (a single
// growing slice would copy the whole log at every doubling, under the FSM's
// lock), no slice header a reader holds changes, and a prefix handed out
// stays valid and unchanged while later entries are appended.
type entryStore struct {
	chunks [][]byte
	n      uint64
}

// add appends one entry's encoding.
func (s *entryStore) add(e *commitment.Entry) {
	c := s.n / chunkEntries
	if c == uint64(len(s.chunks)) {
		s.chunks = append(s.chunks, make([]byte, chunkBytes))
	}
	off := (s.n % chunkEntries) * commitment.EntrySize
	if out := e.AppendEncode(s.chunks[c][off : off : off+commitment.EntrySize]); len(out) != commitment.EntrySize {
		panic(fmt.Sprintf("witness fsm: an entry encodes to %d bytes, not %d", len(out), commitment.EntrySize))
	}
	s.n++
}

// prefix is the first n entries, frozen.
func (s *entryStore) prefix(n uint64) entryRange {
	return entryRange{chunks: s.chunks[:len(s.chunks):len(s.chunks)], n: n}
}

// storeFrom takes over the encodings of n entries read from a snapshot.
func storeFrom(b []byte, n uint64) entryStore {
	var s entryStore
	for off := 0; off < len(b); off += chunkBytes {
		if off+chunkBytes <= len(b) {
			s.chunks = append(s.chunks, b[off:off+chunkBytes:off+chunkBytes])
			continue
		}
		last := make([]byte, chunkBytes)
		copy(last, b[off:])
		s.chunks = append(s.chunks, last)
	}
	s.n = n
	return s
}

// entryRange is a frozen prefix of a table's entries.
type entryRange struct {
	chunks [][]byte
	n      uint64
}

// at returns the encoding of entry seq (seq < n), capacity-limited so that
// no caller can write past it.
func (e entryRange) at(seq uint64) []byte {
	c := e.chunks[seq/chunkEntries]
	off := (seq % chunkEntries) * commitment.EntrySize
	return c[off : off+commitment.EntrySize : off+commitment.EntrySize]
}

// each calls fn with the encodings of the n entries, a chunk at a time.
func (e entryRange) each(fn func([]byte)) {
	left := e.n * commitment.EntrySize
	for _, c := range e.chunks {
		if left == 0 {
			return
		}
		take := min(uint64(len(c)), left)
		fn(c[:take])
		left -= take
	}
}
