// Package config reads the alert service's configuration from flags and
// environment variables (flags win) and checks it.
package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/svcconfig"
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

// DefaultListen is the address of the Alert API when --listen is not given.
const DefaultListen = "127.0.0.1:7040"

const usage = "usage: alert --pg-dsn DSN --redis-addr HOST:PORT --tls-cert FILE --tls-key FILE --tls-ca FILE [--listen HOST:PORT] [--admin-listen HOST:PORT] [--redis-channel NAME] [--log-level LEVEL] [--log-format json|text]"

func (c *Config) common() svcconfig.Common {
	return svcconfig.Common{
		Listen: &c.Listen, AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log,
		DefaultListen: DefaultListen, Identity: "service/alert",
	}
}

// Parse reads flags from args, falling back to environment variables read
// through getenv for flags that are not given.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	fs := svcconfig.NewFlagSet("alert")
	c.common().Register(fs, getenv)
	svcconfig.StringVar(fs, getenv, &c.PGDSN, "pg-dsn", "WITNZ_PG_DSN", "", "PostgreSQL connection string of the alert service's own database")
	svcconfig.StringVar(fs, getenv, &c.RedisAddr, "redis-addr", "WITNZ_REDIS_ADDR", "", "host:port of the Redis server alerts are published on")
	svcconfig.StringVar(fs, getenv, &c.RedisChannel, "redis-channel", "WITNZ_REDIS_CHANNEL", DefaultRedisChannel, "Redis pub/sub channel for live alerts")
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
	if c.PGDSN == "" {
		return errors.New("--pg-dsn is required: the connection string of the alert database, e.g. postgres://witnz@127.0.0.1:5432/witnz_alert")
	}
	if _, err := pgx.ParseConfig(c.PGDSN); err != nil {
		return fmt.Errorf("--pg-dsn is not a valid PostgreSQL connection string: %v (use postgres://USER@HOST:PORT/DB or the key=value form)", err)
	}
	if c.RedisAddr == "" {
		return errors.New("--redis-addr is required: host:port of the Redis server live alerts are published on, e.g. 127.0.0.1:6379")
	}
	if err := svcconfig.ValidateDialAddr("--redis-addr", c.RedisAddr, "127.0.0.1:6379"); err != nil {
		return err
	}
	if strings.TrimSpace(c.RedisChannel) == "" {
		return fmt.Errorf("--redis-channel must not be empty (the default is %s)", DefaultRedisChannel)
	}
	return nil
}
