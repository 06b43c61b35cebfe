package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var known = []string{"B1", "B2", "B3"}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParse(t *testing.T) {
	c, err := Parse([]string{"--rows", "b2, B1,b2", "--quick", "--out", "/x/results"}, env(nil), known)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"B2", "B1"}, c.Rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	if !c.Quick || c.Out != "/x/results" || c.Work != "/x/results/tmp" {
		t.Errorf("Parse = %+v", c)
	}

	c, err = Parse(nil, env(map[string]string{"WITNZ_BENCH_ROWS": "B3", "WITNZ_BENCH_QUICK": "1"}), known)
	if err != nil || !c.Quick || !cmp.Equal(c.Rows, []string{"B3"}) {
		t.Errorf("Parse from env = %+v, %v", c, err)
	}
	c, err = Parse([]string{"--rows", "B1"}, env(map[string]string{"WITNZ_BENCH_ROWS": "B3"}), known)
	if err != nil || !cmp.Equal(c.Rows, []string{"B1"}) {
		t.Errorf("flag does not win over env: %+v, %v", c, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rows", "B1,B99"}, `unknown row "B99": the rows are B1, B2, B3`},
		{[]string{"B1"}, "--rows B1,B2"},
		{[]string{"--nope"}, "flag provided but not defined"},
	} {
		_, err := Parse(tc.args, env(nil), known)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	repo, bin := t.TempDir(), t.TempDir()
	c := Config{Repo: repo, Bin: bin}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("Validate without binaries = %v", err)
	}
	for _, n := range []string{"witnz", "witness", "cdc-ingest", "alert", "gateway"} {
		if err := os.WriteFile(filepath.Join(bin, n), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "go.work") {
		t.Fatalf("Validate outside the repository = %v", err)
	}
	if err := os.WriteFile(filepath.Join(repo, "go.work"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
