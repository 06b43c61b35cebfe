// Package config reads the anchor service's configuration from flags and
// environment variables and checks it. Flags win over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"

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
	// Sink is where checkpoints are anchored: "dir" for now.
	Sink string
	// SinkDir is the directory of the dir sink.
	SinkDir string
}

// ErrHelp is returned by Parse when -h or --help was given; Usage has the
// text to show.
var ErrHelp = svcconfig.ErrHelp

func (c *Config) common() svcconfig.Common {
	return svcconfig.Common{
		Listen: &c.Listen, AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log,
		DefaultListen: DefaultListen, Identity: "service/anchor",
	}
}

func flagSet(c *Config, getenv func(string) string) *flag.FlagSet {
	fs := svcconfig.NewFlagSet("anchor")
	c.common().Register(fs, getenv)
	svcconfig.ListVar(fs, getenv, &c.Witnesses, "witness", "WITNZ_WITNESS", "https://host:port API URL of a witness node")
	svcconfig.StringVar(fs, getenv, &c.Sink, "sink", "WITNZ_SINK", SinkDir, "where checkpoints are anchored: dir (s3 comes later)")
	svcconfig.StringVar(fs, getenv, &c.SinkDir, "sink-dir", "WITNZ_SINK_DIR", "", "directory of the dir sink; created if missing")
	return fs
}

// Parse reads args (without the program name) and the environment.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	if err := svcconfig.Parse(flagSet(&c, getenv), args); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Usage describes every flag.
func Usage() string {
	return svcconfig.Usage(flagSet(&Config{}, func(string) string { return "" }),
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
		return errors.New("--sink s3 is not available in this version: the S3 Object Lock sink arrives with issue 8; use --sink dir --sink-dir PATH until then")
	default:
		return fmt.Errorf("--sink %q is not a sink: use dir (s3 arrives with issue 8)", c.Sink)
	}
	return nil
}
