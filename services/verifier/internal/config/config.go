// Package config reads the verifier's configuration from flags and
// environment variables and checks it. Flags win over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/svcconfig"
)

// DefaultListen is the address of the Verifier API when --listen is not given.
const DefaultListen = "127.0.0.1:7030"

// Defaults of the verification flags.
const (
	DefaultSlot           = "witnz"
	DefaultCatchUpTimeout = 60 * time.Second
	DefaultCheckpointWait = 15 * time.Second
	DefaultMaxFindings    = 1000
	// MinVerifyInterval and MaxVerifyInterval bound --verify intervals.
	MinVerifyInterval = 10 * time.Second
	MaxVerifyInterval = 30 * 24 * time.Hour
	// DefaultAnchorCheckInterval, MinAnchorCheckInterval and
	// MaxAnchorCheckInterval bound --anchor-check-interval.
	DefaultAnchorCheckInterval = time.Hour
	MinAnchorCheckInterval     = time.Second
	MaxAnchorCheckInterval     = 30 * 24 * time.Hour
)

// Scheduled is a table verified every Interval (--verify TABLE=INTERVAL).
type Scheduled struct {
	Table    string
	Interval time.Duration
}

// Config is everything the verifier is started with.
type Config struct {
	// Listen is the host:port of the Connect/gRPC API (mutual TLS).
	Listen string
	// AdminListen is the host:port of the plain-HTTP /healthz, /readyz and
	// /metrics listener; empty turns it off.
	AdminListen string
	TLS         mtls.Files
	Log         logging.Options
	// PGDSN is the URL of the protected database, for a read-only role.
	PGDSN string
	// Witnesses are the https://host:port API URLs of the witness nodes.
	Witnesses []string
	// KeyFile holds the commitment key K; when empty KeyHex is used.
	KeyFile string
	// KeyHex is the commitment key from WITNZ_COMMIT_KEY (64 hex
	// characters). It is a secret: never log it.
	KeyHex string
	// DataDir holds the run history (history.db); empty keeps it in memory.
	DataDir string
	// EvidenceDir receives the evidence bundles of findings; empty means
	// DataDir/evidence, or ./evidence without a DataDir.
	EvidenceDir string
	// Slot is cdc-ingest's replication slot (empty: DefaultSlot).
	Slot string
	// Schedule lists the tables verified periodically.
	Schedule []Scheduled
	// CatchUpTimeout bounds the wait for the witnesses to reach a
	// snapshot's position.
	CatchUpTimeout time.Duration
	// CheckpointWait bounds the wait for a cosigned checkpoint that holds a
	// finding's entry.
	CheckpointWait time.Duration
	// MaxFindings bounds the findings of one run.
	MaxFindings int
	// ScanWorkers hash rows in parallel; 0 means GOMAXPROCS.
	ScanWorkers int
	// PolicyFile is the checkpoint policy (the witnesses' --policy): the
	// latest cosigned checkpoint of a table must satisfy it. Empty skips
	// the checkpoint checks.
	PolicyFile string
	// AlertURL is the alert service (https://host:port) that receives an
	// alert for each run with findings or integrity problems; empty logs
	// them only.
	AlertURL string
	// AnchorURL is the anchor service (https://host:port) whose
	// CheckAnchors runs every AnchorCheckInterval; empty turns the check
	// off.
	AnchorURL           string
	AnchorCheckInterval time.Duration
}

// rawFlags are the flag values that Parse converts.
type rawFlags struct {
	verify                   []string
	catchUp, cpWait          string
	maxFindings, scanWorkers string
	anchorCheckInterval      string
}

// ErrHelp is returned by Parse when -h or --help was given; Usage has the
// text to show.
var ErrHelp = svcconfig.ErrHelp

func (c *Config) common() svcconfig.Common {
	return svcconfig.Common{
		Listen: &c.Listen, AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log,
		DefaultListen: DefaultListen, Identity: "service/verifier",
	}
}

