package verify

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/statedigest"
)

func TestParseSnapshotAndLSN(t *testing.T) {
	xmin, xmax, xip, err := parseSnapshot("4294967300:4294967310:4294967301,4294967305")
	if err != nil {
		t.Fatal(err)
	}
	if xmin != 4294967300 || xmax != 4294967310 || !xip[4294967301] || !xip[4294967305] || len(xip) != 2 {
		t.Errorf("parseSnapshot = %d %d %v", xmin, xmax, xip)
	}
	if _, _, xip, err := parseSnapshot("10:10:"); err != nil || len(xip) != 0 {
		t.Errorf("empty xip: %v %v", xip, err)
	}
	for _, bad := range []string{"", "1:2", "a:2:", "1:b:", "1:2:x"} {
		if _, _, _, err := parseSnapshot(bad); err == nil {
			t.Errorf("parseSnapshot(%q) succeeded", bad)
		}
	}
	for _, s := range []string{"0/0", "0/1A2B3C", "16/B374D848", "FFFFFFFF/FFFFFFFF"} {
		v, err := parseLSN(s)
		if err != nil || FormatLSN(v) != s {
			t.Errorf("parseLSN(%q) = %x %v, formats back as %s", s, v, err, FormatLSN(v))
		}
	}
	for _, bad := range []string{"", "12", "x/1", "1/100000000"} {
		if _, err := parseLSN(bad); err == nil {
			t.Errorf("parseLSN(%q) succeeded", bad)
		}
	}
}

// TestVisible checks the snapshot's visibility of entries by 32-bit xid,
// across an epoch boundary of the 64-bit xids.
func TestVisible(t *testing.T) {
	const epoch = uint64(3) << 32
	s := &snapshot{
		before: 1000,
		xmin:   epoch - 5,  // 0xFFFFFFFB in the previous epoch
		xmax:   epoch + 10, // 10 in this one
		xip:    map[uint64]bool{epoch - 5: true, epoch + 2: true},
	}
	tests := []struct {
		name string
		xid  uint32
		lsn  uint64
		want bool
	}{
		{"baseline entry", 0, 5000, true},
		{"old transaction", 100 + 1<<31, 10, true},
		{"before xmin across the epoch", 0xFFFFFFF0, 10, true},
		{"in progress (xmin)", 0xFFFFFFFB, 10, false},
		{"finished between xmin and xmax", 0xFFFFFFFC, 10, true},
		{"finished, this epoch", 1, 2000, true},
		{"in progress, this epoch", 2, 2000, false},
		{"assigned after the snapshot, committed before X", 10, 2000, false},
		{"assigned after the snapshot", 11, 2000, false},
		{"more than 2^31 old, looks like the future", 12, 999, true},
	}
	for _, tt := range tests {
		if got := s.visible(tt.xid, tt.lsn); got != tt.want {
			t.Errorf("%s: visible(%d, %d) = %v, want %v", tt.name, tt.xid, tt.lsn, got, tt.want)
		}
	}
	// In the first epoch nothing is before xid 3.
	first := &snapshot{xmin: 100, xmax: 200, xip: map[uint64]bool{}}
	if !first.visible(4000000000, 1) {
		t.Error("an xid that would be before 0 counts as old")
	}
}

// row is a binary COPY tuple of the given text values.
func row(values ...string) []byte {
	vals := make([][]byte, len(values))
	for i, v := range values {
		if v != "\x00NULL" {
			vals[i] = []byte(v)
		}
	}
	enc, err := commitment.AppendRow(nil, vals)
	if err != nil {
		panic(err)
	}
	return enc
}

// TestAccumulatorMatchesDigest proves the parallel accumulation equal to
// statedigest's own Add of the same commitments, whatever the split.
func TestAccumulatorMatchesDigest(t *testing.T) {
	var key commitment.Key
	key[0] = 1
	tk := key.ForTable("public", "t")
	for _, buckets := range []int{1, 16, 1024} {
		for _, keyCols := range [][]int{nil, {1, 0}} {
			r := rand.New(rand.NewPCG(uint64(buckets), 7))
			want, err := statedigest.New(buckets)
			if err != nil {
				t.Fatal(err)
			}
			h := newRowHasher(tk, keyCols)
			accs := []*accumulator{newAccumulator(newRowHasher(tk, keyCols), buckets), newAccumulator(newRowHasher(tk, keyCols), buckets), newAccumulator(newRowHasher(tk, keyCols), buckets)}
			for i := range 2000 {
				rw := row(fmt.Sprint(i%700), fmt.Sprint(r.IntN(5)), "\x00NULL")
				k, err := h.keyCommit(rw)
				if err != nil {
					t.Fatal(err)
				}
				want.Add(k, h.c.DataCommit(rw))
				if err := accs[r.IntN(len(accs))].add(rw); err != nil {
					t.Fatal(err)
				}
			}
			accs[0].merge(accs[1])
			accs[0].merge(accs[2])
			got, err := accs[0].digest()
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(want) || got.Root() != want.Root() {
				t.Errorf("B=%d key %v: accumulated digest differs from statedigest's", buckets, keyCols)
			}
		}
	}
}

