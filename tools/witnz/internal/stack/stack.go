// Package stack runs a complete local witnz deployment in one directory:
// PostgreSQL (wal_level=logical) with a demo database, Redis, three
// witnesses and every service, each with its own certificate, on free
// loopback ports. It supervises them (restart with backoff), stops them in
// reverse order, and describes the running stack in stack.json.
//
// `witnz up` is a thin wrapper around Start; the end-to-end tests drive the
// same code in a temporary directory.
package stack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
)

// Config says where a stack lives and how it is run.
type Config struct {
	// Dir holds all state: PKI, key, PostgreSQL data, witness data, logs,
	// stack.json. Made absolute.
	Dir string
	// BinDir holds the service binaries (make build puts them in bin/).
	BinDir string
	// Witnesses are the witness node ids; empty means w1, w2, w3.
	Witnesses []string
	// Hostname names the host agent; empty means os.Hostname().
	Hostname string
	// Out receives progress and supervision lines; nil discards them.
	Out io.Writer
	// ReadyTimeout bounds the wait for each group of processes to become
	// ready; zero means 90 s.
	ReadyTimeout time.Duration
	// StopTimeout is how long a process may take to stop after SIGTERM
	// before it is killed; zero means 15 s.
	StopTimeout time.Duration
	// Backoff is the restart policy; zero means DefaultBackoff.
	Backoff Backoff
	// Tables are further tables of the demo database that cdc-ingest
	// protects besides DemoTable.
	Tables []Table
	// AnchorInterval is how often the anchor service anchors every
	// table's checkpoint, and AnchorCheckInterval how often the verifier
	// checks the logs against the anchors; zero means
	// DefaultAnchorInterval.
	AnchorInterval, AnchorCheckInterval time.Duration
	// AnchorS3, when set, makes the anchor service write to an S3 bucket
	// with Object Lock instead of the directory sink <dir>/anchors.
	AnchorS3 *S3Sink
}

// S3Sink is an S3 (or S3-compatible) bucket with Object Lock enabled.
type S3Sink struct {
	// Endpoint is the store's base URL (empty: AWS); PathStyle addresses
	// the bucket as endpoint/bucket, as most S3-compatible stores need.
	Endpoint  string
	PathStyle bool
	Bucket    string
	Region    string
	// AccessKeyID and SecretAccessKey are the credentials (empty: the
	// standard AWS chain of the supervisor's environment). The secret is
	// given to the anchor service in its environment, not its arguments.
	AccessKeyID, SecretAccessKey string
	// Retain is each object's COMPLIANCE retention; zero means the anchor
	// service's default.
	Retain time.Duration
}

// args are the anchor service's flags for the sink, and env its
// environment additions.
func (s *S3Sink) args() (args, env []string) {
	args = []string{"--sink", "s3", "--s3-bucket", s.Bucket}
	if s.Endpoint != "" {
		args = append(args, "--s3-endpoint", s.Endpoint)
	}
	if s.PathStyle {
		args = append(args, "--s3-path-style=true")
	}
	if s.Region != "" {
		args = append(args, "--s3-region", s.Region)
	}
	if s.Retain > 0 {
		args = append(args, "--s3-retain", s.Retain.String())
	}
	if s.AccessKeyID != "" {
		args = append(args, "--s3-access-key-id", s.AccessKeyID)
		env = append(env, "WITNZ_S3_SECRET_ACCESS_KEY="+s.SecretAccessKey)
	}
	return args, env
}

// DefaultAnchorInterval is the local stack's anchor interval: short, so
// anchors appear while trying it out (production default: 24 h).
const DefaultAnchorInterval = 60 * time.Second

// Table is a further protected table of the demo database.
type Table struct {
	// Name is "schema.table".
	Name string
	// Mode is "append-only" (also when empty) or "mutable".
	Mode string
	// DDL creates the table before cdc-ingest starts. It runs on every
	// start of the stack, so it must be idempotent (CREATE TABLE IF NOT
	// EXISTS).
	DDL string
}

