// Package config reads cdc-ingest's configuration from flags and
// environment variables and checks it, naming the flag and the fix in every
// error.
package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/svcconfig"
)

// Defaults.
const (
	DefaultListen      = "127.0.0.1:7430"
	DefaultSlot        = "witnz"
	DefaultPublication = "witnz"
	DefaultBatchMax    = 4096
	DefaultBatchWait   = 10 * time.Millisecond
	// DefaultAppendInflight is how many Appends of one table may be in
	// flight at once: a change then waits for one round trip to the
	// quorum, not for the Append ahead of it as well.
	DefaultAppendInflight = 4
	// MaxAppendInflight bounds --append-inflight.
	MaxAppendInflight = 64
	// MaxBatch bounds --batch-max so one Append stays far below the 16 MiB
	// message limit of witnz RPCs.
	MaxBatch = 65536
	// DefaultHeartbeatInterval is how often a heartbeat goes through the WAL.
	DefaultHeartbeatInterval = 10 * time.Second
	// DefaultHeartbeatTimeout is how long without a heartbeat coming back
	// through the stream before an alert.
	DefaultHeartbeatTimeout = 60 * time.Second
	// DefaultMaxLagBytes is the slot lag that raises an alert.
	DefaultMaxLagBytes = 1 << 30
	// DefaultCheckInterval is how often the slot, the publication and the
	// protected tables are checked in the catalog.
	DefaultCheckInterval = 10 * time.Second
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
func (t Table) ModeName() string { return ModeName(t.Mode) }

// ModeName names a table mode as the flags and messages spell it:
// "append-only" or "mutable".
func ModeName(m witnessv1.TableMode) string {
	if m == witnessv1.TableMode_TABLE_MODE_MUTABLE {
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
	// AppendInflight is the most Appends of one table in flight at once.
	AppendInflight int

	// HeartbeatInterval, HeartbeatTimeout, MaxLagBytes and CheckInterval
	// drive the tamper signals that do not come with a change.
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	MaxLagBytes       uint64
	CheckInterval     time.Duration
}

func (c *Config) common() svcconfig.Common {
	return svcconfig.Common{
		Listen: &c.Listen, AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log,
		DefaultListen: DefaultListen, Identity: "service/cdc-ingest",
	}
}

// Parse reads args and the environment; flags win over environment
// variables. It does not validate: call Validate.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	fs := svcconfig.NewFlagSet("cdc-ingest")
	c.common().Register(fs, getenv)
	str := func(p *string, name, env, def, usage string) {
		svcconfig.StringVar(fs, getenv, p, name, env, def, usage)
	}
	str(&c.PGDSN, "pg-dsn", "WITNZ_PG_DSN", "", "PostgreSQL connection URL of the protected database")
	str(&c.Slot, "slot", "WITNZ_SLOT", DefaultSlot, "logical replication slot name")
	str(&c.Publication, "publication", "WITNZ_PUBLICATION", DefaultPublication, "publication name")
	str(&c.KeyFile, "key-file", "WITNZ_KEY_FILE", "", "file holding the commitment key (else WITNZ_COMMIT_KEY)")
	str(&c.Alert, "alert", "WITNZ_ALERT", "", "https://host:port of the alert service")
	var batchMax, batchWait, inflight string
	str(&inflight, "append-inflight", "WITNZ_APPEND_INFLIGHT", strconv.Itoa(DefaultAppendInflight), "Appends of one table in flight at once (1: one at a time)")
	str(&batchMax, "batch-max", "WITNZ_BATCH_MAX", strconv.Itoa(DefaultBatchMax), "entries per Append at most")
	str(&batchWait, "batch-wait", "WITNZ_BATCH_WAIT", DefaultBatchWait.String(), "longest wait to fill a batch")
	var hbInterval, hbTimeout, maxLag, checkInterval string
	str(&hbInterval, "heartbeat-interval", "WITNZ_HEARTBEAT_INTERVAL", DefaultHeartbeatInterval.String(), "how often a heartbeat is written through the WAL")
	str(&hbTimeout, "heartbeat-timeout", "WITNZ_HEARTBEAT_TIMEOUT", DefaultHeartbeatTimeout.String(), "alert when no heartbeat came back through the stream for this long")
	str(&maxLag, "max-lag-bytes", "WITNZ_MAX_LAG_BYTES", strconv.Itoa(DefaultMaxLagBytes), "alert when the slot falls this many WAL bytes behind")
	str(&checkInterval, "check-interval", "WITNZ_CHECK_INTERVAL", DefaultCheckInterval.String(), "how often the slot, publication and protected tables are checked")
	var protect []string
	svcconfig.ListVar(fs, getenv, &protect, "protect", "WITNZ_PROTECT", "SCHEMA.TABLE[:append-only|:mutable] to protect from start-up (more with `witnz protect` at run time)")
	svcconfig.ListVar(fs, getenv, &c.Witness, "witness", "WITNZ_WITNESS", "https://host:port of a witness node")
	if err := svcconfig.Parse(fs, args); err != nil {
		return c, err
	}
	c.KeyHex = getenv("WITNZ_COMMIT_KEY")

	var err error
	if c.BatchMax, err = strconv.Atoi(batchMax); err != nil {
		return c, fmt.Errorf("--batch-max %q is not a whole number: pass e.g. --batch-max %d", batchMax, DefaultBatchMax)
	}
	if c.AppendInflight, err = strconv.Atoi(inflight); err != nil {
		return c, fmt.Errorf("--append-inflight %q is not a whole number: pass e.g. --append-inflight %d", inflight, DefaultAppendInflight)
	}
	if c.BatchWait, err = time.ParseDuration(batchWait); err != nil {
		return c, fmt.Errorf("--batch-wait %q is not a duration: pass e.g. --batch-wait 10ms", batchWait)
	}
	for _, d := range []struct {
		flag, v string
		dst     *time.Duration
	}{{"heartbeat-interval", hbInterval, &c.HeartbeatInterval}, {"heartbeat-timeout", hbTimeout, &c.HeartbeatTimeout}, {"check-interval", checkInterval, &c.CheckInterval}} {
		if *d.dst, err = time.ParseDuration(d.v); err != nil {
			return c, fmt.Errorf("--%s %q is not a duration: pass e.g. --%s 10s", d.flag, d.v, d.flag)
		}
	}
	if c.MaxLagBytes, err = strconv.ParseUint(maxLag, 10, 64); err != nil {
		return c, fmt.Errorf("--max-lag-bytes %q is not a whole number of bytes: pass e.g. --max-lag-bytes %d", maxLag, DefaultMaxLagBytes)
	}
	for _, p := range protect {
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
	if err := c.common().Validate(); err != nil {
		return err
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
		if !svcconfig.IsServiceURL(u) {
			return fmt.Errorf("--witness %q: want https://host:port", u)
		}
	}
	if c.Alert == "" {
		return errors.New("--alert is required: the https://host:port URL of the alert service (or set WITNZ_ALERT)")
	}
	if !svcconfig.IsServiceURL(c.Alert) {
		return fmt.Errorf("--alert %q: want https://host:port", c.Alert)
	}
	if c.BatchMax < 1 || c.BatchMax > MaxBatch {
		return fmt.Errorf("--batch-max %d: want 1 to %d entries per Append (default %d)", c.BatchMax, MaxBatch, DefaultBatchMax)
	}
	if c.AppendInflight < 1 || c.AppendInflight > MaxAppendInflight {
		return fmt.Errorf("--append-inflight %d: want 1 to %d Appends in flight per table (default %d)", c.AppendInflight, MaxAppendInflight, DefaultAppendInflight)
	}
	if c.BatchWait < 0 || c.BatchWait > time.Second {
		return fmt.Errorf("--batch-wait %s: want 0 to 1s (default %s)", c.BatchWait, DefaultBatchWait)
	}
	if c.HeartbeatInterval < 100*time.Millisecond || c.HeartbeatInterval > time.Hour {
		return fmt.Errorf("--heartbeat-interval %s: want 100ms to 1h (default %s)", c.HeartbeatInterval, DefaultHeartbeatInterval)
	}
	if c.HeartbeatTimeout < 2*c.HeartbeatInterval {
		return fmt.Errorf("--heartbeat-timeout %s must be at least twice --heartbeat-interval (%s), or every late heartbeat alerts (default %s)", c.HeartbeatTimeout, c.HeartbeatInterval, DefaultHeartbeatTimeout)
	}
	if c.CheckInterval < 100*time.Millisecond || c.CheckInterval > time.Hour {
		return fmt.Errorf("--check-interval %s: want 100ms to 1h (default %s)", c.CheckInterval, DefaultCheckInterval)
	}
	if c.MaxLagBytes < 1<<20 {
		return fmt.Errorf("--max-lag-bytes %d: want at least 1 MiB (1048576; default %d)", c.MaxLagBytes, DefaultMaxLagBytes)
	}
	return nil
}
