package tlog

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Benchmarks for B6 (make bench). Every one reports its rate and x-sha256:
// its cost per leaf or per proof in units of one raw SHA-256 of a leaf's 33
// input bytes, measured in the same process right after it;
// BenchmarkSHA256Leaf is that baseline on its own.

var sinkHash [HashSize]byte

// sha256LeafNs is the time of one SHA-256 over 0x00 || 32 bytes, the best
// of a few timed runs, measured when called: right after the benchmark it
// is compared with.
func sha256LeafNs() float64 {
	var in [1 + HashSize]byte
	best := math.Inf(1)
	for range 5 {
		const n = 1 << 16
		start := time.Now()
		for i := range n {
			in[1] = byte(i)
			sinkHash = sha256.Sum256(in[:])
		}
		best = min(best, float64(time.Since(start).Nanoseconds())/n)
	}
	return best
}

// report sets the per-unit metrics of a benchmark that did n units of work
// (leaves or proofs) in all: time per unit, units per second, and the time
// per unit over the time of one raw SHA-256 of a leaf, measured now.
func report(b *testing.B, n int, unit, units string) {
	ns := float64(b.Elapsed().Nanoseconds()) / float64(n)
	b.ReportMetric(ns, "ns/"+unit)
	b.ReportMetric(1e9/ns, units+"/s")
	b.ReportMetric(ns/sha256LeafNs(), "x-sha256")
}

func BenchmarkSHA256Leaf(b *testing.B) {
	var in [1 + HashSize]byte
	n := 0
	for b.Loop() {
		in[1] = byte(n)
		sinkHash = sha256.Sum256(in[:])
		n++
	}
	report(b, n, "leaf", "leaves")
}

// benchLeaves is a ring of leaf hashes the append benchmarks draw from.
var benchLeaves = sync.OnceValue(func() [][HashSize]byte { return leavesFrom(0, 1<<16) })

// The in-memory append benchmarks start a new log every benchTreeSize
// leaves, so that they measure appends to trees of up to 2^20 leaves and
// their memory stays bounded however long they run.

func BenchmarkAppend(b *testing.B) {
	leaves := benchLeaves()
	l := New()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n%benchTreeSize == 0 {
			l = New()
		}
		if err := l.Append(leaves[n&(len(leaves)-1)]); err != nil {
			b.Fatal(err)
		}
		n++
	}
	report(b, n, "leaf", "leaves")
}

const benchBatch = 4096

func BenchmarkAppendBatch(b *testing.B) {
	leaves := benchLeaves()
	l := New()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n%benchTreeSize == 0 {
			l = New()
		}
		off := n % len(leaves)
		if err := l.AppendBatch(leaves[off : off+benchBatch]); err != nil {
			b.Fatal(err)
		}
		n += benchBatch
	}
	report(b, n, "leaf", "leaves")
}

func BenchmarkDBAppendBatch(b *testing.B) {
	leaves := benchLeaves()
	for _, batch := range []int{1, 64, benchBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db, err := OpenDB(filepath.Join(b.TempDir(), "tlog.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			l, err := db.Log("bench")
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				off := n % len(leaves)
				if err := l.AppendBatch(leaves[off : off+batch]); err != nil {
					b.Fatal(err)
				}
				n += batch
			}
			report(b, n, "leaf", "leaves")
		})
	}
}

// benchTreeSize is the size of the trees the proof benchmarks query.
const benchTreeSize = 1 << 20

// The 2^20-leaf trees are built once per process, in memory and in a DB
// file removed by TestMain.
var (
	benchMemTree = sync.OnceValues(func() (*Log, error) {
		l := New()
		for from := 0; from < benchTreeSize; from += benchBatch {
			if err := l.AppendBatch(leavesFrom(from, benchBatch)); err != nil {
				return nil, err
			}
		}
		return l, nil
	})
	benchDir    string
	benchDBTree = sync.OnceValues(func() (*Log, error) {
		var err error
		if benchDir, err = os.MkdirTemp("", "tlog-bench-"); err != nil {
			return nil, err
		}
		db, err := OpenDB(filepath.Join(benchDir, "tlog.db"))
		if err != nil {
			return nil, err
		}
		l, err := db.Log("bench")
		if err != nil {
			return nil, err
		}
		for from := 0; from < benchTreeSize; from += benchBatch {
			if err := l.AppendBatch(leavesFrom(from, benchBatch)); err != nil {
				return nil, err
			}
		}
		return l, nil
	})
)

func cleanupBenchTrees() {
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
}

func benchTrees(b *testing.B) map[string]*Log {
	b.Helper()
	mem, err := benchMemTree()
	if err != nil {
		b.Fatal(err)
	}
	db, err := benchDBTree()
	if err != nil {
		b.Fatal(err)
	}
	return map[string]*Log{"memory": mem, "db": db}
}

func BenchmarkInclusionProof(b *testing.B) {
	trees := benchTrees(b)
	for _, name := range []string{"memory", "db"} {
		b.Run(name, func(b *testing.B) {
			l := trees[name]
			rng := rand.New(rand.NewPCG(1, 1))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if _, err := l.InclusionProof(rng.Uint64N(benchTreeSize), benchTreeSize); err != nil {
					b.Fatal(err)
				}
				n++
			}
			report(b, n, "proof", "proofs")
		})
	}
}

func BenchmarkConsistencyProof(b *testing.B) {
	trees := benchTrees(b)
	for _, name := range []string{"memory", "db"} {
		b.Run(name, func(b *testing.B) {
			l := trees[name]
			rng := rand.New(rand.NewPCG(2, 2))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				from := 1 + rng.Uint64N(benchTreeSize-1)
				if _, err := l.ConsistencyProof(from, benchTreeSize); err != nil {
					b.Fatal(err)
				}
				n++
			}
			report(b, n, "proof", "proofs")
		})
	}
}