// Binaries are the service executables a stack needs in Config.BinDir.
var Binaries = []string{"witness", "cdc-ingest", "alert", "gateway", "verifier", "anchor", "host-agent"}

// Stack is a running local deployment.
type Stack struct {
	cfg    Config
	out    *syncWriter
	lock   *os.File
	info   Info
	groups [][]*proc // in start order
	byName map[string]*proc

	stopOnce sync.Once
}

// Start brings the whole stack up and returns once every process is ready
// and stack.json is written. On error everything started is stopped again.
// The stack runs until Stop.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(cfg.Dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("create stack directory: %w", err)
		}
		// Searchable whatever the umask: PostgreSQL may run as another user.
		if err := os.Chmod(cfg.Dir, 0o755); err != nil {
			return nil, err
		}
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Stack{cfg: cfg, out: &syncWriter{w: cfg.Out}, lock: lock, byName: map[string]*proc{}}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if err := s.checkBinaries(); err != nil {
		return nil, err
	}
	s.logf("stack directory %s", cfg.Dir)
	for _, d := range []string{"logs", "anchors", "anchor", "host-agent", "redis", "verifier", "evidence"} {
		if err := os.MkdirAll(s.path(d), 0o755); err != nil {
			return nil, err
		}
	}

	pkiDir := s.path("pki")
	if err := pki.Init(pkiDir, Identities(cfg.Witnesses, cfg.Hostname), pki.Options{}); err != nil {
		return nil, fmt.Errorf("PKI: %w", err)
	}
	s.logf("certificates in %s", pkiDir)
	keyPath := s.path("commit.key")
	if err := WriteCommitKey(keyPath); err == nil {
		s.logf("created commitment key %s", keyPath)
	} else if !errors.Is(err, ErrKeyExists) {
		return nil, fmt.Errorf("commitment key: %w", err)
	}

	pt, err := assignPorts(cfg.Dir, cfg.Witnesses, s.logf)
	if err != nil {
		return nil, err
	}
	pg, err := s.startPostgres(ctx, pt.Postgres)
	if err != nil {
		return nil, err
	}
	redisAddr, err := s.startRedis(ctx, pt.Redis)
	if err != nil {
		return nil, err
	}
	witnessURLs, err := s.startWitnesses(ctx, pkiDir, pt.Witnesses, httpsURL(pt.Services["alert"].API))
	if err != nil {
		return nil, err
	}
	if err := s.startServices(ctx, pkiDir, pt.Services, pg, redisAddr, keyPath, witnessURLs); err != nil {
		return nil, err
	}

	operator := pki.PathsFor(pkiDir, Operator)
	s.info.Version = InfoVersion
	s.info.Dir = cfg.Dir
	s.info.PID = os.Getpid()
	s.info.Gateway = s.info.Services["gateway"].URL
	s.info.Postgres = PostgresInfo{DSN: pg.DSN(DemoDatabase), AlertDSN: pg.DSN(AlertDatabase), DataDir: pg.dataDir}
	s.info.Redis = redisAddr
	s.info.TLS = TLSInfo{CA: operator.CA, Cert: operator.Cert, Key: operator.Key}
	if err := writeInfo(s.path(InfoFile), s.info); err != nil {
		return nil, fmt.Errorf("write stack file: %w", err)
	}
	return s, nil
}

func (s *Stack) startPostgres(ctx context.Context, port int) (*postgres, error) {
	pg, err := newPostgres(s.cfg.Dir, port)
	if err != nil {
		return nil, err
	}
	if !pg.initialized() {
		s.logf("postgres: creating a cluster in %s", pg.dataDir)
	}
	if err := pg.prepare(ctx); err != nil {
		return nil, err
	}
	if err := s.startGroup(ctx, pg.spec(s.logPath("postgres"))); err != nil {
		return nil, err
	}
	if err := pg.setup(ctx, s.cfg.Tables); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s.logf("postgres ready on 127.0.0.1:%d (databases %s, %s)", port, DemoDatabase, AlertDatabase)
	return pg, nil
}

