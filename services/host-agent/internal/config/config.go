// Package config reads the host agent's configuration from flags and
// environment variables and checks it. Flags win over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

// Config is everything the host agent is started with.
type Config struct {
	// Alert is the https://host:port URL of the alert service.
	Alert string
	// DataDir is where the agent keeps its state.
	DataDir string
	// Hostname names this host; the certificate must carry the identity
	// agent/<Hostname>.
	Hostname string
	// AdminListen is the host:port of the plain-HTTP /healthz, /readyz and
	// /metrics listener; empty turns it off.
	AdminListen string
	TLS         mtls.Files
	Log         logging.Options
}

// ErrHelp is returned by Parse when -h or --help was given; Usage has the
// text to show.
var ErrHelp = flag.ErrHelp

func flagSet(c *Config, getenv func(string) string) *flag.FlagSet {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("host-agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Alert, "alert", env("WITNZ_ALERT", ""), "https://host:port URL of the alert service (env WITNZ_ALERT)")
	fs.StringVar(&c.DataDir, "data-dir", env("WITNZ_DATA_DIR", ""), "directory for the agent's state; created if missing (env WITNZ_DATA_DIR)")
	fs.StringVar(&c.Hostname, "hostname", env("WITNZ_HOSTNAME", ""), "name of this host, as in the certificate identity agent/<hostname>; default: the system host name (env WITNZ_HOSTNAME)")
	fs.StringVar(&c.AdminListen, "admin-listen", env("WITNZ_ADMIN_LISTEN", ""), "host:port of plain-HTTP /healthz, /readyz, /metrics; empty = off (env WITNZ_ADMIN_LISTEN)")
	fs.StringVar(&c.TLS.Cert, "tls-cert", env("WITNZ_TLS_CERT", ""), "PEM certificate with identity spiffe://witnz/agent/<hostname> (env WITNZ_TLS_CERT)")
	fs.StringVar(&c.TLS.Key, "tls-key", env("WITNZ_TLS_KEY", ""), "PEM private key of --tls-cert (env WITNZ_TLS_KEY)")
	fs.StringVar(&c.TLS.CA, "tls-ca", env("WITNZ_TLS_CA", ""), "PEM CA bundle that signs the alert service's certificate (env WITNZ_TLS_CA)")
	fs.StringVar(&c.Log.Level, "log-level", env("WITNZ_LOG_LEVEL", "info"), "debug, info, warn or error (env WITNZ_LOG_LEVEL)")
	fs.StringVar(&c.Log.Format, "log-format", env("WITNZ_LOG_FORMAT", "json"), "json or text (env WITNZ_LOG_FORMAT)")
	return fs
}

// Parse reads args (without the program name) and the environment. An empty
// --hostname becomes the system host name.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	fs := flagSet(&c, getenv)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, ErrHelp
		}
		return Config{}, fmt.Errorf("%w (see host-agent -h)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: the host agent takes only flags (see host-agent -h)", fs.Arg(0))
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return Config{}, fmt.Errorf("read the system host name: %w (set --hostname)", err)
		}
		c.Hostname = h
	}
	return c, nil
}

// Usage describes every flag.
func Usage() string {
	var c Config
	fs := flagSet(&c, func(string) string { return "" })
	var b strings.Builder
	b.WriteString("Usage: host-agent [flags]\n\nRegisters this host with the witnz alert service and keeps an event stream to it.\n\nFlags:\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

// Validate checks the configuration; each message names the flag at fault
// and how to fix it.
func (c Config) Validate() error {
	if c.Alert == "" {
		return errors.New("--alert is required (or WITNZ_ALERT): the https://host:port URL of the alert service, e.g. https://127.0.0.1:7020")
	}
	u, err := url.Parse(c.Alert)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("--alert %q is not an https://host:port URL (e.g. https://127.0.0.1:7020)", c.Alert)
	}
	if c.DataDir == "" {
		return errors.New("--data-dir is required (or WITNZ_DATA_DIR): the directory for the agent's state, e.g. /var/lib/witnz/host-agent")
	}
	if c.Hostname == "" || strings.ContainsAny(c.Hostname, "/ \t\n") {
		return fmt.Errorf("--hostname %q is not a host name: use the name in this host's certificate identity agent/<hostname>", c.Hostname)
	}
	if c.AdminListen != "" {
		_, port, err := net.SplitHostPort(c.AdminListen)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil {
			return fmt.Errorf("--admin-listen %q is not host:port (e.g. 127.0.0.1:9090)", c.AdminListen)
		}
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	return c.Log.Validate()
}
