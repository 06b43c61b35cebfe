package faulttest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsPrefix starts the name of every namespace these tests create; the
// test process's pid follows it, so leftovers of a killed run are found.
const nsPrefix = "wzft"

var topologies atomic.Int32

// topology is a small network of namespaces: a hub namespace with two
// bridges, and one namespace per node whose eth0 is a veth to a bridge
// port in the hub. Every node sits on br0 until it is isolated: then its
// port moves to br1, where it reaches the other isolated nodes and the hub
// but no node on br0. The test talks to the nodes from the hub (see
// dialContext); the node namespaces are not connected to the machine's
// network at all, so nothing the tests send can leave it.
type topology struct {
	t      *testing.T
	hub    string
	nodeNS []string
	ips    []string
}

// Addresses of the hub and of node i (10.77.0.11, .12, ...).
const (
	hubIP  = "10.77.0.1"
	subnet = "/24"
)

func nodeIP(i int) string { return fmt.Sprintf("10.77.0.%d", 11+i) }

// requireNetns skips the test when network namespaces cannot be made here,
// saying exactly why.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("network namespaces need root (running as uid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the ip command (iproute2) is not installed")
	}
}

// newTopology creates the namespaces, bridges and veths for n nodes and
// deletes them all when the test ends (after the processes, whose cleanup
// is registered later, are gone).
func newTopology(t *testing.T, n int) *topology {
	t.Helper()
	requireNetns(t)
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), topologies.Add(1))
	tp := &topology{t: t, hub: name + "-hub"}
	t.Cleanup(func() {
		for _, ns := range append([]string{tp.hub}, tp.nodeNS...) {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("delete namespace %s: %v: %s", ns, err, out)
			}
		}
	})
	tp.ip("netns", "add", tp.hub)
	tp.ip("-n", tp.hub, "link", "set", "lo", "up")
	// Both bridges share one MAC address, so that a node moved from br0 to
	// br1 still reaches the hub with the neighbour entry it already has.
	for _, br := range []string{"br0", "br1"} {
		tp.ip("-n", tp.hub, "link", "add", br, "address", "02:77:00:00:00:01", "type", "bridge")
		tp.ip("-n", tp.hub, "link", "set", br, "up")
	}
	tp.ip("-n", tp.hub, "addr", "add", hubIP+subnet, "dev", "br0")
	for i := range n {
		ns := fmt.Sprintf("%s-n%d", name, i+1)
		tp.nodeNS, tp.ips = append(tp.nodeNS, ns), append(tp.ips, nodeIP(i))
		tp.ip("netns", "add", ns)
		tp.ip("-n", ns, "link", "set", "lo", "up")
		tp.ip("-n", tp.hub, "link", "add", tp.port(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
		tp.ip("-n", tp.hub, "link", "set", tp.port(i), "master", "br0", "up")
		tp.ip("-n", ns, "addr", "add", nodeIP(i)+subnet, "dev", "eth0")
		tp.ip("-n", ns, "link", "set", "eth0", "up")
	}
	return tp
}

// port is the hub end of node i's veth.
func (tp *topology) port(i int) string { return fmt.Sprintf("p%d", i+1) }

func (tp *topology) ip(args ...string) {
	tp.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tp.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// isolate moves the given nodes to br1: they reach each other and the hub,
// not the rest. Their open TCP connections to the others stall.
func (tp *topology) isolate(nodes ...int) {
	tp.t.Helper()
	for _, i := range nodes {
		tp.ip("-n", tp.hub, "link", "set", tp.port(i), "master", "br1")
		tp.ip("-n", tp.hub, "route", "add", nodeIP(i)+"/32", "dev", "br1")
	}
}

// heal moves the given nodes back to br0.
func (tp *topology) heal(nodes ...int) {
	tp.t.Helper()
	for _, i := range nodes {
		tp.ip("-n", tp.hub, "route", "del", nodeIP(i)+"/32", "dev", "br1")
		tp.ip("-n", tp.hub, "link", "set", tp.port(i), "master", "br0")
	}
}

// dialContext opens a TCP connection from the hub namespace. A socket
// belongs to the namespace of the thread that created it, so the dial runs
// on a locked thread moved into the hub and back. The thread must survive:
// a thread that exits takes the children it started with it (Pdeathsig),
// and Go may have started witness processes from it.
func (tp *topology) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer home.Close()
		hub, err := os.Open("/var/run/netns/" + tp.hub)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer hub.Close()
		if err := unix.Setns(int(hub.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("setns %s: %w", tp.hub, err)}
			return
		}
		c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		if serr := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); serr != nil {
			// Stuck in the hub: keep the thread locked to this goroutine
			// forever rather than let other goroutines run there.
			ch <- result{err: fmt.Errorf("setns back from %s: %w", tp.hub, serr)}
			if c != nil {
				c.Close()
			}
			select {}
		}
		runtime.UnlockOSThread()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// removeStaleNamespaces deletes the namespaces of earlier runs whose test
// process is gone (killed before its cleanup ran).
func removeStaleNamespaces() {
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // still running
		}
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}
