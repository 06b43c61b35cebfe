package tlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
)

// naiveRoot is RFC 6962 section 2.1 MTH, written out recursively.
func naiveRoot(leaves [][HashSize]byte) [HashSize]byte {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := naiveRoot(leaves[:k]), naiveRoot(leaves[k:])
	return sha256.Sum256(append(append([]byte{0x01}, l[:]...), r[:]...))
}

func leafOf(i int) [HashSize]byte {
	var b [9]byte
	b[0] = 0x00
	binary.BigEndian.PutUint64(b[1:], uint64(i))
	return sha256.Sum256(b[:])
}

func mustLog(t testing.TB, n int) (*Log, [][HashSize]byte) {
	t.Helper()
	l := New()
	leaves := make([][HashSize]byte, n)
	for i := range n {
		leaves[i] = leafOf(i)
		if err := l.Append(leaves[i]); err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
	}
	return l, leaves
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRootMatchesNaive(t *testing.T) {
	l := New()
	var leaves [][HashSize]byte
	for n := 0; n <= 100; n++ {
		if got, want := l.Size(), uint64(n); got != want {
			t.Fatalf("Size() = %d, want %d", got, want)
		}
		want := naiveRoot(leaves)
		if got := l.Root(); got != want {
			t.Fatalf("Root() at size %d = %x, want %x", n, got, want)
		}
		leaves = append(leaves, leafOf(n))
		if err := l.Append(leaves[n]); err != nil {
			t.Fatal(err)
		}
	}
	for size := 0; size <= 101; size++ {
		got, err := l.RootAt(uint64(size))
		if err != nil {
			t.Fatalf("RootAt(%d): %v", size, err)
		}
		if want := naiveRoot(leaves[:size]); got != want {
			t.Fatalf("RootAt(%d) = %x, want %x", size, got, want)
		}
	}
	if _, err := l.RootAt(102); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("RootAt beyond size: err = %v, want ErrOutOfRange", err)
	}
}

// TestRFC6962Vectors checks the roots published with the reference
// implementation for the eight standard leaf inputs.
func TestRFC6962Vectors(t *testing.T) {
	inputs := []string{"", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"}
	roots := []string{
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
		"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
		"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
		"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
		"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
	}
	l := New()
	for i, in := range inputs {
		if got := l.Root(); !bytes.Equal(got[:], mustHex(t, roots[i])) {
			t.Fatalf("root at size %d = %x, want %s", i, got, roots[i])
		}
		if err := l.Append(sha256.Sum256(append([]byte{0}, mustHex(t, in)...))); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Root(); !bytes.Equal(got[:], mustHex(t, roots[8])) {
		t.Fatalf("root at size 8 = %x, want %s", got, roots[8])
	}
}

func TestInclusionProofs(t *testing.T) {
	l, leaves := mustLog(t, 70)
	for size := uint64(1); size <= 70; size++ {
		root, err := l.RootAt(size)
		if err != nil {
			t.Fatal(err)
		}
		for index := uint64(0); index < size; index++ {
			p, err := l.InclusionProof(index, size)
			if err != nil {
				t.Fatalf("InclusionProof(%d, %d): %v", index, size, err)
			}
			leaf := leaves[index]
			if err := VerifyInclusion(index, size, leaf[:], p, root[:]); err != nil {
				t.Fatalf("VerifyInclusion(%d, %d): %v", index, size, err)
			}
			// A flipped byte anywhere must break the proof.
			bad := leaf
			bad[index%HashSize] ^= 1
			if VerifyInclusion(index, size, bad[:], p, root[:]) == nil {
				t.Fatalf("inclusion (%d, %d) verified with a flipped leaf byte", index, size)
			}
			badRoot := root
			badRoot[size%HashSize] ^= 0x80
			if VerifyInclusion(index, size, leaf[:], p, badRoot[:]) == nil {
				t.Fatalf("inclusion (%d, %d) verified against a flipped root", index, size)
			}
			for j := range p {
				p[j][int(index+size)%HashSize] ^= 0x01
				if VerifyInclusion(index, size, leaf[:], p, root[:]) == nil {
					t.Fatalf("inclusion (%d, %d) verified with proof hash %d flipped", index, size, j)
				}
				p[j][int(index+size)%HashSize] ^= 0x01
			}
			if size > 1 {
				other := (index + 1) % size
				if VerifyInclusion(other, size, leaf[:], p, root[:]) == nil {
					t.Fatalf("proof of %d at size %d verified for index %d", index, size, other)
				}
			}
		}
	}
	if _, err := l.InclusionProof(5, 5); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("InclusionProof(5, 5): err = %v, want ErrOutOfRange", err)
	}
	if _, err := l.InclusionProof(0, 71); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("InclusionProof(0, 71): err = %v, want ErrOutOfRange", err)
	}
}

