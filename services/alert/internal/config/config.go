// Package config reads the alert service's configuration from flags and
// environment variables (flags win) and checks it.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

// DefaultRedisChannel is the pub/sub channel stored alerts are published on.
const DefaultRedisChannel = "witnz:alerts"

// Config is everything the alert service needs to start.
type Config struct {
	// Listen is the host:port of the Connect/gRPC listener (mutual TLS).
	Listen string
	// AdminListen is the host:port of the plain-HTTP health and metrics
	// listener; empty turns it off.
	AdminListen string
	TLS         mtls.Files
	Log         logging.Options

	// PGDSN is the connection string of the alert service's own database.
	PGDSN string
	// RedisAddr is the host:port of the Redis server alerts are published on.
	RedisAddr string
	// RedisChannel is the pub/sub channel alerts are published on.
	RedisChannel string
}

// Parse reads flags from args, falling back to environment variables read
// through getenv for flags that are not given.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("alert", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	str := func(p *string, name, env, def, usage string) {
		v := getenv(env)
		if v == "" {
			v = def
		}
		fs.StringVar(p, name, v, usage+" (env "+env+")")
	}
	str(&c.Listen, "listen", "WITNZ_LISTEN", "127.0.0.1:7040", "host:port of the Connect/gRPC listener (mutual TLS)")
	str(&c.AdminListen, "admin-listen", "WITNZ_ADMIN_LISTEN", "", "host:port of the plain-HTTP /healthz, /readyz, /metrics listener; empty = off")
	str(&c.TLS.Cert, "tls-cert", "WITNZ_TLS_CERT", "", "PEM certificate of this service")
	str(&c.TLS.Key, "tls-key", "WITNZ_TLS_KEY", "", "PEM private key of --tls-cert")
	str(&c.TLS.CA, "tls-ca", "WITNZ_TLS_CA", "", "PEM CA bundle that signs peer certificates")
	str(&c.Log.Level, "log-level", "WITNZ_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.Log.Format, "log-format", "WITNZ_LOG_FORMAT", "json", "json or text")
	str(&c.PGDSN, "pg-dsn", "WITNZ_PG_DSN", "", "PostgreSQL connection string of the alert service's own database")
	str(&c.RedisAddr, "redis-addr", "WITNZ_REDIS_ADDR", "", "host:port of the Redis server alerts are published on")
	str(&c.RedisChannel, "redis-channel", "WITNZ_REDIS_CHANNEL", DefaultRedisChannel, "Redis pub/sub channel for live alerts")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, errors.New("usage: alert --pg-dsn DSN --redis-addr HOST:PORT --tls-cert FILE --tls-key FILE --tls-ca FILE [--listen HOST:PORT] [--admin-listen HOST:PORT] [--redis-channel NAME] [--log-level LEVEL] [--log-format json|text]")
		}
		return Config{}, fmt.Errorf("%w (run with -h for the list of flags)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: every setting is a --flag", fs.Arg(0))
	}
	return c, nil
}

// Validate checks the configuration; its errors name the flag at fault and
// how to fix it.
func (c Config) Validate() error {
	if err := checkHostPort("--listen", c.Listen, false); err != nil {
		return err
	}
	if c.AdminListen != "" {
		if err := checkHostPort("--admin-listen", c.AdminListen, false); err != nil {
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
		return errors.New("--pg-dsn is required: the connection string of the alert database, e.g. postgres://witnz@127.0.0.1:5432/witnz_alert")
	}
	if _, err := pgx.ParseConfig(c.PGDSN); err != nil {
		return fmt.Errorf("--pg-dsn is not a valid PostgreSQL connection string: %v (use postgres://USER@HOST:PORT/DB or the key=value form)", err)
	}
	if c.RedisAddr == "" {
		return errors.New("--redis-addr is required: host:port of the Redis server live alerts are published on, e.g. 127.0.0.1:6379")
	}
	if err := checkHostPort("--redis-addr", c.RedisAddr, true); err != nil {
		return err
	}
	if strings.TrimSpace(c.RedisChannel) == "" {
		return fmt.Errorf("--redis-channel must not be empty (the default is %s)", DefaultRedisChannel)
	}
	return nil
}

func checkHostPort(flagName, v string, needHost bool) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil || port == "" || (needHost && host == "") {
		return fmt.Errorf("%s %q is not host:port (e.g. 127.0.0.1:6379)", flagName, v)
	}
	return nil
}
