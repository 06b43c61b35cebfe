package statedigest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/witnz/witnz/libs/commitment"
)

func mustNew(t *testing.T, buckets int) *Digest {
	t.Helper()
	d, err := New(buckets)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func randCommit(r *rand.Rand) commitment.Commitment {
	var c commitment.Commitment
	for i := 0; i < len(c); i += 8 {
		binary.LittleEndian.PutUint64(c[i:], r.Uint64())
	}
	return c
}

func sha(s string) commitment.Commitment { return sha256.Sum256([]byte(s)) }

func TestNewBucketCounts(t *testing.T) {
	for _, n := range []int{1, 2, 16, DefaultBuckets, MaxBuckets} {
		d, err := New(n)
		if err != nil || d.Buckets() != n {
			t.Errorf("New(%d) = %v buckets, %v", n, d, err)
		}
	}
	for _, n := range []int{-1, 0, 3, 1000, MaxBuckets + 1, 2 * MaxBuckets} {
		if _, err := New(n); !errors.Is(err, ErrBuckets) {
			t.Errorf("New(%d) error = %v, want ErrBuckets", n, err)
		}
	}
}

func TestBucketOfUsesHighBits(t *testing.T) {
	key := func(prefix ...byte) commitment.Commitment {
		var c commitment.Commitment
		for i := range c {
			c[i] = 0xa5 // low bits set everywhere: must not matter
		}
		copy(c[:], prefix)
		return c
	}
	tests := []struct {
		buckets int
		key     commitment.Commitment
		want    uint32
	}{
		{1, key(0xff, 0xff), 0},
		{2, key(0x7f), 0},
		{2, key(0x80), 1},
		{1024, key(0x00, 0x3f), 0},
		{1024, key(0x00, 0x40), 1},
		{1024, key(0x80, 0x00), 512},
		{1024, key(0xff, 0xc0), 1023},
		{1024, key(0x12, 0x34), 0x1234 >> 6},
		{MaxBuckets, key(0xbe, 0xef), 0xbeef},
	}
	for _, tt := range tests {
		d := mustNew(t, tt.buckets)
		if got := d.BucketOf(tt.key); got != tt.want {
			t.Errorf("B=%d BucketOf(%x…) = %d, want %d", tt.buckets, tt.key[:4], got, tt.want)
		}
	}
	// Add and Remove use that bucket and no other.
	d := mustNew(t, 1024)
	k := key(0xff, 0xc0)
	d.Add(k, sha("row"))
	for i := range uint32(1024) {
		b, err := d.Bucket(i)
		if err != nil {
			t.Fatal(err)
		}
		if want := uint64(i / 1023); b.Count != want || b.Hash.IsZero() == (want == 1) {
			t.Fatalf("bucket %d: count %d, empty hash %v", i, b.Count, b.Hash.IsZero())
		}
	}
}

// TestKnownAnswer pins the definition (bucket choice, element, leaf layout,
// RFC 6962 root) to a value computed independently with Python's hashlib.
func TestKnownAnswer(t *testing.T) {
	d := mustNew(t, 4)
	for _, r := range [][2]string{{"k1", "d1"}, {"k2", "d2"}, {"k3", "d3"}, {"k4", "d4"}, {"k5", "d5"}} {
		d.Add(sha(r[0]), sha(r[1]))
	}
	var counts []uint64
	for i := range uint32(4) {
		b, err := d.Bucket(i)
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, b.Count)
	}
	if diff := cmp.Diff([]uint64{2, 1, 2, 0}, counts); diff != "" {
		t.Errorf("bucket counts (-want +got):\n%s", diff)
	}
	root := d.Root()
	if got, want := hex.EncodeToString(root[:]), "2d7e38e09cb46d192898ed4ff87f19789bdbbaea56a3f5dc7c1393e48688ea06"; got != want {
		t.Errorf("root = %s, want %s", got, want)
	}
	empty := mustNew(t, 1).Root()
	if got, want := hex.EncodeToString(empty[:]), "a27066e11fec68b71cbd6f60b9651872934dfcae672be30e9385f7cffe990e10"; got != want {
		t.Errorf("empty B=1 root = %s, want %s", got, want)
	}
}

