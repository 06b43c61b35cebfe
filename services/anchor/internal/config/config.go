// Package config reads the anchor service's configuration from flags and
// environment variables and checks it. Flags win over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
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
	// Sink is where checkpoints are anchored: "dir" for now.
	Sink string
	// SinkDir is the directory of the dir sink.
	SinkDir string
}

// ErrHelp is returned by Parse when -h or --help was given; Usage has the
// text to show.
var ErrHelp = flag.ErrHelp

type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func flagSet(c *Config, getenv func(string) string, witnesses *stringList) *flag.FlagSet {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("anchor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Listen, "listen", env("WITNZ_LISTEN", DefaultListen), "host:port of the Anchor API, mutual TLS (env WITNZ_LISTEN)")
	fs.StringVar(&c.AdminListen, "admin-listen", env("WITNZ_ADMIN_LISTEN", ""), "host:port of plain-HTTP /healthz, /readyz, /metrics; empty = off (env WITNZ_ADMIN_LISTEN)")
	fs.StringVar(&c.TLS.Cert, "tls-cert", env("WITNZ_TLS_CERT", ""), "PEM certificate with identity spiffe://witnz/service/anchor (env WITNZ_TLS_CERT)")
	fs.StringVar(&c.TLS.Key, "tls-key", env("WITNZ_TLS_KEY", ""), "PEM private key of --tls-cert (env WITNZ_TLS_KEY)")
	fs.StringVar(&c.TLS.CA, "tls-ca", env("WITNZ_TLS_CA", ""), "PEM CA bundle that signs peer certificates (env WITNZ_TLS_CA)")
	fs.StringVar(&c.Log.Level, "log-level", env("WITNZ_LOG_LEVEL", "info"), "debug, info, warn or error (env WITNZ_LOG_LEVEL)")
	fs.StringVar(&c.Log.Format, "log-format", env("WITNZ_LOG_FORMAT", "json"), "json or text (env WITNZ_LOG_FORMAT)")
	fs.Var(witnesses, "witness", "https://host:port API URL of a witness node; repeat for each (env WITNZ_WITNESS, comma-separated)")
	fs.StringVar(&c.Sink, "sink", env("WITNZ_SINK", SinkDir), "where checkpoints are anchored: dir (s3 comes later) (env WITNZ_SINK)")
	fs.StringVar(&c.SinkDir, "sink-dir", env("WITNZ_SINK_DIR", ""), "directory of the dir sink; created if missing (env WITNZ_SINK_DIR)")
	return fs
}

// Parse reads args (without the program name) and the environment.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	var witnesses stringList
	fs := flagSet(&c, getenv, &witnesses)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, ErrHelp
		}
		return Config{}, fmt.Errorf("%w (see anchor -h)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: the anchor service takes only flags (see anchor -h)", fs.Arg(0))
	}
	c.Witnesses = witnesses
	if len(c.Witnesses) == 0 {
		c.Witnesses = splitList(getenv("WITNZ_WITNESS"))
	}
	return c, nil
}

// Usage describes every flag.
func Usage() string {
	var c Config
	var l stringList
	fs := flagSet(&c, func(string) string { return "" }, &l)
	var b strings.Builder
	b.WriteString("Usage: anchor [flags]\n\nPublishes cosigned witness checkpoints to write-once storage.\n\nFlags:\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

// Validate checks the configuration; each message names the flag at fault
// and how to fix it. Whether --sink-dir can be written is checked when the
// sink is opened.
func (c Config) Validate() error {
	if err := ValidateHostPort("--listen", c.Listen); err != nil {
		return err
	}
	if c.AdminListen != "" {
		if err := ValidateHostPort("--admin-listen", c.AdminListen); err != nil {
			return err
		}
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if err := c.Log.Validate(); err != nil {
		return err
	}
	if len(c.Witnesses) == 0 {
		return errors.New("--witness is required (repeat it, or WITNZ_WITNESS comma-separated): the https://host:port API URL of every witness node")
	}
	for _, w := range c.Witnesses {
		if err := ValidateURL("--witness", w); err != nil {
			return err
		}
	}
	switch c.Sink {
	case SinkDir:
		if c.SinkDir == "" {
			return errors.New("--sink-dir is required with --sink dir: the directory anchored checkpoints are written to, e.g. /var/lib/witnz/anchors")
		}
	case SinkS3:
		return errors.New("--sink s3 is not available in this version: the S3 Object Lock sink arrives with issue 8; use --sink dir --sink-dir PATH until then")
	default:
		return fmt.Errorf("--sink %q is not a sink: use dir (s3 arrives with issue 8)", c.Sink)
	}
	return nil
}

// ValidateHostPort checks that addr is host:port with a numeric port.
func ValidateHostPort(flagName, addr string) error {
	if addr == "" {
		return fmt.Errorf("%s is required: a host:port to listen on, e.g. 127.0.0.1:7060", flagName)
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return fmt.Errorf("%s %q is not host:port (e.g. 127.0.0.1:7060 or :7060)", flagName, addr)
	}
	return nil
}

// ValidateURL checks that raw is an https://host:port URL without a path.
func ValidateURL(flagName, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%s %q is not an https://host:port URL (e.g. https://127.0.0.1:7000)", flagName, raw)
	}
	return nil
}
