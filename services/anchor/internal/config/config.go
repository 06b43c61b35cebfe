// Package config reads the anchor service's configuration from flags and
// environment variables and checks it. Flags win over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/svcconfig"
)

// DefaultListen is the address of the Anchor API when --listen is not given.
const DefaultListen = "127.0.0.1:7060"

// Sink kinds.
const (
	SinkDir = "dir"
	SinkS3  = "s3"
)

// Config is everything the anchor service is started with.
type Config struct {
	// Listen is the host:port of the Connect/gRPC API (mutual TLS).
	Listen string
	// AdminListen is the host:port of the plain-HTTP /healthz, /readyz and
	// /metrics listener; empty turns it off.
	AdminListen string
	TLS         mtls.Files
	Log         logging.Options
	// Witnesses are the https://host:port API URLs of the witness nodes.
	Witnesses []string
	// Sink is where checkpoints are anchored: "dir" or "s3".
	Sink string
	// SinkDir is the directory of the dir sink.
	SinkDir string
	// DataDir holds the receipt store (anchor.db).
	DataDir string
	// PolicyFile is the witnesses' checkpoint policy (the file every
	// witness node is given with --policy).
	PolicyFile string
	// Interval is how often every table's latest cosigned checkpoint is
	// anchored.
	Interval time.Duration
	// AlertURL is the alert service (https://host:port); empty logs
	// failures only.
	AlertURL string
	S3       S3
}

// S3 configures the S3 Object Lock sink.
type S3 struct {
	Endpoint  string
	Bucket    string
	Region    string
	PathStyle bool
	Prefix    string
	Retain    time.Duration
	// AccessKeyID and SecretAccessKey replace the standard AWS credential
	// chain when set.
	AccessKeyID     string
	SecretAccessKey string
}

// Defaults.
const (
	DefaultInterval = 24 * time.Hour
	DefaultRetain   = 400 * 24 * time.Hour
	DefaultRegion   = "us-east-1"
	DefaultPrefix   = "witnz/anchors/"
)

// ErrHelp is returned by Parse when -h or --help was given; Usage has the
// text to show.
var ErrHelp = svcconfig.ErrHelp

func (c *Config) common() svcconfig.Common {
	return svcconfig.Common{
		Listen: &c.Listen, AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log,
		DefaultListen: DefaultListen, Identity: "service/anchor",
	}
}

// raw holds the flags parsed into other types after flag parsing.
type raw struct {
	interval, retain, pathStyle string
}

func flagSet(c *Config, r *raw, getenv func(string) string) *flag.FlagSet {
	fs := svcconfig.NewFlagSet("anchor")
	c.common().Register(fs, getenv)
	str := func(p *string, name, env, def, help string) { svcconfig.StringVar(fs, getenv, p, name, env, def, help) }
	svcconfig.ListVar(fs, getenv, &c.Witnesses, "witness", "WITNZ_WITNESS", "https://host:port API URL of a witness node")
	str(&c.Sink, "sink", "WITNZ_SINK", SinkDir, "where checkpoints are anchored: dir (local write-once files) or s3 (S3 Object Lock, COMPLIANCE mode)")
	str(&c.SinkDir, "sink-dir", "WITNZ_SINK_DIR", "", "directory of the dir sink; created if missing")
	str(&c.DataDir, "data-dir", "WITNZ_DATA_DIR", "", "directory of the receipt store (anchor.db); created if missing")
	str(&c.PolicyFile, "policy", "WITNZ_POLICY", "", "checkpoint policy file of the witnesses (their --policy): witness keys and k-of-n quorum")
	str(&r.interval, "interval", "WITNZ_ANCHOR_INTERVAL", DefaultInterval.String(), "how often to anchor: a duration (24h, 10m, 30s) or seconds; at least 1s")
	str(&c.AlertURL, "alert", "WITNZ_ALERT", "", "alert service URL https://host:port for failed or late anchors and rewritten history (default: log only)")
	str(&c.S3.Endpoint, "s3-endpoint", "WITNZ_S3_ENDPOINT", "", "base URL of an S3-compatible store, e.g. https://minio.example:9000 (default: AWS)")
	str(&c.S3.Bucket, "s3-bucket", "WITNZ_S3_BUCKET", "", "bucket with Object Lock enabled (required with --sink s3)")
	str(&c.S3.Region, "s3-region", "WITNZ_S3_REGION", DefaultRegion, "region of the bucket")
	r.pathStyle = svcconfig.Env(getenv, "WITNZ_S3_PATH_STYLE", "false")
	fs.Var((*boolString)(&r.pathStyle), "s3-path-style", "address the bucket as endpoint/bucket, as most S3-compatible stores need (env WITNZ_S3_PATH_STYLE)")
	str(&c.S3.Prefix, "s3-prefix", "WITNZ_S3_PREFIX", DefaultPrefix, "prefix of every object key")
	str(&r.retain, "s3-retain", "WITNZ_S3_RETAIN", "400d", "COMPLIANCE retention of each object: a duration, or days as 400d; at least 1d")
	str(&c.S3.AccessKeyID, "s3-access-key-id", "WITNZ_S3_ACCESS_KEY_ID", "", "access key id (default: the standard AWS chain: AWS_ACCESS_KEY_ID, AWS_PROFILE, instance role)")
	str(&c.S3.SecretAccessKey, "s3-secret-access-key", "WITNZ_S3_SECRET_ACCESS_KEY", "", "secret access key, with --s3-access-key-id")
	return fs
}

