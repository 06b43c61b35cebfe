package verify_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/evidence"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/verifier/internal/testcluster"
	"github.com/witnz/witnz/services/verifier/internal/verify"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testcluster.Cleanup()
	os.Exit(code)
}

// newVerifier returns a verifier of the cluster's database as the given
// database role ("" for the superuser's DSN) and witness URLs (nil for the
// cluster's).
func newVerifier(t *testing.T, c *testcluster.Cluster, dsn string, urls []string) *verify.Verifier {
	t.Helper()
	return verifierFor(t, c, dsn, urls, func(*verify.Options) {})
}

func newVerifierOpts(t *testing.T, c *testcluster.Cluster, edit func(*verify.Options)) *verify.Verifier {
	t.Helper()
	return verifierFor(t, c, "", nil, edit)
}

func verifierFor(t *testing.T, c *testcluster.Cluster, dsn string, urls []string, edit func(*verify.Options)) *verify.Verifier {
	t.Helper()
	if dsn == "" {
		dsn = c.DSN
	}
	if urls == nil {
		urls = c.WitnessURLs
	}
	pool := mustPool(t, dsn)
	tlsCfg, err := mtls.Load(c.Files(mtls.Service("verifier")))
	if err != nil {
		t.Fatal(err)
	}
	o := verify.Options{
		Key:            c.Key,
		EvidenceDir:    filepath.Join(t.TempDir(), "evidence"),
		CatchUpTimeout: 30 * time.Second,
		CheckpointWait: 15 * time.Second,
		Log:            slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	edit(&o)
	return verify.New(pool, tlsCfg.HTTPClient(), urls, o)
}

func mustVerify(t *testing.T, v *verify.Verifier, table string) *verify.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res, err := v.Verify(ctx, table)
	if err != nil {
		t.Fatalf("verify %s: %v", table, err)
	}
	return res
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// describe prints findings for failure messages.
func describe(fs []verify.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		entry := "-"
		if f.Entry != nil {
			entry = fmt.Sprint(*f.Entry)
		}
		fmt.Fprintf(&b, "\n  %s key=%v entry=%s bucket=%d: %s", f.Kind, f.Key(), entry, f.Bucket, f.Message)
	}
	return b.String()
}

// checkBundle checks a finding's evidence bundle as `witnz proof verify`
// does, with the cluster's policy.
func checkBundle(t *testing.T, c *testcluster.Cluster, f verify.Finding) *evidence.Report {
	t.Helper()
	if f.EvidencePath == "" {
		t.Fatalf("finding %s %v has no evidence bundle", f.Kind, f.Key())
	}
	data, err := os.ReadFile(f.EvidencePath)
	if err != nil {
		t.Fatal(err)
	}
	b, err := evidence.Decode(data)
	if err != nil {
		t.Fatalf("bundle %s: %v", f.EvidencePath, err)
	}
	policy, err := checkpoint.LoadPolicy(c.PolicyFile)
	if err != nil {
		t.Fatal(err)
	}
	r, err := evidence.Verify(b, policy)
	if err != nil {
		t.Fatalf("bundle %s does not verify: %v\n%s", f.EvidencePath, err, data)
	}
	if f.Entry != nil && b.Index != *f.Entry {
		t.Errorf("bundle %s proves entry %d, the finding names %d", f.EvidencePath, b.Index, *f.Entry)
	}
	if b.Finding == nil || b.Finding.Message == "" {
		t.Errorf("bundle %s says nothing about the finding", f.EvidencePath)
	}
	return r
}

func isErr(err, target error) bool { return errors.Is(err, target) }

func mustPool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}
