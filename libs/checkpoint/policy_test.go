package checkpoint

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
)

// keyset is a log key and witness cosigners for policy tests.
type keyset struct {
	logSigner note.Signer
	logVkey   string
	w         []*Cosigner
}

func newKeyset(t testing.TB, witnesses int) *keyset {
	t.Helper()
	skey, vkey, err := GenerateLogKey("witnz.example/log")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	ks := &keyset{logSigner: s, logVkey: vkey}
	for i := range witnesses {
		ks.w = append(ks.w, mustCosigner(t, fmt.Sprintf("witnz.example/w%d", i+1)))
	}
	return ks
}

// policy returns a policy text with the witnesses w1..wn and the extra
// lines.
func (ks *keyset) policy(withLog bool, extra ...string) string {
	var b strings.Builder
	if withLog {
		fmt.Fprintf(&b, "log %s\n", ks.logVkey)
	}
	for i, w := range ks.w {
		fmt.Fprintf(&b, "witness w%d %s\n", i+1, w.VerifierKey())
	}
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	return b.String()
}

func mustPolicy(t testing.TB, text string) *Policy {
	t.Helper()
	p, err := ParsePolicy([]byte(text))
	if err != nil {
		t.Fatalf("ParsePolicy:\n%s\n%v", text, err)
	}
	return p
}

// sign makes a note of c signed by the log (if withLog) and cosigned by the
// witnesses at the given indexes, witness i at time 1000+i.
func (ks *keyset) sign(t testing.TB, c Checkpoint, withLog bool, witnesses ...int) []byte {
	t.Helper()
	var sigs []note.Signature
	if withLog {
		s, err := Sign(c, ks.logSigner)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, s)
	}
	for _, i := range witnesses {
		sigs = append(sigs, mustCosign(t, c, ks.w[i], int64(1000+i)))
	}
	signed, err := Assemble(c, sigs...)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestPolicyVerify(t *testing.T) {
	ks := newKeyset(t, 3)
	c := testCheckpoint(12)
	p := mustPolicy(t, ks.policy(true, "quorum 2"))
	if got, want := p.Describe(), "a signature by log key witnz.example/log and cosignatures by 2 of w1, w2, w3"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}

	got, signers, err := p.Verify(ks.sign(t, c, true, 0, 2))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("checkpoint (-want +got):\n%s", diff)
	}
	want := []Signer{
		{Role: RoleLog, Label: "log", KeyName: "witnz.example/log", KeyHash: ks.logSigner.KeyHash()},
		{Role: RoleWitness, Label: "w1", KeyName: "witnz.example/w1", KeyHash: ks.w[0].KeyHash(), Time: time.Unix(1000, 0).UTC()},
		{Role: RoleWitness, Label: "w3", KeyName: "witnz.example/w3", KeyHash: ks.w[2].KeyHash(), Time: time.Unix(1002, 0).UTC()},
	}
	if diff := cmp.Diff(want, signers); diff != "" {
		t.Errorf("signers (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name   string
		signed []byte
		err    error
		want   []string
	}{
		{"one of two", ks.sign(t, c, true, 1), ErrQuorum, []string{"have 1 of 2 needed", "valid: w2", "missing: w1, w3"}},
		{"none", ks.sign(t, c, true), ErrQuorum, []string{"have 0 of 2 needed"}},
		{"no log signature", ks.sign(t, c, false, 0, 1, 2), ErrLogSignature, []string{"witnz.example/log"}},
		{"only unknown keys", newKeyset(t, 2).sign(t, c, true, 0, 1), ErrLogSignature, []string{"ignored signatures by keys not in the policy: witnz.example/log"}},
	} {
		_, _, err := p.Verify(tc.signed)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: Verify = %v, want %v", tc.name, err, tc.err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", tc.name, err, w)
			}
		}
	}

	// A signature by an unknown key is ignored but named when the quorum
	// fails.
	stranger := mustCosigner(t, "witnz.example/w2")
	signed, err := AddSignatures(ks.sign(t, c, true, 0), mustCosign(t, c, stranger, 5))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = p.Verify(signed)
	if !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), fmt.Sprintf("ignored signatures by keys not in the policy: witnz.example/w2 (key id %08x)", stranger.KeyHash())) {
		t.Errorf("unknown key: %v", err)
	}

	// A bad signature by a known key rejects the note even with a quorum.
	cs := ks.sign(t, c, true, 0, 1, 2)
	i := bytes.Index(cs, []byte("— witnz.example/w3 ")) + len("— witnz.example/w3 ")
	raw, _ := base64.StdEncoding.DecodeString(string(cs[i : len(cs)-1]))
	raw[len(raw)-1] ^= 1
	cs = append(cs[:i:i], base64.StdEncoding.EncodeToString(raw)+"\n"...)
	if _, _, err := p.Verify(cs); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "witness w3") {
		t.Errorf("bad cosignature: %v, want ErrBadSignature naming witness w3", err)
	}
	// A change in the body breaks every signature.
	if _, _, err := p.Verify(bytes.Replace(ks.sign(t, c, true, 0, 1), []byte("\n12\n"), []byte("\n13\n"), 1)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("changed size: %v, want ErrBadSignature", err)
	}
}

