// Package raftnet is the Raft transport's stream layer over mutual TLS.
// Both ends present certificates from the witnz CA, and a connection is
// handed to Raft only when the peer's verified identity is a witness node
// (spiffe://witnz/witness/<id>): a service, agent or operator certificate,
// or no certificate at all, never reaches Raft.
package raftnet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/witnz/witnz/libs/mtls"
)

// ALPN is the application protocol both ends negotiate, so that neither an
// HTTP client nor a Raft peer can mistake the other's port for its own.
const ALPN = "witnz-raft/1"

// HandshakeTimeout bounds the TLS handshake of an inbound connection.
const HandshakeTimeout = 10 * time.Second

// ErrNotWitness means the peer's certificate is valid but does not name a
// witness node.
var ErrNotWitness = errors.New("peer is not a witness node")

// checkPeer accepts only verified witness identities.
func checkPeer(cs tls.ConnectionState) (mtls.Identity, error) {
	id, err := mtls.PeerIdentityFromState(&cs)
	if err != nil {
		return id, err
	}
	if id.Kind != mtls.KindWitness {
		return id, fmt.Errorf("%w: %s (Raft accepts only spiffe://witnz/witness/<id>)", ErrNotWitness, id)
	}
	return id, nil
}

// StreamLayer implements raft.StreamLayer over mutual TLS.
type StreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	log       *slog.Logger

	conns     chan net.Conn
	ctx       context.Context // ends on Close
	stop      context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// New serves Raft connections on ln (a plain TCP listener; TLS is added
// here) and dials peers with this node's certificate. advertise is the
// host:port other nodes know this one by.
func New(ln net.Listener, advertise string, cfg *mtls.Config, log *slog.Logger) *StreamLayer {
	server := cfg.Server()
	server.NextProtos = []string{ALPN}
	// Refuse a non-witness certificate inside the handshake, so the peer
	// sees a TLS alert instead of a connection that silently closes.
	server.VerifyConnection = func(cs tls.ConnectionState) error {
		_, err := checkPeer(cs)
		return err
	}
	client := cfg.Client()
	client.NextProtos = []string{ALPN}
	ctx, stop := context.WithCancel(context.Background())
	s := &StreamLayer{
		ln:        ln,
		advertise: advertiseAddr(advertise),
		server:    server,
		client:    client,
		log:       log,
		conns:     make(chan net.Conn),
		ctx:       ctx,
		stop:      stop,
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func (s *StreamLayer) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("raft listener accept failed", "error", err, "retry_in", delay)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		s.wg.Add(1)
		go s.handshake(c)
	}
}

// handshake runs the TLS handshake of one inbound connection off the accept
// loop, so a slow or hostile client cannot hold up the others.
func (s *StreamLayer) handshake(c net.Conn) {
	defer s.wg.Done()
	tc := tls.Server(c, s.server)
	ctx, cancel := context.WithTimeout(s.ctx, HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log.Warn("refused raft connection", "remote", c.RemoteAddr().String(), "error", err)
		c.Close()
		return
	}
	// VerifyConnection already checked; checking again here keeps the
	// guarantee even if the server configuration changes.
	id, err := checkPeer(tc.ConnectionState())
	if err != nil {
		s.log.Warn("refused raft connection", "remote", c.RemoteAddr().String(), "error", err)
		tc.Close()
		return
	}
	s.log.Debug("accepted raft connection", "remote", c.RemoteAddr().String(), "peer", id.String())
	select {
	case s.conns <- tc:
	case <-s.ctx.Done():
		tc.Close()
	}
}

// Accept returns the next inbound connection from a verified witness.
func (s *StreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the listener.
func (s *StreamLayer) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.stop()
		err = s.ln.Close()
		s.wg.Wait()
	})
	return err
}

// Addr is the advertised address of this node.
func (s *StreamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to a peer and returns the connection only if the peer
// proves to be a witness node.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", address, err)
	}
	tc := c.(*tls.Conn)
	if _, err := checkPeer(tc.ConnectionState()); err != nil {
		tc.Close()
		return nil, fmt.Errorf("raft dial %s: %w", address, err)
	}
	return tc, nil
}
