package stack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lines collects supervision lines.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, fmt.Sprintf(format, args...))
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.l...)
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func shSpec(t *testing.T, name, script string) procSpec {
	return procSpec{name: name, path: "/bin/sh", args: []string{"-c", script}, dir: t.TempDir(), log: filepath.Join(t.TempDir(), name+".log")}
}

func TestProcRestartsWithExponentialBackoff(t *testing.T) {
	var out lines
	b := Backoff{Min: 20 * time.Millisecond, Max: 80 * time.Millisecond, Reset: time.Hour}
	p := newProc(shSpec(t, "crasher", "echo started; exit 3"), b, out.logf)
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "five exits", func() bool { n, _ := p.status(); return n >= 5 })
	p.stop(time.Second)

	got := out.all()
	re := regexp.MustCompile(`^crasher exited \(exit status 3\) after \S+; restarting in (\S+) \(log: `)
	var delays []string
	for _, l := range got {
		if m := re.FindStringSubmatch(l); m != nil {
			delays = append(delays, m[1])
		}
	}
	want := []string{"20ms", "40ms", "80ms", "80ms"}
	if len(delays) < len(want) || strings.Join(delays[:4], " ") != strings.Join(want, " ") {
		t.Errorf("restart delays = %v, want %v…\nlines:\n%s", delays, want, strings.Join(got, "\n"))
	}
	log, _ := os.ReadFile(p.spec.log)
	if n := strings.Count(string(log), "started\n"); n < 5 {
		t.Errorf("log has %d runs, want ≥ 5 (appended across restarts):\n%s", n, log)
	}
}

func TestProcBackoffResetsAfterLongRun(t *testing.T) {
	var out lines
	// Every run lasts longer than Reset, so every restart waits Min.
	b := Backoff{Min: 10 * time.Millisecond, Max: time.Second, Reset: 50 * time.Millisecond}
	p := newProc(shSpec(t, "slow", "sleep 0.1; exit 1"), b, out.logf)
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "three exits", func() bool { n, _ := p.status(); return n >= 3 })
	p.stop(time.Second)
	for _, l := range out.all() {
		if strings.Contains(l, "restarting in") && !strings.Contains(l, "restarting in 10ms") {
			t.Errorf("restart after a long run did not reset the backoff: %s", l)
		}
	}
}

func TestProcStop(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		timeout      time.Duration
		wantKill     bool
	}{
		{"sigterm", "echo ready; exec sleep 60", 10 * time.Second, false},
		{"sigkill after timeout", `trap "" TERM; echo ready; sleep 60 & wait; sleep 60`, 200 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out lines
			p := newProc(shSpec(t, "sleeper", tc.script), DefaultBackoff, out.logf)
			if err := p.start(); err != nil {
				t.Fatal(err)
			}
			pid := p.PID()
			waitUntil(t, 10*time.Second, "the script to start", func() bool {
				b, _ := os.ReadFile(p.spec.log)
				return strings.Contains(string(b), "ready")
			})
			start := time.Now()
			p.stop(tc.timeout)
			if processAlive(pid) {
				t.Errorf("process %d still alive after stop", pid)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("stop took %s", elapsed)
			}
			killed := strings.Contains(strings.Join(out.all(), "\n"), "sending SIGKILL")
			if killed != tc.wantKill {
				t.Errorf("SIGKILL sent = %v, want %v; lines: %v", killed, tc.wantKill, out.all())
			}
			if n, _ := p.status(); n != 1 {
				t.Errorf("exits = %d, want 1 (no restart after stop)", n)
			}
		})
	}
}

func TestProcStartFailure(t *testing.T) {
	p := newProc(procSpec{name: "missing", path: "/nonexistent/binary", log: filepath.Join(t.TempDir(), "m.log")}, DefaultBackoff, func(string, ...any) {})
	if err := p.start(); err == nil {
		t.Fatal("start of a missing binary succeeded")
	}
	p.stop(time.Second) // returns: nothing to supervise
}