func (s *Stack) startRedis(ctx context.Context, port int) (string, error) {
	bin, err := findRedis()
	if err != nil {
		return "", err
	}
	if err := s.startGroup(ctx, redisSpec(bin, s.path("redis"), port, s.logPath("redis"))); err != nil {
		return "", err
	}
	addr := loopback(port)
	s.logf("redis ready on %s", addr)
	return addr, nil
}

// startWitnesses starts every witness node together (none is ready before
// the cluster has a leader), each with its cosigner key and the stack's
// checkpoint policy, and returns their API URLs.
func (s *Stack) startWitnesses(ctx context.Context, pkiDir string, ports map[string]witnessPorts, alertURL string) ([]string, error) {
	cosign, err := cosignKeys(s.path("cosign"), s.cfg.Witnesses)
	if err != nil {
		return nil, fmt.Errorf("witness cosigner keys: %w", err)
	}
	var peers, urls []string
	for _, id := range s.cfg.Witnesses {
		wp := ports[id]
		peers = append(peers, "--peer", fmt.Sprintf("%s=%s,%s", id, loopback(wp.Raft), httpsURL(wp.API)))
		urls = append(urls, httpsURL(wp.API))
	}
	var specs []procSpec
	for i, id := range s.cfg.Witnesses {
		wp := ports[id]
		dataDir := s.path("witness", id)
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, err
		}
		args := append(s.tlsArgs(pkiDir, mtls.Witness(id), wp.API, wp.Admin),
			"--node-id", id,
			"--data-dir", dataDir,
			"--raft-listen", loopback(wp.Raft),
			"--api-advertise", httpsURL(wp.API),
			"--alert", alertURL,
		)
		args = append(append(args, cosign[id]...), peers...)
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		specs = append(specs, s.serviceSpec(id, "witness", args, wp.Admin))
		s.info.Witnesses = append(s.info.Witnesses, WitnessInfo{
			ID: id, URL: httpsURL(wp.API), Raft: loopback(wp.Raft), Admin: httpURL(wp.Admin),
			DataDir: dataDir, Log: s.logPath(id),
		})
	}
	s.logf("starting witnesses %s", strings.Join(s.cfg.Witnesses, ", "))
	if err := s.startGroup(ctx, specs...); err != nil {
		return nil, err
	}
	return urls, nil
}

