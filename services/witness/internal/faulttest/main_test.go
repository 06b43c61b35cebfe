package faulttest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	removeStaleNamespaces()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// witnessBinary builds the witness command once per test run and returns
// its path (or $WITNZ_BIN/witness when WITNZ_BIN names a directory of
// binaries built from the same tree, as for the stack tests: the snapshot
// test also runs the node in process). The binary is built without
// -race: the processes under test run at production speed while the test
// client is instrumented.
func witnessBinary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("WITNZ_BIN"); d != "" {
		return filepath.Join(d, "witness")
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "witnz-faulttest-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "witness")
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/witnz/witnz/services/witness/cmd/witness")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build the witness binary: %v\n%s", err, strings.TrimSpace(string(out)))
			return
		}
		fmt.Fprintf(os.Stderr, "faulttest: built %s in %s\n", binPath, time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// skipShort skips the calling test with -short: every test here starts
// several processes and runs for many seconds.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts clusters of witness processes; skipped with -short")
	}
}
