// Package config reads the host agent's configuration from flags and
// environment variables and checks it. Flags win over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/svcconfig"
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
var ErrHelp = svcconfig.ErrHelp

// common has no --listen: the agent serves no API.
func (c *Config) common() svcconfig.Common {
	return svcconfig.Common{AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log, Identity: "agent/<hostname>"}
}

func flagSet(c *Config, getenv func(string) string) *flag.FlagSet {
	fs := svcconfig.NewFlagSet("host-agent")
	svcconfig.StringVar(fs, getenv, &c.Alert, "alert", "WITNZ_ALERT", "", "https://host:port URL of the alert service")
	svcconfig.StringVar(fs, getenv, &c.DataDir, "data-dir", "WITNZ_DATA_DIR", "", "directory for the agent's state; created if missing")
	svcconfig.StringVar(fs, getenv, &c.Hostname, "hostname", "WITNZ_HOSTNAME", "", "name of this host, as in the certificate identity agent/<hostname>; default: the system host name")
	c.common().Register(fs, getenv)
	return fs
}

// Parse reads args (without the program name) and the environment. An empty
// --hostname becomes the system host name.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	if err := svcconfig.Parse(flagSet(&c, getenv), args); err != nil {
		return Config{}, err
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
	return svcconfig.Usage(flagSet(&Config{}, func(string) string { return "" }),
		"Usage: host-agent [flags]\n\nRegisters this host with the witnz alert service and keeps an event stream to it.\n\nFlags:\n")
}

// Validate checks the configuration; each message names the flag at fault
// and how to fix it.
func (c Config) Validate() error {
	if c.Alert == "" {
		return errors.New("--alert is required (or WITNZ_ALERT): the https://host:port URL of the alert service, e.g. https://127.0.0.1:7020")
	}
	if err := svcconfig.ValidateURL("--alert", c.Alert); err != nil {
		return err
	}
	if c.DataDir == "" {
		return errors.New("--data-dir is required (or WITNZ_DATA_DIR): the directory for the agent's state, e.g. /var/lib/witnz/host-agent")
	}
	if c.Hostname == "" || strings.ContainsAny(c.Hostname, "/ \t\n") {
		return fmt.Errorf("--hostname %q is not a host name: use the name in this host's certificate identity agent/<hostname>", c.Hostname)
	}
	return c.common().Validate()
}
