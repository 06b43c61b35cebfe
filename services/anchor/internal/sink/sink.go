// Package sink holds the write-once stores anchored objects go to, behind
// one small interface: a local directory (create-exclusive, read-only
// files; for development) and S3 with Object Lock in COMPLIANCE mode.
package sink

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"
)

// Kinds of sink, as receipts name them.
const (
	KindDir = "dir"
	KindS3  = "s3"
)

// Errors of sink operations.
var (
	// ErrNotFound: no object under that key (and version).
	ErrNotFound = errors.New("object not found")
	// ErrExists: an object already has that key; sinks never overwrite.
	ErrExists = errors.New("object already exists")
)

// Receipt is what a sink answers for an object it stored.
type Receipt struct {
	Kind string
	// Bucket is the S3 bucket, or the directory of a dir sink.
	Bucket    string
	Key       string
	VersionID string
	ETag      string
	// SHA256 is the checksum of the stored bytes, as the store confirmed
	// it (S3) or as written and read back (dir).
	SHA256 [sha256.Size]byte
	Size   int64
	// RetainUntil is the Object Lock retain-until date; zero for a sink
	// without retention.
	RetainUntil time.Time
}

// Sink stores objects once and reads them back.
type Sink interface {
	// Kind is KindDir or KindS3.
	Kind() string
	// Put stores body under key, never replacing an object.
	Put(ctx context.Context, key string, body []byte) (Receipt, error)
	// Get reads the object under key; versionID selects an S3 version
	// ("" the current one). ErrNotFound when there is none.
	Get(ctx context.Context, key, versionID string) ([]byte, error)
	// List returns the keys of the stored objects, in key order.
	List(ctx context.Context) ([]string, error)
	// Check reports whether the sink is usable now (readiness).
	Check(ctx context.Context) error
}
