// Package testenv starts throwaway real servers (PostgreSQL, Redis) for tests,
// each on a free 127.0.0.1 port, and removes them when the test ends.
//
// Tests use real dependencies instead of mocks; this package is how they get
// them:
//
//	pg := testenv.PostgreSQL(t)
//	pg.CreateDatabase(t, "app")
//	conn, err := pgx.Connect(t.Context(), pg.DSN("app"))
//
//	rdb := testenv.Redis(t)
//	client := redis.NewClient(&redis.Options{Addr: rdb.Addr()})
//
// The server binaries come from the machine (Debian packages). When they are
// missing the test fails with the command that installs them (`make deps`).
// Nothing here sleeps blindly: every wait polls a condition with a deadline.
package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// handedOut remembers the ports FreePort returned in this process, so two
// servers started concurrently by the same test binary are not offered the
// same port between the probe listener closing and the server binding it.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process may still take it before the caller binds it; the servers started by
// this package retry with a new port when that happens.
//
// The port comes from below the kernel's ephemeral range when there is room
// there: ports in the ephemeral range are also handed to outgoing
// connections, and with many tests connecting in parallel one of those would
// often grab the port between FreePort and the server's bind.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("testenv: find a free port: %v", err)
	}
	return port
}

// FreeAddr returns "127.0.0.1:PORT" for a port from FreePort.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// minPort is the lowest port FreePort offers: well above the registered
// ports that services on these machines commonly use.
const minPort = 15000

func freePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	low := ephemeralLow()
	var lastErr error
	for range 200 {
		addr := "127.0.0.1:0" // the kernel picks, from the ephemeral range
		if low-minPort >= 1000 {
			addr = fmt.Sprintf("127.0.0.1:%d", minPort+rand.IntN(low-minPort))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			lastErr = err // taken; try another
			continue
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, err
		}
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port found in 200 tries: %v", lastErr)
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux),
// or 0 when unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return low
}

// waitFor polls cond every interval until it reports true or timeout passes,
// and reports whether cond became true.
func waitFor(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}
