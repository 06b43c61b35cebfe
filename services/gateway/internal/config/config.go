// Package config reads the gateway's configuration from flags and
// environment variables (flags win) and checks it.
package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/svcconfig"
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

// DefaultListen is the address of the Gateway API when --listen is not given.
const DefaultListen = "127.0.0.1:7050"

const usage = "usage: gateway --alert URL --redis-addr HOST:PORT --tls-cert FILE --tls-key FILE --tls-ca FILE [--witness URL]... [--ingest URL] [--verifier URL] [--anchor URL] [--listen HOST:PORT] [--admin-listen HOST:PORT] [--redis-channel NAME] [--log-level LEVEL] [--log-format json|text]"

func (c *Config) common() svcconfig.Common {
	return svcconfig.Common{
		Listen: &c.Listen, AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log,
		DefaultListen: DefaultListen, Identity: "service/gateway",
	}
}

// Parse reads flags from args, falling back to environment variables read
// through getenv for flags that are not given. Repeatable flags take a
// comma-separated list from the environment.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	fs := svcconfig.NewFlagSet("gateway")
	c.common().Register(fs, getenv)
	str := func(p *string, name, env, def, usage string) {
		svcconfig.StringVar(fs, getenv, p, name, env, def, usage)
	}
	str(&c.Ingest, "ingest", "WITNZ_INGEST", "", "https://host:port of cdc-ingest")
	str(&c.Alert, "alert", "WITNZ_ALERT", "", "https://host:port of the alert service")
	str(&c.Verifier, "verifier", "WITNZ_VERIFIER", "", "https://host:port of the verifier")
	str(&c.Anchor, "anchor", "WITNZ_ANCHOR", "", "https://host:port of the anchor service")
	str(&c.RedisAddr, "redis-addr", "WITNZ_REDIS_ADDR", "", "host:port of the Redis server live alerts come from")
	str(&c.RedisChannel, "redis-channel", "WITNZ_REDIS_CHANNEL", DefaultRedisChannel, "Redis pub/sub channel of live alerts")
	svcconfig.ListVar(fs, getenv, &c.Witnesses, "witness", "WITNZ_WITNESS", "https://host:port of a witness node's API; repeat for every node")
	if err := svcconfig.Parse(fs, args); err != nil {
		if errors.Is(err, svcconfig.ErrHelp) {
			return Config{}, errors.New(usage)
		}
		return Config{}, err
	}
	return c, nil
}

// Validate checks the configuration; its errors name the flag at fault and
// how to fix it.
func (c Config) Validate() error {
	if err := c.common().Validate(); err != nil {
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
	if err := svcconfig.ValidateDialAddr("--redis-addr", c.RedisAddr, "127.0.0.1:6379"); err != nil {
		return err
	}
	if strings.TrimSpace(c.RedisChannel) == "" {
		return fmt.Errorf("--redis-channel must not be empty (the default is %s)", DefaultRedisChannel)
	}
	return nil
}

// CheckURL checks that v is an https://host:port URL of a witnz service.
func CheckURL(flagName, v string) error {
	if !svcconfig.IsServiceURL(v) {
		return fmt.Errorf("%s %q is not https://host:port (witnz services speak mutual TLS; e.g. https://127.0.0.1:7010)", flagName, v)
	}
	return nil
}