// TestRootIsRFC6962OverLeaves rebuilds the root with transparency-dev's
// compact ranges over leaves laid out by hand.
func TestRootIsRFC6962OverLeaves(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1, 2, 8, 64} {
		d := mustNew(t, n)
		for range 3 * n {
			d.Add(randCommit(r), randCommit(r))
		}
		rf := &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
		rng := rf.NewEmptyRange(0)
		for i := range uint32(n) {
			b, err := d.Bucket(i)
			if err != nil {
				t.Fatal(err)
			}
			leaf := binary.BigEndian.AppendUint32(nil, i)
			leaf = binary.BigEndian.AppendUint64(leaf, b.Count)
			leaf = append(leaf, b.Hash.Bytes()...)
			if got, err := d.BucketLeaf(i); err != nil || !slices.Equal(got, leaf) || len(got) != LeafSize {
				t.Fatalf("BucketLeaf(%d) differs from the layout (err %v)", i, err)
			}
			if err := rng.Append(rfc6962.DefaultHasher.HashLeaf(leaf), nil); err != nil {
				t.Fatal(err)
			}
		}
		want, err := rng.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Root(); !slices.Equal(got[:], want) {
			t.Fatalf("B=%d: Root %x, compact range root %x", n, got, want)
		}
	}
}

func TestRootFollowsChanges(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	d := mustNew(t, 16)
	seen := map[[32]byte]bool{d.Root(): true}
	var rows [][2]commitment.Commitment
	for range 20 {
		k, v := randCommit(r), randCommit(r)
		rows = append(rows, [2]commitment.Commitment{k, v})
		d.Add(k, v)
		root := d.Root()
		if seen[root] {
			t.Fatal("an Add did not change the root (stale leaf cache?)")
		}
		seen[root] = true
	}
	c := d.Clone()
	if c.Root() != d.Root() {
		t.Fatal("clone has another root")
	}
	if err := c.Remove(rows[3][0], rows[3][1]); err != nil {
		t.Fatal(err)
	}
	if c.Root() == d.Root() {
		t.Fatal("removing from a clone left its root unchanged or changed the original")
	}
	fresh := mustNew(t, 16)
	for i, row := range rows {
		if i != 3 {
			fresh.Add(row[0], row[1])
		}
	}
	if fresh.Root() != c.Root() {
		t.Fatal("root after Remove differs from the root of the digest built without the row")
	}
}

func TestOrderIndependence(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	rows := make([][2]commitment.Commitment, 200)
	for i := range rows {
		rows[i] = [2]commitment.Commitment{randCommit(r), randCommit(r)}
	}
	want := mustNew(t, 32)
	for _, row := range rows {
		want.Add(row[0], row[1])
	}
	for range 3 {
		d := mustNew(t, 32)
		for _, i := range r.Perm(len(rows)) {
			d.Add(rows[i][0], rows[i][1])
		}
		if !d.Equal(want) || d.Root() != want.Root() {
			t.Fatal("a permutation of the same rows gave another digest")
		}
	}
	if want.Rows() != uint64(len(rows)) {
		t.Fatalf("Rows = %d, want %d", want.Rows(), len(rows))
	}
}

func TestAddThenRemoveIsIdentity(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	d := mustNew(t, 16)
	for range 50 {
		d.Add(randCommit(r), randCommit(r))
	}
	orig, origRoot := d.Clone(), d.Root()
	var added [][2]commitment.Commitment
	for range 100 {
		k, v := randCommit(r), randCommit(r)
		added = append(added, [2]commitment.Commitment{k, v})
		d.Add(k, v)
	}
	for _, i := range r.Perm(len(added)) {
		if err := d.Remove(added[i][0], added[i][1]); err != nil {
			t.Fatal(err)
		}
	}
	if !d.Equal(orig) || d.Root() != origRoot {
		t.Fatal("removing what was added did not restore the digest")
	}
}

