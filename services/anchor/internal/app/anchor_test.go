package app_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/anchor/internal/app"
	"github.com/witnz/witnz/services/anchor/internal/config"
	"github.com/witnz/witnz/services/anchor/internal/object"
	"github.com/witnz/witnz/services/anchor/internal/witnesses"
)

const (
	audit    = "public.audit_log"
	payments = "billing.payments"
)

// anchorSvc is a running anchor service and an operator client of it.
type anchorSvc struct {
	svc    *app.Service
	client anchorv1connect.AnchorServiceClient
	stop   func()
}

// startAnchor runs the anchor service with cfg completed by the stack's
// certificates and policy; stop ends it (also at cleanup).
func startAnchor(t *testing.T, s *stack, cfg config.Config, opts ...app.Options) *anchorSvc {
	t.Helper()
	p := pki.PathsFor(s.pkiDir, mtls.Service("anchor"))
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS = mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA}
	if cfg.PolicyFile == "" {
		cfg.PolicyFile = s.policy
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Hour
	}
	svc, err := app.New(t.Context(), cfg, testLogger(t, "anchor"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("anchor Run: %v", err)
		}
	}
	t.Cleanup(stop)
	client := anchorv1connect.NewAnchorServiceClient(s.tls(t, operator).HTTPClient(), "https://"+svc.Addr().String())
	return &anchorSvc{svc: svc, client: client, stop: stop}
}

func (a *anchorSvc) anchorNow(t *testing.T) *anchorv1.Receipt {
	t.Helper()
	resp, err := a.client.AnchorNow(t.Context(), connect.NewRequest(&anchorv1.AnchorNowRequest{}))
	if err != nil {
		t.Fatalf("AnchorNow: %v", err)
	}
	return resp.Msg.GetReceipt()
}

func (a *anchorSvc) check(t *testing.T, all bool) *anchorv1.CheckAnchorsResponse {
	t.Helper()
	resp, err := a.client.CheckAnchors(t.Context(), connect.NewRequest(&anchorv1.CheckAnchorsRequest{All: all}))
	if err != nil {
		t.Fatalf("CheckAnchors: %v", err)
	}
	return resp.Msg
}

// problems lists the failed checks as "table: problem".
func problems(r *anchorv1.CheckAnchorsResponse) string {
	var out []string
	for _, c := range r.GetChecks() {
		if !c.GetOk() {
			out = append(out, c.GetTable()+": "+c.GetProblem())
		}
	}
	return strings.Join(out, "\n")
}

