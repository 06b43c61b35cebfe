// Package config reads a witness node's configuration from flags and
// environment variables (flags win) and checks it.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/svcconfig"
)

// Defaults of the listeners and of the identity allowed to append.
const (
	DefaultListen         = "127.0.0.1:7010"
	DefaultRaftListen     = "127.0.0.1:7011"
	DefaultIngestIdentity = "cdc-ingest"
	// DefaultAnchorIdentity is the service allowed to record anchor
	// receipts.
	DefaultAnchorIdentity = "anchor"
)

// ErrHelp is returned by Parse for -h and --help.
var ErrHelp = svcconfig.ErrHelp

// Peer is one voter of the cluster as the --peer flag names it.
type Peer struct {
	// ID is the node id, the Raft server id and the name in the node's
	// certificate (spiffe://witnz/witness/<id>).
	ID string
	// RaftAddr is the host:port other nodes reach its Raft transport on.
	RaftAddr string
	// APIAddr is the https://host:port URL clients reach its API on.
	APIAddr string
}

// RaftTuning holds the Raft timing knobs (--raft-heartbeat-timeout,
// --raft-election-timeout, --raft-leader-lease-timeout,
// --raft-commit-timeout). Zero values mean the defaults of package node.
type RaftTuning struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64
}

// Config is everything a witness node needs to start.
type Config struct {
	// Listen is the host:port of the Connect/gRPC API listener (mutual TLS).
	Listen string
	// AdminListen is the host:port of the plain-HTTP health and metrics
	// listener; empty turns it off.
	AdminListen string
	TLS         mtls.Files
	Log         logging.Options

	// NodeID names this node; its certificate must be witness/<NodeID>.
	NodeID string
	// DataDir holds the Raft log, stable store and snapshots.
	DataDir string
	// RaftListen is the host:port the Raft transport binds.
	RaftListen string
	// RaftAdvertise is the host:port other nodes dial for Raft; it must
	// be this node's address in Peers.
	RaftAdvertise string
	// APIAdvertise is the https://host:port URL clients reach this node's
	// API on.
	APIAdvertise string
	// Peers lists every voter, this node included.
	Peers []Peer
	// Bootstrap makes this node create the cluster from Peers when it has
	// no Raft state yet.
	Bootstrap bool
	// IngestIdentity is the service name (spiffe://witnz/service/<name>)
	// allowed to call Append and RegisterTable.
	IngestIdentity string
	// AnchorIdentity is the service name (spiffe://witnz/service/<name>)
	// allowed to record anchor receipts.
	AnchorIdentity string

	// Raft tunes Raft timing; not exposed as flags yet.
	Raft RaftTuning

	// Cosign configures cosigned checkpoints (cosign.go).
	Cosign Cosign

	// Membership configures membership changes (membership.go).
	Membership Membership
}

const usage = `usage: witness --node-id ID --data-dir DIR --peer ID=RAFT_ADDR,API_ADDR [--peer ...] --tls-cert FILE --tls-key FILE --tls-ca FILE
               [--listen HOST:PORT] [--raft-listen HOST:PORT] [--raft-advertise HOST:PORT] [--api-advertise https://HOST:PORT]
               [--bootstrap] [--ingest-identity NAME] [--anchor-identity NAME] [--admin-listen HOST:PORT] [--log-level LEVEL] [--log-format json|text]
               [--cluster NAME] [--cosign-key FILE --policy FILE [--log-key FILE]] [--checkpoint-interval DURATION]
               [--alert https://HOST:PORT] [--witness-log FILE ...]
`

// Usage describes the flags.
func Usage() string {
	return svcconfig.Usage(newFlagSet(&Config{}, new([]string), new(string), new(string), raftDurations(&Config{}), func(string) string { return "" }), usage)
}

func (c *Config) common() svcconfig.Common {
	return svcconfig.Common{
		Listen: &c.Listen, AdminListen: &c.AdminListen, TLS: &c.TLS, Log: &c.Log,
		DefaultListen: DefaultListen, Identity: "witness/<node-id>",
	}
}