func TestInclusionProofsLargeTree(t *testing.T) {
	l, leaves := mustLog(t, 5000)
	root := l.Root()
	for _, index := range []uint64{0, 1, 2, 511, 512, 1023, 1024, 2047, 4095, 4096, 4999} {
		p, err := l.InclusionProof(index, 5000)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyInclusion(index, 5000, leaves[index][:], p, root[:]); err != nil {
			t.Errorf("VerifyInclusion(%d, 5000): %v", index, err)
		}
	}
}

func TestConsistencyProofs(t *testing.T) {
	const n = 40
	l, _ := mustLog(t, n)
	roots := make([][HashSize]byte, n+1)
	for size := range roots {
		var err error
		if roots[size], err = l.RootAt(uint64(size)); err != nil {
			t.Fatal(err)
		}
	}
	for to := uint64(0); to <= n; to++ {
		for from := uint64(0); from <= to; from++ {
			p, err := l.ConsistencyProof(from, to)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", from, to, err)
			}
			r1, r2 := roots[from], roots[to]
			if err := VerifyConsistency(from, to, p, r1[:], r2[:]); err != nil {
				t.Fatalf("VerifyConsistency(%d, %d): %v", from, to, err)
			}
			if from == 0 {
				continue // every tree extends the empty one: nothing to falsify
			}
			bad := r1
			bad[0] ^= 1
			if VerifyConsistency(from, to, p, bad[:], r2[:]) == nil {
				t.Fatalf("consistency (%d, %d) verified with a flipped old root", from, to)
			}
			if from == to {
				continue
			}
			bad = r2
			bad[31] ^= 1
			if VerifyConsistency(from, to, p, r1[:], bad[:]) == nil {
				t.Fatalf("consistency (%d, %d) verified with a flipped new root", from, to)
			}
			for j := range p {
				p[j][7] ^= 0x10
				if VerifyConsistency(from, to, p, r1[:], r2[:]) == nil {
					t.Fatalf("consistency (%d, %d) verified with proof hash %d flipped", from, to, j)
				}
				p[j][7] ^= 0x10
			}
		}
	}
	if _, err := l.ConsistencyProof(3, 2); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("ConsistencyProof(3, 2): err = %v, want ErrOutOfRange", err)
	}
	if _, err := l.ConsistencyProof(1, n+1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("ConsistencyProof(1, %d): err = %v, want ErrOutOfRange", n+1, err)
	}
}

func TestChainHead(t *testing.T) {
	l := New()
	if got := l.ChainHead(); got != ([HashSize]byte{}) {
		t.Fatalf("empty chain head = %x, want zeros", got)
	}
	// Independent computation of c_n = SHA-256(c_{n-1} || leaf_n).
	var c [HashSize]byte
	for i := range 3 {
		leaf := leafOf(i)
		c = sha256.Sum256(append(append([]byte{}, c[:]...), leaf[:]...))
		if err := l.Append(leaf); err != nil {
			t.Fatal(err)
		}
		if got := l.ChainHead(); got != c {
			t.Fatalf("chain head at size %d = %x, want %x", i+1, got, c)
		}
	}
	// Known answer for the leaves SHA-256(0x00 || uint64be(i)), i = 0, 1, 2.
	const want = "5c2b9cbf81cfe3185f1a35f319228651111df00c46602a41879c23e1a42eb5e3"
	if got := hex.EncodeToString(c[:]); got != want {
		t.Fatalf("chain head after 3 leaves = %s, want %s", got, want)
	}
}

