// Package config reads cdc-ingest's configuration from flags and
// environment variables and checks it, naming the flag and the fix in every
// error.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

// Defaults.
const (
	DefaultListen      = "127.0.0.1:7430"
	DefaultSlot        = "witnz"
	DefaultPublication = "witnz"
	DefaultBatchMax    = 4096
	DefaultBatchWait   = 10 * time.Millisecond
	// MaxBatch bounds --batch-max so one Append stays far below the 16 MiB
	// message limit of witnz RPCs.
	MaxBatch = 65536
)

// Table is a protected table and how it is protected.
type Table struct {
	Schema string
	Name   string
	Mode   witnessv1.TableMode
}

// String is "schema.table", the name the witness log uses.
func (t Table) String() string { return t.Schema + "." + t.Name }

// ModeName is "append-only" or "mutable".
func (t Table) ModeName() string {
	if t.Mode == witnessv1.TableMode_TABLE_MODE_MUTABLE {
		return "mutable"
	}
	return "append-only"
}

// Config is everything cdc-ingest needs to run.
type Config struct {
	Listen      string
	AdminListen string
	TLS         mtls.Files
	Log         logging.Options

	// PGDSN is the connection URL of the protected database.
	PGDSN       string
	Slot        string
	Publication string
	Protect     []Table
	// KeyFile holds the commitment key K; KeyHex is WITNZ_COMMIT_KEY.
	KeyFile string
	KeyHex  string

	// Witness lists the API URLs of the witness nodes.
	Witness []string
	// Alert is the URL of the alert service.
	Alert string

	BatchMax  int
	BatchWait time.Duration
}

// listFlag is a repeatable flag that also takes comma-separated values.
// Its first Set replaces the value taken from the environment.
type listFlag struct {
	vals []string
	set  bool
}

func (l *listFlag) String() string { return strings.Join(l.vals, ",") }

func (l *listFlag) Set(s string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	l.vals = append(l.vals, splitList(s)...)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Parse reads args and the environment; flags win over environment
// variables. It does not validate: call Validate.
func Parse(args []string, getenv func(string) string) (Config, error) {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var c Config
	fs := flag.NewFlagSet("cdc-ingest", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Listen, "listen", env("WITNZ_LISTEN", DefaultListen), "host:port of the Connect/gRPC API (mutual TLS)")
	fs.StringVar(&c.AdminListen, "admin-listen", env("WITNZ_ADMIN_LISTEN", ""), "host:port of the plain-HTTP /healthz, /readyz and /metrics listener (empty: off)")
	fs.StringVar(&c.TLS.Cert, "tls-cert", env("WITNZ_TLS_CERT", ""), "PEM certificate of this service")
	fs.StringVar(&c.TLS.Key, "tls-key", env("WITNZ_TLS_KEY", ""), "PEM private key of --tls-cert")
	fs.StringVar(&c.TLS.CA, "tls-ca", env("WITNZ_TLS_CA", ""), "PEM CA bundle for peers")
	fs.StringVar(&c.Log.Level, "log-level", env("WITNZ_LOG_LEVEL", "info"), "debug, info, warn or error")
	fs.StringVar(&c.Log.Format, "log-format", env("WITNZ_LOG_FORMAT", "json"), "json or text")
	fs.StringVar(&c.PGDSN, "pg-dsn", env("WITNZ_PG_DSN", ""), "PostgreSQL connection URL of the protected database")
	fs.StringVar(&c.Slot, "slot", env("WITNZ_SLOT", DefaultSlot), "logical replication slot name")
	fs.StringVar(&c.Publication, "publication", env("WITNZ_PUBLICATION", DefaultPublication), "publication name")
	fs.StringVar(&c.KeyFile, "key-file", env("WITNZ_KEY_FILE", ""), "file holding the commitment key (else WITNZ_COMMIT_KEY)")
	fs.StringVar(&c.Alert, "alert", env("WITNZ_ALERT", ""), "https://host:port of the alert service")
	batchMax := fs.String("batch-max", env("WITNZ_BATCH_MAX", strconv.Itoa(DefaultBatchMax)), "entries per Append at most")
	batchWait := fs.String("batch-wait", env("WITNZ_BATCH_WAIT", DefaultBatchWait.String()), "longest wait to fill a batch")
	protect := &listFlag{vals: splitList(getenv("WITNZ_PROTECT"))}
	fs.Var(protect, "protect", "SCHEMA.TABLE[:append-only|:mutable] to protect (repeatable)")
	witness := &listFlag{vals: splitList(getenv("WITNZ_WITNESS"))}
	fs.Var(witness, "witness", "https://host:port of a witness node (repeatable)")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w (run with -h for the list of flags)", err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: cdc-ingest takes flags only", fs.Arg(0))
	}
	c.KeyHex = getenv("WITNZ_COMMIT_KEY")
	c.Witness = witness.vals

	var err error
	if c.BatchMax, err = strconv.Atoi(*batchMax); err != nil {
		return c, fmt.Errorf("--batch-max %q is not a whole number: pass e.g. --batch-max %d", *batchMax, DefaultBatchMax)
	}
	if c.BatchWait, err = time.ParseDuration(*batchWait); err != nil {
		return c, fmt.Errorf("--batch-wait %q is not a duration: pass e.g. --batch-wait 10ms", *batchWait)
	}
	for _, p := range protect.vals {
		t, err := ParseTable(p)
		if err != nil {
			return c, err
		}
		c.Protect = append(c.Protect, t)
	}
	return c, nil
}