func TestPolicyWithoutLog(t *testing.T) {
	ks := newKeyset(t, 3)
	c := testCheckpoint(1)
	p := mustPolicy(t, ks.policy(false, "quorum 3"))
	if _, signers, err := p.Verify(ks.sign(t, c, false, 2, 1, 0)); err != nil || len(signers) != 3 || signers[0].Label != "w3" {
		t.Errorf("3 of 3 without log key: %+v, %v", signers, err)
	}
	// A log signature by a key the policy does not name is just ignored.
	if _, _, err := p.Verify(ks.sign(t, c, true, 0, 1, 2)); err != nil {
		t.Errorf("with an extra log signature: %v", err)
	}
	if _, _, err := p.Verify(ks.sign(t, c, false, 0, 1)); !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), "have 2 of 3 needed") {
		t.Errorf("2 of 3: %v", err)
	}
}

func TestPolicyGroups(t *testing.T) {
	ks := newKeyset(t, 5)
	c := testCheckpoint(3)
	p := mustPolicy(t, ks.policy(false,
		"group ours 2 w1 w2 w3",
		"group external any w4 w5",
		"group both all ours external",
		"quorum both",
	))
	if got, want := p.Describe(), "group both: 2 of (group ours: 2 of w1, w2, w3), (group external: 1 of w4, w5)"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	if _, _, err := p.Verify(ks.sign(t, c, false, 0, 2, 4)); err != nil {
		t.Errorf("2 ours + 1 external: %v", err)
	}
	_, _, err := p.Verify(ks.sign(t, c, false, 0, 1, 2))
	if !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), "have 1 of 2 needed members of group both") || !strings.Contains(err.Error(), "group external: have 0 of 1 needed") {
		t.Errorf("no external: %v", err)
	}

	single := mustPolicy(t, ks.policy(false, "quorum w2"))
	if _, _, err := single.Verify(ks.sign(t, c, false, 1)); err != nil {
		t.Errorf("quorum w2 with w2: %v", err)
	}
	if _, _, err := single.Verify(ks.sign(t, c, false, 0)); !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), "witness w2") {
		t.Errorf("quorum w2 with w1: %v", err)
	}
}

