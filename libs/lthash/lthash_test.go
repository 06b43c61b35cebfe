package lthash

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"testing"
)

// referenceX is X(elem) computed from the definition with the standard
// library's SHA-256, AES and CTR mode, sharing no code with the package.
func referenceX(t *testing.T, elem []byte) []byte {
	t.Helper()
	key := sha256.Sum256(append([]byte("witnz/lthash/v2"), elem...))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		t.Fatal(err)
	}
	x := make([]byte, Size)
	cipher.NewCTR(block, make([]byte, aes.BlockSize)).XORKeyStream(x, x)
	return x
}

// laneAdd is the definition written out lane by lane, without the word
// arithmetic: the reference Hash is checked against.
func laneAdd(t *testing.T, state []byte, elem []byte, sign int) {
	x := referenceX(t, elem)
	for i := 0; i < Lanes; i++ {
		l := binary.LittleEndian.Uint16(state[2*i:])
		e := binary.LittleEndian.Uint16(x[2*i:])
		if sign > 0 {
			l += e
		} else {
			l -= e
		}
		binary.LittleEndian.PutUint16(state[2*i:], l)
	}
}

func randElem(r *rand.Rand) []byte {
	// Up to 200 bytes: past 113, the element key is hashed differently.
	b := make([]byte, r.IntN(200))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func randHash(r *rand.Rand) Hash {
	var h Hash
	for i := range h.w {
		h.w[i] = r.Uint64()
	}
	return h
}

func mustFromBytes(t *testing.T, b []byte) Hash {
	t.Helper()
	h, err := FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestKnownAnswer pins the definition to values computed independently by
// testdata/vectors.py (Python's hashlib.sha256, AES-256-CTR from the
// cryptography package, struct '<1024H'); X(0..63) also with
//
//	printf 'witnz/lthash/v2' … | sha256sum
//	head -c 2048 /dev/zero | openssl enc -aes-256-ctr -K <key> -iv 0…0 -nosalt
func TestKnownAnswer(t *testing.T) {
	e1 := make([]byte, 64)
	for i := range e1 {
		e1[i] = byte(i)
	}
	if got, want := elementKey(e1), "d8bba3af96e5a529d522ba2fb7e48775f9c84509a42310c2bc16a4f8d1251e3a"; hex.EncodeToString(got[:]) != want {
		t.Errorf("key(0..63) = %x, want %s", got, want)
	}
	x := Expand(e1)
	if got, want := hex.EncodeToString(sha256Of(x.Bytes())), "fc739c23d3ca83f77c5f11f48eded6dac6882d48a7fb3f9b4fd3a9686779a258"; got != want {
		t.Errorf("SHA-256(X(0..63)) = %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(x.Bytes()[:16]), "a3a888c61559fdf1b907a422dce881a1"; got != want {
		t.Errorf("X(0..63) first block = %s, want %s", got, want)
	}
	if x.Lane(0) != 43171 || x.Lane(1) != 50824 {
		t.Errorf("X(0..63) lanes 0,1 = %d,%d, want 43171,50824", x.Lane(0), x.Lane(1))
	}

	var h Hash
	h.Add(e1)
	h.Add([]byte("witnz"))
	h.Remove(nil)
	b := h.Bytes()
	if got, want := hex.EncodeToString(sha256Of(b)), "eb9c0f76c67f29863b5f570217c41479f2e7e95f16ac0ac0929118f4beace8a6"; got != want {
		t.Errorf("SHA-256(state) = %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(b[:8]), "fe799aa51fe6610e"; got != want {
		t.Errorf("first bytes = %s, want %s", got, want)
	}
	if h.Lane(0) != 31230 || h.Lane(1023) != 13556 {
		t.Errorf("lanes 0,1023 = %d,%d, want 31230,13556", h.Lane(0), h.Lane(1023))
	}

	// An element too long for the stack buffer: bytes 3i mod 256, i < 200.
	long := make([]byte, 200)
	for i := range long {
		long[i] = byte(3 * i)
	}
	xl := Expand(long)
	if got, want := hex.EncodeToString(sha256Of(xl.Bytes())), "0874e96ae7c2a188c4b944feaf5722579f55df602c61f54346a8e855e8f5c3da"; got != want {
		t.Errorf("SHA-256(X(200 bytes)) = %s, want %s", got, want)
	}
	if xl.Lane(1023) != 15569 {
		t.Errorf("X(200 bytes) lane 1023 = %d, want 15569", xl.Lane(1023))
	}
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestMatchesLaneLoop checks Add, Remove and Expand, on whichever
// implementation this machine runs, against the definition lane by lane.
func TestMatchesLaneLoop(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		h := randHash(r)
		ref := h.Bytes()
		elem := randElem(r)
		var op string
		switch n % 3 {
		case 0:
			op = "Add"
			h.Add(elem)
			laneAdd(t, ref, elem, 1)
		case 1:
			op = "Remove"
			h.Remove(elem)
			laneAdd(t, ref, elem, -1)
		case 2:
			op = "Expand"
			h = Expand(elem)
			ref = referenceX(t, elem)
		}
		if !bytes.Equal(h.Bytes(), ref) {
			t.Fatalf("case %d: %s of a %d-byte element differs from the lane loop", n, op, len(elem))
		}
	}
}

// TestWordArithmetic checks add and sub against plain uint16 arithmetic on
// every combination of the lane values where carries and borrows happen.
func TestWordArithmetic(t *testing.T) {
	edges := []uint16{0, 1, 2, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff, 0x1234, 0xedcb}
	r := rand.New(rand.NewPCG(3, 4))
	for _, a := range edges {
		for _, b := range edges {
			// Put the pair in one lane and random values in the others so
			// a carry leaking across a lane boundary shows up.
			for lane := range 4 {
				var as, bs [4]uint16
				for i := range 4 {
					as[i], bs[i] = uint16(r.Uint32()), uint16(r.Uint32())
				}
				as[lane], bs[lane] = a, b
				wa, wb := pack(as), pack(bs)
				var sum, diff [4]uint16
				for i := range 4 {
					sum[i] = as[i] + bs[i]
					diff[i] = as[i] - bs[i]
				}
				if got := add(wa, wb); got != pack(sum) {
					t.Fatalf("add(%04x, %04x) = %016x, want %016x", as, bs, got, pack(sum))
				}
				if got := sub(wa, wb); got != pack(diff) {
					t.Fatalf("sub(%04x, %04x) = %016x, want %016x", as, bs, got, pack(diff))
				}
			}
		}
	}
}

func pack(l [4]uint16) uint64 {
	return uint64(l[0]) | uint64(l[1])<<16 | uint64(l[2])<<32 | uint64(l[3])<<48
}

func TestStateArithmeticMatchesLaneLoop(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 50 {
		a, b := randHash(r), randHash(r)
		ab, bb := a.Bytes(), b.Bytes()
		sum, diff := a, a
		sum.AddState(&b)
		diff.SubState(&b)
		for i := range Lanes {
			la := binary.LittleEndian.Uint16(ab[2*i:])
			lb := binary.LittleEndian.Uint16(bb[2*i:])
			if sum.Lane(i) != la+lb || diff.Lane(i) != la-lb {
				t.Fatalf("lane %d: sum %d diff %d, want %d %d", i, sum.Lane(i), diff.Lane(i), la+lb, la-lb)
			}
		}
	}
}

func TestOrderIndependence(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	elems := make([][]byte, 40)
	for i := range elems {
		elems[i] = randElem(r)
	}
	var want Hash
	for _, e := range elems {
		want.Add(e)
	}
	for range 5 {
		var h Hash
		for _, i := range r.Perm(len(elems)) {
			h.Add(elems[i])
		}
		if !h.Equal(&want) {
			t.Fatal("a permutation of the same additions gave a different state")
		}
	}
	// A multiset, not a set: adding twice is not adding once.
	var once, twice Hash
	once.Add(elems[0])
	twice.Add(elems[0])
	twice.Add(elems[0])
	if once.Equal(&twice) {
		t.Fatal("adding an element twice equals adding it once")
	}
}

func TestAddRemoveIdentity(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	h := randHash(r)
	orig := h
	var elems [][]byte
	for range 30 {
		e := randElem(r)
		elems = append(elems, e)
		h.Add(e)
	}
	if h.Equal(&orig) {
		t.Fatal("adding elements did not change the state")
	}
	for _, i := range r.Perm(len(elems)) {
		h.Remove(elems[i])
	}
	if !h.Equal(&orig) {
		t.Fatal("removing what was added did not restore the state")
	}
	var empty Hash
	empty.Add(elems[0])
	empty.Remove(elems[0])
	if !empty.IsZero() {
		t.Fatal("add then remove on the empty state is not zero")
	}
}

func TestUnionIsSum(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var a, b, all Hash
	for i := range 20 {
		e := randElem(r)
		all.Add(e)
		if i%3 == 0 {
			a.Add(e)
		} else {
			b.Add(e)
		}
	}
	u := a
	u.AddState(&b)
	if !u.Equal(&all) {
		t.Fatal("AddState is not the state of the union")
	}
	u.SubState(&b)
	if !u.Equal(&a) {
		t.Fatal("SubState did not undo AddState")
	}
	x := Expand([]byte("e"))
	var viaAdd Hash
	viaAdd.Add([]byte("e"))
	if !x.Equal(&viaAdd) {
		t.Fatal("Expand differs from Add on the empty state")
	}
}

func TestBytesRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	h := randHash(r)
	b := h.Bytes()
	if len(b) != Size {
		t.Fatalf("Bytes is %d bytes, want %d", len(b), Size)
	}
	// Lane i is at bytes 2i, 2i+1, little-endian.
	for _, i := range []int{0, 1, 3, 4, 511, 1023} {
		if got := binary.LittleEndian.Uint16(b[2*i:]); got != h.Lane(i) {
			t.Fatalf("bytes of lane %d = %d, Lane = %d", i, got, h.Lane(i))
		}
	}
	g := mustFromBytes(t, b)
	if !g.Equal(&h) {
		t.Fatal("FromBytes(Bytes()) differs")
	}
	if got := h.AppendBytes([]byte("x")); !bytes.Equal(got[1:], b) || got[0] != 'x' {
		t.Fatal("AppendBytes does not append the serialization")
	}
}

func TestFromBytesRejectsWrongLength(t *testing.T) {
	for _, n := range []int{0, 1, Size - 1, Size + 1, 2 * Size} {
		if _, err := FromBytes(make([]byte, n)); !errors.Is(err, ErrSize) {
			t.Errorf("FromBytes(%d bytes) error = %v, want ErrSize", n, err)
		}
	}
}

func TestDoesNotAllocate(t *testing.T) {
	if !hasFastPath() {
		t.Skip("allocation counts only hold for the assembly path")
	}
	var h Hash
	elem := make([]byte, 113)
	for name, f := range map[string]func(){
		"Add":    func() { h.Add(elem) },
		"Remove": func() { h.Remove(elem) },
		"Expand": func() { h = Expand(elem) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s allocates %v times per call", name, n)
		}
	}
}

func FuzzFromBytes(f *testing.F) {
	f.Add(make([]byte, Size))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := FromBytes(b)
		if err != nil {
			if len(b) == Size {
				t.Fatalf("rejected a %d-byte state: %v", Size, err)
			}
			return
		}
		if !bytes.Equal(h.Bytes(), b) {
			t.Fatal("round trip changed the bytes")
		}
	})
}

// FuzzExpand compares the expansion of arbitrary elements with the
// reference construction.
func FuzzExpand(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Add(make([]byte, 113))
	f.Add(make([]byte, 114))
	f.Fuzz(func(t *testing.T, elem []byte) {
		x := Expand(elem)
		if !bytes.Equal(x.Bytes(), referenceX(t, elem)) {
			t.Fatalf("X of a %d-byte element differs from the reference", len(elem))
		}
	})
}
