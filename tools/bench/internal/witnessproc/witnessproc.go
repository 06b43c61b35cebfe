// Package witnessproc runs a witness cluster on its own, as in
// production: one `witness` process per node from the built binaries,
// mutual TLS on the API and on the Raft transport with certificates from a
// fresh CA (libs/pki), free loopback ports, and clients that speak as
// cdc-ingest (the only identity allowed to append).
package witnessproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
)

// IngestName is the service identity the clients present.
const IngestName = "cdc-ingest"

// Node is one witness process.
type Node struct {
	ID string
	// URL is the API (https://127.0.0.1:PORT); Admin the plain-HTTP
	// health and metrics listener.
	URL, Raft, Admin string
	DataDir, Log     string

	cmd     *exec.Cmd
	logFile *os.File
	exited  chan struct{}
	waitErr error
}

// Cluster is a running witness cluster.
type Cluster struct {
	Nodes []*Node
	// PKI is the directory of the cluster's CA and certificates.
	PKI string

	hc      *http.Client
	clients map[string]witnessv1connect.WitnessServiceClient
}

// Start runs one witness per id from bin/witness with its state in dir,
// the first bootstrapping the cluster, and returns once every node is
// ready (it knows a leader). extra flags go to every node.
func Start(ctx context.Context, bin, dir string, ids []string, extra ...string) (*Cluster, error) {
	c := &Cluster{PKI: filepath.Join(dir, "pki"), clients: map[string]witnessv1connect.WitnessServiceClient{}}
	identities := []mtls.Identity{mtls.Service(IngestName)}
	for _, id := range ids {
		identities = append(identities, mtls.Witness(id))
	}
	if err := pki.Init(c.PKI, identities, pki.Options{}); err != nil {
		return nil, fmt.Errorf("witness cluster certificates: %w", err)
	}
	var peers []string
	for _, id := range ids {
		var addrs [3]string
		for i := range addrs {
			a, err := freeAddr()
			if err != nil {
				return nil, err
			}
			addrs[i] = a
		}
		n := &Node{ID: id, URL: "https://" + addrs[0], Raft: addrs[1], Admin: addrs[2],
			DataDir: filepath.Join(dir, id), Log: filepath.Join(dir, id+".log")}
		c.Nodes = append(c.Nodes, n)
		peers = append(peers, "--peer", fmt.Sprintf("%s=%s,%s", id, n.Raft, n.URL))
	}
	for i, n := range c.Nodes {
		p := pki.PathsFor(c.PKI, mtls.Witness(n.ID))
		args := []string{
			"--node-id", n.ID, "--data-dir", n.DataDir,
			"--listen", n.URL[len("https://"):], "--api-advertise", n.URL, "--admin-listen", n.Admin,
			"--raft-listen", n.Raft,
			"--tls-cert", p.Cert, "--tls-key", p.Key, "--tls-ca", p.CA,
			"--log-format", "json",
		}
		args = append(args, peers...)
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		args = append(args, extra...)
		if err := n.start(filepath.Join(bin, "witness"), args); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := n.waitReady(ctx, time.Minute); err != nil {
			c.Stop()
			return nil, err
		}
	}
	ip := pki.PathsFor(c.PKI, mtls.Service(IngestName))
	cfg, err := mtls.Load(mtls.Files{Cert: ip.Cert, Key: ip.Key, CA: ip.CA})
	if err != nil {
		c.Stop()
		return nil, err
	}
	c.hc = cfg.HTTPClient()
	for _, n := range c.Nodes {
		c.clients[n.ID] = witnessv1connect.NewWitnessServiceClient(c.hc, n.URL, rpcserver.ClientOptions()...)
	}
	return c, nil
}

func (n *Node) start(path string, args []string) error {
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return err
	}
	f, err := os.Create(n.Log)
	if err != nil {
		return err
	}
	n.logFile = f
	n.cmd = exec.Command(path, args...)
	n.cmd.Stdout, n.cmd.Stderr = f, f
	n.cmd.Env = childEnv()
	// Its own process group, so a Ctrl-C reaches only the harness, which
	// stops the cluster; if the harness dies, the node gets SIGTERM.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := n.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start witness %s: %w", n.ID, err)
	}
	n.exited = make(chan struct{})
	go func() {
		n.waitErr = n.cmd.Wait()
		close(n.exited)
	}()
	return nil
}

// childEnv is this process's environment without WITNZ_* variables: the
// flags are the node's whole configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WITNZ_") {
			env = append(env, kv)
		}
	}
	return env
}

var readyClient = &http.Client{Timeout: 3 * time.Second}

func (n *Node) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		select {
		case <-n.exited:
			return fmt.Errorf("witness %s exited (%v) before it was ready: see %s", n.ID, n.waitErr, n.Log)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Admin+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := readyClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("witness %s not ready within %s: %v (see %s)", n.ID, timeout, last, n.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PIDs are the node processes.
func (c *Cluster) PIDs() []int {
	var out []int
	for _, n := range c.Nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			out = append(out, n.cmd.Process.Pid)
		}
	}
	return out
}

// Client is a cdc-ingest client of node id.
func (c *Cluster) Client(id string) witnessv1connect.WitnessServiceClient { return c.clients[id] }

// Leader asks every node until one says it leads, for up to timeout.
func (c *Cluster) Leader(ctx context.Context, timeout time.Duration) (*Node, error) {
	deadline := time.Now().Add(timeout)
	var last error = errors.New("no node answered")
	for {
		for _, n := range c.Nodes {
			resp, err := c.clients[n.ID].GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
			if err != nil {
				last = err
				continue
			}
			if resp.Msg.GetState() == "Leader" {
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no witness leader within %s: %w", timeout, last)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop sends every node SIGTERM (each hands leadership over and closes its
// store) and waits for it, killing one that takes over 30 s.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, n := range c.Nodes {
		if n.exited != nil {
			select {
			case <-n.exited:
			case <-time.After(30 * time.Second):
				_ = n.cmd.Process.Kill()
				<-n.exited
			}
		}
		if n.logFile != nil {
			n.logFile.Close()
		}
	}
	if c.hc != nil {
		c.hc.CloseIdleConnections()
	}
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
