package stack

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/witnz/witnz/libs/checkpoint"
)

func TestCosignKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cosign")
	flags, err := cosignKeys(dir, DefaultWitnesses)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := checkpoint.LoadPolicy(filepath.Join(dir, PolicyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := policy.Describe(); got != "cosignatures by 2 of w1, w2, w3" {
		t.Fatalf("policy: %s", got)
	}
	first, err := os.ReadFile(filepath.Join(dir, "w1.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range DefaultWitnesses {
		f := flags[id]
		i := slices.Index(f, "--cosign-key")
		if i < 0 || !slices.Contains(f, "--policy") || !slices.Contains(f, Cluster) {
			t.Fatalf("%s flags %v", id, f)
		}
		k, err := checkpoint.LoadCosigner(f[i+1])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := policy.Verifiers().Verifier(k.Name(), k.KeyHash()); err != nil {
			t.Fatalf("%s's key is not in the policy: %v", id, err)
		}
	}
	// A second start keeps the keys.
	if _, err := cosignKeys(dir, DefaultWitnesses); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "w1.key"))
	if string(again) != string(first) {
		t.Fatal("a restart replaced a witness key")
	}
}
