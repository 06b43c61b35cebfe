package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PIDFile is the name of the supervisor's pid file in the stack directory.
// The running supervisor holds an exclusive lock on it.
const PIDFile = "supervisor.pid"

// ErrRunning means another supervisor runs a stack in the same directory.
var ErrRunning = errors.New("a stack is already running")

// lockDir takes the supervisor lock of dir and records this process's pid.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, PIDFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid, _ := readPID(path)
			return nil, fmt.Errorf("%w in %s (supervisor pid %d): stop it with `witnz down --dir %s` or use it as it is", ErrRunning, dir, pid, dir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// unlockDir removes the pid file and releases the lock.
func unlockDir(f *os.File) {
	os.Remove(f.Name())
	f.Close()
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s holds no pid", path)
	}
	return pid, nil
}

// Down stops the supervisor running the stack in dir (SIGTERM) and waits
// until it has exited, at most timeout. It reports false when no stack was
// running.
func Down(ctx context.Context, dir string, timeout time.Duration) (bool, error) {
	path := filepath.Join(dir, PIDFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	// A pid file nobody holds the lock on was left by a supervisor that
	// was killed.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err == nil {
		os.Remove(path)
		return false, nil
	}
	pid, err := readPID(path)
	if err != nil {
		return false, err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("signal supervisor %d: %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return true, fmt.Errorf("supervisor %d still running %s after SIGTERM: see its output, or `kill -9 %d` and check for leftover processes", pid, timeout, pid)
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-tick.C:
		}
	}
	return true, nil
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	state := s[i+2]
	return state != 'Z' && state != 'X'
}
