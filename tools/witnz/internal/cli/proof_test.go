package cli

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/evidence"
)

// proofFixture writes a policy (2 of w1, w2, w3, keys made by `witnz
// witness keygen`) and returns it with a valid bundle for entry 0 of a
// three-entry log of public.audit_log.
func proofFixture(t *testing.T) (policyPath string, b *evidence.Bundle) {
	t.Helper()
	dir := t.TempDir()
	var policy strings.Builder
	var ks []*checkpoint.Cosigner
	for _, n := range []string{"w1", "w2", "w3"} {
		k, vkey := mustWitnessKey(t, filepath.Join(dir, "keys"), "witnz.test/"+n)
		ks = append(ks, k)
		policy.WriteString("witness " + n + " " + vkey + "\n")
	}
	policy.WriteString("quorum 2\n")
	policyPath = filepath.Join(dir, "policy")
	if err := os.WriteFile(policyPath, []byte(policy.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	// RFC 6962 by hand: leaves l0, l1, l2; root H(1 || H(1 || l0 || l1) || l2);
	// the audit path of leaf 0 is l1, l2.
	h := func(parts ...[]byte) []byte {
		s := sha256.New()
		for _, p := range parts {
			s.Write(p)
		}
		return s.Sum(nil)
	}
	var entries, leaves [][]byte
	for i := range 3 {
		key, data := commitment.Commitment(sha256.Sum256([]byte{'k', byte(i)})), commitment.Commitment(sha256.Sum256([]byte{'d', byte(i)}))
		e := commitment.Entry{Seq: uint64(i), CommitLSN: 0x1A2B3C, TxIndex: uint32(i), Op: commitment.OpInsert,
			CommitTimeMicros: 1_795_000_000_000_000, XID: 1234, KeyCommit: &key, DataCommit: &data}
		enc := e.Encode()
		entries = append(entries, enc)
		leaves = append(leaves, h([]byte{0}, enc))
	}
	origin, err := checkpoint.Origin("test", "public.audit_log")
	if err != nil {
		t.Fatal(err)
	}
	c := checkpoint.Checkpoint{Origin: origin, Size: 3}
	copy(c.Root[:], h([]byte{1}, h([]byte{1}, leaves[0], leaves[1]), leaves[2]))
	s1, err := checkpoint.Cosign(c, ks[0], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s3, err := checkpoint.Cosign(c, ks[2], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	signed, err := checkpoint.Assemble(c, s1, s3)
	if err != nil {
		t.Fatal(err)
	}
	return policyPath, &evidence.Bundle{
		Format:         evidence.Format,
		Table:          "public.audit_log",
		Index:          0,
		Entry:          entries[0],
		InclusionProof: []evidence.Bytes{leaves[1], leaves[2]},
		Checkpoint:     string(signed),
	}
}

func writeBundle(t *testing.T, b *evidence.Bundle) string {
	t.Helper()
	enc, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bundle.json")
	if err := os.WriteFile(path, enc, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestProofVerify(t *testing.T) {
	policy, b := proofFixture(t)
	path := writeBundle(t, b)
	for _, args := range [][]string{
		{"proof", "verify", path, "--policy", policy},
		{"proof", "verify", "--policy", policy, path},
	} {
		out, _, err := run(t, noEnv, args...)
		if err != nil {
			t.Fatalf("witnz %s: %v", strings.Join(args, " "), err)
		}
		for _, want := range []string{
			"VALID evidence",
			"Entry 0 of the log of table public.audit_log (witnz cluster test)",
			"tree of 3 entries",
			"cosignatures by 2 of w1, w2, w3",
			"cosigned by witness w1",
			"cosigned by witness w3",
			"Not proven by this bundle",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	}
	// The policy may come from the environment.
	env := func(k string) string {
		if k == "WITNZ_POLICY" {
			return policy
		}
		return ""
	}
	if _, _, err := run(t, env, "proof", "verify", path); err != nil {
		t.Errorf("with WITNZ_POLICY: %v", err)
	}
}

func TestProofVerifyInvalid(t *testing.T) {
	policy, good := proofFixture(t)
	damage := func(change func(b *evidence.Bundle)) string {
		b := *good
		change(&b)
		return writeBundle(t, &b)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"entry byte", damage(func(b *evidence.Bundle) {
			e := append([]byte(nil), b.Entry...)
			e[40] ^= 1 // inside key_commit
			b.Entry = e
		}), "inclusion proof"},
		{"proof byte", damage(func(b *evidence.Bundle) {
			p := append([]byte(nil), b.InclusionProof[1]...)
			p[0] ^= 1
			b.InclusionProof = []evidence.Bytes{b.InclusionProof[0], p}
		}), "inclusion proof"},
		{"checkpoint size", damage(func(b *evidence.Bundle) {
			b.Checkpoint = strings.Replace(b.Checkpoint, "\n3\n", "\n4\n", 1)
		}), "invalid signature by witness"},
		{"one cosignature", damage(func(b *evidence.Bundle) {
			lines := strings.SplitAfter(b.Checkpoint, "\n")
			b.Checkpoint = strings.Join(lines[:len(lines)-2], "")
		}), "have 1 of 2 needed"},
		{"table", damage(func(b *evidence.Bundle) { b.Table = "public.other" }), `not of table "public.other"`},
	} {
		_, _, err := run(t, noEnv, "proof", "verify", tc.path, "--policy", policy)
		if err == nil || !strings.Contains(err.Error(), "is INVALID") || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line saying INVALID and %q", tc.name, err, tc.want)
		}
	}

	dir := t.TempDir()
	notJSON := filepath.Join(dir, "x.json")
	os.WriteFile(notJSON, []byte("hello"), 0o644)
	badPolicy := filepath.Join(dir, "policy")
	os.WriteFile(badPolicy, []byte("quorum 1\n"), 0o644)
	valid := writeBundle(t, good)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"proof"}, "proof verify BUNDLE --policy FILE"},
		{[]string{"proof", "check"}, "proof verify BUNDLE --policy FILE"},
		{[]string{"proof", "verify", "--policy", policy}, "exactly one evidence bundle"},
		{[]string{"proof", "verify", valid, valid, "--policy", policy}, "exactly one evidence bundle"},
		{[]string{"proof", "verify", valid}, "--policy is required"},
		{[]string{"proof", "verify", valid, "--policy", filepath.Join(dir, "none")}, "invalid policy"},
		{[]string{"proof", "verify", valid, "--policy", badPolicy}, "from 1 to the 0 witness"},
		{[]string{"proof", "verify", filepath.Join(dir, "none.json"), "--policy", policy}, "cannot read the evidence bundle"},
		{[]string{"proof", "verify", notJSON, "--policy", policy}, "invalid evidence bundle: not valid JSON"},
		{[]string{"proof", "verify", "--bogus"}, "witnz proof verify -h"},
	} {
		_, _, err := run(t, noEnv, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("witnz %s: %v, want one line containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	out, _, err := run(t, noEnv, "proof", "verify", "-h")
	if err != nil || !strings.Contains(out, "--policy") {
		t.Errorf("proof verify -h: %v\n%s", err, out)
	}
}