// startServices starts the services in dependency order: alert (everyone
// reports to it), cdc-ingest, then the rest together.
func (s *Stack) startServices(ctx context.Context, pkiDir string, ports map[string]servicePorts, pg *postgres, redisAddr, keyPath string, witnessURLs []string) error {
	url := func(name string) string { return httpsURL(ports[name].API) }
	policy := filepath.Join(s.path("cosign"), PolicyFile)
	sinkArgs, sinkEnv := []string{"--sink", "dir", "--sink-dir", s.path("anchors")}, []string(nil)
	if s.cfg.AnchorS3 != nil {
		sinkArgs, sinkEnv = s.cfg.AnchorS3.args()
	}
	var witnessFlags []string
	for _, u := range witnessURLs {
		witnessFlags = append(witnessFlags, "--witness", u)
	}
	protect := []string{"--protect", DemoTable + ":append-only"}
	for _, t := range s.cfg.Tables {
		mode := t.Mode
		if mode == "" {
			mode = "append-only"
		}
		protect = append(protect, "--protect", t.Name+":"+mode)
	}
	own := map[string][]string{
		"alert": {"--pg-dsn", pg.DSN(AlertDatabase), "--redis-addr", redisAddr},
		"cdc-ingest": slices.Concat([]string{
			"--pg-dsn", pg.DSN(DemoDatabase),
			"--key-file", keyPath,
			"--alert", url("alert"),
		}, protect, witnessFlags),
		"gateway": append([]string{
			"--ingest", url("cdc-ingest"),
			"--alert", url("alert"),
			"--verifier", url("verifier"),
			"--anchor", url("anchor"),
			"--redis-addr", redisAddr,
		}, witnessFlags...),
		"verifier": slices.Concat([]string{
			"--pg-dsn", pg.DSN(DemoDatabase), "--key-file", keyPath, "--data-dir", s.path("verifier"), "--evidence-dir", s.path("evidence"),
			"--policy", policy, "--alert", url("alert"),
			"--anchor", url("anchor"), "--anchor-check-interval", s.cfg.AnchorCheckInterval.String(),
		}, witnessFlags),
		// The dir sink writes read-only files under anchors/; the receipt
		// store lives in anchor/.
		"anchor": slices.Concat(sinkArgs, []string{
			"--data-dir", s.path("anchor"),
			"--policy", policy, "--interval", s.cfg.AnchorInterval.String(), "--alert", url("alert"),
		}, witnessFlags),
	}
	specs := map[string]procSpec{}
	s.info.Services = map[string]ServiceInfo{}
	for _, name := range services {
		sp := ports[name]
		info := ServiceInfo{URL: url(name), Admin: httpURL(sp.Admin), Log: s.logPath(name)}
		var args []string
		if name == "host-agent" {
			// The agent serves no API, only the admin listener.
			p := pki.PathsFor(pkiDir, mtls.Identity{Kind: mtls.KindAgent, Name: s.cfg.Hostname})
			args = []string{
				"--admin-listen", loopback(sp.Admin),
				"--tls-cert", p.Cert, "--tls-key", p.Key, "--tls-ca", p.CA,
				"--alert", url("alert"),
				"--data-dir", s.path("host-agent"),
				"--hostname", s.cfg.Hostname,
			}
			info.URL = ""
		} else {
			args = append(s.tlsArgs(pkiDir, mtls.Service(name), sp.API, sp.Admin), own[name]...)
		}
		specs[name] = s.serviceSpec(name, name, args, sp.Admin)
		if name == "anchor" {
			spec := specs[name]
			spec.env = append(spec.env, sinkEnv...)
			specs[name] = spec
		}
		s.info.Services[name] = info
	}
	for _, group := range [][]string{{"alert"}, {"cdc-ingest"}, {"gateway", "verifier", "anchor", "host-agent"}} {
		s.logf("starting %s", strings.Join(group, ", "))
		var g []procSpec
		for _, name := range group {
			g = append(g, specs[name])
		}
		if err := s.startGroup(ctx, g...); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) defaults() error {
	if c.Dir == "" {
		return errors.New("stack directory is required (--dir)")
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return err
	}
	c.Dir = dir
	if c.BinDir == "" {
		return errors.New("binary directory is required (--bin)")
	}
	if c.BinDir, err = filepath.Abs(c.BinDir); err != nil {
		return err
	}
	if len(c.Witnesses) == 0 {
		c.Witnesses = DefaultWitnesses
	}
	if c.Hostname == "" {
		if c.Hostname, err = os.Hostname(); err != nil {
			return fmt.Errorf("host name for the host agent: %w", err)
		}
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 90 * time.Second
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 15 * time.Second
	}
	if c.Backoff == (Backoff{}) {
		c.Backoff = DefaultBackoff
	}
	if c.AnchorInterval == 0 {
		c.AnchorInterval = DefaultAnchorInterval
	}
	if c.AnchorCheckInterval == 0 {
		c.AnchorCheckInterval = DefaultAnchorInterval
	}
	return nil
}

func (s *Stack) checkBinaries() error {
	var missing []string
	for _, b := range Binaries {
		fi, err := os.Stat(filepath.Join(s.cfg.BinDir, b))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("service binaries missing in %s (%s): run `make build` or point --bin at the directory that holds them", s.cfg.BinDir, strings.Join(missing, ", "))
	}
	return nil
}

func (s *Stack) path(elem ...string) string {
	return filepath.Join(append([]string{s.cfg.Dir}, elem...)...)
}

func (s *Stack) logPath(name string) string { return s.path("logs", name+".log") }

func (s *Stack) tlsArgs(pkiDir string, id mtls.Identity, api, admin int) []string {
	p := pki.PathsFor(pkiDir, id)
	return []string{
		"--listen", loopback(api),
		"--admin-listen", loopback(admin),
		"--tls-cert", p.Cert, "--tls-key", p.Key, "--tls-ca", p.CA,
	}
}

// serviceSpec runs a witnz binary, ready once its admin /readyz answers 200.
func (s *Stack) serviceSpec(name, binary string, args []string, admin int) procSpec {
	readyURL := httpURL(admin) + "/readyz"
	return procSpec{
		name:  name,
		path:  filepath.Join(s.cfg.BinDir, binary),
		args:  args,
		env:   childEnv(),
		dir:   s.cfg.Dir,
		log:   s.logPath(name),
		ready: func(ctx context.Context, _ int) error { return httpReady(ctx, readyURL) },
	}
}

// childEnv is the environment of the services: the supervisor's without
// WITNZ_* variables, so the stack's flags are the whole configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WITNZ_") {
			env = append(env, kv)
		}
	}
	return env
}

