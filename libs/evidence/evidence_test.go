package evidence

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/commitment"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// RFC 6962 §2.1, written out plainly and independently of the library the
// package verifies with.
func leafHash(entry []byte) []byte {
	h := sha256.Sum256(append([]byte{0}, entry...))
	return h[:]
}

func nodeHash(l, r []byte) []byte {
	h := sha256.Sum256(append(append([]byte{1}, l...), r...))
	return h[:]
}

// split is the largest power of two smaller than n.
func split(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

func mth(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		return leaves[0]
	}
	k := split(len(leaves))
	return nodeHash(mth(leaves[:k]), mth(leaves[k:]))
}

// auditPath is PATH(m, D[n]).
func auditPath(m int, leaves [][]byte) [][]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := split(len(leaves))
	if m < k {
		return append(auditPath(m, leaves[:k]), mth(leaves[k:]))
	}
	return append(auditPath(m-k, leaves[k:]), mth(leaves[:k]))
}

// consistencyProof is PROOF(m, D[n]).
func consistencyProof(m int, leaves [][]byte) [][]byte { return subproof(m, leaves, true) }

func subproof(m int, leaves [][]byte, b bool) [][]byte {
	n := len(leaves)
	if m == n {
		if b {
			return nil
		}
		return [][]byte{mth(leaves)}
	}
	k := split(n)
	if m <= k {
		return append(subproof(m, leaves[:k], b), mth(leaves[k:]))
	}
	return append(subproof(m-k, leaves[k:], false), mth(leaves[:k]))
}

// fixedCosigner makes a cosigner from a fixed seed, so bundles are
// reproducible (Ed25519 is deterministic).
func fixedCosigner(t testing.TB, name string, seed byte) *checkpoint.Cosigner {
	t.Helper()
	s := bytes.Repeat([]byte{seed}, ed25519.SeedSize)
	pub := ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey)
	id := sha256.Sum256([]byte(name + "\n\x04" + string(pub)))
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, binary.BigEndian.Uint32(id[:]), base64.StdEncoding.EncodeToString(append([]byte{0x04}, s...)))
	k, err := checkpoint.NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func commitOf(s string) *commitment.Commitment {
	c := commitment.Commitment(sha256.Sum256([]byte(s)))
	return &c
}

// fixture is a table log of 13 entries, a checkpoint at size 10 cosigned by
// w1 and w2, and a later one at size 13 cosigned by w2 and w3, under the
// policy "2 of w1, w2, w3".
type fixture struct {
	entries [][]byte
	leaves  [][]byte
	w       []*checkpoint.Cosigner
	policy  string
}

const (
	testCluster = "prod"
	testTable   = "public.audit_log"
	testIndex   = 6
)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{}
	for i := range 13 {
		e := commitment.Entry{
			Seq:              uint64(i),
			CommitLSN:        0x1_6B3740 + uint64(i)*0x100,
			TxIndex:          uint32(i % 2),
			Op:               commitment.OpInsert,
			CommitTimeMicros: time.Date(2026, 11, 22, 3, 4, 5, 0, time.UTC).UnixMicro() + int64(i),
			XID:              1234 + uint32(i/2),
			KeyCommit:        commitOf(fmt.Sprintf("key %d", i)),
			DataCommit:       commitOf(fmt.Sprintf("data %d", i)),
		}
		if i == 11 {
			e.Op, e.OldDataCommit = commitment.OpUpdate, commitOf("data 3")
		}
		enc := e.Encode()
		f.entries = append(f.entries, enc)
		f.leaves = append(f.leaves, leafHash(enc))
	}
	var p strings.Builder
	for i := range 3 {
		k := fixedCosigner(t, fmt.Sprintf("witnz.example/w%d", i+1), byte(i+1))
		f.w = append(f.w, k)
		fmt.Fprintf(&p, "witness w%d %s\n", i+1, k.VerifierKey())
	}
	p.WriteString("quorum 2\n")
	f.policy = p.String()
	return f
}

