// Package config reads the verifier's configuration from flags and
// environment variables and checks it. Flags win over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/svcconfig"
)

// DefaultListen is the address of the Verifier API when --listen is not given.
const DefaultListen = "127.0.0.1:7030"

// Config is everything the verifier is started with.
type Config struct {
	// Listen is the host:port of the Connect/gRPC API (mutual TLS).
	Listen string
	// AdminListen is the host:port of the plain-HTTP /healthz, /readyz and
	// /metrics listener; empty turns it off.
	AdminListen string
	TLS         mtls.Files
	Log         logging.Options
	// PGDSN is the URL of the protected database, for a read-only role.
	PGDSN string
	// Witnesses are the https://host:port API URLs of the witness nodes.
	Witnesses []string
	// KeyFile holds the commitment key K; when empty KeyHex is used.
	KeyFile string
	// KeyHex is the commitment key from WITNZ_COMMIT_KEY (64 hex
	// characters). It is a secret: never log it.
	KeyHex string
}

// ErrHelp is returned by Parse when -h or --help was given; Usage has the
// text to show.
var ErrHelp = svcconfig.ErrHelp

func (c *Config) common() svcconfig.Common {
	return svcconfig.Common{
		Listen: &c.Listen, AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log,
		DefaultListen: DefaultListen, Identity: "service/verifier",
	}
}

func flagSet(c *Config, getenv func(string) string) *flag.FlagSet {
	fs := svcconfig.NewFlagSet("verifier")
	c.common().Register(fs, getenv)
	svcconfig.StringVar(fs, getenv, &c.PGDSN, "pg-dsn", "WITNZ_PG_DSN", "", "PostgreSQL URL of the protected database, read-only role")
	svcconfig.ListVar(fs, getenv, &c.Witnesses, "witness", "WITNZ_WITNESS", "https://host:port API URL of a witness node")
	svcconfig.StringVar(fs, getenv, &c.KeyFile, "key-file", "WITNZ_KEY_FILE", "", "file holding the commitment key K (or the key itself in WITNZ_COMMIT_KEY)")
	return fs
}

// Parse reads args (without the program name) and the environment.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	if err := svcconfig.Parse(flagSet(&c, getenv), args); err != nil {
		return Config{}, err
	}
	c.KeyHex = getenv("WITNZ_COMMIT_KEY")
	return c, nil
}

// Usage describes every flag.
func Usage() string {
	return svcconfig.Usage(flagSet(&Config{}, func(string) string { return "" }),
		"Usage: verifier [flags]\n\nVerifies live PostgreSQL tables against the witness cluster.\n\nFlags:\n")
}

// Validate checks the configuration; each message names the flag at fault
// and how to fix it.
func (c Config) Validate() error {
	if err := c.common().Validate(); err != nil {
		return err
	}
	if c.PGDSN == "" {
		return errors.New("--pg-dsn is required (or WITNZ_PG_DSN): the URL of the protected database for a read-only role, e.g. postgres://witnz_verifier@127.0.0.1:5432/app")
	}
	if _, err := pgx.ParseConfig(c.PGDSN); err != nil {
		return fmt.Errorf("--pg-dsn: %w (want a URL like postgres://user@host:5432/db)", err)
	}
	if len(c.Witnesses) == 0 {
		return errors.New("--witness is required (repeat it, or WITNZ_WITNESS comma-separated): the https://host:port API URL of every witness node")
	}
	return svcconfig.ValidateURLs("--witness", c.Witnesses)
}
