package statedigest

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/witnz/witnz/libs/commitment"
)

func benchDigest(b *testing.B, rows int) (*Digest, []Change) {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	d, err := New(DefaultBuckets)
	if err != nil {
		b.Fatal(err)
	}
	changes := make([]Change, rows)
	for i := range changes {
		changes[i] = Change{Op: commitment.OpInsert, Key: randCommit(r), Data: randCommit(r)}
		if err := d.Apply(changes[i], Mutable); err != nil {
			b.Fatal(err)
		}
	}
	return d, changes
}

// BenchmarkApplyInsert is one row into a table's digest (what the witness
// does per logged INSERT and the verifier per scanned row).
func BenchmarkApplyInsert(b *testing.B) {
	d, _ := benchDigest(b, 0)
	c := Change{Op: commitment.OpInsert, Key: sha("k"), Data: sha("d")}
	for b.Loop() {
		if err := d.Apply(c, Mutable); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRootAll is Root with every bucket changed since the last one
// (2 MiB of leaves hashed).
func BenchmarkRootAll(b *testing.B) {
	d, _ := benchDigest(b, 0)
	for b.Loop() {
		for i := range d.stale {
			d.stale[i] = true
		}
		d.Root()
	}
}

// BenchmarkRootOneChange is Root after a single row changed.
func BenchmarkRootOneChange(b *testing.B) {
	d, _ := benchDigest(b, 0)
	d.Root()
	k := sha("k")
	for b.Loop() {
		d.Add(k, k)
		d.Root()
	}
}

// BenchmarkAsOf1000 rewinds a 1024-bucket digest past 1000 inserts.
func BenchmarkAsOf1000(b *testing.B) {
	d, changes := benchDigest(b, 1000)
	for b.Loop() {
		if _, err := d.AsOf(Mutable, slices.Values(changes)); err != nil {
			b.Fatal(err)
		}
	}
}
