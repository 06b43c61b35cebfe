package testenv

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"testing"
)

// The retry loops in PostgreSQL and Redis depend on recognising a start that
// failed because another process holds the port.

func TestPGStartPortTaken(t *testing.T) {
	t.Parallel()
	pg := PostgreSQL(t)
	pg.Stop(t)
	l, err := net.Listen("tcp", addrFor(pg.Port()))
	if err != nil {
		t.Fatalf("occupy port %d: %v", pg.Port(), err)
	}
	defer l.Close()

	pg.mu.Lock()
	err = pg.start()
	pg.mu.Unlock()
	var se *startError
	if !errors.As(err, &se) || !se.portTaken {
		t.Fatalf("start on a taken port: err = %v, want a startError with portTaken", err)
	}

	l.Close()
	pg.Start(t)
	pg.Exec(t, "postgres", "SELECT 1")
}

func TestRedisStartPortTaken(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, portTaken, err := startRedis(t, bin, t.TempDir(), port)
	if err == nil || !portTaken {
		t.Fatalf("startRedis on a taken port: portTaken = %v, err = %v; want portTaken", portTaken, err)
	}
}

func addrFor(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
