package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PG is a throwaway PostgreSQL cluster owned by one test. It listens on
// 127.0.0.1 only, trusts every connection, and is started with
// wal_level=logical so logical replication slots (pgoutput) work. Its methods
// may be called from several goroutines; Stop, Start and Kill serialise.
type PG struct {
	in       *pgInstall
	base     string // removed at cleanup; holds the data dir and the server log
	dir      string // data directory, also the unix socket directory
	logPath  string
	port     int
	settings []pgSetting

	mu      sync.Mutex
	running bool
}

type pgSetting struct{ name, value string }

// PGOption configures PostgreSQL.
type PGOption func(*pgConfig)

type pgConfig struct {
	settings []pgSetting
}

func (c *pgConfig) set(name, value string) {
	for i, s := range c.settings {
		if strings.EqualFold(s.name, name) {
			c.settings[i].value = value
			return
		}
	}
	c.settings = append(c.settings, pgSetting{name, value})
}

// WithSetting passes "-c name=value" to the server, replacing the default for
// name if there is one (e.g. WithSetting("wal_level", "replica") for a test
// that logical replication is refused). port, listen_addresses and
// unix_socket_directories are chosen by PostgreSQL and cannot be set.
func WithSetting(name, value string) PGOption {
	return func(c *pgConfig) { c.set(name, value) }
}

var settingNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// defaultPGSettings is what every cluster starts with. fsync=off because a
// test cluster never outlives its machine; a Kill still loses nothing that
// was committed, since the OS keeps the page cache.
func defaultPGSettings() []pgSetting {
	return []pgSetting{
		{"wal_level", "logical"},
		{"max_replication_slots", "10"},
		{"max_wal_senders", "10"},
		{"fsync", "off"},
	}
}

// Timeouts for server start and stop. Generous: CI machines have two cores
// and run several test binaries at once.
const (
	pgCmdTimeout  = 2 * time.Minute
	pgWaitSeconds = "60"
	startAttempts = 5
)

// PostgreSQL starts a fresh PostgreSQL cluster (version 15 when installed,
// else the newest under /usr/lib/postgresql) on a free 127.0.0.1 port, in
// its own temporary directory. The test's cleanup stops it and deletes the
// directory. The cluster has a superuser "postgres" that needs no password.
//
// The test fails (t.Fatal) when the binaries are missing or the server does
// not start; the message says how to install them.
func PostgreSQL(t testing.TB, opts ...PGOption) *PG {
	t.Helper()
	in, err := findPostgresOnce()
	if err != nil {
		t.Fatal(err)
	}
	cfg := pgConfig{settings: defaultPGSettings()}
	for _, o := range opts {
		o(&cfg)
	}
	for _, s := range cfg.settings {
		if !settingNameRE.MatchString(s.name) {
			t.Fatalf("testenv: WithSetting(%q, ...): not a PostgreSQL setting name", s.name)
		}
		if !settingAllowed(s.name) {
			t.Fatalf("testenv: WithSetting(%q, ...): %v are chosen by testenv and cannot be overridden", s.name, forbiddenSettings)
		}
	}

	base, err := os.MkdirTemp("", "witnz-pg-")
	if err != nil {
		t.Fatalf("testenv: create PostgreSQL temp dir: %v", err)
	}
	p := &PG{
		in:       in,
		base:     base,
		dir:      filepath.Join(base, "data"),
		logPath:  filepath.Join(base, "postgres.log"),
		settings: cfg.settings,
	}
	t.Cleanup(func() { p.destroy(t) })

	ctx, cancel := context.WithTimeout(context.Background(), pgCmdTimeout)
	defer cancel()
	if err := in.own(base); err != nil {
		t.Fatalf("testenv: chown %s to postgres: %v", base, err)
	}
	if err := in.cloneTemplate(ctx, p.dir); err != nil {
		t.Fatalf("testenv: create PostgreSQL %s data directory: %v", in.version, err)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testenv: find a free port for PostgreSQL: %v", err)
		}
		p.port = port // p is not shared yet; afterwards port never changes
		err = p.start()
		if err == nil {
			return p
		}
		var se *startError
		if !errors.As(err, &se) || !se.portTaken {
			t.Fatalf("testenv: start PostgreSQL %s: %v", in.version, err)
		}
		errs = append(errs, err)
	}
	t.Fatalf("testenv: start PostgreSQL %s: every port tried was taken by another process:\n%v", in.version, errors.Join(errs...))
	return nil
}

