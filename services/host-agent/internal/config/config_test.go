package config

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var validArgs = []string{
	"--alert=https://127.0.0.1:7020", "--data-dir=/var/lib/witnz/host-agent", "--hostname=db1",
	"--tls-cert=c.crt", "--tls-key=c.key", "--tls-ca=ca.crt",
}

func TestParseFlagsWinOverEnv(t *testing.T) {
	got, err := Parse(validArgs, env(map[string]string{
		"WITNZ_ALERT":        "https://env:7020",
		"WITNZ_HOSTNAME":     "env-host",
		"WITNZ_ADMIN_LISTEN": "127.0.0.1:9090",
		"WITNZ_LOG_FORMAT":   "text",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Alert:       "https://127.0.0.1:7020",
		DataDir:     "/var/lib/witnz/host-agent",
		Hostname:    "db1",
		AdminListen: "127.0.0.1:9090",
		TLS:         mtls.Files{Cert: "c.crt", Key: "c.key", CA: "ca.crt"},
		Log:         logging.Options{Level: "info", Format: "text"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
}

func TestParseDefaultsHostname(t *testing.T) {
	got, err := Parse(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if got.Hostname != want {
		t.Errorf("Hostname = %q, want the system host name %q", got.Hostname, want)
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse([]string{"-help"}, env(nil)); !errors.Is(err, ErrHelp) {
		t.Errorf("-help: err = %v, want ErrHelp", err)
	}
	if _, err := Parse([]string{"--listen=:1"}, env(nil)); err == nil || !strings.Contains(err.Error(), "-listen") {
		t.Errorf("--listen (not a host-agent flag): err = %v", err)
	}
	if _, err := Parse([]string{"x"}, env(nil)); err == nil || !strings.Contains(err.Error(), `unexpected argument "x"`) {
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
		{"no alert", []string{"--alert="}, "--alert is required"},
		{"http alert", []string{"--alert=http://a:7020"}, `--alert "http://a:7020" is not an https://host:port URL`},
		{"no data dir", []string{"--data-dir="}, "--data-dir is required"},
		{"bad hostname", []string{"--hostname=a/b"}, `--hostname "a/b" is not a host name`},
		{"bad admin", []string{"--admin-listen=9090"}, `--admin-listen "9090" is not host:port`},
		{"no tls key", []string{"--tls-key="}, "--tls-key is required"},
		{"bad log level", []string{"--log-level=trace"}, `--log-level "trace"`},
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