func TestKeyCommitMatchesIngest(t *testing.T) {
	var key commitment.Key
	key[3] = 9
	c := key.ForTable("public", "t").NewCommitter()
	rw := row("a", "b", "c")
	h := newRowHasher(key.ForTable("public", "t"), []int{2, 0})
	got, err := h.keyCommit(rw)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := pgcopy.AppendKey(nil, rw, []int{2, 0})
	if got != c.KeyCommit(enc) {
		t.Error("composite key commitment differs from KeyCommit(AppendKey)")
	}
	whole := newRowHasher(key.ForTable("public", "t"), nil)
	if got, _ := whole.keyCommit(rw); got != c.KeyCommit(rw) {
		t.Error("a table without a key must commit the whole row as its key")
	}
}

func TestRenderValue(t *testing.T) {
	if got := renderValue(nil, true); got != "NULL" {
		t.Errorf("NULL rendered %q", got)
	}
	long := []byte(string(make([]byte, 251)) + "ééééé") // é at 251, 253, 255, 257
	got := renderValue(long, false)
	if want := fmt.Sprintf("%s… (%d bytes)", long[:255], len(long)); got != want {
		t.Errorf("long value rendered %q, want a cut at a character boundary", got)
	}
}

func TestSplitTuple(t *testing.T) {
	fs, err := splitTuple(row("ab", "\x00NULL", ""))
	if err != nil {
		t.Fatal(err)
	}
	want := []field{{6, 8, false}, {12, 12, true}, {16, 16, false}}
	if diff := cmp.Diff(want, fs, cmp.AllowUnexported(field{})); diff != "" {
		t.Errorf("splitTuple (-want +got):\n%s", diff)
	}
	for _, bad := range [][]byte{{0}, {0, 1, 0, 0, 0, 9, 'a'}, {0, 1, 0xff, 0xff, 0xff, 0xfe}} {
		if _, err := splitTuple(bad); err == nil {
			t.Errorf("splitTuple(%x) succeeded", bad)
		}
	}
}

func commitOf(s string) commitment.Commitment {
	var c commitment.Commitment
	copy(c[:], s)
	return c
}

// TestClassify pairs expected and actual versions key by key.
func TestClassify(t *testing.T) {
	k1, k2, k3, k4 := commitOf("k1"), commitOf("k2"), commitOf("k3"), commitOf("k4")
	d1, d2, d3 := commitOf("d1"), commitOf("d2"), commitOf("d3")
	exp := map[commitment.Commitment]*keyExpect{
		k1: {versions: []version{{data: d1, n: 1, seq: 5, op: commitment.OpInsert}}, last: 9, lastOp: commitment.OpUpdate, hasLast: true},     // modified
		k2: {versions: []version{{data: d1, n: 1, seq: 6, op: commitment.OpBaseline}}, last: 6, lastOp: commitment.OpBaseline, hasLast: true}, // deleted
		k3: {versions: []version{{data: d2, n: 2, seq: 7, op: commitment.OpInsert}, {data: d3, n: -1}}, last: 7, lastOp: commitment.OpInsert, hasLast: true},
	}
	act := map[commitment.Commitment][]actualRow{
		k1: {{data: d2, vals: []string{"1"}}},
		k3: {{data: d2, vals: []string{"3"}}}, // one of two copies left
		k4: {{data: d3, vals: []string{"4"}}}, // never committed
	}
	got := classify("public.t", exp, act, []string{"id"}, 32)
	summary := map[string]string{}
	for _, f := range got {
		entry := "-"
		if f.Entry != nil {
			entry = fmt.Sprint(*f.Entry)
		}
		summary[string(f.KeyCommit[:2])] = fmt.Sprintf("%s entry %s key %v", f.Kind, entry, f.Key())
	}
	want := map[string]string{
		"k1": "modified entry 5 key map[id:1]",
		"k2": "deleted entry 6 key map[]",
		"k3": "deleted entry 7 key map[]",
		"k4": "phantom entry - key map[id:4]",
	}
	if diff := cmp.Diff(want, summary); diff != "" {
		t.Errorf("classify (-want +got):\n%s", diff)
	}
	if !slices.IsSortedFunc(got, func(a, b Finding) int { return int(a.Bucket) - int(b.Bucket) }) {
		t.Error("findings are not in bucket order")
	}
	for _, f := range got {
		if f.Kind == Modified && (f.Latest == nil || *f.Latest != 9) {
			t.Errorf("modified row does not name the later UPDATE: %+v", f)
		}
	}
}
