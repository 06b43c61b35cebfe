package bareraft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/witnz/witnz/tools/bench/internal/closedloop"
)

// Cluster is a running bare Raft cluster started by Start.
type Cluster struct {
	nodes []*node
	hc    *http.Client
}

type node struct {
	id, raft, control string
	cmd               *exec.Cmd
	log               *os.File
	exited            chan struct{}
	waitErr           error
}

// Start runs one node per id, each `exe raft-node …` with its data and log
// in dir, and returns once one of them leads.
func Start(ctx context.Context, exe, dir string, ids []string) (*Cluster, error) {
	c := &Cluster{hc: &http.Client{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var peers []string
	for _, id := range ids {
		raftAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		control, err := freeAddr()
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, &node{id: id, raft: raftAddr, control: control})
		peers = append(peers, "--peer", id+"="+raftAddr)
	}
	for i, n := range c.nodes {
		args := []string{Command, "--id", n.id, "--dir", filepath.Join(dir, n.id), "--raft", n.raft, "--control", n.control}
		args = append(args, peers...)
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		f, err := os.Create(filepath.Join(dir, n.id+".log"))
		if err != nil {
			c.Stop()
			return nil, err
		}
		n.log = f
		n.cmd = exec.Command(exe, args...)
		n.cmd.Stdout, n.cmd.Stderr = f, f
		n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if err := n.cmd.Start(); err != nil {
			c.Stop()
			return nil, fmt.Errorf("start bare Raft node %s: %w", n.id, err)
		}
		n.exited = make(chan struct{})
		go func() {
			n.waitErr = n.cmd.Wait()
			close(n.exited)
		}()
	}
	if _, err := c.leader(ctx, 30*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// PIDs are the node processes.
func (c *Cluster) PIDs() []int {
	var out []int
	for _, n := range c.nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			out = append(out, n.cmd.Process.Pid)
		}
	}
	return out
}

// leader polls every node's state until one leads.
func (c *Cluster) leader(ctx context.Context, timeout time.Duration) (*node, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error = errors.New("no node answered")
	for {
		for _, n := range c.nodes {
			select {
			case <-n.exited:
				return nil, fmt.Errorf("bare Raft node %s exited: %v (log in %s)", n.id, n.waitErr, n.log.Name())
			default:
			}
			st, err := c.state(ctx, n)
			if err != nil {
				lastErr = err
				continue
			}
			if st.State == "Leader" {
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no bare Raft leader within %s: %w", timeout, lastErr)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) state(ctx context.Context, n *node) (State, error) {
	var st State
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.control+"/state", nil)
	if err != nil {
		return st, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// Load has the leader run callers goroutines of raft.Apply with payloads of
// size bytes back to back for d, and returns their calls.
func (c *Cluster) Load(ctx context.Context, size, callers int, d time.Duration) (closedloop.Result, error) {
	n, err := c.leader(ctx, 30*time.Second)
	if err != nil {
		return closedloop.Result{}, err
	}
	q := url.Values{"bytes": {strconv.Itoa(size)}, "callers": {strconv.Itoa(callers)}, "millis": {strconv.FormatInt(d.Milliseconds(), 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.control+"/load?"+q.Encode(), nil)
	if err != nil {
		return closedloop.Result{}, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return closedloop.Result{}, fmt.Errorf("bare Raft load on %s: %w", n.id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return closedloop.Result{}, fmt.Errorf("bare Raft load on %s: %s: %s", n.id, resp.Status, b)
	}
	var w closedloop.Wire
	if err := json.NewDecoder(resp.Body).Decode(&w); err != nil {
		return closedloop.Result{}, fmt.Errorf("bare Raft load on %s: %w", n.id, err)
	}
	return w.Result(), nil
}

// Follow has the leader stream slot of publication pub for d and log its
// transactions into Raft as cdc-ingest batches them, and returns each
// transaction's commit and applied times.
func (c *Cluster) Follow(ctx context.Context, dsn, slot, pub string, d time.Duration) ([]FollowedCommit, error) {
	n, err := c.leader(ctx, 30*time.Second)
	if err != nil {
		return nil, err
	}
	q := url.Values{"dsn": {dsn}, "slot": {slot}, "pub": {pub}, "millis": {strconv.FormatInt(d.Milliseconds(), 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.control+"/follow?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bare Raft follow on %s: %w", n.id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return nil, fmt.Errorf("bare Raft follow on %s: %s: %s", n.id, resp.Status, b)
	}
	var out []FollowedCommit
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("bare Raft follow on %s: %w", n.id, err)
	}
	return out, nil
}

// Stop sends every node SIGTERM and waits for it (SIGKILL after 30 s).
func (c *Cluster) Stop() {
	for _, n := range c.nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, n := range c.nodes {
		if n.exited != nil {
			select {
			case <-n.exited:
			case <-time.After(30 * time.Second):
				_ = n.cmd.Process.Kill()
				<-n.exited
			}
		}
		if n.log != nil {
			n.log.Close()
		}
	}
	c.hc.CloseIdleConnections()
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
