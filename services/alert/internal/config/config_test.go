package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

var valid = []string{
	"--tls-cert", "c.crt", "--tls-key", "c.key", "--tls-ca", "ca.crt",
	"--pg-dsn", "postgres://witnz@127.0.0.1:5432/witnz_alert", "--redis-addr", "127.0.0.1:6379",
}

func TestParseFlagsWinOverEnv(t *testing.T) {
	got, err := Parse([]string{"--listen", "127.0.0.1:9000", "--redis-addr", "127.0.0.1:1"}, env(map[string]string{
		"WITNZ_LISTEN":        "127.0.0.1:8000",
		"WITNZ_REDIS_ADDR":    "127.0.0.1:2",
		"WITNZ_REDIS_CHANNEL": "other",
		"WITNZ_PG_DSN":        "postgres://x@h/db",
		"WITNZ_TLS_CERT":      "a", "WITNZ_TLS_KEY": "b", "WITNZ_TLS_CA": "c",
		"WITNZ_ADMIN_LISTEN": "127.0.0.1:9100", "WITNZ_LOG_LEVEL": "debug", "WITNZ_LOG_FORMAT": "text",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: "127.0.0.1:9000", AdminListen: "127.0.0.1:9100",
		TLS:   mtls.Files{Cert: "a", Key: "b", CA: "c"},
		Log:   logging.Options{Level: "debug", Format: "text"},
		PGDSN: "postgres://x@h/db", RedisAddr: "127.0.0.1:1", RedisChannel: "other",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	got, err := Parse(valid, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got.RedisChannel != "witnz:alerts" || got.AdminListen != "" || got.Listen == "" {
		t.Errorf("defaults: %+v", got)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestErrorsNameTheFlag(t *testing.T) {
	without := func(flag string) []string {
		var out []string
		for i := 0; i < len(valid); i += 2 {
			if valid[i] != flag {
				out = append(out, valid[i], valid[i+1])
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no pg-dsn", without("--pg-dsn"), "--pg-dsn is required"},
		{"bad pg-dsn", append(without("--pg-dsn"), "--pg-dsn", "postgres://[bad"), "--pg-dsn is not a valid"},
		{"no redis", without("--redis-addr"), "--redis-addr is required"},
		{"bad redis", append(without("--redis-addr"), "--redis-addr", "localhost"), "--redis-addr \"localhost\" is not host:port"},
		{"no cert", without("--tls-cert"), "--tls-cert is required"},
		{"no ca", without("--tls-ca"), "--tls-ca is required"},
		{"bad listen", append(valid, "--listen", "nope"), "--listen"},
		{"bad log level", append(valid, "--log-level", "loud"), "--log-level"},
		{"empty channel", append(valid, "--redis-channel", " "), "--redis-channel"},
		{"unknown flag", append(valid, "--nope"), "flag provided but not defined: -nope"},
		{"positional", append(valid, "extra"), `unexpected argument "extra"`},
	} {
		cfg, err := Parse(tc.args, env(nil))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want it to contain %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans several lines: %q", tc.name, err)
		}
	}
}