func flagSet(c *Config, r *rawFlags, getenv func(string) string) *flag.FlagSet {
	fs := svcconfig.NewFlagSet("verifier")
	c.common().Register(fs, getenv)
	svcconfig.StringVar(fs, getenv, &c.PGDSN, "pg-dsn", "WITNZ_PG_DSN", "", "PostgreSQL URL of the protected database, read-only role")
	svcconfig.ListVar(fs, getenv, &c.Witnesses, "witness", "WITNZ_WITNESS", "https://host:port API URL of a witness node")
	svcconfig.StringVar(fs, getenv, &c.KeyFile, "key-file", "WITNZ_KEY_FILE", "", "file holding the commitment key K (or the key itself in WITNZ_COMMIT_KEY)")
	svcconfig.StringVar(fs, getenv, &c.DataDir, "data-dir", "WITNZ_DATA_DIR", "", "directory of the run history (history.db); empty keeps the history in memory only")
	svcconfig.StringVar(fs, getenv, &c.EvidenceDir, "evidence-dir", "WITNZ_EVIDENCE_DIR", "", "directory for the evidence bundles of findings (default DATA_DIR/evidence, or ./evidence without --data-dir)")
	svcconfig.StringVar(fs, getenv, &c.Slot, "slot", "WITNZ_SLOT", DefaultSlot, "cdc-ingest's logical replication slot: its confirmed position tells when the witnesses caught up")
	svcconfig.ListVar(fs, getenv, &r.verify, "verify", "WITNZ_VERIFY", "SCHEMA.TABLE=INTERVAL: verify the table every INTERVAL (e.g. public.audit_log=1h); repeat for each table")
	svcconfig.StringVar(fs, getenv, &r.catchUp, "catchup-timeout", "WITNZ_CATCHUP_TIMEOUT", DefaultCatchUpTimeout.String(), "longest wait for the witnesses to reach a snapshot's WAL position")
	svcconfig.StringVar(fs, getenv, &r.cpWait, "checkpoint-wait", "WITNZ_CHECKPOINT_WAIT", DefaultCheckpointWait.String(), "longest wait for a cosigned checkpoint that holds a finding's entry (0: use the latest)")
	svcconfig.StringVar(fs, getenv, &r.maxFindings, "max-findings", "WITNZ_MAX_FINDINGS", strconv.Itoa(DefaultMaxFindings), "findings reported per run at most")
	svcconfig.StringVar(fs, getenv, &c.PolicyFile, "policy", "WITNZ_POLICY", "", "checkpoint policy file (the witnesses' --policy): the latest cosigned checkpoint of each verified table must satisfy it")
	svcconfig.StringVar(fs, getenv, &c.AlertURL, "alert", "WITNZ_ALERT", "", "alert service URL https://host:port for findings and log integrity problems (default: log only)")
	svcconfig.StringVar(fs, getenv, &c.AnchorURL, "anchor", "WITNZ_ANCHOR", "", "anchor service URL https://host:port: check every --anchor-check-interval that the witness logs extend what was anchored (default: no check)")
	svcconfig.StringVar(fs, getenv, &r.anchorCheckInterval, "anchor-check-interval", "WITNZ_ANCHOR_CHECK_INTERVAL", DefaultAnchorCheckInterval.String(), "how often to run the anchor check (with --anchor)")
	svcconfig.StringVar(fs, getenv, &r.scanWorkers, "scan-workers", "WITNZ_SCAN_WORKERS", "0", "goroutines hashing rows during a scan (0: one per CPU)")
	return fs
}

// Parse reads args (without the program name) and the environment.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	var r rawFlags
	if err := svcconfig.Parse(flagSet(&c, &r, getenv), args); err != nil {
		return Config{}, err
	}
	c.KeyHex = getenv("WITNZ_COMMIT_KEY")
	if err := c.parseValues(r); err != nil {
		return Config{}, err
	}
	return c, nil
}

var (
	slotRE  = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	tableRE = regexp.MustCompile(`^[^.\s]+\.[^\s]+$`)
)

