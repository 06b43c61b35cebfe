package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RedisServer is a throwaway redis-server owned by one test, listening on
// 127.0.0.1 with persistence off.
type RedisServer struct {
	addr string
}

const redisMissingFix = "run `make deps` (or `apt-get install -y redis-server`)"

// Redis starts redis-server (from PATH, else /usr/bin/redis-server) on a free
// 127.0.0.1 port without persistence and waits until it answers. The test's
// cleanup kills it.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = "/usr/bin/redis-server"
		if _, serr := os.Stat(bin); serr != nil {
			t.Fatalf("testenv: redis-server not found on PATH or at %s; %s", bin, redisMissingFix)
		}
	}
	dir := t.TempDir()
	var errs []error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testenv: find a free port for Redis: %v", err)
		}
		addr, portTaken, err := startRedis(t, bin, dir, port)
		if err == nil {
			return &RedisServer{addr: addr}
		}
		if !portTaken {
			t.Fatalf("testenv: start redis-server: %v", err)
		}
		errs = append(errs, err)
	}
	t.Fatalf("testenv: start redis-server: every port tried was taken by another process:\n%v", errors.Join(errs...))
	return nil
}

// Addr is the server's "127.0.0.1:PORT".
func (r *RedisServer) Addr() string { return r.addr }

func startRedis(t testing.TB, bin, dir string, port int) (addr string, portTaken bool, err error) {
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	out := new(syncBuffer)
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	cmd.Dir = dir
	portTaken, err = runServer(t, "redis-server", port, cmd, out, 30*time.Second, 10*time.Millisecond, func() error { return redisCheck(addr, cmd.Process.Pid) })
	if err != nil {
		return "", portTaken, err
	}
	return addr, false, nil
}

// redisCheck asks the server at addr for its process id, which proves both
// that it answers and that it is the process we started.
func redisCheck(addr string, pid int) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, "*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"); err != nil {
		return err
	}
	info, err := readBulkString(bufio.NewReader(conn))
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			if v != strconv.Itoa(pid) {
				return fmt.Errorf("%s is answered by redis process %s, not ours (%d)", addr, v, pid)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: INFO server has no process_id", addr)
}

// readBulkString reads one RESP bulk string reply.
func readBulkString(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis: %s", line[1:])
	}
	if !strings.HasPrefix(line, "$") {
		return "", fmt.Errorf("redis: unexpected reply %q", line)
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 {
		return "", fmt.Errorf("redis: bad bulk length %q", line)
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// syncBuffer collects a child's output; exec copies stdout and stderr from
// separate goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