func TestRemoveFromEmptyBucket(t *testing.T) {
	d := mustNew(t, 2)
	k0, k1 := commitment.Commitment{0x00}, commitment.Commitment{0x80}
	d.Add(k0, sha("a"))
	before := d.Clone()
	if err := d.Remove(k1, sha("a")); !errors.Is(err, ErrUnderflow) {
		t.Fatalf("Remove from an empty bucket: error = %v, want ErrUnderflow", err)
	}
	if !d.Equal(before) {
		t.Fatal("a failed Remove changed the digest")
	}
	// The same key through Apply (mutable DELETE) fails the same way.
	if err := d.Apply(Change{Op: commitment.OpDelete, Key: k1, OldData: sha("a")}, Mutable); !errors.Is(err, ErrUnderflow) {
		t.Fatalf("DELETE from an empty bucket: error = %v, want ErrUnderflow", err)
	}
	if !d.Equal(before) {
		t.Fatal("a failed Apply changed the digest")
	}
}

func TestDiffPinpointsTouchedBuckets(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	base := mustNew(t, 64)
	var rows [][2]commitment.Commitment
	for range 300 {
		k, v := randCommit(r), randCommit(r)
		rows = append(rows, [2]commitment.Commitment{k, v})
		base.Add(k, v)
	}
	for round := range 10 {
		d := base.Clone()
		touched := map[uint32]bool{}
		for range round + 1 {
			switch row := rows[r.IntN(len(rows))]; r.IntN(3) {
			case 0: // modified
				if err := d.Apply(Change{Op: commitment.OpUpdate, Key: row[0], Data: randCommit(r), OldData: row[1]}, Mutable); err != nil {
					t.Fatal(err)
				}
				touched[d.BucketOf(row[0])] = true
			case 1: // phantom
				k := randCommit(r)
				d.Add(k, randCommit(r))
				touched[d.BucketOf(k)] = true
			case 2: // replaced by a different row with the same key, count unchanged
				if err := d.Remove(row[0], row[1]); err != nil {
					t.Fatal(err)
				}
				d.Add(row[0], randCommit(r))
				touched[d.BucketOf(row[0])] = true
			}
		}
		got, err := base.Diff(d)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]uint32, 0, len(touched))
		for i := range touched {
			want = append(want, i)
		}
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("round %d: Diff (-want +got):\n%s", round, diff)
		}
	}
	if got, err := base.Diff(base.Clone()); err != nil || len(got) != 0 {
		t.Fatalf("Diff with a clone = %v, %v", got, err)
	}
	if _, err := base.Diff(mustNew(t, 32)); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Diff across bucket counts: error = %v, want ErrMismatch", err)
	}
}

func TestBucketIndexOutOfRange(t *testing.T) {
	d := mustNew(t, 8)
	if _, err := d.Bucket(8); !errors.Is(err, ErrBucketIndex) {
		t.Errorf("Bucket(8) error = %v", err)
	}
	if _, err := d.BucketLeaf(1 << 31); !errors.Is(err, ErrBucketIndex) {
		t.Errorf("BucketLeaf(2^31) error = %v", err)
	}
}

// TestConcurrentReaders runs the read-only methods side by side (for -race).
func TestConcurrentReaders(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	d := mustNew(t, 16)
	for range 40 {
		d.Add(randCommit(r), randCommit(r))
	}
	want := d.Clone().Root()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if d.Root() != want {
				t.Error("concurrent Root differs")
			}
			if _, err := d.MarshalBinary(); err != nil {
				t.Error(err)
			}
			if _, err := d.Diff(d.Clone()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestBucketIndexMatchesBucketOf(t *testing.T) {
	for _, n := range []int{1, 2, 1024, 65536} {
		d, err := New(n)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			k := commitment.Commitment(sha256.Sum256([]byte{byte(i), byte(i >> 8)}))
			if got, want := BucketIndex(k, uint32(n)), d.BucketOf(k); got != want {
				t.Fatalf("%d buckets, key %x: BucketIndex %d, BucketOf %d", n, k[:4], got, want)
			}
		}
	}
}