// checkpoint returns the note of the tree of size leaves cosigned by the
// given witnesses.
func (f *fixture) checkpoint(t testing.TB, size int, witnesses ...int) string {
	t.Helper()
	origin, err := checkpoint.Origin(testCluster, testTable)
	if err != nil {
		t.Fatal(err)
	}
	c := checkpoint.Checkpoint{Origin: origin, Size: uint64(size)}
	copy(c.Root[:], mth(f.leaves[:size]))
	var sigs []note.Signature
	for _, i := range witnesses {
		s, err := checkpoint.Cosign(c, f.w[i], time.Date(2026, 11, 22, 3, 5, i, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, s)
	}
	signed, err := checkpoint.Assemble(c, sigs...)
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

func toBytes(hs [][]byte) []Bytes {
	out := make([]Bytes, len(hs))
	for i, h := range hs {
		out[i] = h
	}
	return out
}

func (f *fixture) bundle(t testing.TB) *Bundle {
	t.Helper()
	return &Bundle{
		Format:         Format,
		Table:          testTable,
		Index:          testIndex,
		Entry:          f.entries[testIndex],
		InclusionProof: toBytes(auditPath(testIndex, f.leaves[:10])),
		Checkpoint:     f.checkpoint(t, 10, 0, 1),
		Consistency: &Consistency{
			Checkpoint: f.checkpoint(t, 13, 1, 2),
			Proof:      toBytes(consistencyProof(10, f.leaves[:13])),
		},
	}
}

func (f *fixture) mustPolicy(t testing.TB) *checkpoint.Policy {
	t.Helper()
	p, err := checkpoint.ParsePolicy([]byte(f.policy))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s changed (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}

func TestVerifyValid(t *testing.T) {
	f := newFixture(t)
	b := f.bundle(t)
	b.Anchor = &AnchorReceipt{Sink: "s3", Bucket: "witnz-anchors", Key: "prod/2026/11/22/030500.json", VersionID: "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", ChecksumSHA256: "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=", AnchoredAt: "2026-11-22T03:05:10Z", RetainUntil: "2036-11-22T03:05:10Z"}
	b.Finding = &Finding{Type: "verify.row_modified", Message: "row id=42 of public.audit_log differs from its logged version"}
	enc, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "bundle.json", enc)
	golden(t, "policy.txt", []byte(f.policy))

	dec, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b, dec); diff != "" {
		t.Errorf("Decode(Encode(b)) (-want +got):\n%s", diff)
	}
	r, err := Verify(dec, f.mustPolicy(t))
	if err != nil {
		t.Fatal(err)
	}
	if r.Table != testTable || r.Cluster != testCluster || r.Index != testIndex || r.Checkpoint.Size != 10 ||
		len(r.Signers) != 2 || r.Later == nil || r.Later.Checkpoint.Size != 13 || len(r.Later.Signers) != 2 {
		t.Errorf("report: %+v", r)
	}
	if r.LeafHash != [32]byte(f.leaves[testIndex]) || r.Entry.Seq != testIndex {
		t.Errorf("report leaf %x seq %d", r.LeafHash, r.Entry.Seq)
	}
	golden(t, "report.txt", []byte(r.String()))

	// Without the optional parts it verifies too, at every index and size.
	p := f.mustPolicy(t)
	for size := 1; size <= 13; size++ {
		cp := f.checkpoint(t, size, 2, 0)
		for i := 0; i < size; i++ {
			b := &Bundle{Format: Format, Table: testTable, Index: uint64(i), Entry: f.entries[i],
				InclusionProof: toBytes(auditPath(i, f.leaves[:size])), Checkpoint: cp}
			if _, err := Verify(b, p); err != nil {
				t.Fatalf("entry %d at size %d: %v", i, size, err)
			}
		}
	}
}

// expectInvalid verifies a damaged bundle and wants a rejection whose
// message contains want.
func expectInvalid(t *testing.T, what string, b *Bundle, p *checkpoint.Policy, want string) {
	t.Helper()
	_, err := Verify(b, p)
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("%s: Verify = %v, want ErrInvalid", what, err)
		return
	}
	if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: %v, want one line containing %q", what, err, want)
	}
}

func flipByte(b []byte, i int) []byte {
	out := bytes.Clone(b)
	out[i] ^= 0x01
	return out
}

