package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Backoff is the restart policy for crashed processes: the first restart
// waits Min, each further one twice as long up to Max, and a process that
// stayed up for Reset starts again from Min.
type Backoff struct {
	Min, Max, Reset time.Duration
}

// DefaultBackoff waits 1 s, 2 s, 4 s… up to 30 s, reset after 60 s up.
var DefaultBackoff = Backoff{Min: time.Second, Max: 30 * time.Second, Reset: 60 * time.Second}

// procSpec is how to run one child process.
type procSpec struct {
	name string
	path string
	args []string
	env  []string
	dir  string
	log  string
	// cred runs the process as another user (PostgreSQL refuses root).
	cred *syscall.Credential
	// ready reports nil once the process (pid) serves.
	ready func(ctx context.Context, pid int) error
	// stop asks the process to stop; nil sends SIGTERM.
	stop func(pid int) error
}

// proc supervises one child: it starts it, restarts it with backoff when it
// exits, and stops it on request.
type proc struct {
	spec    procSpec
	backoff Backoff
	logf    func(format string, args ...any)

	mu       sync.Mutex
	stopping bool
	pid      int
	exited   chan struct{} // closed when the current run exits
	exits    int
	lastExit string

	stopCh   chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

var errStopping = errors.New("stopping")

func newProc(spec procSpec, b Backoff, logf func(string, ...any)) *proc {
	return &proc{spec: spec, backoff: b, logf: logf, stopCh: make(chan struct{}), done: make(chan struct{})}
}

// start launches the process and supervises it in the background. It
// returns the error of the first launch.
func (p *proc) start() error {
	first := make(chan error, 1)
	go p.supervise(first)
	return <-first
}

func (p *proc) supervise(first chan<- error) {
	defer close(p.done)
	delay := p.backoff.Min
	for {
		started := time.Now()
		cmd, exited, err := p.launch()
		if first != nil {
			first <- err
			first = nil
			if err != nil {
				return
			}
		}
		var status string
		if err != nil {
			if errors.Is(err, errStopping) {
				return
			}
			status = "start failed: " + err.Error()
		} else {
			status = exitStatus(cmd.Wait())
			p.mu.Lock()
			p.pid = 0
			p.exits++
			p.lastExit = status
			p.mu.Unlock()
			close(exited)
		}
		select {
		case <-p.stopCh:
			return
		default:
		}
		if time.Since(started) >= p.backoff.Reset {
			delay = p.backoff.Min
		}
		p.logf("%s exited (%s) after %s; restarting in %s (log: %s)",
			p.spec.name, status, time.Since(started).Round(time.Millisecond), delay, p.spec.log)
		t := time.NewTimer(delay)
		select {
		case <-p.stopCh:
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, p.backoff.Max)
	}
}

func (p *proc) launch() (*exec.Cmd, chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return nil, nil, errStopping
	}
	logFile, err := os.OpenFile(p.spec.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(p.spec.path, p.spec.args...)
	cmd.Dir = p.spec.dir
	cmd.Env = p.spec.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a Ctrl-C on the terminal reaches only the
		// supervisor, which then stops the children in order.
		Setpgid: true,
		// Children do not outlive a supervisor that was killed.
		Pdeathsig:  syscall.SIGTERM,
		Credential: p.spec.cred,
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", p.spec.path, err)
	}
	p.pid = cmd.Process.Pid
	p.exited = make(chan struct{})
	return cmd, p.exited, nil
}

// exitStatus describes how a process ended.
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return ee.ProcessState.String()
	}
	return err.Error()
}

// PID is the process id of the running child, 0 while it is not running.
func (p *proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// status reports how often the process exited and how it last did.
func (p *proc) status() (exits int, last string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exits, p.lastExit
}

// stop ends supervision and the process: its stop function (SIGTERM by
// default), then SIGKILL to its process group after timeout.
func (p *proc) stop(timeout time.Duration) {
	p.mu.Lock()
	p.stopping = true
	pid, exited := p.pid, p.exited
	p.mu.Unlock()
	p.stopOnce.Do(func() { close(p.stopCh) })
	if pid != 0 {
		var err error
		if p.spec.stop != nil {
			err = p.spec.stop(pid)
		} else {
			err = syscall.Kill(pid, syscall.SIGTERM)
		}
		if err != nil && !errors.Is(err, syscall.ESRCH) {
			p.logf("%s: stop: %v; killing it", p.spec.name, err)
			timeout = 0
		}
		select {
		case <-exited:
		case <-time.After(timeout):
			p.logf("%s did not stop within %s; sending SIGKILL", p.spec.name, timeout)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-exited
		}
	}
	<-p.done
}
