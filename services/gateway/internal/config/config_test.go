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
	"--alert", "https://127.0.0.1:7040", "--redis-addr", "127.0.0.1:6379",
}

func TestParse(t *testing.T) {
	got, err := Parse([]string{
		"--witness", "https://127.0.0.1:7011", "--witness", "https://127.0.0.1:7012",
		"--alert", "https://127.0.0.1:7040", "--listen", "127.0.0.1:9000",
	}, env(map[string]string{
		"WITNZ_WITNESS":  "https://ignored:1,https://ignored:2",
		"WITNZ_LISTEN":   "127.0.0.1:8000",
		"WITNZ_INGEST":   "https://127.0.0.1:7020",
		"WITNZ_ALERT":    "https://ignored:3",
		"WITNZ_VERIFIER": "https://127.0.0.1:7030", "WITNZ_ANCHOR": "https://127.0.0.1:7035",
		"WITNZ_REDIS_ADDR": "127.0.0.1:6379", "WITNZ_REDIS_CHANNEL": "other",
		"WITNZ_TLS_CERT": "a", "WITNZ_TLS_KEY": "b", "WITNZ_TLS_CA": "c",
		"WITNZ_ADMIN_LISTEN": "127.0.0.1:9100", "WITNZ_LOG_LEVEL": "warn", "WITNZ_LOG_FORMAT": "text",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: "127.0.0.1:9000", AdminListen: "127.0.0.1:9100",
		TLS:       mtls.Files{Cert: "a", Key: "b", CA: "c"},
		Log:       logging.Options{Level: "warn", Format: "text"},
		Witnesses: []string{"https://127.0.0.1:7011", "https://127.0.0.1:7012"},
		Ingest:    "https://127.0.0.1:7020", Alert: "https://127.0.0.1:7040",
		Verifier: "https://127.0.0.1:7030", Anchor: "https://127.0.0.1:7035",
		RedisAddr: "127.0.0.1:6379", RedisChannel: "other",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestWitnessesFromEnv(t *testing.T) {
	got, err := Parse(valid, env(map[string]string{"WITNZ_WITNESS": " https://127.0.0.1:7011 ,https://127.0.0.1:7012,"}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"https://127.0.0.1:7011", "https://127.0.0.1:7012"}, got.Witnesses); diff != "" {
		t.Errorf("witnesses (-want +got):\n%s", diff)
	}
	if got.RedisChannel != "witnz:alerts" {
		t.Errorf("default channel = %q", got.RedisChannel)
	}
}

func TestErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no alert", []string{"--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca", "--redis-addr", "127.0.0.1:6379"}, "--alert is required"},
		{"no redis", []string{"--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca", "--alert", "https://127.0.0.1:1"}, "--redis-addr is required"},
		{"http witness", append(valid, "--witness", "http://127.0.0.1:7011"), `--witness "http://127.0.0.1:7011" is not https://host:port`},
		{"witness without port", append(valid, "--witness", "https://w1"), "--witness"},
		{"witness twice", append(valid, "--witness", "https://w1:1", "--witness", "https://w1:1"), "given twice"},
		{"bad ingest", append(valid, "--ingest", "127.0.0.1:7020"), "--ingest"},
		{"bad anchor", append(valid, "--anchor", "https://h:1/path"), "--anchor"},
		{"no cert", []string{"--alert", "https://127.0.0.1:1", "--redis-addr", "127.0.0.1:6379"}, "--tls-cert is required"},
		{"bad log format", append(valid, "--log-format", "xml"), "--log-format"},
		{"unknown flag", append(valid, "--nope"), "flag provided but not defined: -nope"},
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