// TestAnchorDirEndToEnd anchors a real witness cluster's checkpoints in a
// dir sink: the receipt reaches every witness node and survives a node's
// restart, checks pass while the logs grow, and a missing or corrupted
// object is reported precisely.
func TestAnchorDirEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of witness processes")
	}
	s := newStack(t, 3)
	c := newCluster(t, s, 3)
	c.appendRows(t, audit, 100, 5, "")
	c.appendRows(t, payments, 100, 3, "")
	c.waitCheckpoint(t, audit, 5)
	c.waitCheckpoint(t, payments, 3)

	sinkDir := filepath.Join(t.TempDir(), "anchors")
	a := startAnchor(t, s, config.Config{Witnesses: c.urls(), Sink: config.SinkDir, SinkDir: sinkDir, DataDir: t.TempDir()})
	r := a.anchorNow(t)
	if r.GetSink() != "dir" || r.GetBucket() != sinkDir || r.GetWitnessRaftIndex() == 0 || r.GetTableSizes()[audit] != 5 || r.GetTableSizes()[payments] != 3 {
		t.Fatalf("receipt %v", r)
	}
	body, err := os.ReadFile(filepath.Join(sinkDir, r.GetKey()))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := object.Parse(body)
	if err != nil || len(obj.Tables) != 2 || obj.Tables[0].Table != payments || len(obj.Tables[1].Cosigners) < 2 {
		t.Fatalf("object %s: %+v, %v", body, obj, err)
	}

	// Every node holds the receipt, as the witness log recorded it.
	hasReceipt := func(nd *node) (bool, string) {
		resp, err := nd.client.ListAnchorReceipts(t.Context(), connect.NewRequest(&witnessv1.ListAnchorReceiptsRequest{Table: audit, MinSize: 5}))
		if err != nil {
			return false, err.Error()
		}
		for _, wr := range resp.Msg.GetReceipts() {
			if wr.GetKey() == r.GetKey() && hex.EncodeToString(wr.GetSha256()) == r.GetChecksumSha256() && wr.GetRaftIndex() == r.GetWitnessRaftIndex() {
				return true, ""
			}
		}
		return false, nd.id + " lacks the receipt"
	}
	for _, nd := range c.nodes {
		waitFor(t, "the receipt on "+nd.id, func() (bool, string) { return hasReceipt(nd) })
	}
	// Only the anchor identity may record receipts.
	_, err = c.nodes[0].client.RecordAnchor(t.Context(), connect.NewRequest(&witnessv1.RecordAnchorRequest{Receipt: &witnessv1.AnchorReceipt{Sink: "dir", Key: "forged.json"}}))
	if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "RecordAnchor requires the identity spiffe://witnz/service/anchor") {
		t.Fatalf("RecordAnchor by cdc-ingest = %v, want PermissionDenied naming the anchor identity", err)
	}

	// A receipt the logs do not support is rejected, and marked so.
	bad := &witnessv1.AnchorReceipt{Sink: "dir", Key: "forged.json", Sha256: make([]byte, 32), AnchoredAtMicros: 1,
		Checkpoints: []*witnessv1.AnchoredCheckpoint{{Table: audit, Size: 5, Root: make([]byte, 32)}}}
	c.leaderCall(t, "RecordAnchor of a forged receipt to answer", func(cl witnessv1connect.WitnessServiceClient) error {
		_, err := witnessv1connect.NewWitnessServiceClient(s.tls(t, mtls.Service("anchor")).HTTPClient(), nodeURL(c, cl), rpcserver.ClientOptions()...).RecordAnchor(t.Context(), connect.NewRequest(&witnessv1.RecordAnchorRequest{Receipt: bad}))
		if witnesses.Rejected(err) && connect.CodeOf(err) == connect.CodeFailedPrecondition && strings.Contains(err.Error(), "this node's log has") {
			return nil
		}
		return fmt.Errorf("RecordAnchor of a forged receipt = %v", err)
	})

	// The schedule anchors at start too (no receipt yet), so there may be
	// two.
	list, err := a.client.ListAnchors(t.Context(), connect.NewRequest(&anchorv1.ListAnchorsRequest{}))
	if err != nil || !hasKey(list.Msg.GetReceipts(), r.GetKey()) {
		t.Fatalf("ListAnchors = %v, %v; want the receipt of %s", list, err, r.GetKey())
	}

	if res := a.check(t, false); !res.GetOk() || len(res.GetChecks()) != 2 {
		t.Fatalf("check after anchoring: ok=%v %d checks\n%s", res.GetOk(), len(res.GetChecks()), problems(res))
	}

	// The log grows: the anchored checkpoint is proved to be a prefix.
	c.appendRows(t, audit, 200, 4, "")
	c.waitCheckpoint(t, audit, 9)
	res := a.check(t, false)
	if !res.GetOk() {
		t.Fatalf("check after growth failed:\n%s", problems(res))
	}
	for _, ck := range res.GetChecks() {
		if ck.GetTable() == audit && (ck.GetAnchoredSize() != 5 || ck.GetCurrentSize() != 9) {
			t.Fatalf("check of %s: anchored %d current %d, want 5 and 9", audit, ck.GetAnchoredSize(), ck.GetCurrentSize())
		}
	}

	// A new anchor host (empty receipt store) finds the receipts in the
	// witness log: it checks them, and does not anchor again at start.
	b := startAnchor(t, s, config.Config{Witnesses: c.urls(), Sink: config.SinkDir, SinkDir: sinkDir, DataDir: t.TempDir()})
	res = b.check(t, true)
	if !res.GetOk() || len(res.GetChecks()) < 2 {
		t.Fatalf("check from the witness log's receipts: ok=%v, %d checks\n%s", res.GetOk(), len(res.GetChecks()), problems(res))
	}
	for _, ck := range res.GetChecks() {
		if ck.GetReceipt().GetWitnessRaftIndex() == 0 {
			t.Fatalf("check of a receipt without its witness Raft index: %v", ck)
		}
	}
	if l, err := b.client.ListAnchors(t.Context(), connect.NewRequest(&anchorv1.ListAnchorsRequest{})); err != nil || len(l.Msg.GetReceipts()) != 0 {
		t.Fatalf("the new anchor host anchored at start: %v, %v", l, err)
	}
	b.stop()

	// A node restarted replays its log: the receipt is still there.
	w2 := c.nodes[1]
	w2.stop(t)
	c.start(t, w2)
	waitFor(t, "the receipt on w2 after its restart", func() (bool, string) { return hasReceipt(w2) })

	// A second anchor; then the first object disappears and the second is
	// changed on disk (root can do both to a dir sink).
	r2 := a.anchorNow(t)
	first, second := filepath.Join(sinkDir, r.GetKey()), filepath.Join(sinkDir, r2.GetKey())
	if err := os.Remove(first); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(second, 0o644); err != nil {
		t.Fatal(err)
	}
	b2, err := os.ReadFile(second)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(second, b2[:len(b2)/2], 0o444); err != nil {
		t.Fatal(err)
	}
	res = a.check(t, true)
	if res.GetOk() {
		t.Fatal("check passed with a missing and a truncated object")
	}
	got := problems(res)
	t.Logf("missing and truncated objects:\n%s", got)
	for _, want := range []string{
		"anchor object " + r.GetKey() + " in dir sink " + sinkDir + " is missing",
		"anchor object " + r2.GetKey() + " in dir sink " + sinkDir + " is corrupted",
		"it is truncated",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
}

