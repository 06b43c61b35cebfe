// Package mtls builds mutual-TLS configurations from PEM files and reads the
// witnz identity of a peer from its certificate.
//
// Every witnz certificate carries one URI SAN of the form
// spiffe://witnz/<kind>/<name>, for example spiffe://witnz/service/cdc-ingest
// or spiffe://witnz/witness/w1. Authorization decisions are made on that
// identity, never on host names.
package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Identity kinds.
const (
	KindService  = "service"
	KindWitness  = "witness"
	KindAgent    = "agent"
	KindOperator = "operator"
)

// TrustDomain is the authority of every witnz identity URI.
const TrustDomain = "witnz"

// Identity names a peer: a service, a witness node, a host agent or an
// operator.
type Identity struct {
	Kind string
	Name string
}

// String renders the identity as its URI.
func (id Identity) String() string { return id.URI().String() }

// URI is the SAN URI that carries the identity in a certificate.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/" + id.Kind + "/" + id.Name}
}

// Service returns the identity of a witnz service.
func Service(name string) Identity { return Identity{Kind: KindService, Name: name} }

// Witness returns the identity of a witness node.
func Witness(id string) Identity { return Identity{Kind: KindWitness, Name: id} }

// ErrNoIdentity means a certificate carries no witnz identity URI.
var ErrNoIdentity = errors.New("certificate carries no spiffe://witnz/<kind>/<name> URI SAN")

// IdentityFromCert reads the witnz identity from a certificate.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != TrustDomain {
			continue
		}
		kind, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if !ok || kind == "" || name == "" || strings.Contains(name, "/") {
			continue
		}
		return Identity{Kind: kind, Name: name}, nil
	}
	return Identity{}, ErrNoIdentity
}

// Files names the PEM files of one party: its certificate chain, its private
// key and the CA bundle it trusts for peers.
type Files struct {
	Cert string
	Key  string
	CA   string
}

// Validate checks that all three files are named.
func (f Files) Validate() error {
	switch {
	case f.Cert == "":
		return errors.New("--tls-cert is required: the PEM certificate of this process (create one with `witnz pki init`)")
	case f.Key == "":
		return errors.New("--tls-key is required: the PEM private key of --tls-cert (create one with `witnz pki init`)")
	case f.CA == "":
		return errors.New("--tls-ca is required: the PEM CA bundle that signs peer certificates (create one with `witnz pki init`)")
	}
	return nil
}

type material struct {
	cert tls.Certificate
	pool *x509.CertPool
	id   Identity
}

func load(f Files) (*material, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("read --tls-cert: %w (run `witnz pki init` or point the flag at an existing certificate)", err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("read --tls-key: %w (run `witnz pki init` or point the flag at the key of %s)", err, f.Cert)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load key pair %s + %s: %w (the key must match the certificate; both PEM)", f.Cert, f.Key, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", f.Cert, err)
	}
	cert.Leaf = leaf
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate %s expired on %s: issue a new one with `witnz pki init`", f.Cert, leaf.NotAfter.Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("certificate %s is not valid before %s: check this host's clock", f.Cert, leaf.NotBefore.Format(time.RFC3339))
	}
	id, err := IdentityFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w (issue it with `witnz pki init`)", f.Cert, err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("read --tls-ca: %w (run `witnz pki init` or point the flag at the CA bundle)", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", f.CA)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("certificate %s is not signed by --tls-ca %s: %w", f.Cert, f.CA, err)
	}
	return &material{cert: cert, pool: pool, id: id}, nil
}

// Config is a loaded mutual-TLS configuration for one process.
type Config struct {
	// Identity is this process's own identity, read from its certificate.
	Identity Identity
	m        *material
}

// Load reads and checks the files: the key matches the certificate, the
// certificate is current, carries a witnz identity and chains to the CA.
func Load(f Files) (*Config, error) {
	m, err := load(f)
	if err != nil {
		return nil, err
	}
	return &Config{Identity: m.id, m: m}, nil
}

// Server returns a TLS 1.3 server configuration that requires and verifies
// a client certificate signed by the CA.
func (c *Config) Server() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.m.cert},
		ClientCAs:    c.m.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// Client returns a TLS 1.3 client configuration that presents this
// process's certificate and trusts only the CA.
func (c *Config) Client() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.m.cert},
		RootCAs:      c.m.pool,
		NextProtos:   []string{"h2"},
	}
}

// HTTPClient returns an HTTP/2 client over mutual TLS, suitable for Connect
// and gRPC calls to other witnz services.
func (c *Config) HTTPClient() *http.Client {
	tr := &http.Transport{
		TLSClientConfig:     c.Client(),
		ForceAttemptHTTP2:   true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 16,
	}
	return &http.Client{Transport: tr}
}

// PeerIdentityFromState reads the identity of the verified peer certificate
// of a TLS connection.
func PeerIdentityFromState(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, errors.New("no verified client certificate")
	}
	return IdentityFromCert(cs.VerifiedChains[0][0])
}

type ctxKey struct{}

// WithPeerIdentity wraps a handler so that the peer's identity, read from
// its verified client certificate, is in the request context (see
// PeerIdentity). Requests without one are refused with 401.
func WithPeerIdentity(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := PeerIdentityFromState(r.TLS)
		if err != nil {
			http.Error(w, "client certificate required: "+err.Error(), http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}

// PeerIdentity returns the identity WithPeerIdentity put in the context.
func PeerIdentity(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}