func TestVerifyRejectsEveryFlippedByte(t *testing.T) {
	f := newFixture(t)
	p := f.mustPolicy(t)
	good := f.bundle(t)

	// Each byte of the entry: the strict decoder, the seq/index check or
	// the inclusion proof refuses it.
	for i := range good.Entry {
		b := *good
		b.Entry = flipByte(good.Entry, i)
		expectInvalid(t, fmt.Sprintf("entry byte %d", i), &b, p, "entry")
	}
	// Each byte of each inclusion proof hash.
	for n := range good.InclusionProof {
		for i := range good.InclusionProof[n] {
			b := *good
			b.InclusionProof = append([]Bytes(nil), good.InclusionProof...)
			b.InclusionProof[n] = flipByte(good.InclusionProof[n], i)
			expectInvalid(t, fmt.Sprintf("inclusion hash %d byte %d", n, i), &b, p, "inclusion proof")
		}
	}
	// Each byte of each consistency proof hash.
	for n := range good.Consistency.Proof {
		for i := range good.Consistency.Proof[n] {
			b := *good
			cons := *good.Consistency
			cons.Proof = append([]Bytes(nil), cons.Proof...)
			cons.Proof[n] = flipByte(cons.Proof[n], i)
			b.Consistency = &cons
			expectInvalid(t, fmt.Sprintf("consistency hash %d byte %d", n, i), &b, p, "consistency proof")
		}
	}
	// Each byte of each signature (key id, timestamp, Ed25519 signature), in
	// both checkpoints: a changed key id makes the signature unknown and
	// the quorum (2, with exactly 2 cosignatures) fails; any other change
	// is a bad signature.
	for _, later := range []bool{false, true} {
		signed := good.Checkpoint
		if later {
			signed = good.Consistency.Checkpoint
		}
		c, sigs, err := checkpoint.Parse([]byte(signed))
		if err != nil {
			t.Fatal(err)
		}
		for s := range sigs {
			raw, _ := base64.StdEncoding.DecodeString(sigs[s].Base64)
			for i := range raw {
				damaged := append([]note.Signature(nil), sigs...)
				r := flipByte(raw, i)
				damaged[s] = note.Signature{Name: sigs[s].Name, Hash: binary.BigEndian.Uint32(r), Base64: base64.StdEncoding.EncodeToString(r)}
				n, err := checkpoint.Assemble(c, damaged...)
				if err != nil {
					t.Fatal(err)
				}
				b := *good
				cons := *good.Consistency
				b.Consistency = &cons
				want := "checkpoint: invalid signature by witness"
				if i < 4 {
					want = "checkpoint: too few cosignatures: have 1 of 2 needed"
				}
				if later {
					cons.Checkpoint = string(n)
					want = "later " + want
				} else {
					b.Checkpoint = string(n)
				}
				expectInvalid(t, fmt.Sprintf("later=%v signature %d byte %d", later, s, i), &b, p, want)
			}
		}
	}
	// Each line of the checkpoint body: changing it breaks the signatures;
	// adding an extension line too; dropping a signature line breaks the
	// quorum; syntax damage is reported as such.
	lines := strings.SplitAfter(good.Checkpoint, "\n")
	for i, l := range lines {
		if l == "" {
			continue
		}
		b := *good
		var want string
		switch {
		case i < 3: // origin, size, root: a signature or the syntax breaks
			b.Checkpoint = strings.Join(lines[:i], "") + changeLine(l) + strings.Join(lines[i+1:], "")
			want = "checkpoint: "
		case l == "\n":
			b.Checkpoint = strings.Join(lines[:i], "") + "ext\n" + strings.Join(lines[i:], "")
			want = "invalid signature"
		default: // a signature line
			b.Checkpoint = strings.Join(lines[:i], "") + strings.Join(lines[i+1:], "")
			want = "have 1 of 2 needed"
		}
		expectInvalid(t, fmt.Sprintf("checkpoint line %d %q", i+1, l), &b, p, want)
	}
}

// changeLine changes one character of a line (before its newline) so that
// it stays a plausible line of the same kind.
func changeLine(l string) string {
	body := strings.TrimSuffix(l, "\n")
	r := []byte(body)
	last := r[len(r)-1]
	switch {
	case last >= '0' && last <= '8':
		r[len(r)-1]++
	case last == '=':
		r[0] ^= 0x01
	default:
		r[len(r)-1] ^= 0x01
	}
	return string(r) + "\n"
}