var readyClient = &http.Client{Timeout: 3 * time.Second}

func httpReady(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := readyClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// startGroup starts the processes together and waits until all are ready.
// A process that exits before it is ready fails the start with the end of
// its log.
func (s *Stack) startGroup(ctx context.Context, specs ...procSpec) error {
	var group []*proc
	for _, spec := range specs {
		p := newProc(spec, s.cfg.Backoff, s.logf)
		if err := p.start(); err != nil {
			s.stopGroup(group)
			return fmt.Errorf("%s: %w", spec.name, err)
		}
		group = append(group, p)
	}
	s.groups = append(s.groups, group)
	for _, p := range group {
		s.byName[p.spec.name] = p
	}
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	for _, p := range group {
		if err := s.waitReady(ctx, p, deadline); err != nil {
			return err
		}
	}
	return nil
}

func (s *Stack) waitReady(ctx context.Context, p *proc, deadline time.Time) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if exits, last := p.status(); exits > 0 {
			return fmt.Errorf("%s exited during start-up (%s); last lines of %s:\n%s", p.spec.name, last, p.spec.log, logTail(p.spec.log, 20))
		}
		if pid := p.PID(); pid != 0 {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			lastErr = p.spec.ready(cctx, pid)
			cancel()
			if lastErr == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (%v); last lines of %s:\n%s", p.spec.name, s.cfg.ReadyTimeout, lastErr, p.spec.log, logTail(p.spec.log, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start of %s interrupted: %w", p.spec.name, ctx.Err())
		case <-tick.C:
		}
	}
}

// logTail returns the last n lines of a log file.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		f.Seek(-64<<10, io.SeekEnd)
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return "(log is empty)"
	}
	return strings.Join(lines, "\n")
}

// Info describes the running stack, as written to stack.json.
func (s *Stack) Info() Info { return s.info }

// PID is the current process id of a stack process ("postgres", "redis", a
// witness id or a service name), 0 if it is not running.
func (s *Stack) PID(name string) int {
	if p, ok := s.byName[name]; ok {
		return p.PID()
	}
	return 0
}

// Processes lists the names of every process of the stack in start order.
func (s *Stack) Processes() []string {
	var names []string
	for _, g := range s.groups {
		for _, p := range g {
			names = append(names, p.spec.name)
		}
	}
	return names
}

// Stop stops every process, group by group in reverse start order (the
// services, the witnesses, Redis, PostgreSQL), and releases the stack
// directory. It is safe to call more than once.
func (s *Stack) Stop() {
	s.stopOnce.Do(func() {
		for i := len(s.groups) - 1; i >= 0; i-- {
			s.stopGroup(s.groups[i])
		}
		unlockDir(s.lock)
	})
}

func (s *Stack) stopGroup(group []*proc) {
	var wg sync.WaitGroup
	for _, p := range group {
		wg.Go(func() {
			if p.PID() != 0 {
				defer s.logf("stopped %s", p.spec.name)
			}
			p.stop(s.cfg.StopTimeout)
		})
	}
	wg.Wait()
}

func (s *Stack) logf(format string, args ...any) {
	s.out.printf(format, args...)
}

func httpsURL(port int) string { return "https://" + loopback(port) }
func httpURL(port int) string  { return "http://" + loopback(port) }

// syncWriter serialises lines from the supervising goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) printf(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(w.w, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