func TestLeafHashAndState(t *testing.T) {
	l, leaves := mustLog(t, 17)
	for i, want := range leaves {
		got, err := l.LeafHash(uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("LeafHash(%d) = %x, want %x", i, got, want)
		}
	}
	if _, err := l.LeafHash(17); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("LeafHash(17): err = %v, want ErrOutOfRange", err)
	}
	st := l.State()
	if st.Size != 17 || st.Root != l.Root() || st.ChainHead != l.ChainHead() {
		t.Fatalf("State() = %+v, disagrees with Size/Root/ChainHead", st)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 8, 33, 257} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			l, _ := mustLog(t, n)
			b, err := l.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if got.State() != l.State() {
				t.Fatalf("round trip state = %+v, want %+v", got.State(), l.State())
			}
			if n > 1 {
				p1, _ := l.InclusionProof(1, uint64(n))
				p2, err := got.InclusionProof(1, uint64(n))
				if err != nil || fmt.Sprint(p1) != fmt.Sprint(p2) {
					t.Fatalf("proofs differ after round trip (err %v)", err)
				}
			}
			// Appending continues where the original left off.
			for _, x := range []*Log{l, got} {
				if err := x.Append(leafOf(n)); err != nil {
					t.Fatal(err)
				}
			}
			if got.State() != l.State() {
				t.Fatalf("after one more append: %+v, want %+v", got.State(), l.State())
			}
		})
	}
}

func TestMarshalAtIsPointInTime(t *testing.T) {
	l, _ := mustLog(t, 50)
	b, err := l.MarshalAt(20)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := mustLog(t, 20)
	if got.State() != want.State() {
		t.Fatalf("MarshalAt(20) state = %+v, want %+v", got.State(), want.State())
	}
	if _, err := l.MarshalAt(51); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("MarshalAt(51): err = %v, want ErrOutOfRange", err)
	}
}

func TestUnmarshalRejectsDamage(t *testing.T) {
	l, _ := mustLog(t, 10)
	good, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)-1]},
		{"extra byte", append(append([]byte{}, good...), 0)},
		{"bad magic", flip(good, 0)},
		{"bad version", flip(good, 7)},
		{"bad size", flip(good, 15)},
		{"flipped leaf", flip(good, headerSize+5*HashSize+3)},
		{"flipped root", flip(good, len(good)-2*HashSize)},
		{"flipped chain head", flip(good, len(good)-1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Unmarshal(tc.b); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Unmarshal: err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	out := append([]byte{}, b...)
	out[i] ^= 0x01
	return out
}

func TestConcurrentReaders(t *testing.T) {
	l := New()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			if err := l.Append(leafOf(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
		}
		st := l.State()
		if st.Size == 0 {
			continue
		}
		p, err := l.InclusionProof(st.Size-1, st.Size)
		if err != nil {
			t.Fatal(err)
		}
		leaf := leafOf(int(st.Size - 1))
		if err := VerifyInclusion(st.Size-1, st.Size, leaf[:], p, st.Root[:]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHashChildrenMatchesRFC6962Hasher(t *testing.T) {
	l, r := leafOf(1), leafOf(2)
	if got, want := hashChildren(l[:], r[:]), hasher.HashChildren(l[:], r[:]); !bytes.Equal(got, want) {
		t.Fatalf("hashChildren = %x, rfc6962 = %x", got, want)
	}
}