// DSN returns a connection URL for database db as the superuser postgres.
func (p *PG) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, url.PathEscape(db))
}

// Port is the TCP port the server listens on (on 127.0.0.1). It stays the
// same across Stop and Start.
func (p *PG) Port() int { return p.port }

// Dir is the cluster's data directory. It also holds the server's unix
// socket.
func (p *PG) Dir() string { return p.dir }

// CreateDatabase creates database name, failing the test on error.
func (p *PG) CreateDatabase(t testing.TB, name string) {
	t.Helper()
	p.Exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// Exec runs sql in database db over a fresh connection, failing the test on
// error. sql may hold several statements separated by semicolons.
func (p *PG) Exec(t testing.TB, db, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pgCmdTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN(db))
	if err != nil {
		t.Fatalf("testenv: connect to %s: %v", p.DSN(db), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("testenv: exec in database %s: %v\n%s", db, err, sql)
	}
}

// Stop shuts the server down cleanly (pg_ctl stop -m fast) and waits until it
// has exited. Start brings it back on the same port and data directory.
func (p *PG) Stop(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		t.Fatal("testenv: PG.Stop: server is not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), pgCmdTimeout)
	defer cancel()
	out, err := p.in.command(ctx, p.base, "pg_ctl", "-D", p.dir, "-w", "-t", pgWaitSeconds, "-m", "fast", "stop").CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: pg_ctl stop: %v\n%s\n%s", err, out, p.logTail(0))
	}
	p.running = false
}

// Start starts a stopped or killed server again on the same port and data
// directory; after a Kill the server runs crash recovery first. The test
// fails if another process has taken the port meanwhile.
func (p *PG) Start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		t.Fatal("testenv: PG.Start: server is already running")
	}
	if err := p.start(); err != nil {
		t.Fatalf("testenv: restart PostgreSQL on port %d: %v", p.port, err)
	}
}

// Kill sends SIGKILL to the postmaster, as a crash would, and waits until it
// and its backends have exited. Start recovers the cluster.
func (p *PG) Kill(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		t.Fatal("testenv: PG.Kill: server is not running")
	}
	pid, err := readPIDFile(p.dir)
	if err != nil {
		t.Fatalf("testenv: PG.Kill: %v", err)
	}
	if err := p.killAndWait(pid); err != nil {
		t.Fatalf("testenv: PG.Kill: %v", err)
	}
	p.running = false
}

