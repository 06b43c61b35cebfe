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

// TestEntryStoreConcurrentReaders reads a prefix while entries are
// appended, as snapshots and API readers do while Apply runs (under -race
// this fails if appending touches anything a prefix reads).
func TestEntryStoreConcurrentReaders(t *testing.T) {
	var s entryStore
	add := func(seq uint64) {
		e := commitment.Entry{Seq: seq, CommitLSN: seq + 1, Op: commitment.OpHeartbeat}
		s.add(&e)
	}
	for seq := range uint64(chunkEntries - 5) {
		add(seq)
	}
	r := s.prefix(s.n)
	done := make(chan int)
	go func() {
		total := 0
		for range 20 {
			r.each(func(b []byte) { total += len(b) })
			_ = r.at(r.n - 1)
		}
		done <- total
	}()
	for seq := uint64(chunkEntries - 5); seq < 2*chunkEntries+3; seq++ {
		add(seq)
	}
	if total := <-done; total != 20*int(r.n)*commitment.EntrySize {
		t.Fatalf("readers saw %d bytes", total)
	}
}