// TestAnchorCatchesForgedHistory replaces the whole witness cluster by
// one whose nodes agree among themselves on another history, cosigned
// with the same keys (an attacker holding every node) and then with new
// keys: the check against the anchored object fails, naming the table.
func TestAnchorCatchesForgedHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters of witness processes")
	}
	s := newStack(t, 3)
	real := newCluster(t, s, 3)
	real.appendRows(t, audit, 100, 5, "")
	real.waitCheckpoint(t, audit, 5)
	sinkDir, dataDir := filepath.Join(t.TempDir(), "anchors"), t.TempDir()
	a := startAnchor(t, s, config.Config{Witnesses: real.urls(), Sink: config.SinkDir, SinkDir: sinkDir, DataDir: dataDir})
	a.anchorNow(t)
	a.stop()
	for _, nd := range real.nodes {
		nd.kill()
	}

	// Same keys, another history of the same length and longer.
	forged := newCluster(t, s, 3)
	forged.appendRows(t, audit, 100, 5, "forged")
	forged.waitCheckpoint(t, audit, 5)
	alerts, alertURL := startAlertSink(t, s)
	a = startAnchor(t, s, config.Config{Witnesses: forged.urls(), Sink: config.SinkDir, SinkDir: sinkDir, DataDir: dataDir, AlertURL: alertURL})
	res := a.check(t, true)
	if res.GetOk() || !strings.Contains(problems(res), "history of "+audit+" was rewritten") {
		t.Fatalf("forged history of the same size not caught: ok=%v\n%s", res.GetOk(), problems(res))
	}
	waitFor(t, "a CRITICAL anchor.history_rewritten alert", func() (bool, string) {
		al := alerts.types()["anchor.history_rewritten"]
		if al == nil {
			return false, "none yet"
		}
		return al.GetSeverity() == alertv1.Severity_SEVERITY_CRITICAL && al.GetTable() == audit, al.String()
	})
	forged.appendRows(t, audit, 200, 3, "forged")
	forged.waitCheckpoint(t, audit, 8)
	res = a.check(t, true)
	t.Logf("forged longer history:\n%s", problems(res))
	if res.GetOk() || !strings.Contains(problems(res), "does not extend the anchored checkpoint at size 5") {
		t.Fatalf("forged longer history not caught: ok=%v\n%s", res.GetOk(), problems(res))
	}
	a.stop()
	for _, nd := range forged.nodes {
		nd.kill()
	}

	// New keys: the forged checkpoints do not meet the anchored policy.
	// Their own policy lets the forged nodes cosign with the new keys.
	rekeyed := &stack{pkiDir: s.pkiDir}
	rekeyed.keys, rekeyed.policy = cosignerKeys(t, 3)
	other := newCluster(t, rekeyed, 3)
	other.appendRows(t, audit, 100, 6, "rekeyed")
	other.waitCheckpoint(t, audit, 6)
	a = startAnchor(t, s, config.Config{Witnesses: other.urls(), Sink: config.SinkDir, SinkDir: sinkDir, DataDir: dataDir, PolicyFile: s.policy})
	res = a.check(t, true)
	t.Logf("re-keyed cluster:\n%s", problems(res))
	if res.GetOk() || !strings.Contains(problems(res), "does not meet the policy") {
		t.Fatalf("re-keyed forged cluster not caught: ok=%v\n%s", res.GetOk(), problems(res))
	}
}

