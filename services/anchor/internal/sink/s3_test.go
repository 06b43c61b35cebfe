package sink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/witnz/witnz/libs/testenv"
)

// s3Config is the sink's configuration for bucket on m.
func s3Config(m *testenv.MinIOServer, bucket string) S3Config {
	return S3Config{
		Endpoint: m.Endpoint(), Bucket: bucket, Region: m.Region(), PathStyle: true, Prefix: "witnz/anchors/",
		Retain: 24 * time.Hour, AccessKeyID: m.AccessKey(), SecretAccessKey: m.SecretKey(),
	}
}

// createBucket creates bucket on m, with Object Lock when lock is set.
func createBucket(t *testing.T, m *testenv.MinIOServer, bucket string, lock bool) *s3.Client {
	t.Helper()
	c := s3.New(s3.Options{
		BaseEndpoint: aws.String(m.Endpoint()), Region: m.Region(), UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: m.AccessKey(), SecretAccessKey: m.SecretKey()}, nil
		}),
	})
	if _, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(bucket), ObjectLockEnabledForBucket: aws.Bool(lock)}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	return c
}

func TestS3ObjectLock(t *testing.T) {
	m := testenv.MinIO(t)
	admin := createBucket(t, m, "anchors", true)
	ctx := t.Context()
	s, err := OpenS3(ctx, s3Config(m, "anchors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	body := []byte(`{"format":"witnz-anchor/v1"}` + "\n")
	before := time.Now()
	r, err := s.Put(ctx, "anchor-1.json", body)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != KindS3 || r.Bucket != "anchors" || r.Key != "witnz/anchors/anchor-1.json" || r.VersionID == "" || r.ETag == "" ||
		r.SHA256 != sha256.Sum256(body) || r.Size != int64(len(body)) {
		t.Fatalf("receipt %+v", r)
	}
	if r.RetainUntil.Before(before.Add(23*time.Hour)) || r.RetainUntil.After(time.Now().Add(25*time.Hour)) {
		t.Fatalf("retain-until %s, want about a day from now", r.RetainUntil)
	}

	// The store holds it in COMPLIANCE mode until retain-until.
	ret, err := admin.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String("anchors"), Key: aws.String(r.Key), VersionId: aws.String(r.VersionID)})
	if err != nil {
		t.Fatal(err)
	}
	if ret.Retention.Mode != types.ObjectLockRetentionModeCompliance || !ret.Retention.RetainUntilDate.Equal(r.RetainUntil) {
		t.Fatalf("retention %+v, want COMPLIANCE until %s", ret.Retention, r.RetainUntil)
	}

	// Even the root user cannot delete the version, shorten its retention,
	// or lift it with a governance bypass.
	_, err = admin.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("anchors"), Key: aws.String(r.Key), VersionId: aws.String(r.VersionID)})
	if err == nil {
		t.Fatal("DeleteObject of a locked version succeeded")
	}
	_, err = admin.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("anchors"), Key: aws.String(r.Key), VersionId: aws.String(r.VersionID), BypassGovernanceRetention: aws.Bool(true)})
	if err == nil {
		t.Fatal("DeleteObject with governance bypass of a COMPLIANCE version succeeded")
	}
	_, err = admin.PutObjectRetention(ctx, &s3.PutObjectRetentionInput{
		Bucket: aws.String("anchors"), Key: aws.String(r.Key), VersionId: aws.String(r.VersionID),
		Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeCompliance, RetainUntilDate: aws.Time(time.Now().Add(time.Minute))},
	})
	if err == nil {
		t.Fatal("shortening the retention of a COMPLIANCE version succeeded")
	}

	// The sink never writes twice under a key.
	if _, err := s.Put(ctx, "anchor-1.json", []byte("forged")); !errors.Is(err, ErrExists) {
		t.Fatalf("second Put under the same key = %v, want ErrExists", err)
	}
	// A plain overwrite by someone else only adds a version: the anchored
	// version is unchanged.
	if _, err := admin.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("anchors"), Key: aws.String(r.Key), Body: bytes.NewReader([]byte("forged"))}); err != nil {
		t.Fatalf("overwrite attempt: %v", err)
	}
	got, err := s.Get(ctx, r.Key, r.VersionID)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Get of the anchored version = %q, %v; want the original", got, err)
	}
	// A delete without a version id only hides the object behind a marker.
	if _, err := admin.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("anchors"), Key: aws.String(r.Key)}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, r.Key, r.VersionID); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Get after a delete marker = %q, %v", got, err)
	}
	if _, err := s.Get(ctx, "witnz/anchors/none.json", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, r.Key, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing version = %v, want ErrNotFound", err)
	}
	keys, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = keys // the key is behind a delete marker now; List shows current objects only
}

func TestS3RefusesBadSetups(t *testing.T) {
	m := testenv.MinIO(t)
	createBucket(t, m, "plain", false)
	createBucket(t, m, "locked", true)
	ctx := t.Context()

	if _, err := OpenS3(ctx, s3Config(m, "plain")); err == nil || !strings.Contains(err.Error(), "--s3-bucket plain does not have Object Lock enabled") {
		t.Errorf("bucket without Object Lock: %v", err)
	}
	if _, err := OpenS3(ctx, s3Config(m, "nope")); err == nil || !strings.Contains(err.Error(), "--s3-bucket nope does not exist") {
		t.Errorf("missing bucket: %v", err)
	}
	wrong := s3Config(m, "locked")
	wrong.SecretAccessKey = "not-the-secret"
	if _, err := OpenS3(ctx, wrong); err == nil || !strings.Contains(err.Error(), "the store refused the credentials (SignatureDoesNotMatch)") || !strings.Contains(err.Error(), "--s3-access-key-id") {
		t.Errorf("wrong secret: %v", err)
	}
	wrong = s3Config(m, "locked")
	wrong.AccessKeyID = "nobody"
	if _, err := OpenS3(ctx, wrong); err == nil || !strings.Contains(err.Error(), "the store refused the credentials (InvalidAccessKeyId)") {
		t.Errorf("unknown access key: %v", err)
	}
	// This host's clock an hour ahead of the store's: the store refuses
	// the signature, or the sink sees the skew in the Date header.
	skewed := s3Config(m, "locked")
	skewed.Now = func() time.Time { return time.Now().Add(time.Hour) }
	skewed.HTTPClient = nil
	if _, err := OpenS3(ctx, skewed); err == nil || !strings.Contains(err.Error(), "clock") {
		t.Errorf("clock skew: %v", err)
	}
	if _, err := OpenS3(ctx, S3Config{Endpoint: "http://" + testenv.FreeAddr(t), Bucket: "x", Region: "us-east-1", PathStyle: true, AccessKeyID: "a", SecretAccessKey: "b"}); err == nil || !strings.Contains(err.Error(), "check --s3-endpoint") {
		t.Errorf("unreachable endpoint: %v", err)
	}
}