// ParseTable parses SCHEMA.TABLE[:append-only|:mutable]; the mode defaults
// to append-only.
func ParseTable(s string) (Table, error) {
	t := Table{Mode: witnessv1.TableMode_TABLE_MODE_APPEND_ONLY}
	name := s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		switch s[i+1:] {
		case "append-only":
		case "mutable":
			t.Mode = witnessv1.TableMode_TABLE_MODE_MUTABLE
		default:
			return t, fmt.Errorf("--protect %q: mode %q is not append-only or mutable", s, s[i+1:])
		}
		name = s[:i]
	}
	schema, table, ok := strings.Cut(name, ".")
	if !ok || schema == "" || table == "" || strings.Contains(table, ".") {
		return t, fmt.Errorf("--protect %q: want SCHEMA.TABLE[:append-only|:mutable], e.g. --protect public.audit_log", s)
	}
	t.Schema, t.Name = schema, table
	return t, nil
}

// slotRE is what PostgreSQL accepts as a replication slot name.
var slotRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Validate checks the configuration; each error names the flag and the fix.
func (c Config) Validate() error {
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if err := c.Log.Validate(); err != nil {
		return err
	}
	if c.Listen == "" {
		return fmt.Errorf("--listen is required: the host:port of the API, e.g. --listen %s", DefaultListen)
	}
	if c.PGDSN == "" {
		return errors.New("--pg-dsn is required: the connection URL of the protected database, e.g. --pg-dsn postgres://witnz@db:5432/app (or set WITNZ_PG_DSN)")
	}
	if _, err := pgconn.ParseConfig(c.PGDSN); err != nil {
		return fmt.Errorf("--pg-dsn is not a valid PostgreSQL connection string (%v): use postgres://USER[:PASSWORD]@HOST:PORT/DATABASE", err)
	}
	if !slotRE.MatchString(c.Slot) {
		return fmt.Errorf("--slot %q: a slot name is 1 to 63 lower-case letters, digits or underscores, e.g. --slot %s", c.Slot, DefaultSlot)
	}
	if c.Publication == "" || len(c.Publication) > 63 {
		return fmt.Errorf("--publication %q: give a name of 1 to 63 characters, e.g. --publication %s", c.Publication, DefaultPublication)
	}
	if len(c.Protect) == 0 {
		return errors.New("--protect is required: name each table to protect as SCHEMA.TABLE[:append-only|:mutable] (repeat the flag, or set WITNZ_PROTECT=public.a,public.b)")
	}
	seen := map[string]bool{}
	for _, t := range c.Protect {
		if seen[t.String()] {
			return fmt.Errorf("--protect names %s twice: give each table once", t)
		}
		seen[t.String()] = true
	}
	if c.KeyFile == "" && c.KeyHex == "" {
		return errors.New("no commitment key: pass --key-file FILE or set WITNZ_COMMIT_KEY (64 hex characters); create one with `witnz keygen`")
	}
	if len(c.Witness) == 0 {
		return errors.New("--witness is required: the https://host:port API URL of every witness node (repeat the flag, or set WITNZ_WITNESS=https://w1:7400,https://w2:7400)")
	}
	for _, u := range c.Witness {
		if err := checkURL(u); err != nil {
			return fmt.Errorf("--witness %q: %v", u, err)
		}
	}
	if c.Alert == "" {
		return errors.New("--alert is required: the https://host:port URL of the alert service (or set WITNZ_ALERT)")
	}
	if err := checkURL(c.Alert); err != nil {
		return fmt.Errorf("--alert %q: %v", c.Alert, err)
	}
	if c.BatchMax < 1 || c.BatchMax > MaxBatch {
		return fmt.Errorf("--batch-max %d: want 1 to %d entries per Append (default %d)", c.BatchMax, MaxBatch, DefaultBatchMax)
	}
	if c.BatchWait < 0 || c.BatchWait > time.Second {
		return fmt.Errorf("--batch-wait %s: want 0 to 1s (default %s)", c.BatchWait, DefaultBatchWait)
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return errors.New("want https://host:port")
	}
	return nil
}