func TestVerifyRejects(t *testing.T) {
	f := newFixture(t)
	p := f.mustPolicy(t)
	good := f.bundle(t)
	origin, _ := checkpoint.Origin(testCluster, "public.other")
	otherTable := checkpoint.Checkpoint{Origin: origin, Size: 10}
	copy(otherTable.Root[:], mth(f.leaves[:10]))
	otherNote, err := checkpoint.Assemble(otherTable,
		mustCosign(t, otherTable, f.w[0]), mustCosign(t, otherTable, f.w[1]))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(b *Bundle)
		want   string
	}{
		{"format", func(b *Bundle) { b.Format = "witnz-evidence/v2" }, "format"},
		{"table", func(b *Bundle) { b.Table = "public.other" }, `not of table "public.other"`},
		{"checkpoint of another table", func(b *Bundle) { b.Checkpoint = string(otherNote) }, `log of table "public.other"`},
		{"index", func(b *Bundle) { b.Index = 5 }, "seq is 6 but the bundle places it at index 5"},
		{"other entry", func(b *Bundle) { b.Entry = f.entries[5]; b.Index = 5 }, "inclusion proof"},
		{"entry beyond checkpoint", func(b *Bundle) { b.Entry = f.entries[11]; b.Index = 11 }, "outside the checkpoint's tree of 10 entries"},
		{"short entry", func(b *Bundle) { b.Entry = b.Entry[:len(b.Entry)-1] }, "entry: invalid entry encoding"},
		{"long entry", func(b *Bundle) { b.Entry = append(bytes.Clone(b.Entry), 0) }, "entry: invalid entry encoding"},
		{"proof missing a hash", func(b *Bundle) { b.InclusionProof = b.InclusionProof[1:] }, "inclusion proof"},
		{"proof with an extra hash", func(b *Bundle) { b.InclusionProof = append(b.InclusionProof, b.InclusionProof[0]) }, "inclusion proof"},
		{"proof hash of 31 bytes", func(b *Bundle) { b.InclusionProof = []Bytes{b.InclusionProof[0][:31]} }, "inclusion proof hash 1 has 31 bytes"},
		{"no proof", func(b *Bundle) { b.InclusionProof = nil }, "inclusion proof"},
		{"unsigned checkpoint", func(b *Bundle) { b.Checkpoint = strings.SplitAfter(b.Checkpoint, "\n\n")[0] }, "checkpoint: malformed"},
		{"one cosignature", func(b *Bundle) { b.Checkpoint = f.checkpoint(t, 10, 2) }, "have 1 of 2 needed"},
		{"later checkpoint smaller", func(b *Bundle) {
			b.Consistency = &Consistency{Checkpoint: f.checkpoint(t, 9, 0, 1), Proof: nil}
		}, "fewer than the 10"},
		{"later checkpoint of another log", func(b *Bundle) {
			b.Consistency = &Consistency{Checkpoint: string(otherNote), Proof: nil}
		}, "later checkpoint is of log"},
		{"later checkpoint not a descendant", func(b *Bundle) {
			b.Consistency = &Consistency{Checkpoint: f.checkpoint(t, 13, 0, 1), Proof: toBytes(consistencyProof(9, f.leaves[:13]))}
		}, "consistency proof from 10 to 13"},
		{"later checkpoint under quorum", func(b *Bundle) {
			b.Consistency.Checkpoint = f.checkpoint(t, 13, 0)
		}, "later checkpoint: too few cosignatures"},
	} {
		b := *good
		cons := *good.Consistency
		b.Consistency = &cons
		tc.change(&b)
		expectInvalid(t, tc.name, &b, p, tc.want)
	}

	// The same bundle under a policy with other witnesses.
	other := newFixture(t)
	other.w[0] = fixedCosigner(t, "witnz.example/w1", 9)
	other.policy = fmt.Sprintf("witness w1 %s\nwitness w2 %s\nquorum 2\n", other.w[0].VerifierKey(), other.w[1].VerifierKey())
	expectInvalid(t, "other policy", good, other.mustPolicy(t), "have 1 of 2 needed")
}