// killAndWait SIGKILLs the postmaster pid and waits for it and its children.
// It then removes the lock files that hold the postmaster's pid (postmaster.pid
// and the socket's .lock): the postmaster may linger as a zombie under an init
// that does not reap, and a zombie's pid would make the next start believe
// another postmaster still owns the data directory.
func (p *PG) killAndWait(pid int) error {
	children := childPIDs(pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill postmaster %d: %w", pid, err)
	}
	if !waitFor(30*time.Second, 10*time.Millisecond, func() bool { return processGone(pid) }) {
		return fmt.Errorf("postmaster %d still running 30s after SIGKILL", pid)
	}
	// Backends notice the postmaster's death and exit on their own; help the
	// stragglers so the next start does not find shared memory still in use.
	allGone := func() bool {
		for _, c := range children {
			if !processGone(c) {
				return false
			}
		}
		return true
	}
	if !waitFor(10*time.Second, 10*time.Millisecond, allGone) {
		for _, c := range children {
			_ = syscall.Kill(c, syscall.SIGKILL)
		}
		if !waitFor(30*time.Second, 10*time.Millisecond, allGone) {
			return fmt.Errorf("backends of postmaster %d still running after SIGKILL", pid)
		}
	}
	locks, _ := filepath.Glob(filepath.Join(p.dir, ".s.PGSQL.*.lock"))
	for _, f := range append(locks, filepath.Join(p.dir, "postmaster.pid")) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// startError is a failed start; portTaken means trying another port may help.
type startError struct {
	portTaken bool
	msg       string
}

func (e *startError) Error() string { return e.msg }

// start runs pg_ctl start on p.port and checks that the server answering on
// 127.0.0.1:port is ours. Callers hold p.mu.
func (p *PG) start() error {
	port := p.port
	opts := []string{
		"-c", shellQuote("listen_addresses=127.0.0.1"),
		"-p", fmt.Sprint(port),
		"-c", shellQuote("unix_socket_directories=" + p.dir),
	}
	for _, s := range p.settings {
		opts = append(opts, "-c", shellQuote(s.name+"="+s.value))
	}
	logOffset := fileSize(p.logPath)

	ctx, cancel := context.WithTimeout(context.Background(), pgCmdTimeout)
	defer cancel()
	// -l matters beyond diagnostics: without it the postmaster inherits
	// pg_ctl's stdout and CombinedOutput would wait for the server to exit.
	out, err := p.in.command(ctx, p.base, "pg_ctl", "-D", p.dir, "-l", p.logPath,
		"-w", "-t", pgWaitSeconds, "-o", strings.Join(opts, " "), "start").CombinedOutput()
	if err != nil {
		p.abortStart()
		log := p.logTail(logOffset)
		return &startError{
			portTaken: strings.Contains(log, "Address already in use"),
			msg:       fmt.Sprintf("pg_ctl start on port %d: %v\n%s\nserver log:\n%s", port, err, out, log),
		}
	}
	p.running = true
	if err := p.checkIdentity(ctx); err != nil {
		p.abortStart()
		p.running = false
		return &startError{portTaken: true, msg: err.Error()}
	}
	return nil
}

// checkIdentity makes sure the server answering on 127.0.0.1:port is the one
// we started: other processes on the machine use fixed ports.
func (p *PG) checkIdentity(ctx context.Context) error {
	want, err := filepath.EvalSymlinks(p.dir)
	if err != nil {
		return err
	}
	var got string
	var lastErr error
	ok := waitFor(10*time.Second, 50*time.Millisecond, func() bool {
		// Bound each attempt: a listener that accepts and never answers must
		// not hold us past the deadline.
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err != nil {
			lastErr = err
			return false
		}
		defer conn.Close(context.Background())
		if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&got); err != nil {
			lastErr = err
			return false
		}
		return true
	})
	if !ok {
		return fmt.Errorf("server started but 127.0.0.1:%d does not answer: %v", p.port, lastErr)
	}
	if got != want && got != p.dir {
		return fmt.Errorf("127.0.0.1:%d is answered by a server with data_directory %s, not ours (%s)", p.port, got, p.dir)
	}
	return nil
}

// abortStart kills a postmaster left behind by a failed start, if any.
func (p *PG) abortStart() {
	if pid, err := readPIDFile(p.dir); err == nil && !processGone(pid) {
		_ = p.killAndWait(pid)
	}
}

// destroy is the test cleanup: stop the server without a checkpoint and
// remove everything.
func (p *PG) destroy(t testing.TB) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		ctx, cancel := context.WithTimeout(context.Background(), pgCmdTimeout)
		defer cancel()
		out, err := p.in.command(ctx, p.base, "pg_ctl", "-D", p.dir, "-w", "-t", pgWaitSeconds, "-m", "immediate", "stop").CombinedOutput()
		if err != nil {
			t.Logf("testenv: pg_ctl stop -m immediate: %v\n%s", err, out)
			p.abortStart()
		}
		p.running = false
	}
	if err := os.RemoveAll(p.base); err != nil {
		t.Errorf("testenv: remove PostgreSQL dir: %v", err)
	}
}

// logTail returns the server log from offset, at most the last 8 KiB.
func (p *PG) logTail(offset int64) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	b = b[offset:]
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// shellQuote quotes s for /bin/sh: pg_ctl runs the postmaster through a shell
// and pastes -o into its command line.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