// Parse reads args (without the program name) and the environment.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var (
		c Config
		r raw
	)
	if err := svcconfig.Parse(flagSet(&c, &r, getenv), args); err != nil {
		return Config{}, err
	}
	var err error
	if c.Interval, err = parseDuration(r.interval); err != nil || c.Interval < time.Second {
		return Config{}, fmt.Errorf("--interval %q: want a duration of at least 1s (24h, 10m, 30s) or a number of seconds", r.interval)
	}
	if c.S3.Retain, err = parseDuration(r.retain); err != nil || c.S3.Retain < 24*time.Hour {
		return Config{}, fmt.Errorf("--s3-retain %q: want a duration of at least one day, as days (400d) or hours (9600h)", r.retain)
	}
	if c.S3.PathStyle, err = strconv.ParseBool(r.pathStyle); err != nil {
		return Config{}, fmt.Errorf("--s3-path-style %q: want true or false", r.pathStyle)
	}
	return c, nil
}

// boolString is a boolean flag kept as text, so that the environment's
// value is checked with the flag's.
type boolString string

func (b *boolString) String() string     { return string(*b) }
func (b *boolString) Set(v string) error { *b = boolString(v); return nil }
func (b *boolString) IsBoolFlag() bool   { return true }

// parseDuration accepts Go durations, whole days ("400d") and plain
// seconds ("30").
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// Usage describes every flag.
func Usage() string {
	return svcconfig.Usage(flagSet(&Config{}, &raw{}, func(string) string { return "" }),
		"Usage: anchor [flags]\n\nPublishes cosigned witness checkpoints to write-once storage.\n\nFlags:\n")
}

// Validate checks the configuration; each message names the flag at fault
// and how to fix it. Whether --sink-dir can be written is checked when the
// sink is opened.
func (c Config) Validate() error {
	if err := c.common().Validate(); err != nil {
		return err
	}
	if len(c.Witnesses) == 0 {
		return errors.New("--witness is required (repeat it, or WITNZ_WITNESS comma-separated): the https://host:port API URL of every witness node")
	}
	if err := svcconfig.ValidateURLs("--witness", c.Witnesses); err != nil {
		return err
	}
	switch c.Sink {
	case SinkDir:
		if c.SinkDir == "" {
			return errors.New("--sink-dir is required with --sink dir: the directory anchored checkpoints are written to, e.g. /var/lib/witnz/anchors")
		}
	case SinkS3:
		if c.S3.Bucket == "" {
			return errors.New("--s3-bucket is required with --sink s3: a bucket created with Object Lock enabled")
		}
		if c.S3.Endpoint != "" {
			if u, err := url.Parse(c.S3.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return fmt.Errorf("--s3-endpoint %q is not an http(s)://host[:port] URL, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000", c.S3.Endpoint)
			}
		}
		if (c.S3.AccessKeyID == "") != (c.S3.SecretAccessKey == "") {
			return errors.New("--s3-access-key-id and --s3-secret-access-key go together: give both, or neither to use the standard AWS credential chain")
		}
	default:
		return fmt.Errorf("--sink %q is not a sink: use dir or s3", c.Sink)
	}
	if c.DataDir == "" {
		return errors.New("--data-dir is required: the directory of the receipt store, e.g. /var/lib/witnz/anchor")
	}
	if c.PolicyFile == "" {
		return errors.New("--policy is required: the checkpoint policy file the witness nodes use (their --policy), to verify cosignatures")
	}
	if c.Interval != 0 && c.Interval < time.Second {
		return fmt.Errorf("--interval %s: want at least 1s", c.Interval)
	}
	if c.AlertURL != "" {
		if err := svcconfig.ValidateURL("--alert", c.AlertURL); err != nil {
			return err
		}
	}
	return nil
}