func mustCosign(t testing.TB, c checkpoint.Checkpoint, k *checkpoint.Cosigner) note.Signature {
	t.Helper()
	s, err := checkpoint.Cosign(c, k, time.Unix(1_790_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEncodedBundleFlips flips every byte of an encoded bundle without the
// unverified parts (anchor, finding): each result is refused by Decode or
// by Verify.
func TestEncodedBundleFlips(t *testing.T) {
	f := newFixture(t)
	p := f.mustPolicy(t)
	b := f.bundle(t)
	b.Consistency = nil
	enc, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(mustDecode(t, enc), p); err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		damaged := flipByte(enc, i)
		d, err := Decode(damaged)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Errorf("byte %d: Decode error %v does not wrap ErrDecode", i, err)
			}
			continue
		}
		if _, err := Verify(d, p); !errors.Is(err, ErrInvalid) {
			t.Errorf("byte %d (%q -> %q): Verify = %v, want ErrInvalid", i, enc[i], damaged[i], err)
		}
	}
}

func mustDecode(t testing.TB, b []byte) *Bundle {
	t.Helper()
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDecodeRejects(t *testing.T) {
	f := newFixture(t)
	enc, err := f.bundle(t).Encode()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(enc, &m); err != nil {
		t.Fatal(err)
	}
	with := func(change func(m map[string]any)) []byte {
		var c map[string]any
		json.Unmarshal(enc, &c)
		change(c)
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	entry := m["entry"].(string)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not valid JSON"},
		{"array", []byte("[]"), "not a JSON object"},
		{"trailing data", append(bytes.Clone(enc), "{}"...), "not valid JSON"},
		{"unknown member", with(func(m map[string]any) { m["extra"] = 1 }), `unknown member "extra"`},
		{"other case", with(func(m map[string]any) { m["Table"] = m["table"]; delete(m, "table") }), `unknown member "Table"`},
		{"missing member", with(func(m map[string]any) { delete(m, "checkpoint") }), `member "checkpoint" is missing`},
		{"missing index", with(func(m map[string]any) { delete(m, "index") }), `member "index" is missing`},
		{"null", with(func(m map[string]any) { m["entry"] = nil }), `member "entry" is null`},
		{"null in proof", with(func(m map[string]any) { m["inclusion_proof"] = []any{nil} }), `"inclusion_proof[]" is null`},
		{"nested unknown", with(func(m map[string]any) { m["consistency"].(map[string]any)["x"] = "" }), `unknown member "consistency.x"`},
		{"nested missing", with(func(m map[string]any) { delete(m["consistency"].(map[string]any), "proof") }), `"consistency.proof" is missing`},
		{"object where a string goes", with(func(m map[string]any) { m["table"] = map[string]any{} }), `member "table" is an object`},
		{"duplicate member", bytes.Replace(enc, []byte(`"table":`), []byte(`"table": "x", "table":`), 1), `member "table" appears twice`},
		{"unpadded base64", with(func(m map[string]any) { m["entry"] = strings.TrimRight(entry, "=") }), "not canonical base64"},
		{"base64 with newline", with(func(m map[string]any) { m["entry"] = entry[:4] + "\n" + entry[4:] }), "not canonical base64"},
		{"URL base64", with(func(m map[string]any) { m["entry"] = strings.NewReplacer("+", "-", "/", "_").Replace(entry) + "-_" }), "not canonical base64"},
		{"number as string", with(func(m map[string]any) { m["index"] = "6" }), "index"},
		{"negative index", with(func(m map[string]any) { m["index"] = -1 }), "index"},
		{"fractional index", with(func(m map[string]any) { m["index"] = 1.5 }), "index"},
		{"other format", with(func(m map[string]any) { m["format"] = "witnz-evidence/v0" }), `format "witnz-evidence/v0"`},
		{"invalid UTF-8", bytes.Replace(enc, []byte(testTable), []byte("public.\xff"), 1), "UTF-8"},
		{"too large", append(bytes.Clone(enc), bytes.Repeat([]byte(" "), MaxSize)...), "at most"},
	} {
		_, err := Decode(tc.data)
		if !errors.Is(err, ErrDecode) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Decode = %v, want ErrDecode containing %q", tc.name, err, tc.want)
		}
	}
}

