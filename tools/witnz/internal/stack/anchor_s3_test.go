package stack_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/tools/witnz/internal/cli"
	"github.com/witnz/witnz/tools/witnz/internal/stack"
)

// TestAnchorStackS3 runs the local stack with the anchor service writing to
// a real S3 store with Object Lock (MinIO): `witnz anchor now` reports the
// object's version id and retain-until date, `witnz verify --check-anchor`
// passes, and `witnz report` lists the object version.
func TestAnchorStackS3(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MinIO, PostgreSQL, Redis and nine witnz processes; skipped with -short")
	}
	s3 := testenv.MinIO(t)
	const bucket = "witnz-anchors"
	createLockedBucket(t, s3, bucket)

	bin := serviceBinaries(t)
	dir := stackDir(t)
	out := &syncBuffer{}
	st, err := stack.Start(t.Context(), stack.Config{Dir: dir, BinDir: bin, Out: out, AnchorInterval: time.Hour, AnchorCheckInterval: time.Hour,
		AnchorS3: &stack.S3Sink{Endpoint: s3.Endpoint(), PathStyle: true, Bucket: bucket, Region: s3.Region(),
			AccessKeyID: s3.AccessKey(), SecretAccessKey: s3.SecretKey(), Retain: 24 * time.Hour}})
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
	mustExec(t, info.Postgres.DSN, `INSERT INTO audit_log (actor, action) SELECT 'user' || g, 'login' FROM generate_series(1, 10) g`)
	witnz := func(args ...string) (string, error) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		err := cli.Run(t.Context(), append(args, "--stack", stackFile), noEnv, &stdout, &stderr)
		return stdout.String(), err
	}

	var receipt cli.AnchorReceipt
	waitFor(t, 60*time.Second, "an S3 anchor of public.audit_log at size 12", func() (bool, string) {
		o, err := witnz("anchor", "now", "--json")
		if err != nil {
			return false, err.Error()
		}
		if err := json.Unmarshal([]byte(o), &receipt); err != nil {
			return false, o
		}
		return receipt.Tables[stack.DemoTable] >= 12, o
	})
	t.Logf("anchored: %+v", receipt)
	retain, err := time.Parse(time.RFC3339, receipt.RetainUntil)
	if receipt.Sink != "s3" || receipt.Bucket != bucket || receipt.VersionID == "" || err != nil || retain.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("receipt %+v: want an s3 object in %s with a version id and a retention of a day (%v)", receipt, bucket, err)
	}

	o, err := witnz("verify", "--check-anchor", "--json")
	var check cli.AnchorCheckResult
	if err != nil || json.Unmarshal([]byte(o), &check) != nil || !check.OK || len(check.Checks) == 0 || check.Checks[0].Anchor.VersionID != receipt.VersionID {
		t.Fatalf("witnz verify --check-anchor: %v\n%s", err, o)
	}

	o, err = witnz("report", "--since", time.Now().UTC().Add(-time.Hour).Format(time.RFC3339))
	if err != nil || !strings.Contains(o, "| "+receipt.VersionID+" |") || !strings.Contains(o, bucket+"/"+receipt.Key) {
		t.Fatalf("witnz report: %v; want the object %s/%s version %s listed\n%s", err, bucket, receipt.Key, receipt.VersionID, o)
	}
}

// createLockedBucket creates a bucket with Object Lock enabled: one S3
// request, signed with AWS Signature Version 4.
func createLockedBucket(t *testing.T, s3 *testenv.MinIOServer, bucket string) {
	t.Helper()
	u, err := url.Parse(s3.Endpoint() + "/" + bucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	amzDate, day := now.Format("20060102T150405Z"), now.Format("20060102")
	emptySHA := hex.EncodeToString(sha256.New().Sum(nil))
	headers := map[string]string{
		"host":                             u.Host,
		"x-amz-bucket-object-lock-enabled": "true",
		"x-amz-content-sha256":             emptySHA,
		"x-amz-date":                       amzDate,
	}
	names := []string{"host", "x-amz-bucket-object-lock-enabled", "x-amz-content-sha256", "x-amz-date"}
	var canonHeaders strings.Builder
	for _, n := range names {
		fmt.Fprintf(&canonHeaders, "%s:%s\n", n, headers[n])
	}
	signed := strings.Join(names, ";")
	canonical := strings.Join([]string{http.MethodPut, u.EscapedPath(), "", canonHeaders.String(), signed, emptySHA}, "\n")
	scope := day + "/" + s3.Region() + "/s3/aws4_request"
	sum := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := []byte("AWS4" + s3.SecretKey())
	for _, part := range []string{day, s3.Region(), "s3", "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	signature := hex.EncodeToString(hmacSHA256(key, toSign))

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names[1:] {
		req.Header.Set(n, headers[n])
	}
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s", s3.AccessKey(), scope, signed, signature))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		t.Fatalf("create bucket %s: %s\n%s", bucket, resp.Status, body)
	}
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
