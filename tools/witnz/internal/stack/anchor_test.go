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

	"github.com/witnz/witnz/tools/witnz/internal/cli"
	"github.com/witnz/witnz/tools/witnz/internal/stack"
)

// TestAnchorStack anchors the local stack's checkpoints in its dir sink
// with `witnz anchor now`, checks them with `witnz verify --check-anchor`,
// reports them with `witnz report`, and then corrupts the anchored file: the
// CLI exits 3 naming the object, and the verifier's scheduled check raises
// a CRITICAL alert.
func TestAnchorStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, Redis and nine witnz processes; skipped with -short")
	}
	bin := serviceBinaries(t)
	dir := stackDir(t)
	out := &syncBuffer{}
	st, err := stack.Start(t.Context(), stack.Config{Dir: dir, BinDir: bin, Out: out,
		// Only the anchors this test makes; the verifier checks often.
		AnchorInterval: time.Hour, AnchorCheckInterval: 2 * time.Second})
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
	if info.Services["anchor"].URL == "" {
		t.Fatalf("stack file has no anchor URL: %+v", info.Services)
	}
	mustExec(t, info.Postgres.DSN, `INSERT INTO audit_log (actor, action, detail)
		SELECT 'user' || g, 'login', jsonb_build_object('n', g) FROM generate_series(1, 100) g`)

	witnz := func(args ...string) (string, error) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		err := cli.Run(t.Context(), append(args, "--stack", stackFile), noEnv, &stdout, &stderr)
		return stdout.String(), err
	}

	// The first anchor needs a cosigned checkpoint holding the inserts.
	var receipt cli.AnchorReceipt
	waitFor(t, 60*time.Second, "an anchor of public.audit_log at size 102", func() (bool, string) {
		o, err := witnz("anchor", "now", "--json")
		if err != nil {
			return false, err.Error()
		}
		if err := json.Unmarshal([]byte(o), &receipt); err != nil {
			return false, o
		}
		return receipt.Tables[stack.DemoTable] >= 102, o
	})
	t.Logf("anchored: %+v", receipt)
	if receipt.Sink != "dir" || receipt.Key == "" || receipt.ChecksumSHA256 == "" || receipt.AnchoredAt == "" {
		t.Errorf("receipt %+v", receipt)
	}

	o, err := witnz("anchor", "list", "--json")
	var list []cli.AnchorReceipt
	if err != nil || json.Unmarshal([]byte(o), &list) != nil || len(list) == 0 || list[0].Key != receipt.Key {
		t.Fatalf("witnz anchor list: %v\n%s", err, o)
	}

	o, err = witnz("verify", "--check-anchor", "--json")
	var check cli.AnchorCheckResult
	if err != nil || json.Unmarshal([]byte(o), &check) != nil || !check.OK {
		t.Fatalf("witnz verify --check-anchor: %v\n%s", err, o)
	}
	found := false
	for _, c := range check.Checks {
		if c.Table == stack.DemoTable {
			found = c.OK && c.AnchoredSize >= 102 && c.CurrentSize != nil && *c.CurrentSize >= c.AnchoredSize
		}
	}
	if !found {
		t.Errorf("no ok check of %s:\n%s", stack.DemoTable, o)
	}

	o, err = witnz("report", "--since", time.Now().UTC().Add(-time.Hour).Format(time.RFC3339), "--format", "json")
	var r cli.Report
	if err != nil || json.Unmarshal([]byte(o), &r) != nil {
		t.Fatalf("witnz report: %v\n%s", err, o)
	}
	var audit *cli.ReportTable
	for i := range r.Tables {
		if r.Tables[i].Table == stack.DemoTable {
			audit = &r.Tables[i]
		}
	}
	if r.Sources.Gateway != info.Gateway || r.Summary.AlertsInPeriod == nil || audit == nil || len(audit.Anchors) == 0 || audit.Anchors[0].WitnessLog != "recorded" || audit.LatestCheckpoint == nil || !r.AnchorCheck.OK ||
		audit.LatestCheckpoint.PolicyVerified == nil || !*audit.LatestCheckpoint.PolicyVerified {
		t.Fatalf("report:\n%s", o)
	}

	// Root can still rewrite a file of the dir sink: the check notices.
	path := receipt.Key
	if !filepath.IsAbs(path) {
		path = filepath.Join(firstDir(receipt.Bucket, filepath.Join(dir, "anchors")), receipt.Key)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatalf("anchored file of receipt %+v: %v", receipt, err)
	}
	if err := os.WriteFile(path, []byte(`{"not":"an anchor"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err = witnz("verify", "--check-anchor", "--all", "--json")
	var pe *cli.AnchorProblemError
	if !errors.As(err, &pe) || pe.ExitCode() != 3 {
		t.Fatalf("check of a corrupted anchor: %v, want an AnchorProblemError (exit 3)\n%s", err, o)
	}
	t.Logf("check of the rewritten object: %v", err)
	if !strings.Contains(err.Error(), receipt.Key) && !strings.Contains(o, receipt.Key) {
		t.Errorf("the problem does not name the object %s: %v\n%s", receipt.Key, err, o)
	}

	// The anchor service alerts on the failed check, whoever asked for it;
	// the verifier's scheduled check, told so, does not alert again.
	var damaged []cli.Alert
	waitFor(t, 30*time.Second, "the anchor check's alert", func() (bool, string) {
		o, err := witnz("alerts", "--json", "--since", "10m")
		if err != nil {
			return false, err.Error()
		}
		var alerts []cli.Alert
		if err := json.Unmarshal([]byte(o), &alerts); err != nil {
			return false, o
		}
		damaged = damaged[:0]
		for _, a := range alerts {
			if a.Type == "verify.anchor_check_failed" {
				t.Fatalf("the verifier alerted on a check the anchor service had already alerted: %s", a.Message)
			}
			if a.Type == "anchor.object_damaged" && a.Severity == "critical" && a.Source == "anchor" {
				damaged = append(damaged, a)
			}
		}
		return len(damaged) > 0, o
	})
	if len(damaged) != 1 {
		t.Errorf("%d anchor.object_damaged alerts for one rewritten object, want 1: %+v", len(damaged), damaged)
	}
	t.Logf("alert: %s", damaged[0].Message)
}

// firstDir is d if it is an absolute directory, else fallback.
func firstDir(d, fallback string) string {
	if fi, err := os.Stat(d); err == nil && fi.IsDir() && filepath.IsAbs(d) {
		return d
	}
	return fallback
}
