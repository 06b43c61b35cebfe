package raftnet

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
)

func mustPKI(t *testing.T, ids ...mtls.Identity) string {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Init(dir, ids, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustTLS(t *testing.T, dir string, id mtls.Identity) *mtls.Config {
	t.Helper()
	p := pki.PathsFor(dir, id)
	cfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustLayer(t *testing.T, cfg *mtls.Config) *StreamLayer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, ln.Addr().String(), cfg, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { s.Close() })
	return s
}

// acceptOne accepts with a deadline, so a test that expects a refusal can
// never hang.
func acceptOne(t *testing.T, s *StreamLayer) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := s.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		return r.c
	case <-time.After(10 * time.Second):
		t.Fatal("Accept returned nothing within 10s")
		return nil
	}
}

func roundTrip(t *testing.T, client, server net.Conn) {
	t.Helper()
	go client.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
}

func TestWitnessesConnect(t *testing.T) {
	dir := mustPKI(t, mtls.Witness("w1"), mtls.Witness("w2"))
	w1 := mustLayer(t, mustTLS(t, dir, mtls.Witness("w1")))
	w2 := mustLayer(t, mustTLS(t, dir, mtls.Witness("w2")))
	c, err := w2.Dial(raft.ServerAddress(w1.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := acceptOne(t, w1)
	defer sc.Close()
	roundTrip(t, c, sc)
	if got := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != ALPN {
		t.Fatalf("negotiated %q, want %q", got, ALPN)
	}
}

func TestRefusesNonWitnessPeers(t *testing.T) {
	dir := mustPKI(t, mtls.Witness("w1"), mtls.Witness("w2"), mtls.Service("gateway"), mtls.Identity{Kind: mtls.KindOperator, Name: "admin"})
	w1 := mustLayer(t, mustTLS(t, dir, mtls.Witness("w1")))
	otherCA := mustPKI(t, mtls.Witness("w9"))
	addr := w1.Addr().String()

	dialWith := func(cfg *tls.Config) error {
		cfg.NextProtos = []string{ALPN}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		// In TLS 1.3 the server judges the client certificate after the
		// client finished: the refusal arrives on the first read.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		return err
	}
	noCert := mustTLS(t, dir, mtls.Service("gateway")).Client()
	noCert.Certificates = nil
	foreign := mustTLS(t, otherCA, mtls.Witness("w9")).Client()
	foreign.RootCAs = mustTLS(t, dir, mtls.Witness("w1")).Client().RootCAs

	for name, cfg := range map[string]*tls.Config{
		"service certificate":  mustTLS(t, dir, mtls.Service("gateway")).Client(),
		"operator certificate": mustTLS(t, dir, mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}).Client(),
		"no certificate":       noCert,
		"other CA":             foreign,
	} {
		t.Run(name, func(t *testing.T) {
			err := dialWith(cfg)
			if err == nil {
				t.Fatalf("connection with %s was not refused", name)
			}
			// The server's alert (bad/required certificate), or for a
			// foreign CA our own refusal of the server.
			if !strings.Contains(err.Error(), "remote error: tls:") && !strings.Contains(err.Error(), "certificate signed by unknown authority") {
				t.Fatalf("err = %v, want a TLS refusal", err)
			}
			t.Log(err)
		})
	}
	// None of them reached Accept: the next connection handed out is the
	// witness that dials now.
	w2 := mustLayer(t, mustTLS(t, dir, mtls.Witness("w2")))
	c, err := w2.Dial(raft.ServerAddress(addr), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := acceptOne(t, w1)
	defer sc.Close()
	id, err := mtls.PeerIdentityFromState(ptr(sc.(*tls.Conn).ConnectionState()))
	if err != nil || id != mtls.Witness("w2") {
		t.Fatalf("accepted %v (%v), want witness w2", id, err)
	}
	roundTrip(t, c, sc)
}

func ptr[T any](v T) *T { return &v }

func TestDialRefusesNonWitnessServer(t *testing.T) {
	dir := mustPKI(t, mtls.Witness("w1"), mtls.Service("gateway"))
	srv := mustTLS(t, dir, mtls.Service("gateway")).Server()
	srv.NextProtos = []string{ALPN}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	w1 := mustLayer(t, mustTLS(t, dir, mtls.Witness("w1")))
	c, err := w1.Dial(raft.ServerAddress(ln.Addr().String()), 5*time.Second)
	if !errors.Is(err, ErrNotWitness) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Dial to a service: err = %v, want ErrNotWitness", err)
	}
}

func TestCloseUnblocksAccept(t *testing.T) {
	dir := mustPKI(t, mtls.Witness("w1"))
	w1 := mustLayer(t, mustTLS(t, dir, mtls.Witness("w1")))
	errc := make(chan error, 1)
	go func() {
		_, err := w1.Accept()
		errc <- err
	}()
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}
