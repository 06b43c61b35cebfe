package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/witnz/witnz/libs/checkpoint"
)

// mustWitnessKey runs `witnz witness keygen` and returns the cosigner and
// its verifier key.
func mustWitnessKey(t *testing.T, dir, name string) (*checkpoint.Cosigner, string) {
	t.Helper()
	if _, _, err := run(t, noEnv, "witness", "keygen", "--name", name, "--out", dir); err != nil {
		t.Fatalf("witness keygen: %v", err)
	}
	base := filepath.Join(dir, keyFileBase(name))
	k, err := checkpoint.LoadCosigner(base + ".key")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(base + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return k, strings.TrimSpace(string(pub))
}

func TestWitnessKeygen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	out, _, err := run(t, noEnv, "witness", "keygen", "--name", "witnz.example/w1", "--out", dir)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, pubPath := filepath.Join(dir, "witnz.example_w1.key"), filepath.Join(dir, "witnz.example_w1.pub")
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", st.Mode().Perm())
	}
	k, err := checkpoint.LoadCosigner(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(pub)); got != k.VerifierKey() || k.Name() != "witnz.example/w1" {
		t.Errorf("public key %q, want %q of key %s", got, k.VerifierKey(), k.Name())
	}
	// The printed policy line parses.
	i := strings.Index(out, "witness witnz.example_w1 ")
	if i < 0 || !strings.Contains(out, keyPath) || !strings.Contains(out, pubPath) {
		t.Fatalf("output does not name the files and the policy line:\n%s", out)
	}
	line := strings.SplitN(out[i:], "\n", 2)[0]
	if _, err := checkpoint.ParsePolicy([]byte(line + "\nquorum 1\n")); err != nil {
		t.Errorf("printed policy line %q: %v", line, err)
	}

	// Never replaces a key.
	before, _ := os.ReadFile(keyPath)
	_, _, err = run(t, noEnv, "witness", "keygen", "--name", "witnz.example/w1", "--out", dir)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second keygen: %v, want an error saying the key exists", err)
	}
	if after, _ := os.ReadFile(keyPath); string(after) != string(before) {
		t.Error("second keygen changed the private key")
	}
}

func TestWitnessKeygenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"witness"}, "witness keygen --name NAME --out DIR"},
		{[]string{"witness", "frob"}, "witness keygen --name NAME --out DIR"},
		{[]string{"witness", "keygen", "--out", dir}, "--name is required"},
		{[]string{"witness", "keygen", "--name", "w1"}, "--out is required"},
		{[]string{"witness", "keygen", "--name", "a+b", "--out", dir}, "--name"},
		{[]string{"witness", "keygen", "--name", "w1", "--out", dir, "extra"}, `unexpected argument "extra"`},
		{[]string{"witness", "keygen", "--bogus"}, "witnz witness keygen -h"},
	} {
		_, _, err := run(t, noEnv, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("witnz %s: %v, want one line containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	out, _, err := run(t, noEnv, "witness", "keygen", "-h")
	if err != nil || !strings.Contains(out, "--name") {
		t.Errorf("witness keygen -h: %v\n%s", err, out)
	}
}
