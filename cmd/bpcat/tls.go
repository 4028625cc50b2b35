package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/bpmux/bp/transport"
)

// serverTLS are the flags of a side that accepts sessions.
type serverTLS struct {
	cert, key string
}

func (s *serverTLS) register(fs *flagSet) {
	fs.StringVar(&s.cert, "cert", "", "TLS certificate `FILE` (PEM); default: a fresh self-signed one")
	fs.StringVar(&s.key, "key", "", "TLS private key `FILE` (PEM) for --cert")
}

// config loads or makes the server certificate and returns the TLS
// configuration and the certificate's fingerprint. host is the host of the listen
// address, named in a self-signed certificate.
func (s *serverTLS) config(host string) (*tls.Config, string, error) {
	var cert tls.Certificate
	var err error
	switch {
	case s.cert == "" && s.key == "":
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
			hosts = append(hosts, host)
		}
		cert, err = transport.SelfSigned(hosts...)
	case s.cert == "" || s.key == "":
		return nil, "", usageErrorf("--cert and --key go together")
	default:
		cert, err = tls.LoadX509KeyPair(s.cert, s.key)
		if err != nil {
			err = fmt.Errorf("load certificate: %w", err)
		}
	}
	if err != nil {
		return nil, "", err
	}
	return transport.ServerConfig(cert), transport.Fingerprint(cert.Certificate[0]), nil
}

// clientTLS are the flags of a side that dials: how it verifies the server.
type clientTLS struct {
	pin      string
	ca       string
	insecure bool
}

func (c *clientTLS) register(fs *flagSet, what string) {
	fs.StringVar(&c.pin, "pin", "", "accept "+what+" only if its certificate has this fingerprint `sha256:HEX`")
	fs.StringVar(&c.ca, "ca", "", "verify "+what+" against the CA certificates in `FILE` (PEM) instead of the system roots")
	fs.BoolVar(&c.insecure, "insecure", false, "do not verify "+what+" at all (anyone in the path can read and change the data)")
}

// errUntrusted: the server's certificate was not verified by the roots and
// no pin was given.
var errUntrusted = errors.New("server certificate not trusted")

// verifier verifies a server for one dial and remembers what it saw, so
// that a refusal can say which fingerprint to pin.
type verifier struct {
	mu    sync.Mutex
	seen  string // fingerprint of the server's certificate
	cause error  // why verification failed
}

func (v *verifier) record(fp string, err error) {
	v.mu.Lock()
	v.seen, v.cause = fp, err
	v.mu.Unlock()
}

// explain turns a dial error into the message a user needs, if the
// verifier refused the server.
func (v *verifier) explain(err error, addr string) error {
	v.mu.Lock()
	seen, cause := v.seen, v.cause
	v.mu.Unlock()
	switch {
	case cause == nil:
		return err
	case errors.Is(cause, transport.ErrPinMismatch):
		return fmt.Errorf("refused %s: its certificate is %s, not the pinned fingerprint: %w", addr, seen, transport.ErrPinMismatch)
	default:
		return fmt.Errorf("refused %s before sending anything: %w (%v); if you trust the server, pin what it showed: --pin %s (or --ca FILE, or --insecure)",
			addr, errUntrusted, cause, seen)
	}
}

// config returns the client TLS configuration for dialling host, and the
// verifier whose explain makes refusals clear.
func (c *clientTLS) config(stderr io.Writer, host string) (*tls.Config, *verifier, error) {
	v := &verifier{}
	conf := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPN}}
	switch {
	case c.insecure && (c.pin != "" || c.ca != ""):
		return nil, nil, usageErrorf("--insecure contradicts --pin and --ca")
	case c.pin != "" && c.ca != "":
		return nil, nil, usageErrorf("give --pin or --ca, not both")
	case c.insecure:
		fmt.Fprintln(stderr, "bpcat: --insecure: NOT verifying the server's certificate; anyone in the path can read and change the data")
		conf.InsecureSkipVerify = true
		return conf, v, nil
	case c.pin != "":
		pinned, err := transport.PinnedClientConfig(c.pin)
		if err != nil {
			return nil, nil, usageErrorf("--pin: %v", err)
		}
		check := pinned.VerifyConnection
		pinned.VerifyConnection = func(cs tls.ConnectionState) error {
			err := check(cs)
			if err != nil && len(cs.PeerCertificates) > 0 {
				v.record(transport.Fingerprint(cs.PeerCertificates[0].Raw), err)
			}
			return err
		}
		return pinned, v, nil
	}
	var roots *x509.CertPool // nil: the system roots
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, nil, fmt.Errorf("--ca: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--ca %s: no PEM certificates in it", c.ca)
		}
	}
	// Verify by hand so that a refusal can show the fingerprint seen.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			err := errors.New("no certificate")
			v.record("(none)", err)
			return err
		}
		inter := x509.NewCertPool()
		for _, cert := range cs.PeerCertificates[1:] {
			inter.AddCert(cert)
		}
		leaf := cs.PeerCertificates[0]
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host})
		if err != nil {
			v.record(transport.Fingerprint(leaf.Raw), err)
			return fmt.Errorf("%w: %w", errUntrusted, err)
		}
		return nil
	}
	return conf, v, nil
}
