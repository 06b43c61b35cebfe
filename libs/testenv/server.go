package testenv

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runServer starts cmd (its output going to out), waits up to timeout for
// ready to return nil, polling every interval, and stops the process when
// the test ends. portTaken reports a server that exited because its port
// was in use, so the caller can try another.
func runServer(t testing.TB, name string, port int, cmd *exec.Cmd, out *syncBuffer, timeout, interval time.Duration, ready func() error) (portTaken bool, err error) {
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("%s: %w", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	var lastErr error
	ok := waitFor(timeout, interval, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		lastErr = ready()
		return lastErr == nil
	})
	select {
	case <-exited:
		log := out.String()
		return strings.Contains(strings.ToLower(log), "address already in use"),
			fmt.Errorf("%s on port %d exited: %v\n%s", name, port, cmd.ProcessState, log)
	default:
	}
	if !ok {
		stop()
		return false, fmt.Errorf("%s on port %d was not ready within %s: %v\n%s", name, port, timeout, lastErr, out.String())
	}
	t.Cleanup(stop)
	return false, nil
}