func TestReportEscapesText(t *testing.T) {
	f := newFixture(t)
	b := f.bundle(t)
	b.Finding = &Finding{Type: "x\x1b[31m", Message: "line\nbreak \u202e reversed"}
	b.Anchor = &AnchorReceipt{Sink: "dir", Key: "a\rb"}
	r, err := Verify(b, f.mustPolicy(t))
	if err != nil {
		t.Fatal(err)
	}
	s := r.String()
	for _, bad := range []string{"\x1b", "\r", "\u202e", "line\nbreak"} {
		if strings.Contains(s, bad) {
			t.Errorf("report contains %q unescaped:\n%s", bad, s)
		}
	}
	for _, want := range []string{`x\x1b[31m`, `line\x0abreak \u202e reversed`, `dir:a\x0db`} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

// TestVerifyAnchor checks the anchored size and root a receipt carries
// against the bundle's checkpoint (size 10): a larger anchored tree, a
// smaller one, the same one, and each kind of lie.
func TestVerifyAnchor(t *testing.T) {
	f := newFixture(t)
	p := f.mustPolicy(t)
	receipt := func(size int, withNote bool) *AnchorReceipt {
		a := &AnchorReceipt{Sink: "s3", Bucket: "witnz-anchors", Key: "witnz/anchors/a.json", VersionID: "v1", Size: uint64(size), Root: mth(f.leaves[:size]), WitnessRaftIndex: 42}
		switch {
		case size > 10:
			a.Proof = toBytes(consistencyProof(10, f.leaves[:size]))
		case size < 10:
			a.Proof = toBytes(consistencyProof(size, f.leaves[:10]))
		}
		if withNote {
			a.Checkpoint = f.checkpoint(t, size, 0, 2)
		}
		return a
	}
	for _, tt := range []struct {
		size     int
		withNote bool
		covers   bool
	}{{13, true, true}, {13, false, true}, {10, true, true}, {5, true, false}} {
		b := f.bundle(t)
		b.Anchor = receipt(tt.size, tt.withNote)
		enc, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		r, err := Verify(mustDecode(t, enc), p)
		if err != nil {
			t.Fatalf("anchored at %d: %v", tt.size, err)
		}
		ap := r.AnchorProven
		if ap == nil || ap.Size != uint64(tt.size) || ap.Covers != tt.covers || (ap.Signers != nil) != tt.withNote {
			t.Fatalf("anchored at %d: %+v", tt.size, ap)
		}
		if !strings.Contains(r.String(), "The anchor receipt's tree of "+fmt.Sprint(tt.size)+" entries") {
			t.Errorf("report does not state the anchor:\n%s", r.String())
		}
	}

	// Without the note, a forged root must fail the proof itself.
	other := func(a *AnchorReceipt) { a.Root, a.Checkpoint = mth(f.leaves[1:11]), "" }
	for _, tt := range []struct {
		name   string
		size   int
		change func(a *AnchorReceipt)
		want   string
	}{
		{"other root at the same size", 10, other, "anchor receipt: anchored at the checkpoint's size 10"},
		{"other root, larger", 13, func(a *AnchorReceipt) { a.Root, a.Checkpoint = mth(f.leaves[1:13]), "" }, "consistency proof from the checkpoint's 10 entries to the anchored 13"},
		{"other root, smaller", 5, func(a *AnchorReceipt) { a.Root, a.Checkpoint = mth(f.leaves[1:6]), "" }, "consistency proof from the anchored 5 entries to the checkpoint's 10"},
		{"short root", 13, func(a *AnchorReceipt) { a.Root = a.Root[:4] }, "root has 4 bytes"},
		{"note of another size", 13, func(a *AnchorReceipt) { a.Checkpoint = f.checkpoint(t, 12, 0, 2) }, "anchored checkpoint says size 12"},
		{"note below quorum", 13, func(a *AnchorReceipt) { a.Checkpoint = f.checkpoint(t, 13, 0) }, "anchored checkpoint: too few cosignatures"},
	} {
		b := f.bundle(t)
		b.Anchor = receipt(tt.size, true)
		tt.change(b.Anchor)
		expectInvalid(t, tt.name, b, p, tt.want)
	}
}
