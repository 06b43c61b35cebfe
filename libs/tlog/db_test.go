package tlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"go.etcd.io/bbolt"
)

func mustOpenDB(t testing.TB, path string) *DB {
	t.Helper()
	db, err := OpenDB(path)
	if err != nil {
		t.Fatalf("OpenDB(%s): %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustDBLog(t testing.TB, db *DB, name string) *Log {
	t.Helper()
	l, err := db.Log(name)
	if err != nil {
		t.Fatalf("Log(%q): %v", name, err)
	}
	return l
}

func leavesFrom(from, n int) [][HashSize]byte {
	out := make([][HashSize]byte, n)
	for i := range out {
		out[i] = leafOf(from + i)
	}
	return out
}

// sameLog checks that got answers exactly like want: state, roots, leaf
// hashes, and inclusion and consistency proofs at sizes and indexes drawn
// from rng, each of which must also verify.
func sameLog(t *testing.T, got, want *Log, rng *rand.Rand, probes int) {
	t.Helper()
	st := want.State()
	if gst := got.State(); gst != st {
		t.Fatalf("State() = %+v, want %+v", gst, st)
	}
	if st.Size == 0 {
		return
	}
	for range probes {
		size := 1 + rng.Uint64N(st.Size)
		index := rng.Uint64N(size)
		from := rng.Uint64N(size + 1)
		root := mustRootAt(t, want, size)
		if r := mustRootAt(t, got, size); r != root {
			t.Fatalf("RootAt(%d) = %x, want %x", size, r, root)
		}
		leaf, err := got.LeafHash(index)
		if err != nil || leaf != leafOf(int(index)) {
			t.Fatalf("LeafHash(%d) = %x, %v; want %x", index, leaf, err, leafOf(int(index)))
		}
		p, err := got.InclusionProof(index, size)
		if err != nil {
			t.Fatalf("InclusionProof(%d, %d): %v", index, size, err)
		}
		if wp, _ := want.InclusionProof(index, size); !slices.EqualFunc(p, wp, bytes.Equal) {
			t.Fatalf("InclusionProof(%d, %d) differs from the in-memory log's", index, size)
		}
		if err := VerifyInclusion(index, size, leaf[:], p, root[:]); err != nil {
			t.Fatal(err)
		}
		c, err := got.ConsistencyProof(from, size)
		if err != nil {
			t.Fatalf("ConsistencyProof(%d, %d): %v", from, size, err)
		}
		if wc, _ := want.ConsistencyProof(from, size); !slices.EqualFunc(c, wc, bytes.Equal) {
			t.Fatalf("ConsistencyProof(%d, %d) differs from the in-memory log's", from, size)
		}
		old := mustRootAt(t, want, from)
		if err := VerifyConsistency(from, size, c, old[:], root[:]); err != nil {
			t.Fatal(err)
		}
	}
}

func mustRootAt(t *testing.T, l *Log, size uint64) [HashSize]byte {
	t.Helper()
	r, err := l.RootAt(size)
	if err != nil {
		t.Fatalf("RootAt(%d): %v", size, err)
	}
	return r
}

// TestDBMatchesMemory appends the same leaves in random batches to a log in
// a DB and, one leaf at a time, to a log in memory, and compares them after
// every batch, after a reopen and after appending past the reopen.
func TestDBMatchesMemory(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	path := filepath.Join(t.TempDir(), "tlog.db")
	db := mustOpenDB(t, path)
	dl := mustDBLog(t, db, "public.audit_log")
	ml := New()
	sameLog(t, dl, ml, rng, 1)

	appendBoth := func(batches int) {
		t.Helper()
		for range batches {
			n := rng.IntN(300)
			if rng.IntN(4) == 0 {
				n = rng.IntN(5) // 0 to 4: the edge cases
			}
			leaves := leavesFrom(int(ml.Size()), n)
			if err := dl.AppendBatch(leaves); err != nil {
				t.Fatalf("AppendBatch(%d leaves): %v", n, err)
			}
			for _, leaf := range leaves {
				if err := ml.Append(leaf); err != nil {
					t.Fatal(err)
				}
			}
			sameLog(t, dl, ml, rng, 3)
		}
	}
	appendBoth(60)
	sameLog(t, dl, ml, rng, 300)
	if err := dl.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = mustOpenDB(t, path)
	dl = mustDBLog(t, db, "public.audit_log")
	sameLog(t, dl, ml, rng, 300)

	appendBoth(20)
	if err := dl.Append(leafOf(int(ml.Size()))); err != nil {
		t.Fatal(err)
	}
	if err := ml.Append(leafOf(int(ml.Size()))); err != nil {
		t.Fatal(err)
	}
	sameLog(t, dl, ml, rng, 300)
	if err := dl.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	// Marshal reads the leaves back from the file.
	mb, err := ml.MarshalAt(ml.Size() / 2)
	if err != nil {
		t.Fatal(err)
	}
	db2, err := dl.MarshalAt(ml.Size() / 2)
	if err != nil || !bytes.Equal(mb, db2) {
		t.Fatalf("MarshalAt of the DB log differs from the in-memory one (err %v)", err)
	}
}

func TestAppendBatchMatchesAppend(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	batched, single := New(), New()
	if err := batched.AppendBatch(nil); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		leaves := leavesFrom(int(single.Size()), rng.IntN(100))
		if err := batched.AppendBatch(leaves); err != nil {
			t.Fatal(err)
		}
		for _, leaf := range leaves {
			if err := single.Append(leaf); err != nil {
				t.Fatal(err)
			}
		}
		sameLog(t, batched, single, rng, 2)
	}
	if want := naiveRoot(leavesFrom(0, int(single.Size()))); batched.Root() != want {
		t.Fatalf("Root() = %x, want %x", batched.Root(), want)
	}
	// The leaves the caller passed are copied: changing them afterwards
	// changes nothing.
	leaves := leavesFrom(int(single.Size()), 3)
	if err := batched.AppendBatch(leaves); err != nil {
		t.Fatal(err)
	}
	before := batched.State()
	leaves[2][0] ^= 1
	if err := batched.Verify(); err != nil || batched.State() != before {
		t.Fatalf("log changed with the caller's slice (Verify: %v)", err)
	}
}

func TestDBReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlog.db")
	db := mustOpenDB(t, path)
	empty := mustDBLog(t, db, "empty")
	l := mustDBLog(t, db, "t")
	if again := mustDBLog(t, db, "t"); again != l {
		t.Fatal("Log called twice with one name returned two logs")
	}
	if err := l.AppendBatch(leavesFrom(0, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(leafOf(1000)); err != nil {
		t.Fatal(err)
	}
	want, emptyWant := l.State(), empty.State()
	proof, err := l.InclusionProof(777, 1001)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = mustOpenDB(t, path)
	names, err := db.LogNames()
	if err != nil || !slices.Equal(names, []string{"empty", "t"}) {
		t.Fatalf("LogNames() = %q, %v; want [empty t]", names, err)
	}
	l = mustDBLog(t, db, "t")
	if got := l.State(); got != want {
		t.Fatalf("reopened State() = %+v, want %+v", got, want)
	}
	if got := mustDBLog(t, db, "empty").State(); got != emptyWant {
		t.Fatalf("reopened empty log State() = %+v, want %+v", got, emptyWant)
	}
	got, err := l.InclusionProof(777, 1001)
	if err != nil || !slices.EqualFunc(got, proof, bytes.Equal) {
		t.Fatalf("inclusion proof after reopen differs (err %v)", err)
	}
	if ml, _ := mustLog(t, 1001); ml.State() != want {
		t.Fatalf("DB log state %+v, in-memory log of the same leaves %+v", want, ml.State())
	}
}

func TestDBTwoLogsAreIndependent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlog.db")
	db := mustOpenDB(t, path)
	a, b := mustDBLog(t, db, "public.a"), mustDBLog(t, db, "public.b")
	ma, mb := New(), New()
	// Different leaves per log, so a mixed-up bucket shows.
	leafB := func(i int) [HashSize]byte { return sha256.Sum256(fmt.Appendf(nil, "b%d", i)) }
	for round := range 30 {
		la := leavesFrom(int(ma.Size()), round*7%50)
		var lb [][HashSize]byte
		for range round * 13 % 40 {
			lb = append(lb, leafB(int(mb.Size())+len(lb)))
		}
		// Appends to the two logs run at the same time.
		errc := make(chan error, 2)
		go func() { errc <- a.AppendBatch(la) }()
		go func() { errc <- b.AppendBatch(lb) }()
		for range 2 {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
		if err := errors.Join(ma.AppendBatch(la), mb.AppendBatch(lb)); err != nil {
			t.Fatal(err)
		}
	}
	if a.State() != ma.State() || b.State() != mb.State() {
		t.Fatalf("states (%+v, %+v), want (%+v, %+v)", a.State(), b.State(), ma.State(), mb.State())
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = mustOpenDB(t, path)
	a, b = mustDBLog(t, db, "public.a"), mustDBLog(t, db, "public.b")
	if a.State() != ma.State() || b.State() != mb.State() {
		t.Fatalf("after reopen: states (%+v, %+v), want (%+v, %+v)", a.State(), b.State(), ma.State(), mb.State())
	}
	if err := errors.Join(a.Verify(), b.Verify()); err != nil {
		t.Fatal(err)
	}
}

func TestDBLogNames(t *testing.T) {
	db := mustOpenDB(t, filepath.Join(t.TempDir(), "tlog.db"))
	for _, name := range []string{"", string(make([]byte, MaxLogName+1))} {
		if _, err := db.Log(name); err == nil {
			t.Errorf("Log(name of %d bytes) succeeded", len(name))
		}
	}
	for _, name := range []string{"x", "public.audit_log", "nodes", "meta", "with\x00nul", string(make([]byte, MaxLogName))} {
		l := mustDBLog(t, db, name)
		if err := l.Append(leafOf(len(name))); err != nil {
			t.Fatalf("log %q: %v", name, err)
		}
	}
	names, err := db.LogNames()
	if err != nil || len(names) != 6 {
		t.Fatalf("LogNames() = %d names, %v; want 6", len(names), err)
	}
}

// corruptDB closes db, runs fn on the raw bucket of log name and returns
// the error of reopening that log.
func reopenAfter(t *testing.T, path, name string, fn func(log *bbolt.Bucket) error) error {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bbolt.Tx) error { return fn(tx.Bucket(rootBucket).Bucket([]byte(name))) })
	if cerr := b.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	db := mustOpenDB(t, path)
	defer db.Close()
	_, err = db.Log(name)
	return err
}

func TestDBRejectsCorruptState(t *testing.T) {
	const n = 1000
	full, _ := mustLog(t, n)
	withMeta := func(edit func(st *State)) func(*bbolt.Bucket) error {
		return func(b *bbolt.Bucket) error {
			st := full.State()
			edit(&st)
			return b.Put(metaKey, encodeMeta(st))
		}
	}
	withRawMeta := func(edit func(m []byte) []byte) func(*bbolt.Bucket) error {
		return func(b *bbolt.Bucket) error {
			return b.Put(metaKey, edit(bytes.Clone(b.Get(metaKey))))
		}
	}
	flipAt := func(i int) func([]byte) []byte {
		return func(m []byte) []byte { m[i] ^= 0x40; return m }
	}
	rootAt := func(size uint64) [HashSize]byte { return mustRootAt(t, full, size) }
	for _, tc := range []struct {
		name string
		edit func(*bbolt.Bucket) error
	}{
		{"no state record", func(b *bbolt.Bucket) error { return b.Delete(metaKey) }},
		{"empty state record", withRawMeta(func([]byte) []byte { return []byte{} })},
		{"truncated", withRawMeta(func(m []byte) []byte { return m[:len(m)-1] })},
		{"extra byte", withRawMeta(func(m []byte) []byte { return append(m, 0) })},
		{"bad magic", withRawMeta(flipAt(0))},
		{"bad version", withRawMeta(flipAt(7))},
		{"flipped size", withRawMeta(flipAt(15))},
		{"flipped root", withRawMeta(flipAt(16))},
		{"flipped chain head", withRawMeta(flipAt(16 + HashSize + 3))},
		{"flipped checksum", withRawMeta(flipAt(metaSize - 1))},
		{"wrong root, valid checksum", withMeta(func(st *State) { st.Root[5] ^= 1 })},
		{"size beyond the nodes", withMeta(func(st *State) { st.Size, st.Root = n+1, rootAt(n) })},
		{"size far beyond the nodes", withMeta(func(st *State) { st.Size = 1 << 40 })},
		// The root matches the smaller size: only the nodes left over
		// beyond it give the record away.
		{"size short of the nodes", withMeta(func(st *State) { st.Size, st.Root = n-1, rootAt(n-1) })},
		{"size short of the nodes by a power of two", withMeta(func(st *State) { st.Size, st.Root = 512, rootAt(512) })},
		{"no nodes bucket", func(b *bbolt.Bucket) error { return b.DeleteBucket(nodesBucket) }},
		// 1000 leaves: row 0 has tiles 0 to 31, the last with 8 leaves;
		// row 1 has tile 0 with 31 nodes at level 5.
		{"last tile missing", func(b *bbolt.Bucket) error { return b.Bucket(nodesBucket).Delete(tileKey(0, 31)) }},
		{"last tile of row 1 missing", func(b *bbolt.Bucket) error { return b.Bucket(nodesBucket).Delete(tileKey(1, 0)) }},
		{"short last tile", func(b *bbolt.Bucket) error {
			return b.Bucket(nodesBucket).Put(tileKey(1, 0), make([]byte, tileBytes-HashSize))
		}},
		{"zero node in the last tile", editTile(tileKey(0, 31), func(tile []byte) { clear(tile[5*HashSize : 6*HashSize]) })},
		{"node beyond the size in the last tile", editTile(tileKey(0, 31), func(tile []byte) { tile[9*HashSize] = 1 })},
		{"inner node beyond the size in the last tile", editTile(tileKey(1, 0), func(tile []byte) { tile[61*HashSize+7] = 1 })},
		{"tile beyond the last", func(b *bbolt.Bucket) error {
			return b.Bucket(nodesBucket).Put(tileKey(0, 32), make([]byte, tileBytes))
		}},
		{"tile above the tree", func(b *bbolt.Bucket) error {
			return b.Bucket(nodesBucket).Put(tileKey(2, 0), make([]byte, tileBytes))
		}},
		{"malformed key after a row", func(b *bbolt.Bucket) error {
			return b.Bucket(nodesBucket).Put(append(tileKey(0, 32), 0xff), make([]byte, tileBytes))
		}},
		{"changed compact-range node", editTile(tileKey(1, 0), func(tile []byte) { tile[(sectionOff[4]+0)*HashSize] ^= 1 })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tlog.db")
			db := mustOpenDB(t, path)
			if err := mustDBLog(t, db, "t").AppendBatch(leavesFrom(0, n)); err != nil {
				t.Fatal(err)
			}
			db.Close()
			err := reopenAfter(t, path, "t", tc.edit)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Log after damage: err = %v, want ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
}

// editTile changes the tile at key in place.
func editTile(key []byte, edit func([]byte)) func(*bbolt.Bucket) error {
	return func(b *bbolt.Bucket) error {
		nodes := b.Bucket(nodesBucket)
		tile := bytes.Clone(nodes.Get(key))
		edit(tile)
		return nodes.Put(key, tile)
	}
}

// TestVerifyFindsChangedLeaf changes a leaf on disk: reopening checks only
// the nodes it starts from and succeeds, Verify finds the change.
func TestVerifyFindsChangedLeaf(t *testing.T) {
	for _, id := range []compact.NodeID{
		compact.NewNodeID(0, 10), compact.NewNodeID(1, 20), compact.NewNodeID(4, 3), compact.NewNodeID(5, 1),
	} {
		t.Run(fmt.Sprintf("%d/%d", id.Level, id.Index), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tlog.db")
			db := mustOpenDB(t, path)
			if err := mustDBLog(t, db, "t").AppendBatch(leavesFrom(0, 100)); err != nil {
				t.Fatal(err)
			}
			db.Close()
			row, tile, slot := tilePos(id)
			err := reopenAfter(t, path, "t", editTile(tileKey(row, tile), func(b []byte) { b[slot*HashSize] ^= 1 }))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			db = mustOpenDB(t, path)
			if err := mustDBLog(t, db, "t").Verify(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Verify: err = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestDBFailedBatchLeavesNoTrace aborts a batch inside its transaction,
// after its nodes were written: the log must be as before the batch, in
// memory and on disk, and go on appending as if it never happened.
func TestDBFailedBatchLeavesNoTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlog.db")
	db := mustOpenDB(t, path)
	l := mustDBLog(t, db, "t")
	if err := l.AppendBatch(leavesFrom(0, 77)); err != nil {
		t.Fatal(err)
	}
	before := l.State()
	_ = l.Root() // cache the root at 77, so a stale cache would show

	errStop := errors.New("stopped half way")
	store := l.store.(*boltStore)
	store.failCommit = func() error { return errStop }
	// Different leaves from the ones that follow, so that any trace shows.
	if err := l.AppendBatch(leavesFrom(5000, 300)); !errors.Is(err, errStop) {
		t.Fatalf("AppendBatch: err = %v, want %v", err, errStop)
	}
	if err := l.Append(leafOf(5000)); !errors.Is(err, errStop) {
		t.Fatalf("Append: err = %v, want %v", err, errStop)
	}
	if got := l.State(); got != before {
		t.Fatalf("State() after a failed batch = %+v, want %+v", got, before)
	}
	store.failCommit = nil

	ml, _ := mustLog(t, 77)
	rng := rand.New(rand.NewPCG(5, 6))
	sameLog(t, l, ml, rng, 50)
	more := leavesFrom(77, 300)
	if err := errors.Join(l.AppendBatch(more), ml.AppendBatch(more)); err != nil {
		t.Fatal(err)
	}
	sameLog(t, l, ml, rng, 50)
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = mustOpenDB(t, path)
	l = mustDBLog(t, db, "t")
	sameLog(t, l, ml, rng, 50)
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestDBClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlog.db")
	db := mustOpenDB(t, path)
	l := mustDBLog(t, db, "t")
	if err := l.AppendBatch(leavesFrom(0, 10)); err != nil {
		t.Fatal(err)
	}
	want := l.State()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.AppendBatch(leavesFrom(10, 5)); !errors.Is(err, ErrClosed) {
		t.Fatalf("AppendBatch after Close: err = %v, want ErrClosed", err)
	}
	if got := l.State(); got != want {
		t.Fatalf("State() = %+v, want %+v", got, want)
	}
	if _, err := l.InclusionProof(3, 10); !errors.Is(err, ErrClosed) {
		t.Fatalf("InclusionProof after Close: err = %v, want ErrClosed", err)
	}
	if _, err := db.Log("other"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Log after Close: err = %v, want ErrClosed", err)
	}
	db = mustOpenDB(t, path)
	if got := mustDBLog(t, db, "t").State(); got != want {
		t.Fatalf("reopened State() = %+v, want %+v", got, want)
	}
}

func TestOpenDBErrors(t *testing.T) {
	defer func(d time.Duration) { lockTimeout = d }(lockTimeout)
	lockTimeout = 50 * time.Millisecond
	path := filepath.Join(t.TempDir(), "tlog.db")
	mustOpenDB(t, path)
	if _, err := OpenDB(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second OpenDB: err = %v, want ErrLocked", err)
	}
	if _, err := OpenDB(filepath.Join(t.TempDir(), "missing", "tlog.db")); err == nil {
		t.Fatal("OpenDB in a missing directory succeeded")
	}
	junk := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a bbolt file "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDB(junk); err == nil {
		t.Fatal("OpenDB of a file that is not a database succeeded")
	}
}

func TestMetaRoundTrip(t *testing.T) {
	st := State{Size: 0x0102030405060708}
	st.Root[0], st.ChainHead[31] = 0xaa, 0xbb
	b := encodeMeta(st)
	if len(b) != metaSize || binary.BigEndian.Uint64(b[8:]) != st.Size {
		t.Fatalf("encodeMeta = %x", b)
	}
	got, err := decodeMeta(b)
	if err != nil || got != st {
		t.Fatalf("decodeMeta = %+v, %v; want %+v", got, err, st)
	}
}

func TestDBDeleteLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlog.db")
	db := mustOpenDB(t, path)
	gone, kept := mustDBLog(t, db, "gone"), mustDBLog(t, db, "kept")
	if err := errors.Join(gone.AppendBatch(leavesFrom(0, 500)), kept.AppendBatch(leavesFrom(0, 300))); err != nil {
		t.Fatal(err)
	}
	want := kept.State()
	if err := db.DeleteLog("gone"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteLog("never-there"); err != nil {
		t.Fatalf("DeleteLog of a missing log: %v", err)
	}
	if err := gone.Append(leafOf(500)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append to a deleted log: err = %v, want ErrClosed", err)
	}
	if _, err := gone.InclusionProof(1, 400); !errors.Is(err, ErrClosed) {
		t.Fatalf("InclusionProof of a deleted log: err = %v, want ErrClosed", err)
	}
	if names, err := db.LogNames(); err != nil || !slices.Equal(names, []string{"kept"}) {
		t.Fatalf("LogNames() = %q, %v; want [kept]", names, err)
	}
	fresh := mustDBLog(t, db, "gone")
	if fresh == gone || fresh.Size() != 0 {
		t.Fatalf("Log after DeleteLog: same log %v, size %d; want a new empty log", fresh == gone, fresh.Size())
	}
	if err := fresh.AppendBatch(leavesFrom(0, 10)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = mustOpenDB(t, path)
	if got := mustDBLog(t, db, "kept").State(); got != want {
		t.Fatalf("kept log after reopen = %+v, want %+v", got, want)
	}
	if ml, _ := mustLog(t, 10); mustDBLog(t, db, "gone").State() != ml.State() {
		t.Fatal("recreated log after reopen differs from an in-memory log of its 10 leaves")
	}
}

// TestDBConcurrentReaders reads proofs of a DB log while batches are
// appended to it and to a second log of the same file.
func TestDBConcurrentReaders(t *testing.T) {
	db := mustOpenDB(t, filepath.Join(t.TempDir(), "tlog.db"))
	l, other := mustDBLog(t, db, "t"), mustDBLog(t, db, "other")
	done := make(chan struct{})
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(9, 9))
		for l.Size() < 3000 {
			n := 1 + rng.IntN(200)
			if err := errors.Join(l.AppendBatch(leavesFrom(int(l.Size()), n)), other.AppendBatch(leavesFrom(0, 3))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	rng := rand.New(rand.NewPCG(10, 10))
	for {
		select {
		case <-done:
			if err := l.Verify(); err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		st := l.State()
		if st.Size == 0 {
			continue
		}
		index := rng.Uint64N(st.Size)
		p, err := l.InclusionProof(index, st.Size)
		if err != nil {
			t.Fatal(err)
		}
		leaf := leafOf(int(index))
		if err := VerifyInclusion(index, st.Size, leaf[:], p, st.Root[:]); err != nil {
			t.Fatal(err)
		}
	}
}
