package checkpoint

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustBase64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCosigner(t testing.TB, name string) *Cosigner {
	t.Helper()
	skey, _, err := GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustCosign(t testing.TB, c Checkpoint, k *Cosigner, unix int64) note.Signature {
	t.Helper()
	s, err := Cosign(c, k, time.Unix(unix, 0))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCosignatureV1Vector builds a cosignature/v1 from first principles —
// the RFC 8032 §7.1 TEST 1 key pair, the key id and the signed message
// spelled out as C2SP tlog-cosignature defines them, the checkpoint and
// timestamp of the spec's example — and checks that Cosign produces exactly
// that line, that the pinned golden line has not changed, and that the
// independent verifier of transparency-dev/formats accepts it.
func TestCosignatureV1Vector(t *testing.T) {
	seed := mustHex(t, "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	pub := mustHex(t, "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
	priv := ed25519.NewKeyFromSeed(seed)
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), pub) {
		t.Fatal("RFC 8032 test key pair does not match")
	}
	const name = "witness.example/w1"
	text := "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

	// key ID = SHA-256(<name> || "\n" || 0x04 || 32-byte public key)[:4]
	sum := sha256.Sum256([]byte(name + "\n\x04" + string(pub)))
	id := sum[:4]
	// Signed message: "cosignature/v1\n" "time <ts>\n" then the note text.
	msg := "cosignature/v1\ntime 1679315147\n" + text
	sig := ed25519.Sign(priv, []byte(msg))
	// Signature line payload: key ID || u64 big-endian timestamp || signature.
	raw := append(append(append([]byte{}, id...), mustHex(t, "00000000641850cb")...), sig...)
	want := note.Signature{Name: name, Hash: uint32(id[0])<<24 | uint32(id[1])<<16 | uint32(id[2])<<8 | uint32(id[3]), Base64: base64.StdEncoding.EncodeToString(raw)}

	// Computed independently with Python's cryptography package (OpenSSL):
	// key id eb762cc2, then timestamp 0x641850cb and the signature.
	const golden = "63YswgAAAABkGFDL+TPmh4BYuAjsYRoqMJCWb/gWJaeRF/kmm5tlCr9sJ57DLErur7K0yDXc2ArN+TIuotuB/HbuL3AJsp3bv/aNCQ=="
	if want.Base64 != golden {
		t.Errorf("first-principles cosignature = %s, pinned golden %s", want.Base64, golden)
	}

	skey := fmt.Sprintf("PRIVATE+KEY+%s+%x+%s", name, id, base64.StdEncoding.EncodeToString(append([]byte{0x04}, seed...)))
	k, err := NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	wantVkey := fmt.Sprintf("%s+%x+%s", name, id, base64.StdEncoding.EncodeToString(append([]byte{0x04}, pub...)))
	if k.VerifierKey() != wantVkey || k.KeyHash() != want.Hash || k.Name() != name {
		t.Errorf("cosigner: vkey %q id %08x, want %q %08x", k.VerifierKey(), k.KeyHash(), wantVkey, want.Hash)
	}
	c, err := ParseText([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Cosign(c, k, time.Unix(1679315147, 999_000_000))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("Cosign = %+v\nwant    %+v", got, want)
	}
	if ts, err := CosignatureTime(got); err != nil || !ts.Equal(time.Unix(1679315147, 0)) {
		t.Errorf("CosignatureTime = %v, %v", ts, err)
	}

	// The independent verifier accepts it; a changed timestamp does not.
	v, err := fnote.NewVerifierForCosignatureV1(wantVkey)
	if err != nil {
		t.Fatal(err)
	}
	if v.KeyHash() != want.Hash || !v.Verify([]byte(text), raw[4:]) {
		t.Error("transparency-dev/formats does not verify the vector")
	}
	raw[4+7]++
	if v.Verify([]byte(text), raw[4:]) {
		t.Error("a cosignature with another timestamp verifies")
	}
}

// TestInteropWithFormats: a cosignature made by transparency-dev/formats'
// own signer from our key string verifies under a policy, and ours verifies
// with its verifier.
func TestInteropWithFormats(t *testing.T) {
	skey, vkey, err := GenerateKey("w1.example/witness")
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	c := testCheckpoint(42)
	text, _ := c.Text()
	signed, err := note.Sign(&note.Note{Text: string(text)}, theirs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy([]byte("witness w1 " + vkey + "\nquorum 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, signers, err := p.Verify(signed)
	if err != nil {
		t.Fatalf("policy rejects a formats cosignature: %v", err)
	}
	if got.Size != 42 || len(signers) != 1 || signers[0].Label != "w1" || time.Since(signers[0].Time) > time.Hour {
		t.Errorf("Verify = %+v, %+v", got, signers)
	}

	k, err := NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := Assemble(c, mustCosign(t, c, k, time.Now().Unix()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(ours, note.VerifierList(theirs.Verifier())); err != nil {
		t.Errorf("formats verifier rejects our cosignature: %v", err)
	}
}

func TestGenerateKey(t *testing.T) {
	skey, vkey, err := GenerateKey("witnz.example/w1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(skey, "PRIVATE+KEY+witnz.example/w1+") || !strings.HasPrefix(vkey, "witnz.example/w1+") {
		t.Errorf("keys %q / %q do not have the note key forms", skey, vkey)
	}
	if b := mustBase64(t, vkey[strings.LastIndex(vkey[:len("witnz.example/w1+00000000+")], "+")+1:]); b[0] != 0x04 || len(b) != 33 {
		t.Errorf("verifier key material %x: want 0x04 and 32 bytes", b)
	}
	k, err := NewCosigner(skey + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if k.VerifierKey() != vkey {
		t.Errorf("VerifierKey = %q, want %q", k.VerifierKey(), vkey)
	}
	v, err := NewCosignatureVerifier(vkey)
	if err != nil || v.KeyHash() != k.KeyHash() || v.Name() != k.Name() {
		t.Fatalf("NewCosignatureVerifier = %v, %v", v, err)
	}

	logSkey, logVkey, err := GenerateLogKey("witnz.example/log")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewLogSigner(logSkey); err != nil {
		t.Error(err)
	}
	if _, err := NewLogVerifier(logVkey); err != nil {
		t.Error(err)
	}

	for _, name := range []string{"", "a b", "a+b"} {
		if _, _, err := GenerateKey(name); !errors.Is(err, ErrKey) {
			t.Errorf("GenerateKey(%q) = %v, want ErrKey", name, err)
		}
	}

	// A wrong key id, a wrong type, and garbage are refused with a reason.
	flipID := func(s string, private bool) string {
		i := strings.Index(s, "witnz.example/w1+") + len("witnz.example/w1+")
		if private {
			i = strings.Index(s, "/w1+") + len("/w1+")
		}
		b := []byte(s)
		if b[i] == '0' {
			b[i] = '1'
		} else {
			b[i] = '0'
		}
		return string(b)
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"id", func() error { _, err := NewCosigner(flipID(skey, true)); return err }(), "does not match"},
		{"log key as cosigner", func() error { _, err := NewCosigner(logSkey); return err }(), "type 0x01"},
		{"not private", func() error { _, err := NewCosigner(vkey); return err }(), "PRIVATE+KEY+"},
		{"garbage", func() error { _, err := NewCosigner("PRIVATE+KEY+x"); return err }(), "<name>+<key id>+<base64 key>"},
		{"bad id", func() error { _, err := NewCosigner("PRIVATE+KEY+x+zz+AQ=="); return err }(), "8 hex digits"},
		{"verifier id", func() error { _, err := NewCosignatureVerifier(flipID(vkey, false)); return err }(), "does not match"},
		{"log vkey as witness", func() error { _, err := NewCosignatureVerifier(logVkey); return err }(), "witnz witness keygen"},
		{"witness vkey as log", func() error { _, err := NewLogVerifier(vkey); return err }(), "want 0x01"},
		{"witness skey as log", func() error { _, err := NewLogSigner(skey); return err }(), "want 0x01"},
		{"short key", func() error { _, err := NewCosignatureVerifier("a+00000000+BAAA"); return err }(), "key bytes"},
	} {
		if !errors.Is(tc.err, ErrKey) || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrKey containing %q", tc.name, tc.err, tc.want)
		}
	}
}

func TestLoadCosigner(t *testing.T) {
	skey, vkey, err := GenerateKey("w1")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "w1.key")
	if err := os.WriteFile(path, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadCosigner(path)
	if err != nil || k.VerifierKey() != vkey {
		t.Fatalf("LoadCosigner = %v, %v", k, err)
	}
	if _, err := LoadCosigner(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrKey) {
		t.Errorf("missing file: %v, want ErrKey", err)
	}
	if err := os.WriteFile(path, []byte("nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCosigner(path); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), path) {
		t.Errorf("bad file: %v, want ErrKey naming the file", err)
	}
}

func TestCosignBeforeEpoch(t *testing.T) {
	k := mustCosigner(t, "w1")
	if _, err := Cosign(testCheckpoint(1), k, time.Unix(-1, 0)); err == nil {
		t.Error("Cosign accepted a time before 1970")
	}
}

func TestOpen(t *testing.T) {
	c := testCheckpoint(9)
	w1, w2 := mustCosigner(t, "w1"), mustCosigner(t, "w2")
	v1, _ := NewCosignatureVerifier(w1.VerifierKey())
	v2, _ := NewCosignatureVerifier(w2.VerifierKey())
	signed, err := Assemble(c, mustCosign(t, c, w1, 10), mustCosign(t, c, w2, 20))
	if err != nil {
		t.Fatal(err)
	}
	got, n, err := Open(signed, note.VerifierList(v1))
	if err != nil || got.Size != 9 || len(n.Sigs) != 1 || len(n.UnverifiedSigs) != 1 {
		t.Errorf("Open with w1 = %+v, %+v, %v", got, n, err)
	}
	if _, _, err := Open(signed, note.VerifierList()); !errors.Is(err, ErrUnverified) || !strings.Contains(err.Error(), "w2") {
		t.Errorf("Open with no keys = %v, want ErrUnverified listing the signers", err)
	}
	tampered := bytes.Replace(signed, []byte("\n9\n"), []byte("\n8\n"), 1)
	if _, _, err := Open(tampered, note.VerifierList(v1, v2)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Open of a changed size = %v, want ErrBadSignature", err)
	}
}