// durationFlag is a duration flag and the field it sets.
type durationFlag struct {
	name, env, help string
	dst             *time.Duration
	raw             string
}

func raftDurations(c *Config) []*durationFlag {
	return []*durationFlag{
		{name: "raft-heartbeat-timeout", env: "WITNZ_RAFT_HEARTBEAT_TIMEOUT", help: "a follower without contact from the leader this long starts an election (default 2s; raise it over slow or lossy links, e.g. 5s at 150 ms RTT)", dst: &c.Raft.HeartbeatTimeout},
		{name: "raft-election-timeout", env: "WITNZ_RAFT_ELECTION_TIMEOUT", help: "a candidate without a result this long starts another election (default 2s)", dst: &c.Raft.ElectionTimeout},
		{name: "raft-leader-lease-timeout", env: "WITNZ_RAFT_LEADER_LEASE_TIMEOUT", help: "a leader without contact from a quorum this long steps down (default 1s; at most --raft-heartbeat-timeout)", dst: &c.Raft.LeaderLeaseTimeout},
		{name: "raft-commit-timeout", env: "WITNZ_RAFT_COMMIT_TIMEOUT", help: "longest a commit waits before followers are told of it (default 50ms)", dst: &c.Raft.CommitTimeout},
	}
}

func newFlagSet(c *Config, peers *[]string, bootstrap, checkpointInterval *string, durations []*durationFlag, getenv func(string) string) *flag.FlagSet {
	fs := svcconfig.NewFlagSet("witness")
	c.common().Register(fs, getenv)
	str := func(p *string, name, env, def, help string) {
		svcconfig.StringVar(fs, getenv, p, name, env, def, help)
	}
	str(&c.NodeID, "node-id", "WITNZ_NODE_ID", "", "id of this node, e.g. w1; its certificate must be witness/<id>")
	str(&c.DataDir, "data-dir", "WITNZ_DATA_DIR", "", "directory of the Raft log, stable store and snapshots")
	str(&c.RaftListen, "raft-listen", "WITNZ_RAFT_LISTEN", DefaultRaftListen, "host:port the Raft transport (mutual TLS) listens on")
	str(&c.RaftAdvertise, "raft-advertise", "WITNZ_RAFT_ADVERTISE", "", "host:port other nodes dial for Raft (default --raft-listen)")
	str(&c.APIAdvertise, "api-advertise", "WITNZ_API_ADVERTISE", "", "https://host:port clients reach this node's API on (default --listen)")
	str(&c.IngestIdentity, "ingest-identity", "WITNZ_INGEST_IDENTITY", DefaultIngestIdentity, "service name allowed to Append and RegisterTable (spiffe://witnz/service/<name>)")
	str(&c.AnchorIdentity, "anchor-identity", "WITNZ_ANCHOR_IDENTITY", DefaultAnchorIdentity, "service name allowed to record anchor receipts (spiffe://witnz/service/<name>)")
	str(bootstrap, "bootstrap", "WITNZ_BOOTSTRAP", "false", "bootstrap the cluster from the --peer list if this node has no Raft state yet")
	// The first --peer replaces WITNZ_PEERS.
	svcconfig.ListVarSep(fs, getenv, peers, "peer", "WITNZ_PEERS", ";", "ID=RAFT_ADDR,API_ADDR of a voter, repeated for every voter including this node (env WITNZ_PEERS as ID=RAFT,API;ID=RAFT,API)")
	for _, d := range durations {
		str(&d.raw, d.name, d.env, "", d.help)
	}
	c.Cosign.register(fs, getenv, checkpointInterval)
	c.Membership.register(fs, getenv)
	// --bootstrap is a boolean flag that also accepts --bootstrap=false.
	fs.Lookup("bootstrap").Value = boolString{bootstrap}
	return fs
}

// boolString lets a string-backed flag behave as a boolean flag, so that
// "--bootstrap" alone means true while the env value is still validated.
type boolString struct{ p *string }

