// Package pki creates a development certificate authority and the
// certificates of every witnz process, each carrying its identity as a
// spiffe://witnz/<kind>/<name> URI SAN (see package mtls).
//
// The layout of a PKI directory is:
//
//	ca.crt, ca.key                 the CA (the key never leaves this directory)
//	<kind>-<name>.crt/.key         one pair per identity, e.g. service-cdc-ingest.crt
//
// It is meant for development stacks and tests; production deployments bring
// certificates from their own CA with the same URI SANs.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/witnz/witnz/libs/mtls"
)

// Identity is the (kind, name) pair a certificate is issued for.
type Identity = mtls.Identity

func base(id Identity) string { return id.Kind + "-" + id.Name }

// Paths of one identity's files in a directory.
type Paths struct {
	Cert, Key, CA string
}

// PathsFor returns where Init writes the files of id in dir.
func PathsFor(dir string, id Identity) Paths {
	return Paths{
		Cert: filepath.Join(dir, base(id)+".crt"),
		Key:  filepath.Join(dir, base(id)+".key"),
		CA:   filepath.Join(dir, "ca.crt"),
	}
}

// Options tune Init.
type Options struct {
	// Validity of issued certificates; zero means one year.
	Validity time.Duration
	// Extra host names and IPs put into every leaf certificate besides
	// localhost and 127.0.0.1.
	Hosts []string
}

// CA is a loaded certificate authority.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Init makes sure dir holds a CA and a certificate for every identity. An
// existing CA is reused, existing leaf certificates are kept, so Init is
// idempotent and can add identities to a running deployment.
func Init(dir string, ids []Identity, opts Options) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create PKI directory: %w", err)
	}
	ca, err := loadOrCreateCA(dir, opts)
	if err != nil {
		return err
	}
	for _, id := range ids {
		p := PathsFor(dir, id)
		if fileExists(p.Cert) && fileExists(p.Key) {
			continue
		}
		if err := ca.Issue(id, p.Cert, p.Key, opts); err != nil {
			return err
		}
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func loadOrCreateCA(dir string, opts Options) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if fileExists(certPath) || fileExists(keyPath) {
		return LoadCA(certPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "witnz development CA", Organization: []string{"witnz"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key}, nil
}

// LoadCA reads a CA certificate and key written by Init.
func LoadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w (the CA key must sit beside ca.crt to issue certificates)", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("CA certificate or key is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	return &CA{cert: cert, key: key}, nil
}

// Issue writes a new certificate and key for id, valid for client and
// server authentication on localhost and opts.Hosts.
func (ca *CA) Issue(id Identity, certPath, keyPath string, opts Options) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	validity := opts.Validity
	if validity == 0 {
		validity = 365 * 24 * time.Hour
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: id.Kind + "/" + id.Name, Organization: []string{"witnz"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("issue %s: %w", id.URI(), err)
	}
	return writePair(certPath, keyPath, der, key)
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}
