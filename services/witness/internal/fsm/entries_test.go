package fsm

import (
	"bytes"
	"testing"

	"github.com/witnz/witnz/libs/commitment"
)

// TestEntryStore crosses chunk boundaries, restores from a flat encoding
// and keeps appending, and checks that prefixes handed out never change.
func TestEntryStore(t *testing.T) {
	enc := func(seq uint64) []byte {
		e := commitment.Entry{Seq: seq, CommitLSN: seq + 1, Op: commitment.OpHeartbeat}
		return e.AppendEncode(nil)
	}
	add := func(s *entryStore, seq uint64) {
		e := commitment.Entry{Seq: seq, CommitLSN: seq + 1, Op: commitment.OpHeartbeat}
		s.add(&e)
	}
	check := func(r entryRange, n uint64) {
		t.Helper()
		var flat []byte
		r.each(func(b []byte) { flat = append(flat, b...) })
		if uint64(len(flat)) != n*commitment.EntrySize {
			t.Fatalf("each wrote %d bytes for %d entries", len(flat), n)
		}
		for _, seq := range []uint64{0, n / 2, n - 1, chunkEntries - 1, chunkEntries} {
			if seq >= n {
				continue
			}
			if got := r.at(seq); !bytes.Equal(got, enc(seq)) || cap(got) != commitment.EntrySize {
				t.Fatalf("entry %d of %d differs or is not capacity-limited", seq, n)
			}
			if !bytes.Equal(flat[seq*commitment.EntrySize:(seq+1)*commitment.EntrySize], enc(seq)) {
				t.Fatalf("each: entry %d differs", seq)
			}
		}
	}
	var s entryStore
	n := uint64(2*chunkEntries + 10)
	for seq := range n {
		add(&s, seq)
	}
	early := s.prefix(chunkEntries + 1)
	check(s.prefix(n), n)

	// A store restored from a flat encoding ending mid-chunk keeps growing.
	var flat []byte
	s.prefix(n).each(func(b []byte) { flat = append(flat, b...) })
	r := storeFrom(flat, n)
	restored := r.prefix(n)
	for seq := n; seq < n+chunkEntries; seq++ {
		add(&r, seq)
	}
	check(r.prefix(n+chunkEntries), n+chunkEntries)
	check(restored, n)
	check(early, chunkEntries+1)
}