func (b boolString) String() string {
	if b.p == nil {
		return ""
	}
	return *b.p
}
func (b boolString) Set(v string) error { *b.p = v; return nil }
func (b boolString) IsBoolFlag() bool   { return true }

// Parse reads flags from args, falling back to environment variables read
// through getenv for flags that are not given, fills in the defaults that
// depend on other flags, and validates the result.
func Parse(args []string, getenv func(string) string) (Config, error) {
	var c Config
	var peers []string
	var bootstrap, checkpointInterval string
	durations := raftDurations(&c)
	if err := svcconfig.Parse(newFlagSet(&c, &peers, &bootstrap, &checkpointInterval, durations, getenv), args); err != nil {
		return Config{}, err
	}
	for _, d := range durations {
		if d.raw == "" {
			continue
		}
		v, err := time.ParseDuration(d.raw)
		if err != nil || v <= 0 || v > time.Minute {
			return Config{}, fmt.Errorf("--%s %q: want a duration between 1ms and 1m, e.g. --%s 2s", d.name, d.raw, d.name)
		}
		*d.dst = v
	}
	if err := c.Cosign.parseInterval(checkpointInterval); err != nil {
		return Config{}, err
	}
	if lease, hb := c.Raft.LeaderLeaseTimeout, c.Raft.HeartbeatTimeout; lease != 0 && hb != 0 && lease > hb {
		return Config{}, fmt.Errorf("--raft-leader-lease-timeout %s exceeds --raft-heartbeat-timeout %s: the lease must not outlast the heartbeat timeout", lease, hb)
	}
	var err error
	c.Bootstrap, err = strconv.ParseBool(bootstrap)
	if err != nil {
		return Config{}, fmt.Errorf("--bootstrap %q is not a boolean: use --bootstrap, --bootstrap=false or WITNZ_BOOTSTRAP=true|false", bootstrap)
	}
	if c.RaftAdvertise == "" {
		c.RaftAdvertise = c.RaftListen
	}
	if c.APIAdvertise == "" {
		c.APIAdvertise = c.Listen
	}
	if u, err := NormalizeAPIAddr(c.APIAdvertise); err == nil {
		c.APIAdvertise = u
	}
	for _, raw := range peers {
		p, err := parsePeer(raw)
		if err != nil {
			return Config{}, err
		}
		c.Peers = append(c.Peers, p)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func parsePeer(raw string) (Peer, error) {
	const form = "(want ID=RAFT_HOST:PORT,API_HOST:PORT, e.g. w1=10.0.0.1:7011,https://10.0.0.1:7010)"
	id, rest, ok := strings.Cut(strings.TrimSpace(raw), "=")
	if !ok {
		return Peer{}, fmt.Errorf("--peer %q has no '=' %s", raw, form)
	}
	raftAddr, apiAddr, ok := strings.Cut(rest, ",")
	if !ok {
		return Peer{}, fmt.Errorf("--peer %q has no API address after the ',' %s", raw, form)
	}
	p := Peer{ID: strings.TrimSpace(id), RaftAddr: strings.TrimSpace(raftAddr)}
	if !nodeIDPattern.MatchString(p.ID) {
		return Peer{}, fmt.Errorf("--peer %q: id %q must be 1-63 letters, digits, '.', '_' or '-' %s", raw, p.ID, form)
	}
	if err := checkAdvertised("--peer "+p.ID+" Raft address", p.RaftAddr); err != nil {
		return Peer{}, err
	}
	api, err := NormalizeAPIAddr(strings.TrimSpace(apiAddr))
	if err != nil {
		return Peer{}, fmt.Errorf("--peer %s API address: %w", p.ID, err)
	}
	p.APIAddr = api
	return p, nil
}

// NormalizeAPIAddr turns "host:port" or "https://host:port" into
// "https://host:port".
func NormalizeAPIAddr(s string) (string, error) {
	hostport := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return "", fmt.Errorf("%q is not https://host:port", s)
		}
		hostport = u.Host
	}
	if err := checkAdvertised("", hostport); err != nil {
		return "", fmt.Errorf("%q is not https://host:port with a reachable host (%v)", s, err)
	}
	return "https://" + hostport, nil
}

