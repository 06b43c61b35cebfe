package stack_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/evidence"
	"github.com/witnz/witnz/tools/witnz/internal/cli"
	"github.com/witnz/witnz/tools/witnz/internal/stack"
)

// TestVerifyStack runs `witnz verify` against the whole local stack, found
// through the stack file: a clean table exits 0, and a row changed behind
// the log's back (while the table was out of the publication) is named as
// modified with an evidence bundle, and exits 3.
func TestVerifyStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, Redis and nine witnz processes; skipped with -short")
	}
	bin := serviceBinaries(t)
	dir := stackDir(t)
	out := &syncBuffer{}
	st, err := stack.Start(t.Context(), stack.Config{Dir: dir, BinDir: bin, Out: out})
	if err != nil {
		t.Fatalf("start stack: %v\nsupervisor output:\n%s", err, out)
	}
	t.Cleanup(func() {
		st.Stop()
		if t.Failed() {
			t.Logf("supervisor output:\n%s", out)
		}
	})
	info := st.Info()
	stackFile := filepath.Join(dir, stack.InfoFile)
	mustExec(t, info.Postgres.DSN, `INSERT INTO audit_log (actor, action, detail)
		SELECT 'user' || g, 'login', jsonb_build_object('n', g) FROM generate_series(1, 300) g`)

	verify := func(args ...string) (cli.VerifyResult, error) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		err := cli.Run(t.Context(), append([]string{"verify", "--json", "--stack", stackFile}, args...), noEnv, &stdout, &stderr)
		var r cli.VerifyResult
		if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil && err == nil {
			t.Fatalf("witnz verify --json printed no result object: %v\n%s\n%s", jerr, stdout.String(), stderr.String())
		}
		return r, err
	}

	var r cli.VerifyResult
	// The verifier waits for cdc-ingest to have logged the inserts.
	waitFor(t, 60*time.Second, "a clean verification", func() (bool, string) {
		r, err = verify(stack.DemoTable)
		return err == nil && r.OK && r.RowsScanned == 300, func() string { b, _ := json.Marshal(r); return string(b) + " " + errString(err) }()
	})
	if r.Table != stack.DemoTable || r.LogSize < 300 || r.SnapshotLSN == "" || r.Findings == nil {
		t.Errorf("clean result %+v", r)
	}

	// Changed while out of the publication: no log entry, no alert for
	// the row itself.
	mustExec(t, info.Postgres.DSN, `BEGIN;
		ALTER PUBLICATION witnz DROP TABLE public.audit_log;
		UPDATE public.audit_log SET action = 'forged' WHERE id = 17;
		COMMIT`)
	r, err = verify(stack.DemoTable)
	var te *cli.TamperedError
	if !errors.As(err, &te) || te.ExitCode() != 3 {
		t.Fatalf("witnz verify after the change: %v, want a TamperedError (exit 3)", err)
	}
	if r.OK || len(r.Findings) != 1 || r.Findings[0].Kind != "modified" || r.Findings[0].Key["id"] != "17" || r.Findings[0].WitnessEntry == nil {
		t.Fatalf("result %+v, want one modified row id=17 with its entry", r)
	}
	path := r.Findings[0].EvidencePath
	if !filepath.IsAbs(path) || !strings.HasPrefix(path, dir) {
		t.Errorf("evidence path %q, want an absolute path under the stack directory (the verifier's working directory)", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := evidence.Decode(data)
	if err != nil || b.Table != stack.DemoTable || b.Index != *r.Findings[0].WitnessEntry || b.Finding == nil || b.Finding.Type != "verify.row_modified" {
		t.Errorf("bundle %s: %v, %+v", path, err, b)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