func hasKey(rs []*anchorv1.Receipt, key string) bool {
	for _, r := range rs {
		if r.GetKey() == key {
			return true
		}
	}
	return false
}

// TestAnchorS3EndToEnd anchors into a real S3 store with Object Lock
// (MinIO): the receipt carries the object's version, checksum and
// retain-until, and the check reads that version back. A bucket without
// Object Lock is refused at start-up.
func TestAnchorS3EndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of witness processes and MinIO")
	}
	m := testenv.MinIO(t)
	admin := s3.New(s3.Options{
		BaseEndpoint: aws.String(m.Endpoint()), Region: m.Region(), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(m.AccessKey(), m.SecretKey(), ""),
	})
	for bucket, lock := range map[string]bool{"anchors": true, "plain": false} {
		if _, err := admin.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(bucket), ObjectLockEnabledForBucket: aws.Bool(lock)}); err != nil {
			t.Fatal(err)
		}
	}
	s := newStack(t, 3)
	c := newCluster(t, s, 3)
	c.appendRows(t, audit, 100, 4, "")
	c.waitCheckpoint(t, audit, 4)

	cfg := func(bucket string) config.Config {
		return config.Config{
			Witnesses: c.urls(), Sink: config.SinkS3, DataDir: t.TempDir(),
			S3: config.S3{Endpoint: m.Endpoint(), Bucket: bucket, Region: m.Region(), PathStyle: true, Prefix: config.DefaultPrefix,
				Retain: 2 * 24 * time.Hour, AccessKeyID: m.AccessKey(), SecretAccessKey: m.SecretKey()},
		}
	}
	plain := cfg("plain")
	p := pki.PathsFor(s.pkiDir, mtls.Service("anchor"))
	plain.Listen, plain.TLS, plain.PolicyFile, plain.Interval = "127.0.0.1:0", mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA}, s.policy, time.Hour
	if _, err := app.New(t.Context(), plain, testLogger(t, "anchor")); err == nil || !strings.Contains(err.Error(), "--s3-bucket plain does not have Object Lock enabled") {
		t.Fatalf("start-up with a bucket without Object Lock: %v", err)
	}

	a := startAnchor(t, s, cfg("anchors"))
	r := a.anchorNow(t)
	if r.GetSink() != "s3" || r.GetBucket() != "anchors" || !strings.HasPrefix(r.GetKey(), config.DefaultPrefix) || r.GetVersionId() == "" || r.GetEtag() == "" ||
		r.GetRetainUntil().AsTime().Before(time.Now().Add(47*time.Hour)) || r.GetWitnessRaftIndex() == 0 {
		t.Fatalf("receipt %v", r)
	}
	head, err := admin.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("anchors"), Key: aws.String(r.GetKey()), VersionId: aws.String(r.GetVersionId())})
	if err != nil {
		t.Fatal(err)
	}
	if head.ObjectLockMode != s3types.ObjectLockModeCompliance {
		t.Fatalf("object lock mode %q, want COMPLIANCE", head.ObjectLockMode)
	}
	if _, err := admin.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String("anchors"), Key: aws.String(r.GetKey()), VersionId: aws.String(r.GetVersionId())}); err == nil {
		t.Fatal("the anchored version was deleted")
	}
	c.appendRows(t, audit, 200, 2, "")
	c.waitCheckpoint(t, audit, 6)
	if res := a.check(t, true); !res.GetOk() {
		t.Fatalf("check failed:\n%s", problems(res))
	}
}

