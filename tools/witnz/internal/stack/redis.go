package stack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

const redisMissingFix = "run `make deps` (or `apt-get install -y redis-server`)"

func findRedis() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	const fallback = "/usr/bin/redis-server"
	if _, err := os.Stat(fallback); err == nil {
		return fallback, nil
	}
	return "", fmt.Errorf("redis-server not found on PATH or at %s: %s", fallback, redisMissingFix)
}

// redisSpec runs redis-server in the foreground without persistence: the
// stack only uses it for live pub/sub.
func redisSpec(bin, dir string, port int, logPath string) procSpec {
	addr := loopback(port)
	return procSpec{
		name: "redis",
		path: bin,
		args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir},
		dir:  dir,
		log:  logPath,
		ready: func(ctx context.Context, pid int) error {
			return redisIsProcess(ctx, addr, pid)
		},
	}
}

// redisIsProcess asks the server at addr for its process id: that proves it
// answers and that it is the one the stack started.
func redisIsProcess(ctx context.Context, addr string, pid int) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
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
	r := bufio.NewReader(conn)
	head, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil || !strings.HasPrefix(head, "$") {
		return fmt.Errorf("unexpected reply %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return err
	}
	for line := range strings.SplitSeq(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			if v != strconv.Itoa(pid) {
				return fmt.Errorf("%s is answered by redis process %s, not the stack's (%d)", addr, v, pid)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: INFO server has no process_id", addr)
}
