// Package svcconfig holds what the configuration of every witnz service
// shares: the common flags (--listen, --admin-listen, --tls-*, --log-*) with
// their WITNZ_* environment fallbacks, string and repeatable list flags that
// fall back to the environment, parsing with one-line errors, the usage text,
// and the checks of listen addresses and service URLs.
//
// Flags win over the environment; an empty environment variable counts as
// unset.
package svcconfig

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

// ErrHelp is returned by Parse when -h or --help was given.
var ErrHelp = flag.ErrHelp

// Common points at the fields of a service's configuration that hold the
// settings every service shares, so that the service keeps them as plain
// fields of its own Config.
type Common struct {
	// Listen receives --listen (WITNZ_LISTEN); nil for a service without an
	// API listener, which then has no --listen flag.
	Listen *string
	// AdminListen receives --admin-listen (WITNZ_ADMIN_LISTEN).
	AdminListen *string
	// TLS receives --tls-cert, --tls-key and --tls-ca (WITNZ_TLS_*).
	TLS *mtls.Files
	// Log receives --log-level and --log-format (WITNZ_LOG_*).
	Log *logging.Options

	// DefaultListen is the default of --listen and the example in its
	// errors.
	DefaultListen string
	// Identity is the identity the service's certificate carries, e.g.
	// "service/anchor"; it is named in the help of --tls-cert.
	Identity string
}

// Register adds the common flags to fs; a flag that is not given takes its
// value from the environment through getenv, else its default.
func (c Common) Register(fs *flag.FlagSet, getenv func(string) string) {
	if c.Listen != nil {
		StringVar(fs, getenv, c.Listen, "listen", "WITNZ_LISTEN", c.DefaultListen, "host:port of the Connect/gRPC API listener (mutual TLS)")
	}
	StringVar(fs, getenv, c.AdminListen, "admin-listen", "WITNZ_ADMIN_LISTEN", "", "host:port of the plain-HTTP /healthz, /readyz, /metrics listener; empty = off")
	cert := "PEM certificate of this process"
	if c.Identity != "" {
		cert += ", identity spiffe://witnz/" + c.Identity
	}
	StringVar(fs, getenv, &c.TLS.Cert, "tls-cert", "WITNZ_TLS_CERT", "", cert)
	StringVar(fs, getenv, &c.TLS.Key, "tls-key", "WITNZ_TLS_KEY", "", "PEM private key of --tls-cert")
	StringVar(fs, getenv, &c.TLS.CA, "tls-ca", "WITNZ_TLS_CA", "", "PEM CA bundle that signs peer certificates")
	StringVar(fs, getenv, &c.Log.Level, "log-level", "WITNZ_LOG_LEVEL", "info", "debug, info, warn or error")
	StringVar(fs, getenv, &c.Log.Format, "log-format", "WITNZ_LOG_FORMAT", "json", "json or text")
}

// Validate checks the common settings; each error names the flag at fault
// and how to fix it.
func (c Common) Validate() error {
	example := c.DefaultListen
	if example == "" {
		example = "127.0.0.1:9090"
	}
	if c.Listen != nil {
		if *c.Listen == "" {
			return fmt.Errorf("--listen is required: a host:port to listen on, e.g. %s", example)
		}
		if err := ValidateListenAddr("--listen", *c.Listen, example); err != nil {
			return err
		}
	}
	if *c.AdminListen != "" {
		if err := ValidateListenAddr("--admin-listen", *c.AdminListen, example); err != nil {
			return err
		}
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	return c.Log.Validate()
}

// NewFlagSet returns an empty flag set named after the program that returns
// its errors instead of printing them.
func NewFlagSet(program string) *flag.FlagSet {
	fs := flag.NewFlagSet(program, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// Env returns getenv(name), or def when it is empty.
func Env(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// StringVar defines the string flag name whose value falls back to the
// environment variable env and then to def. The help names env.
func StringVar(fs *flag.FlagSet, getenv func(string) string, p *string, name, env, def, usage string) {
	fs.StringVar(p, name, Env(getenv, env, def), usage+" (env "+env+")")
}

// List is a repeatable flag.Value of strings. It starts with the values of
// an environment variable; the first Set replaces them. Every value, given
// on the command line or in the environment, is split on Sep with the
// parts trimmed and empty parts dropped.
type List struct {
	p   *[]string
	sep string
	set bool
}

// ListVar defines the repeatable flag name collecting into p, whose values
// fall back to the comma-separated environment variable env.
func ListVar(fs *flag.FlagSet, getenv func(string) string, p *[]string, name, env, usage string) {
	ListVarSep(fs, getenv, p, name, env, ",", usage+" (repeatable; env "+env+", comma-separated)")
}

// ListVarSep is ListVar with the separator sep; usage is taken as given.
func ListVarSep(fs *flag.FlagSet, getenv func(string) string, p *[]string, name, env, sep, usage string) {
	*p = Split(getenv(env), sep)
	fs.Var(&List{p: p, sep: sep}, name, usage)
}

// String joins the values with the separator.
func (l *List) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, l.sep)
}

// Set adds the values in v; the first call drops the environment's.
func (l *List) Set(v string) error {
	if !l.set {
		*l.p, l.set = nil, true
	}
	*l.p = append(*l.p, Split(v, l.sep)...)
	return nil
}

// Split splits s on sep, trims the parts and drops empty ones; it returns
// nil when nothing is left.
func Split(s, sep string) []string {
	var out []string
	for p := range strings.SplitSeq(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Parse parses args into fs. It returns ErrHelp for -h and --help, and one
// line naming the fault for an unknown flag, a bad value or a positional
// argument.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ErrHelp
		}
		return fmt.Errorf("%w (run with -h for the list of flags)", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: every setting is a --flag (run with -h for the list of flags)", fs.Arg(0))
	}
	return nil
}

// Usage returns header followed by the description of every flag of fs.
func Usage(fs *flag.FlagSet, header string) string {
	var b strings.Builder
	b.WriteString(header)
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	return b.String()
}

// ValidateListenAddr checks that addr is host:port with a port from 0 to
// 65535; the host may be empty (all interfaces). example is shown in the
// error.
func ValidateListenAddr(flagName, addr, example string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return fmt.Errorf("%s %q is not host:port (e.g. %s)", flagName, addr, example)
	}
	return nil
}

// ValidateDialAddr checks that addr is host:port with a host and a port, an
// address to connect to. example is shown in the error.
func ValidateDialAddr(flagName, addr, example string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("%s %q is not host:port (e.g. %s)", flagName, addr, example)
	}
	return nil
}

// IsServiceURL reports whether raw is the URL of a witnz service:
// https://host:port with no path, query or user information.
func IsServiceURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Scheme == "https" && u.Hostname() != "" && u.Port() != "" &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.User == nil
}

// ValidateURL checks that raw is the URL of a witnz service (IsServiceURL).
func ValidateURL(flagName, raw string) error {
	if !IsServiceURL(raw) {
		return fmt.Errorf("%s %q is not an https://host:port URL (e.g. https://127.0.0.1:7010)", flagName, raw)
	}
	return nil
}

// ValidateURLs checks every URL of a repeatable flag with ValidateURL and
// that none is given twice. An empty list is valid: whether the flag is
// required is the caller's decision.
func ValidateURLs(flagName string, urls []string) error {
	seen := make(map[string]bool, len(urls))
	for _, u := range urls {
		if err := ValidateURL(flagName, u); err != nil {
			return err
		}
		if seen[u] {
			return fmt.Errorf("%s %s is given twice: list each once", flagName, u)
		}
		seen[u] = true
	}
	return nil
}