// TestAnchorPendingReceipt loses the witness quorum after the checkpoints
// are read: the object is written but its receipt cannot be committed, so
// nothing is reported as anchored; once the quorum is back the next
// anchoring commits that receipt first.
func TestAnchorPendingReceipt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of witness processes")
	}
	s := newStack(t, 3)
	c := newCluster(t, s, 3)
	c.appendRows(t, audit, 100, 3, "")
	c.waitCheckpoint(t, audit, 3)
	sinkDir := filepath.Join(t.TempDir(), "anchors")
	a := startAnchor(t, s, config.Config{Witnesses: c.urls()[:1], Sink: config.SinkDir, SinkDir: sinkDir, DataDir: t.TempDir()},
		app.Options{RecordTimeout: 2 * time.Second})
	// The schedule's first anchor at start may or may not have happened.
	waitFor(t, "the anchor at start", func() (bool, string) {
		l, err := a.client.ListAnchors(t.Context(), connect.NewRequest(&anchorv1.ListAnchorsRequest{}))
		return err == nil && len(l.Msg.GetReceipts()) == 1, "no receipt yet"
	})

	// w1 alone still serves its replica's checkpoints, but commits nothing.
	c.nodes[1].kill()
	c.nodes[2].kill()
	_, err := a.client.AnchorNow(t.Context(), connect.NewRequest(&anchorv1.AnchorNowRequest{}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "did not record its receipt, so it is not anchored yet") {
		t.Fatalf("AnchorNow without a quorum = %v, want Unavailable: not anchored", err)
	}
	l, err := a.client.ListAnchors(t.Context(), connect.NewRequest(&anchorv1.ListAnchorsRequest{}))
	if err != nil || len(l.Msg.GetReceipts()) != 1 {
		t.Fatalf("ListAnchors after the failed commit = %v, %v; want only the first receipt", l, err)
	}
	files, _ := os.ReadDir(sinkDir)
	if len(files) != 2 {
		t.Fatalf("%d objects in the sink, want 2 (one anchored, one pending)", len(files))
	}

	c.start(t, c.nodes[1])
	c.start(t, c.nodes[2])
	c.waitLeader(t)
	waitFor(t, "the pending receipt committed by the next anchoring", func() (bool, string) {
		if _, err := a.client.AnchorNow(t.Context(), connect.NewRequest(&anchorv1.AnchorNowRequest{})); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	l, err = a.client.ListAnchors(t.Context(), connect.NewRequest(&anchorv1.ListAnchorsRequest{}))
	if err != nil || len(l.Msg.GetReceipts()) < 3 {
		t.Fatalf("ListAnchors = %v, %v; want 3 receipts", l, err)
	}
	keys := map[string]bool{}
	for _, r := range l.Msg.GetReceipts() {
		keys[r.GetKey()] = true
	}
	for _, f := range files {
		if !keys[f.Name()] {
			t.Errorf("object %s has no receipt", f.Name())
		}
	}
	if res := a.check(t, true); !res.GetOk() {
		t.Fatalf("check:\n%s", problems(res))
	}
}

// nodeURL is the API URL of the node whose client is cl.
func nodeURL(c *cluster, cl witnessv1connect.WitnessServiceClient) string {
	for _, nd := range c.nodes {
		if nd.client == cl {
			return nd.api
		}
	}
	return ""
}
