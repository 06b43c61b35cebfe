package svcconfig

import (
	"errors"
	"strings"
	"testing"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

type config struct {
	Listen, AdminListen string
	TLS                 mtls.Files
	Log                 logging.Options
	Witnesses           []string
	Name                string
}

func (c *config) common() Common {
	return Common{Listen: &c.Listen, AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log, DefaultListen: "127.0.0.1:7010", Identity: "service/test"}
}

func parse(args []string, getenv func(string) string) (config, error) {
	var c config
	fs := NewFlagSet("test")
	c.common().Register(fs, getenv)
	ListVar(fs, getenv, &c.Witnesses, "witness", "WITNZ_WITNESS", "witness URL")
	StringVar(fs, getenv, &c.Name, "name", "WITNZ_NAME", "dflt", "a name")
	return c, Parse(fs, args)
}

func TestRegisterDefaultsEnvAndFlags(t *testing.T) {
	c, err := parse(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7010" || c.AdminListen != "" || c.Log != (logging.Options{Level: "info", Format: "json"}) || c.Name != "dflt" || c.Witnesses != nil {
		t.Errorf("defaults: %+v", c)
	}
	e := env(map[string]string{
		"WITNZ_LISTEN": "127.0.0.1:1", "WITNZ_ADMIN_LISTEN": "127.0.0.1:2",
		"WITNZ_TLS_CERT": "c", "WITNZ_TLS_KEY": "k", "WITNZ_TLS_CA": "ca",
		"WITNZ_LOG_LEVEL": "debug", "WITNZ_LOG_FORMAT": "text",
		"WITNZ_WITNESS": " https://e1:1, ,https://e2:2,", "WITNZ_NAME": "env",
	})
	c, err = parse(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		Listen: "127.0.0.1:1", AdminListen: "127.0.0.1:2",
		TLS:       mtls.Files{Cert: "c", Key: "k", CA: "ca"},
		Log:       logging.Options{Level: "debug", Format: "text"},
		Witnesses: []string{"https://e1:1", "https://e2:2"}, Name: "env",
	}
	if c.Listen != want.Listen || c.AdminListen != want.AdminListen || c.TLS != want.TLS || c.Log != want.Log || c.Name != want.Name || strings.Join(c.Witnesses, " ") != "https://e1:1 https://e2:2" {
		t.Errorf("from env: %+v, want %+v", c, want)
	}
	// Flags win; the first --witness replaces the environment's list, and
	// a flag value may itself be comma-separated.
	c, err = parse([]string{"--listen=:9", "--witness=https://f1:1", "--witness", "https://f2:2,https://f3:3", "--name=flag"}, e)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":9" || c.Name != "flag" || strings.Join(c.Witnesses, " ") != "https://f1:1 https://f2:2 https://f3:3" {
		t.Errorf("flags over env: %+v", c)
	}
}

func TestNoListen(t *testing.T) {
	var c config
	fs := NewFlagSet("agent")
	com := Common{AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log}
	com.Register(fs, env(nil))
	if err := Parse(fs, []string{"--listen=:1"}); err == nil || !strings.Contains(err.Error(), "flag provided but not defined: -listen") {
		t.Errorf("--listen without a listener: %v", err)
	}
	c.TLS = mtls.Files{Cert: "c", Key: "k", CA: "ca"}
	if err := com.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nope"}, "flag provided but not defined: -nope (run with -h for the list of flags)"},
		{[]string{"extra"}, `unexpected argument "extra": every setting is a --flag`},
	} {
		_, err := parse(tc.args, env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q) = %v, want one line containing %q", tc.args, err, tc.want)
		}
	}
	for _, h := range []string{"-h", "--help"} {
		if _, err := parse([]string{h}, env(nil)); !errors.Is(err, ErrHelp) {
			t.Errorf("Parse(%s) = %v, want ErrHelp", h, err)
		}
	}
}

func TestUsage(t *testing.T) {
	var c config
	fs := NewFlagSet("test")
	c.common().Register(fs, env(nil))
	ListVar(fs, env(nil), &c.Witnesses, "witness", "WITNZ_WITNESS", "witness URL")
	u := Usage(fs, "Usage: test [flags]\n")
	for _, s := range []string{"Usage: test", "-listen", "WITNZ_LISTEN", "-admin-listen", "-tls-cert", "spiffe://witnz/service/test", "-tls-key", "-tls-ca", "-log-level", "-log-format", "-witness", "WITNZ_WITNESS, comma-separated"} {
		if !strings.Contains(u, s) {
			t.Errorf("usage does not mention %s:\n%s", s, u)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*config)
		want string // prefix; empty means valid
	}{
		{"valid", func(*config) {}, ""},
		{"no listen", func(c *config) { c.Listen = "" }, "--listen is required: a host:port to listen on, e.g. 127.0.0.1:7010"},
		{"bad listen", func(c *config) { c.Listen = "7010" }, `--listen "7010" is not host:port (e.g. 127.0.0.1:7010)`},
		{"named port", func(c *config) { c.Listen = ":http" }, `--listen ":http" is not host:port`},
		{"port too big", func(c *config) { c.Listen = ":70000" }, `--listen ":70000" is not host:port`},
		{"bad admin", func(c *config) { c.AdminListen = "x" }, `--admin-listen "x" is not host:port`},
		{"no cert", func(c *config) { c.TLS.Cert = "" }, "--tls-cert is required"},
		{"bad level", func(c *config) { c.Log.Level = "loud" }, `--log-level "loud"`},
		{"bad format", func(c *config) { c.Log.Format = "xml" }, `--log-format "xml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse([]string{"--tls-cert=c", "--tls-key=k", "--tls-ca=ca"}, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(&c)
			err = c.common().Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestAddrsAndURLs(t *testing.T) {
	if err := ValidateDialAddr("--redis-addr", "localhost", "127.0.0.1:6379"); err == nil || err.Error() != `--redis-addr "localhost" is not host:port (e.g. 127.0.0.1:6379)` {
		t.Errorf("ValidateDialAddr = %v", err)
	}
	if err := ValidateDialAddr("--redis-addr", ":6379", "127.0.0.1:6379"); err == nil {
		t.Error("ValidateDialAddr accepted an address without a host")
	}
	if err := ValidateDialAddr("--redis-addr", "127.0.0.1:6379", "x"); err != nil {
		t.Errorf("ValidateDialAddr: %v", err)
	}
	for raw, ok := range map[string]bool{
		"https://w1:7000": true, "https://w1:7000/": true, "https://[::1]:7000": true,
		"http://w1:7000": false, "https://w1": false, "https://w1:7000/api": false,
		"https://w1:7000?x=1": false, "https://u@w1:7000": false, "w1:7000": false, "https://:7000": false,
	} {
		if got := IsServiceURL(raw); got != ok {
			t.Errorf("IsServiceURL(%q) = %v, want %v", raw, got, ok)
		}
	}
	if err := ValidateURLs("--witness", []string{"https://w1:1", "https://w2:2"}); err != nil {
		t.Errorf("ValidateURLs: %v", err)
	}
	if err := ValidateURLs("--witness", []string{"https://w1:1", "http://w2:2"}); err == nil || err.Error() != `--witness "http://w2:2" is not an https://host:port URL (e.g. https://127.0.0.1:7010)` {
		t.Errorf("ValidateURLs with http = %v", err)
	}
	if err := ValidateURLs("--witness", []string{"https://w1:1", "https://w1:1"}); err == nil || err.Error() != "--witness https://w1:1 is given twice: list each once" {
		t.Errorf("ValidateURLs with a duplicate = %v", err)
	}
}