// parseValues converts the flags that are not plain strings.
func (c *Config) parseValues(r rawFlags) error {
	var err error
	if c.CatchUpTimeout, err = time.ParseDuration(r.catchUp); err != nil || c.CatchUpTimeout < time.Second || c.CatchUpTimeout > time.Hour {
		return fmt.Errorf("--catchup-timeout %q: want a duration from 1s to 1h (default %s)", r.catchUp, DefaultCatchUpTimeout)
	}
	if c.CheckpointWait, err = time.ParseDuration(r.cpWait); err != nil || c.CheckpointWait < 0 || c.CheckpointWait > time.Hour {
		return fmt.Errorf("--checkpoint-wait %q: want a duration from 0 to 1h (default %s)", r.cpWait, DefaultCheckpointWait)
	}
	if c.MaxFindings, err = strconv.Atoi(r.maxFindings); err != nil || c.MaxFindings < 1 || c.MaxFindings > 1_000_000 {
		return fmt.Errorf("--max-findings %q: want 1 to 1000000 (default %d)", r.maxFindings, DefaultMaxFindings)
	}
	if c.ScanWorkers, err = strconv.Atoi(r.scanWorkers); err != nil || c.ScanWorkers < 0 || c.ScanWorkers > 256 {
		return fmt.Errorf("--scan-workers %q: want 0 (one per CPU) to 256", r.scanWorkers)
	}
	if c.AnchorCheckInterval, err = time.ParseDuration(r.anchorCheckInterval); err != nil || c.AnchorCheckInterval < MinAnchorCheckInterval || c.AnchorCheckInterval > MaxAnchorCheckInterval {
		return fmt.Errorf("--anchor-check-interval %q: want a duration from %s to %s, e.g. 1h or 60s (default %s)", r.anchorCheckInterval, MinAnchorCheckInterval, MaxAnchorCheckInterval, DefaultAnchorCheckInterval)
	}
	seen := map[string]bool{}
	for _, v := range r.verify {
		table, every, ok := strings.Cut(v, "=")
		if !ok || !tableRE.MatchString(table) {
			return fmt.Errorf("--verify %q: want SCHEMA.TABLE=INTERVAL, e.g. --verify public.audit_log=1h", v)
		}
		d, err := time.ParseDuration(every)
		if err != nil || d < MinVerifyInterval || d > MaxVerifyInterval {
			return fmt.Errorf("--verify %q: the interval must be a duration from %s to %s, e.g. 1h or 15m", v, MinVerifyInterval, MaxVerifyInterval)
		}
		if seen[table] {
			return fmt.Errorf("--verify names %s twice: give each table one interval", table)
		}
		seen[table] = true
		c.Schedule = append(c.Schedule, Scheduled{Table: table, Interval: d})
	}
	c.EvidenceDir = c.EvidenceDirOrDefault()
	return nil
}

// EvidenceDirOrDefault is EvidenceDir, or its default: DataDir/evidence, or
// ./evidence without a DataDir.
func (c Config) EvidenceDirOrDefault() string {
	switch {
	case c.EvidenceDir != "":
		return c.EvidenceDir
	case c.DataDir != "":
		return filepath.Join(c.DataDir, "evidence")
	}
	return "evidence"
}

// Usage describes every flag.
func Usage() string {
	return svcconfig.Usage(flagSet(&Config{}, &rawFlags{}, func(string) string { return "" }),
		"Usage: verifier [flags]\n\nVerifies live PostgreSQL tables against the witness cluster.\n\nFlags:\n")
}

// Validate checks the configuration; each message names the flag at fault
// and how to fix it.
func (c Config) Validate() error {
	if err := c.common().Validate(); err != nil {
		return err
	}
	if c.PGDSN == "" {
		return errors.New("--pg-dsn is required (or WITNZ_PG_DSN): the URL of the protected database for a read-only role, e.g. postgres://witnz_verifier@127.0.0.1:5432/app")
	}
	if _, err := pgx.ParseConfig(c.PGDSN); err != nil {
		return fmt.Errorf("--pg-dsn: %w (want a URL like postgres://user@host:5432/db)", err)
	}
	if len(c.Witnesses) == 0 {
		return errors.New("--witness is required (repeat it, or WITNZ_WITNESS comma-separated): the https://host:port API URL of every witness node")
	}
	if err := svcconfig.ValidateURLs("--witness", c.Witnesses); err != nil {
		return err
	}
	if c.AlertURL != "" {
		if err := svcconfig.ValidateURL("--alert", c.AlertURL); err != nil {
			return err
		}
	}
	if c.AnchorURL != "" {
		if err := svcconfig.ValidateURL("--anchor", c.AnchorURL); err != nil {
			return err
		}
	}
	if c.Slot != "" && !slotRE.MatchString(c.Slot) {
		return fmt.Errorf("--slot %q: a slot name is 1 to 63 lower-case letters, digits or underscores, e.g. --slot %s", c.Slot, DefaultSlot)
	}
	return nil
}
