// Package config reads the verifier's configuration from flags and
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

	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
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
	fs := flag.NewFlagSet("verifier", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Listen, "listen", env("WITNZ_LISTEN", DefaultListen), "host:port of the Verifier API, mutual TLS (env WITNZ_LISTEN)")
	fs.StringVar(&c.AdminListen, "admin-listen", env("WITNZ_ADMIN_LISTEN", ""), "host:port of plain-HTTP /healthz, /readyz, /metrics; empty = off (env WITNZ_ADMIN_LISTEN)")
	fs.StringVar(&c.TLS.Cert, "tls-cert", env("WITNZ_TLS_CERT", ""), "PEM certificate with identity spiffe://witnz/service/verifier (env WITNZ_TLS_CERT)")
	fs.StringVar(&c.TLS.Key, "tls-key", env("WITNZ_TLS_KEY", ""), "PEM private key of --tls-cert (env WITNZ_TLS_KEY)")
	fs.StringVar(&c.TLS.CA, "tls-ca", env("WITNZ_TLS_CA", ""), "PEM CA bundle that signs peer certificates (env WITNZ_TLS_CA)")
	fs.StringVar(&c.Log.Level, "log-level", env("WITNZ_LOG_LEVEL", "info"), "debug, info, warn or error (env WITNZ_LOG_LEVEL)")
	fs.StringVar(&c.Log.Format, "log-format", env("WITNZ_LOG_FORMAT", "json"), "json or text (env WITNZ_LOG_FORMAT)")
	fs.StringVar(&c.PGDSN, "pg-dsn", env("WITNZ_PG_DSN", ""), "PostgreSQL URL of the protected database, read-only role (env WITNZ_PG_DSN)")
	fs.Var(witnesses, "witness", "https://host:port API URL of a witness node; repeat for each (env WITNZ_WITNESS, comma-separated)")
	fs.StringVar(&c.KeyFile, "key-file", env("WITNZ_KEY_FILE", ""), "file holding the commitment key K (env WITNZ_KEY_FILE; or the key itself in WITNZ_COMMIT_KEY)")
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
		return Config{}, fmt.Errorf("%w (see verifier -h)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: the verifier takes only flags (see verifier -h)", fs.Arg(0))
	}
	c.Witnesses = witnesses
	if len(c.Witnesses) == 0 {
		c.Witnesses = splitList(getenv("WITNZ_WITNESS"))
	}
	c.KeyHex = getenv("WITNZ_COMMIT_KEY")
	return c, nil
}

// Usage describes every flag.
func Usage() string {
	var c Config
	var l stringList
	fs := flagSet(&c, func(string) string { return "" }, &l)
	var b strings.Builder
	b.WriteString("Usage: verifier [flags]\n\nVerifies live PostgreSQL tables against the witness cluster.\n\nFlags:\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

// Validate checks the configuration; each message names the flag at fault
// and how to fix it.
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
	if c.PGDSN == "" {
		return errors.New("--pg-dsn is required (or WITNZ_PG_DSN): the URL of the protected database for a read-only role, e.g. postgres://witnz_verifier@127.0.0.1:5432/app")
	}
	if _, err := pgx.ParseConfig(c.PGDSN); err != nil {
		return fmt.Errorf("--pg-dsn: %w (want a URL like postgres://user@host:5432/db)", err)
	}
	if len(c.Witnesses) == 0 {
		return errors.New("--witness is required (repeat it, or WITNZ_WITNESS comma-separated): the https://host:port API URL of every witness node")
	}
	for _, w := range c.Witnesses {
		if err := ValidateURL("--witness", w); err != nil {
			return err
		}
	}
	return nil
}

// ValidateHostPort checks that addr is host:port with a numeric port.
func ValidateHostPort(flagName, addr string) error {
	if addr == "" {
		return fmt.Errorf("%s is required: a host:port to listen on, e.g. 127.0.0.1:7030", flagName)
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return fmt.Errorf("%s %q is not host:port (e.g. 127.0.0.1:7030 or :7030)", flagName, addr)
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