// checkAdvertised accepts host:port with a host other nodes can dial.
func checkAdvertised(what, v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil || port == "" {
		return fmt.Errorf("%s %q is not host:port", what, v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%s %q has no valid port (1-65535)", what, v)
	}
	if host == "" {
		return fmt.Errorf("%s %q has no host: name the address other nodes reach", what, v)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%s %q is a wildcard address other nodes cannot dial", what, v)
	}
	return nil
}

// Validate checks the configuration; its errors name the flag at fault and
// how to fix it.
func (c Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("--node-id is required: the id of this node (e.g. w1), matching its certificate witness/<id> and its --peer entry")
	}
	if !nodeIDPattern.MatchString(c.NodeID) {
		return fmt.Errorf("--node-id %q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", c.NodeID)
	}
	if c.DataDir == "" {
		return errors.New("--data-dir is required: the directory that holds this node's Raft log and snapshots (e.g. /var/lib/witnz/w1)")
	}
	if err := c.common().Validate(); err != nil {
		return err
	}
	if err := svcconfig.ValidateListenAddr("--raft-listen", c.RaftListen, DefaultRaftListen); err != nil {
		return err
	}
	if err := checkAdvertised("--raft-advertise", c.RaftAdvertise); err != nil {
		return fmt.Errorf("%w (set --raft-advertise to the host:port other nodes dial, e.g. 10.0.0.1:7011)", err)
	}
	api, err := NormalizeAPIAddr(c.APIAdvertise)
	if err != nil {
		return fmt.Errorf("--api-advertise %w (set --api-advertise to the URL clients reach, e.g. https://10.0.0.1:7010)", err)
	}
	if c.IngestIdentity == "" || strings.Contains(c.IngestIdentity, "/") {
		return fmt.Errorf("--ingest-identity %q must be a service name such as %s (the identity spiffe://witnz/service/<name>)", c.IngestIdentity, DefaultIngestIdentity)
	}
	if c.AnchorIdentity == "" || strings.Contains(c.AnchorIdentity, "/") {
		return fmt.Errorf("--anchor-identity %q must be a service name such as %s (the identity spiffe://witnz/service/<name>)", c.AnchorIdentity, DefaultAnchorIdentity)
	}
	if len(c.Peers) == 0 {
		return fmt.Errorf("--peer is required: list every voter including this node, e.g. --peer %s=%s,%s", c.NodeID, c.RaftAdvertise, c.APIAdvertise)
	}
	ids, addrs := map[string]bool{}, map[string]string{}
	var self *Peer
	for i, p := range c.Peers {
		if ids[p.ID] {
			return fmt.Errorf("--peer %s is listed twice: give each voter once", p.ID)
		}
		ids[p.ID] = true
		if other, dup := addrs[p.RaftAddr]; dup {
			return fmt.Errorf("--peer %s and --peer %s share the Raft address %s: each voter needs its own", other, p.ID, p.RaftAddr)
		}
		addrs[p.RaftAddr] = p.ID
		if p.ID == c.NodeID {
			self = &c.Peers[i]
		}
	}
	if self == nil {
		return fmt.Errorf("--peer has no entry for this node %q: add --peer %s=%s,%s", c.NodeID, c.NodeID, c.RaftAdvertise, c.APIAdvertise)
	}
	if self.RaftAddr != c.RaftAdvertise {
		return fmt.Errorf("--peer %s=%s does not match --raft-advertise %s: the Raft address of this node must be the same in both", self.ID, self.RaftAddr, c.RaftAdvertise)
	}
	if selfAPI, _ := NormalizeAPIAddr(self.APIAddr); selfAPI != api {
		return fmt.Errorf("--peer %s API address %s does not match --api-advertise %s: the API address of this node must be the same in both", self.ID, self.APIAddr, c.APIAdvertise)
	}
	if err := c.Membership.Validate(); err != nil {
		return err
	}
	return c.Cosign.Validate()
}
