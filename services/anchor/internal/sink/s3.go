package sink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// S3Config configures the S3 Object Lock sink.
type S3Config struct {
	// Endpoint is the base URL of an S3-compatible store; empty uses AWS.
	Endpoint string
	Bucket   string
	Region   string
	// PathStyle addresses buckets as endpoint/bucket rather than
	// bucket.endpoint (most S3-compatible stores need it).
	PathStyle bool
	// Prefix is put before every key.
	Prefix string
	// Retain is how long each object is locked in COMPLIANCE mode.
	Retain time.Duration
	// AccessKeyID and SecretAccessKey, when set, replace the standard
	// AWS credential chain (environment, shared config, instance role).
	AccessKeyID     string
	SecretAccessKey string
	// MaxClockSkew bounds the difference between this host's clock and
	// the store's; 0 means DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// HTTPClient, when set, is used for every request.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultMaxClockSkew is the clock difference with the store beyond which
// the sink refuses to work: retain-until dates are computed from this
// host's clock, and S3 refuses signatures beyond 15 minutes anyway.
const DefaultMaxClockSkew = 5 * time.Minute

// S3 is a sink in an S3 bucket with Object Lock: every object is written
// with COMPLIANCE retention, which nobody, the bucket's owner and the
// store's root account included, can shorten or lift before it ends.
type S3 struct {
	client *s3.Client
	cfg    S3Config
}

var _ Sink = (*S3)(nil)

// OpenS3 builds the client and checks, against the store, that the
// credentials work, that the bucket exists with Object Lock enabled, and
// that the clocks agree.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxClockSkew == 0 {
		cfg.MaxClockSkew = DefaultMaxClockSkew
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(cfg.Region)}
	if cfg.AccessKeyID != "" || cfg.SecretAccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, awsconfig.WithHTTPClient(cfg.HTTPClient))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("--sink s3: AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		o.RetryMaxAttempts = 3
	})
	s := &S3{client: client, cfg: cfg}
	if err := s.checkBucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// checkBucket asks for the bucket's Object Lock configuration and checks
// the store's clock from the answer's Date header.
func (s *S3) checkBucket(ctx context.Context) error {
	out, err := s.client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(s.cfg.Bucket)})
	var ae smithy.APIError
	if errors.As(err, &ae) && (ae.ErrorCode() == "ObjectLockConfigurationNotFoundError" || ae.ErrorCode() == "InvalidBucketState") {
		// Some stores answer so for a bucket that does not exist either.
		if _, herr := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Bucket)}); herr != nil {
			var nf *types.NotFound
			if errors.As(herr, &nf) {
				return s.noBucket()
			}
		}
	}
	if err != nil {
		return s.explain("check Object Lock on the bucket", err)
	}
	if err := s.checkClock(out.ResultMetadata); err != nil {
		return err
	}
	if out.ObjectLockConfiguration == nil || out.ObjectLockConfiguration.ObjectLockEnabled != types.ObjectLockEnabledEnabled {
		return s.noObjectLock()
	}
	return nil
}

func (s *S3) noBucket() error {
	return fmt.Errorf("--s3-bucket %s does not exist at %s: create it with Object Lock enabled", s.cfg.Bucket, s.endpoint())
}

func (s *S3) noObjectLock() error {
	return fmt.Errorf("--s3-bucket %s does not have Object Lock enabled: anchors need write-once storage; create a bucket with Object Lock (e.g. `aws s3api create-bucket --bucket NAME --object-lock-enabled-for-bucket`, or `mc mb --with-lock`) and point --s3-bucket at it", s.cfg.Bucket)
}

// checkClock compares the store's Date header with this host's clock.
func (s *S3) checkClock(md middleware.Metadata) error {
	raw, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response)
	if !ok || raw == nil {
		return nil
	}
	date, err := http.ParseTime(raw.Header.Get("Date"))
	if err != nil {
		return nil
	}
	if skew := s.cfg.Now().Sub(date); skew > s.cfg.MaxClockSkew || -skew > s.cfg.MaxClockSkew {
		return s.skewError(skew.Round(time.Second))
	}
	return nil
}

func (s *S3) skewError(skew time.Duration) error {
	return fmt.Errorf("--sink s3: this host's clock differs from the store's (%s) by %s, more than %s: retain-until dates would be wrong; synchronize the clock (NTP) of this host or of the store", s.endpoint(), skew, s.cfg.MaxClockSkew)
}

func (s *S3) endpoint() string {
	if s.cfg.Endpoint != "" {
		return s.cfg.Endpoint
	}
	return "AWS S3 " + s.cfg.Region
}