func TestLockRefusesSecondSupervisor(t *testing.T) {
	dir := t.TempDir()
	f, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDir(dir)
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "witnz down") {
		t.Errorf("second lock: %v, want ErrRunning naming `witnz down`", err)
	}
	if pid, err := readPID(filepath.Join(dir, PIDFile)); err != nil || pid != os.Getpid() {
		t.Errorf("pid file = %d, %v; want %d", pid, err, os.Getpid())
	}
	_, err = Start(t.Context(), Config{Dir: dir, BinDir: t.TempDir()})
	if !errors.Is(err, ErrRunning) {
		t.Errorf("Start on a locked directory: %v, want ErrRunning", err)
	}
	unlockDir(f)
	if _, err := os.Stat(filepath.Join(dir, PIDFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left after unlock: %v", err)
	}
}

func TestDownWithoutStack(t *testing.T) {
	dir := t.TempDir()
	running, err := Down(t.Context(), dir, time.Second)
	if running || err != nil {
		t.Errorf("Down on an empty dir = %v, %v; want false, nil", running, err)
	}
	// A pid file nobody holds the lock on is stale: removed, not signalled.
	if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	running, err = Down(t.Context(), dir, time.Second)
	if running || err != nil {
		t.Errorf("Down with a stale pid file = %v, %v; want false, nil", running, err)
	}
	if _, err := os.Stat(filepath.Join(dir, PIDFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale pid file not removed: %v", err)
	}
}

func TestStartNamesMissingBinaries(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(t.Context(), Config{Dir: dir, BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make build") || !strings.Contains(err.Error(), "witness") {
		t.Fatalf("Start without binaries: %v; want an error naming the binaries and `make build`", err)
	}
	if _, err := os.Stat(filepath.Join(dir, PIDFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Start left its pid file: %v", err)
	}
}

func TestAssignPorts(t *testing.T) {
	dir := t.TempDir()
	var out lines
	first, err := assignPorts(dir, DefaultWitnesses, out.logf)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	all := []int{first.Postgres, first.Redis}
	for _, w := range first.Witnesses {
		all = append(all, w.API, w.Raft, w.Admin)
	}
	for _, s := range first.Services {
		all = append(all, s.API, s.Admin)
	}
	if len(all) != 2+3*3+2*len(services) {
		t.Fatalf("got %d ports, want %d", len(all), 2+3*3+2*len(services))
	}
	for _, p := range all {
		if p == 0 || seen[p] {
			t.Fatalf("port %d is zero or handed out twice: %v", p, all)
		}
		seen[p] = true
	}

	again, err := assignPorts(dir, DefaultWitnesses, out.logf)
	if err != nil {
		t.Fatal(err)
	}
	if again.Witnesses["w2"] != first.Witnesses["w2"] || again.Postgres != first.Postgres || again.Services["gateway"] != first.Services["gateway"] {
		t.Errorf("ports not kept across runs: %+v then %+v", first, again)
	}

	// A recorded service port taken by someone else is replaced…
	l := listen(t, first.Services["gateway"].API)
	moved, err := assignPorts(dir, DefaultWitnesses, out.logf)
	if err != nil {
		t.Fatal(err)
	}
	if moved.Services["gateway"].API == first.Services["gateway"].API {
		t.Error("taken gateway port was kept")
	}
	l.Close()
	// …but a witness's Raft port is part of its replicated configuration.
	l = listen(t, moved.Witnesses["w1"].Raft)
	defer l.Close()
	if _, err := assignPorts(dir, DefaultWitnesses, out.logf); err == nil || !strings.Contains(err.Error(), "clean-stack") {
		t.Errorf("taken witness raft port: %v, want an error naming make clean-stack", err)
	}
}

func listen(t *testing.T, port int) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", loopback(port))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestWriteCommitKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commit.key")
	if err := WriteCommitKey(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(b) {
		t.Errorf("key file = %q, want 64 hex characters", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	if err := WriteCommitKey(path); !errors.Is(err, ErrKeyExists) {
		t.Errorf("second WriteCommitKey: %v, want ErrKeyExists", err)
	}
	if b2, _ := os.ReadFile(path); string(b2) != string(b) {
		t.Error("existing key was overwritten")
	}
}

func TestSearchableBy(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Some ancestors of t.TempDir() may be private; only judge our own.
	if err := searchableBy(filepath.Join(private, ".witnz"), 65534, 65534); err == nil || !strings.Contains(err.Error(), "chmod o+x "+private) {
		t.Errorf("private ancestor: %v, want an error naming chmod o+x %s", err, private)
	}
}
