package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// FingerprintPrefix starts the text form of a certificate fingerprint.
const FingerprintPrefix = "sha256:"

// Fingerprint returns the SHA-256 of a DER certificate as "sha256:<64 hex>".
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return FingerprintPrefix + hex.EncodeToString(sum[:])
}

// ParseFingerprint checks the text form "sha256:<64 hex>" and returns the
// digest.
func ParseFingerprint(s string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	h, ok := strings.CutPrefix(strings.ToLower(s), FingerprintPrefix)
	if !ok {
		return d, fmt.Errorf("transport: fingerprint %q: want %s<64 hex digits>", s, FingerprintPrefix)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return d, fmt.Errorf("transport: fingerprint %q: want %s<64 hex digits>", s, FingerprintPrefix)
	}
	copy(d[:], b)
	return d, nil
}

// SelfSigned makes a fresh ECDSA P-256 certificate for hosts (names or IP
// addresses), valid for a year, for a server that has none configured.
func SelfSigned(hosts ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "bp self-signed"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: parse certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ErrPinMismatch is returned (wrapped) when a server's certificate does not
// match the pinned fingerprint.
var ErrPinMismatch = errors.New("transport: certificate does not match pinned fingerprint")

// PinnedClientConfig returns a client TLS configuration that accepts the
// server only if its leaf certificate has the fingerprint pin
// ("sha256:<64 hex>"), whatever names or authorities it carries.
func PinnedClientConfig(pin string) (*tls.Config, error) {
	want, err := ParseFingerprint(pin)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPN},
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no certificate", ErrPinMismatch)
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				return fmt.Errorf("%w: server presented %s", ErrPinMismatch, Fingerprint(cs.PeerCertificates[0].Raw))
			}
			return nil
		},
	}, nil
}

// ServerConfig returns a server TLS configuration for cert.
func ServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
		Certificates: []tls.Certificate{cert},
	}
}
