package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var validArgs = []string{
	"--tls-cert=c.crt", "--tls-key=c.key", "--tls-ca=ca.crt",
	"--witness=https://127.0.0.1:7000", "--sink-dir=/var/lib/witnz/anchors",
	"--data-dir=/var/lib/witnz/anchor", "--policy=/etc/witnz/policy",
}

func TestParseFlagsWinOverEnv(t *testing.T) {
	got, err := Parse([]string{
		"--listen=127.0.0.1:9000", "--tls-cert=c.crt", "--tls-key=c.key", "--tls-ca=ca.crt",
		"--witness=https://w1:7000", "--witness=https://w2:7000", "--sink-dir=/flag",
	}, env(map[string]string{
		"WITNZ_LISTEN":    "127.0.0.1:1",
		"WITNZ_WITNESS":   "https://e1:7000",
		"WITNZ_SINK_DIR":  "/env",
		"WITNZ_LOG_LEVEL": "debug",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:    "127.0.0.1:9000",
		TLS:       mtls.Files{Cert: "c.crt", Key: "c.key", CA: "ca.crt"},
		Log:       logging.Options{Level: "debug", Format: "json"},
		Witnesses: []string{"https://w1:7000", "https://w2:7000"},
		Sink:      SinkDir,
		SinkDir:   "/flag",
		Interval:  DefaultInterval,
		S3:        S3{Region: DefaultRegion, Prefix: DefaultPrefix, Retain: DefaultRetain},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
}

func TestParseEnvOnly(t *testing.T) {
	got, err := Parse(nil, env(map[string]string{
		"WITNZ_TLS_CERT": "c.crt", "WITNZ_TLS_KEY": "c.key", "WITNZ_TLS_CA": "ca.crt",
		"WITNZ_WITNESS":  "https://e1:7000,https://e2:7000",
		"WITNZ_SINK":     "dir",
		"WITNZ_SINK_DIR": "/env",
		"WITNZ_DATA_DIR": "/data",
		"WITNZ_POLICY":   "/policy",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"https://e1:7000", "https://e2:7000"}, got.Witnesses); diff != "" {
		t.Errorf("witnesses (-want +got):\n%s", diff)
	}
	if got.Listen != DefaultListen || got.SinkDir != "/env" {
		t.Errorf("Listen, SinkDir = %q, %q", got.Listen, got.SinkDir)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse([]string{"--help"}, env(nil)); !errors.Is(err, ErrHelp) {
		t.Errorf("--help: err = %v, want ErrHelp", err)
	}
	if _, err := Parse([]string{"--bucket=x"}, env(nil)); err == nil || !strings.Contains(err.Error(), "-bucket") {
		t.Errorf("unknown flag: err = %v", err)
	}
	if _, err := Parse([]string{"now"}, env(nil)); err == nil || !strings.Contains(err.Error(), `unexpected argument "now"`) {
		t.Errorf("positional: err = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		extra []string
		want  string // prefix of the error; empty means valid
	}{
		{"valid", nil, ""},
		{"s3 sink", []string{"--sink=s3", "--s3-bucket=anchors", "--s3-endpoint=http://127.0.0.1:9000", "--s3-path-style"}, ""},
		{"s3 without bucket", []string{"--sink=s3"}, "--s3-bucket is required with --sink s3"},
		{"s3 bad endpoint", []string{"--sink=s3", "--s3-bucket=b", "--s3-endpoint=minio:9000"}, `--s3-endpoint "minio:9000" is not an http(s)://host[:port] URL`},
		{"s3 half credentials", []string{"--sink=s3", "--s3-bucket=b", "--s3-access-key-id=AK"}, "--s3-access-key-id and --s3-secret-access-key go together"},
		{"unknown sink", []string{"--sink=tape"}, `--sink "tape" is not a sink: use dir or s3`},
		{"no data dir", []string{"--data-dir="}, "--data-dir is required"},
		{"no policy", []string{"--policy="}, "--policy is required"},
		{"bad alert", []string{"--alert=http://a:1"}, `--alert "http://a:1" is not an https://host:port URL`},
		{"no sink dir", []string{"--sink-dir="}, "--sink-dir is required with --sink dir"},
		{"bad listen", []string{"--listen=:http"}, `--listen ":http" is not host:port`},
		{"http witness", []string{"--witness=http://w1:7000"}, `--witness "http://w1:7000" is not an https://host:port URL`},
		{"witness with path", []string{"--witness=https://w1:7000/api"}, `--witness "https://w1:7000/api" is not an https://host:port URL`},
		{"bad log format", []string{"--log-format=yaml"}, `--log-format "yaml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(append(append([]string{}, validArgs...), tt.extra...), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want prefix %q", err, tt.want)
			}
		})
	}
}

func TestValidateRequired(t *testing.T) {
	c, err := Parse([]string{"--tls-cert=a", "--tls-key=b", "--tls-ca=c", "--sink-dir=/x"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "--witness is required") {
		t.Errorf("Validate without --witness = %v", err)
	}
	c, err = Parse([]string{"--witness=https://w:1", "--sink-dir=/x"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "--tls-cert is required") {
		t.Errorf("Validate without TLS = %v", err)
	}
}

func TestParseDurations(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		interval time.Duration
		retain   time.Duration
	}{
		{nil, 24 * time.Hour, 400 * 24 * time.Hour},
		{[]string{"--interval=30"}, 30 * time.Second, DefaultRetain},
		{[]string{"--interval=10m", "--s3-retain=30d"}, 10 * time.Minute, 30 * 24 * time.Hour},
		{[]string{"--s3-retain=48h"}, DefaultInterval, 48 * time.Hour},
	} {
		c, err := Parse(append(append([]string{}, validArgs...), tt.args...), env(nil))
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if c.Interval != tt.interval || c.S3.Retain != tt.retain {
			t.Errorf("%v: interval %s retain %s, want %s and %s", tt.args, c.Interval, c.S3.Retain, tt.interval, tt.retain)
		}
	}
	for _, tt := range []struct{ arg, want string }{
		{"--interval=0", "--interval \"0\": want a duration of at least 1s"},
		{"--interval=soon", "--interval \"soon\""},
		{"--s3-retain=2h", "--s3-retain \"2h\": want a duration of at least one day"},
		{"--s3-path-style=maybe", "--s3-path-style \"maybe\": want true or false"},
	} {
		if _, err := Parse(append(append([]string{}, validArgs...), tt.arg), env(nil)); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: %v, want prefix %q", tt.arg, err, tt.want)
		}
	}
}