// explain turns a store error into one line naming the cause and the fix.
func (s *S3) explain(what string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId":
			return fmt.Errorf("--sink s3: %s: the store refused the credentials (%s): set the access key and secret with --s3-access-key-id/--s3-secret-access-key or the standard AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)", what, ae.ErrorCode())
		case "AccessDenied":
			return fmt.Errorf("--sink s3: %s on bucket %s: access denied: grant these credentials s3:GetBucketObjectLockConfiguration, s3:PutObject, s3:PutObjectRetention, s3:GetObject, s3:GetObjectVersion and s3:ListBucket", what, s.cfg.Bucket)
		case "NoSuchBucket":
			return s.noBucket()
		case "ObjectLockConfigurationNotFoundError", "InvalidBucketState":
			return s.noObjectLock()
		case "RequestTimeTooSkewed":
			return fmt.Errorf("--sink s3: %s: the store says this host's clock is too far from its own (RequestTimeTooSkewed): synchronize the clock (NTP)", what)
		}
		return fmt.Errorf("--sink s3: %s on bucket %s at %s: %s: %s", what, s.cfg.Bucket, s.endpoint(), ae.ErrorCode(), ae.ErrorMessage())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("--sink s3: %s: %w", what, err)
	}
	return fmt.Errorf("--sink s3: %s: cannot reach %s: %v; check --s3-endpoint and the network", what, s.endpoint(), err)
}

// Kind is KindS3.
func (s *S3) Kind() string { return KindS3 }

// Put writes body under Prefix+key with COMPLIANCE retention until now +
// Retain and a SHA-256 checksum the store verifies. An existing object
// under the key is never replaced: the write is conditional (If-None-Match)
// and, in a versioned bucket, would only add a version anyway.
func (s *S3) Put(ctx context.Context, key string, body []byte) (Receipt, error) {
	sum := sha256.Sum256(body)
	sum64 := base64.StdEncoding.EncodeToString(sum[:])
	retain := s.cfg.Now().Add(s.cfg.Retain).UTC().Truncate(time.Second)
	out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:                    aws.String(s.cfg.Bucket),
		Key:                       aws.String(s.cfg.Prefix + key),
		Body:                      bytes.NewReader(body),
		ContentLength:             aws.Int64(int64(len(body))),
		ContentType:               aws.String("application/json"),
		ChecksumAlgorithm:         types.ChecksumAlgorithmSha256,
		ChecksumSHA256:            aws.String(sum64),
		ObjectLockMode:            types.ObjectLockModeCompliance,
		ObjectLockRetainUntilDate: aws.Time(retain),
		IfNoneMatch:               aws.String("*"),
	})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "PreconditionFailed" {
			return Receipt{}, fmt.Errorf("s3 sink: %s/%s: %w", s.cfg.Bucket, s.cfg.Prefix+key, ErrExists)
		}
		return Receipt{}, s.explain("put "+s.cfg.Prefix+key, err)
	}
	if err := s.checkClock(out.ResultMetadata); err != nil {
		return Receipt{}, err
	}
	if got := aws.ToString(out.ChecksumSHA256); got != sum64 {
		return Receipt{}, fmt.Errorf("s3 sink: %s/%s: the store confirmed SHA-256 %q, the object has %q: the stored object cannot be trusted", s.cfg.Bucket, s.cfg.Prefix+key, got, sum64)
	}
	if aws.ToString(out.VersionId) == "" {
		return Receipt{}, fmt.Errorf("s3 sink: %s/%s: the store returned no version id: the bucket is not versioned, so it has no Object Lock", s.cfg.Bucket, s.cfg.Prefix+key)
	}
	return Receipt{
		Kind: KindS3, Bucket: s.cfg.Bucket, Key: s.cfg.Prefix + key,
		VersionID: aws.ToString(out.VersionId), ETag: aws.ToString(out.ETag),
		SHA256: sum, Size: int64(len(body)), RetainUntil: retain,
	}, nil
}

// Get reads an object version (versionID "" is the current one); the
// store checks the SHA-256 it holds for the object as it sends it.
func (s *S3) Get(ctx context.Context, key, versionID string) ([]byte, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled}
	if versionID != "" {
		in.VersionId = aws.String(versionID)
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			switch ae.ErrorCode() {
			case "NoSuchKey", "NoSuchVersion", "NotFound", "MethodNotAllowed":
				// MethodNotAllowed: the version is a delete marker.
				return nil, fmt.Errorf("s3 sink: %s/%s version %q: %w", s.cfg.Bucket, key, versionID, ErrNotFound)
			}
		}
		return nil, s.explain("get "+key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("s3 sink: read %s/%s version %q: %w", s.cfg.Bucket, key, versionID, err)
	}
	return b, nil
}

// List returns the keys under Prefix.
func (s *S3) List(ctx context.Context) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.cfg.Prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.explain("list", err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Check asks for the Object Lock configuration again: the bucket is there,
// the credentials work and the clocks agree.
func (s *S3) Check(ctx context.Context) error { return s.checkBucket(ctx) }

// Client is the S3 client, for tests that probe the store directly.
func (s *S3) Client() *s3.Client { return s.client }

// Bucket is the bucket of the sink.
func (s *S3) Bucket() string { return s.cfg.Bucket }
