// Package stack runs the real local witnz stack for a benchmark by calling
// the built CLI (`witnz up --dir DIR --bin BIN` in the background, `witnz
// down --dir DIR` to stop it), and talks to its witness cluster.
package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Table is the protected append-only table `witnz up` creates.
const Table = "public.audit_log"

// Info is the part of <dir>/stack.json (tools/witnz README) the benchmarks
// use.
type Info struct {
	Version  int    `json:"version"`
	Dir      string `json:"dir"`
	PID      int    `json:"pid"`
	Gateway  string `json:"gateway"`
	Postgres struct {
		DSN      string `json:"dsn"`
		AlertDSN string `json:"alert_dsn"`
	} `json:"postgres"`
	Redis string `json:"redis"`
	TLS   struct {
		CA   string `json:"ca"`
		Cert string `json:"cert"`
		Key  string `json:"key"`
	} `json:"tls"`
	Services  map[string]Service `json:"services"`
	Witnesses []Witness          `json:"witnesses"`
}

// Service locates one service of the stack.
type Service struct {
	URL   string `json:"url"`
	Admin string `json:"admin"`
	Log   string `json:"log"`
}

// Witness locates one witness node.
type Witness struct {
	ID    string `json:"id"`
	URL   string `json:"url"`
	Admin string `json:"admin"`
	Log   string `json:"log"`
}

// Stack is a running local stack started by Up.
type Stack struct {
	Info Info
	// PKI is the directory of the stack's certificates.
	PKI string

	witnz, bin string
	cmd        *exec.Cmd
	out        *lockedBuffer
	exited     chan struct{}
	waitErr    error
}

// Up starts `witnz up` on a fresh directory dir with the service binaries
// in bin, and returns once the stack has written its stack.json (every
// process ready). witnz is the path of the CLI.
func Up(ctx context.Context, witnz, bin, dir string) (*Stack, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Stack{witnz: witnz, bin: bin, PKI: filepath.Join(dir, "pki"), out: &lockedBuffer{}, exited: make(chan struct{})}
	// Not CommandContext: the stack is stopped with `witnz down`, which
	// stops every service in order, not killed.
	s.cmd = exec.Command(witnz, "up", "--dir", dir, "--bin", bin)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// Its own process group, so a Ctrl-C of the benchmark reaches only the
	// benchmark, which then stops the stack; if the benchmark dies, the
	// supervisor gets SIGTERM and stops its children.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s up: %w", witnz, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	infoPath := filepath.Join(dir, "stack.json")
	deadline := time.NewTimer(3 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("witnz up exited (%v) before the stack was ready:\n%s", s.waitErr, s.out.tail(3000))
		case <-ctx.Done():
			_ = s.Down(context.Background())
			return nil, ctx.Err()
		case <-deadline.C:
			_ = s.Down(context.Background())
			return nil, fmt.Errorf("the stack in %s was not ready within 3 minutes:\n%s", dir, s.out.tail(3000))
		case <-tick.C:
		}
		b, err := os.ReadFile(infoPath)
		if err != nil {
			continue
		}
		var info Info
		if json.Unmarshal(b, &info) != nil || info.PID != s.cmd.Process.Pid {
			continue // being written, or left from another run
		}
		s.Info = info
		return s, nil
	}
}

// Down stops the stack with `witnz down` and waits for the supervisor.
func (s *Stack) Down(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.witnz, "down", "--dir", filepath.Dir(s.PKI), "--timeout", "2m").CombinedOutput()
	select {
	case <-s.exited:
	case <-ctx.Done():
		return fmt.Errorf("the stack supervisor (pid %d) did not exit: %v %s", s.cmd.Process.Pid, err, out)
	}
	if err != nil {
		return fmt.Errorf("witnz down: %v: %s", err, out)
	}
	return nil
}

// ServicePID returns the pid of the running service name (e.g.
// "cdc-ingest"): the child of this stack's supervisor running bin/name.
func (s *Stack) ServicePID(name string) (int, error) {
	want := filepath.Join(s.bin, name)
	if abs, err := filepath.Abs(want); err == nil {
		want = abs
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The comm field may hold spaces: the ppid follows the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(s.cmd.Process.Pid) {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && exe == want {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no running %s under the stack supervisor (pid %d)", want, s.cmd.Process.Pid)
}

// Pause stops (SIGSTOP) the service name until the returned function is
// called (SIGCONT). The supervisor does not notice: the process has not
// exited.
func (s *Stack) Pause(name string) (resume func() error, err error) {
	pid, err := s.ServicePID(name)
	if err != nil {
		return nil, err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("pause %s (pid %d): %w", name, pid, err)
	}
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() { err = syscall.Kill(pid, syscall.SIGCONT) })
		return err
	}, nil
}

// Witness returns the stack file entry of witness id.
func (s *Stack) Witness(id string) (Witness, bool) {
	for _, w := range s.Info.Witnesses {
		if w.ID == id {
			return w, true
		}
	}
	return Witness{}, false
}

// lockedBuffer collects the supervisor's output for error messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// ErrNoLeader is returned when no witness reports itself leader.
var ErrNoLeader = errors.New("no witness node is leader")

// ServiceCert is the certificate, key and CA of the stack's service
// identity service/name (e.g. "cdc-ingest"), from its PKI.
func (s *Stack) ServiceCert(name string) (cert, key, ca string) {
	base := filepath.Join(s.PKI, "service-"+name)
	return base + ".crt", base + ".key", filepath.Join(s.PKI, "ca.crt")
}
