// Package config reads the gateway's configuration from flags and
// environment variables (flags win) and checks it.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

// DefaultRedisChannel is the pub/sub channel the alert service publishes on.
const DefaultRedisChannel = "witnz:alerts"

// Config is everything the gateway needs to start.
type Config struct {
	// Listen is the host:port of the Connect/gRPC listener (mutual TLS).
	Listen string
	// AdminListen is the host:port of the plain-HTTP health and metrics
	// listener; empty turns it off.
	AdminListen string
	TLS         mtls.Files
	Log         logging.Options

	// Witnesses are the API URLs of every witness node (https://host:port).
	Witnesses []string
	// Ingest, Alert, Verifier and Anchor are the API URLs of those services.
	// Alert is required; the others may be empty (reported as not
	// configured).
	Ingest, Alert, Verifier, Anchor string
	// RedisAddr is the host:port of the Redis server live alerts come from.
	RedisAddr string
	// RedisChannel is the pub/sub channel live alerts come on.
	RedisChannel string
}

// Parse reads flags from args, falling back to environment variables read
// through getenv for flags that are not given. Repeatable flags take a
// comma-separated list from the environment.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	str := func(p *string, name, env, def, usage string) {
		v := getenv(env)
		if v == "" {
			v = def
		}
		fs.StringVar(p, name, v, usage+" (env "+env+")")
	}
	str(&c.Listen, "listen", "WITNZ_LISTEN", "127.0.0.1:7050", "host:port of the Connect/gRPC listener (mutual TLS)")
	str(&c.AdminListen, "admin-listen", "WITNZ_ADMIN_LISTEN", "", "host:port of the plain-HTTP /healthz, /readyz, /metrics listener; empty = off")
	str(&c.TLS.Cert, "tls-cert", "WITNZ_TLS_CERT", "", "PEM certificate of this service")
	str(&c.TLS.Key, "tls-key", "WITNZ_TLS_KEY", "", "PEM private key of --tls-cert")
	str(&c.TLS.CA, "tls-ca", "WITNZ_TLS_CA", "", "PEM CA bundle that signs peer certificates")
	str(&c.Log.Level, "log-level", "WITNZ_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.Log.Format, "log-format", "WITNZ_LOG_FORMAT", "json", "json or text")
	str(&c.Ingest, "ingest", "WITNZ_INGEST", "", "https://host:port of cdc-ingest")
	str(&c.Alert, "alert", "WITNZ_ALERT", "", "https://host:port of the alert service")
	str(&c.Verifier, "verifier", "WITNZ_VERIFIER", "", "https://host:port of the verifier")
	str(&c.Anchor, "anchor", "WITNZ_ANCHOR", "", "https://host:port of the anchor service")
	str(&c.RedisAddr, "redis-addr", "WITNZ_REDIS_ADDR", "", "host:port of the Redis server live alerts come from")
	str(&c.RedisChannel, "redis-channel", "WITNZ_REDIS_CHANNEL", DefaultRedisChannel, "Redis pub/sub channel of live alerts")
	var witnesses []string
	fs.Func("witness", "https://host:port of a witness node's API; repeat for every node (env WITNZ_WITNESS, comma-separated)", func(v string) error {
		witnesses = append(witnesses, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, errors.New("usage: gateway --alert URL --redis-addr HOST:PORT --tls-cert FILE --tls-key FILE --tls-ca FILE [--witness URL]... [--ingest URL] [--verifier URL] [--anchor URL] [--listen HOST:PORT] [--admin-listen HOST:PORT] [--redis-channel NAME] [--log-level LEVEL] [--log-format json|text]")
		}
		return Config{}, fmt.Errorf("%w (run with -h for the list of flags)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: every setting is a --flag", fs.Arg(0))
	}
	if witnesses == nil {
		for v := range strings.SplitSeq(getenv("WITNZ_WITNESS"), ",") {
			if v = strings.TrimSpace(v); v != "" {
				witnesses = append(witnesses, v)
			}
		}
	}
	c.Witnesses = witnesses
	return c, nil
}

// Validate checks the configuration; its errors name the flag at fault and
// how to fix it.
func (c Config) Validate() error {
	if err := checkHostPort("--listen", c.Listen); err != nil {
		return err
	}
	if c.AdminListen != "" {
		if err := checkHostPort("--admin-listen", c.AdminListen); err != nil {
			return err
		}
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if err := c.Log.Validate(); err != nil {
		return err
	}
	if c.Alert == "" {
		return errors.New("--alert is required: the https://host:port of the alert service")
	}
	seen := map[string]bool{}
	for _, w := range c.Witnesses {
		if err := CheckURL("--witness", w); err != nil {
			return err
		}
		if seen[w] {
			return fmt.Errorf("--witness %s is given twice; list each node once", w)
		}
		seen[w] = true
	}
	for _, u := range []struct{ flag, v string }{
		{"--ingest", c.Ingest}, {"--alert", c.Alert}, {"--verifier", c.Verifier}, {"--anchor", c.Anchor},
	} {
		if u.v == "" {
			continue
		}
		if err := CheckURL(u.flag, u.v); err != nil {
			return err
		}
	}
	if c.RedisAddr == "" {
		return errors.New("--redis-addr is required: host:port of the Redis server the alert service publishes on, e.g. 127.0.0.1:6379")
	}
	if h, _, err := net.SplitHostPort(c.RedisAddr); err != nil || h == "" {
		return fmt.Errorf("--redis-addr %q is not host:port (e.g. 127.0.0.1:6379)", c.RedisAddr)
	}
	if strings.TrimSpace(c.RedisChannel) == "" {
		return fmt.Errorf("--redis-channel must not be empty (the default is %s)", DefaultRedisChannel)
	}
	return nil
}

// CheckURL checks that v is an https://host:port URL of a witnz service.
func CheckURL(flagName, v string) error {
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return fmt.Errorf("%s %q is not https://host:port (witnz services speak mutual TLS; e.g. https://127.0.0.1:7010)", flagName, v)
	}
	return nil
}

func checkHostPort(flagName, v string) error {
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		return fmt.Errorf("%s %q is not host:port (e.g. 127.0.0.1:7050)", flagName, v)
	}
	return nil
}