func TestParsePolicyRejects(t *testing.T) {
	ks := newKeyset(t, 2)
	w1, w2 := ks.w[0].VerifierKey(), ks.w[1].VerifierKey()
	for _, tc := range []struct {
		text, want string
	}{
		{"", "no quorum line"},
		{"witness w1 " + w1, "no quorum line"},
		{"witness w1 " + w1 + "\nquorum 1\nquorum 1", "line 3: second quorum line"},
		{"quorum 1", "from 1 to the 0 witness"},
		{"witness w1 " + w1 + "\nquorum 2", "from 1 to the 1 witness"},
		{"witness w1 " + w1 + "\nquorum 0", "from 1"},
		{"witness w1 " + w1 + "\nquorum none", "at least one witness cosignature"},
		{"witness w1 " + w1 + "\nquorum w9", `"w9" is not`},
		{"witness w1 " + w1 + "\nwitness w1 " + w2 + "\nquorum 1", `line 2: name "w1" is already defined`},
		{"witness w1 " + w1 + "\nwitness w2 " + w1 + "\nquorum 1", "same public key as witness w1"},
		{"witness w1 " + w1 + "\nwitness w2 " + renamed(t, ks.w[0], "other.example/w1") + "\nquorum 2", "same public key as witness w1"},
		{"witness 7 " + w1 + "\nquorum 1", "not a keyword or a number"},
		{"witness any " + w1 + "\nquorum 1", "not a keyword or a number"},
		{"witness w1 " + ks.logVkey + "\nquorum 1", "witnz witness keygen"},
		{"witness w1 " + w1 + " ftp://x\nquorum 1", "not an http(s) URL"},
		{"witness w1\nquorum 1", "want `witness <name> <vkey> [url]`"},
		{"log " + w1 + "\nquorum 1", "want 0x01"},
		{"log\nquorum 1", "want `log <vkey> [url]`"},
		{"witness w1 " + w1 + "\ngroup g 2 w1\nquorum g", "threshold \"2\""},
		{"witness w1 " + w1 + "\ngroup g 1 w1 w1\nquorum g", "lists \"w1\" twice"},
		{"witness w1 " + w1 + "\ngroup g 1 w2\nquorum g", `"w2" is not a witness or group defined above`},
		{"witness w1 " + w1 + "\ngroup g 1\nquorum g", "want `group"},
		{"witness w1 " + w1 + "\nquorum g\ngroup g 1 w1", `"g" is not`},
		{"witness w1 " + w1 + "\nquorum 1\nfrobnicate", `line 3: unknown statement "frobnicate"`},
	} {
		_, err := ParsePolicy([]byte(tc.text))
		if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePolicy(%q) = %v, want ErrPolicy containing %q", tc.text, err, tc.want)
		}
	}
	// Comments, blank lines, URLs and extra spaces are fine.
	mustPolicy(t, "# witnz policy\n\n  witness   w1 "+w1+"  https://w1.example:8443  # first\nwitness w2 "+w2+"\ngroup g any w1 w2\nquorum g # done\n")
}

func TestLoadPolicy(t *testing.T) {
	ks := newKeyset(t, 1)
	path := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(path, []byte(ks.policy(true, "quorum 1")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicy(path); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicy(path + ".missing"); !errors.Is(err, ErrPolicy) {
		t.Errorf("missing policy: %v, want ErrPolicy", err)
	}
}

// renamed returns k's verifier key under another key name (with the key id
// that name gives).
func renamed(t *testing.T, k *Cosigner, name string) string {
	t.Helper()
	_, _, typed, err := splitKey(k.VerifierKey(), false)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s+%08x+%s", name, keyID(name, typed), base64.StdEncoding.EncodeToString(typed))
}

// TestSameKeyTwoNames shows why a policy may not list one public key twice:
// a cosignature/v1 does not sign the key name, so one signature moved to a
// line with the other name and key id verifies too.
func TestSameKeyTwoNames(t *testing.T) {
	k := mustCosigner(t, "a.example/w")
	c := testCheckpoint(4)
	s := mustCosign(t, c, k, 50)
	raw, _ := base64.StdEncoding.DecodeString(s.Base64)
	other := renamed(t, k, "b.example/w")
	v, err := NewCosignatureVerifier(other)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Verify(mustText(t, c), raw[4:]) {
		t.Fatal("expected the moved signature to verify under the other name")
	}
}

func mustText(t *testing.T, c Checkpoint) []byte {
	t.Helper()
	b, err := c.Text()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
