package mux

import (
	"context"
	"crypto/tls"
	"os"
	"testing"

	"github.com/bpmux/bp/transport"
)

// The tests that run sessions over a real connection run over the binding
// BP_TEST_BINDING names: quic (quic-go, the default), xquic
// (golang.org/x/net/quic) or tcp (TLS over TCP). CI runs the package once
// per binding. Tests that speak QUIC itself (a raw quic-go peer, QUIC
// stream resets, QUIC windows) run on quic only, and say so when skipped.

// testBinding is a binding's listen and dial, for tests.
type testBinding struct {
	name   string
	listen func(addr string, tlsConf *tls.Config, qc transport.QUICConfig) (transport.Listener, error)
	dial   func(ctx context.Context, addr string, tlsConf *tls.Config, qc transport.QUICConfig) (transport.Conn, error)
}

func bindingNamed(name string) (testBinding, bool) {
	switch name {
	case "", "quic":
		return testBinding{
			name: "quic",
			listen: func(addr string, tlsConf *tls.Config, qc transport.QUICConfig) (transport.Listener, error) {
				return transport.ListenQUIC(addr, tlsConf, qc)
			},
			dial: transport.DialQUIC,
		}, true
	case "xquic":
		return testBinding{
			name: "xquic",
			listen: func(addr string, tlsConf *tls.Config, qc transport.QUICConfig) (transport.Listener, error) {
				return transport.ListenXQUIC(addr, tlsConf, qc)
			},
			dial: transport.DialXQUIC,
		}, true
	case "tcp":
		return testBinding{
			name: "tcp",
			listen: func(addr string, tlsConf *tls.Config, qc transport.QUICConfig) (transport.Listener, error) {
				return transport.ListenTCP(addr, tlsConf, qc.TCPConfig())
			},
			dial: func(ctx context.Context, addr string, tlsConf *tls.Config, qc transport.QUICConfig) (transport.Conn, error) {
				return transport.DialTCP(ctx, addr, tlsConf, qc.TCPConfig())
			},
		}, true
	}
	return testBinding{}, false
}

// currentBinding is the binding BP_TEST_BINDING names.
func currentBinding(t testing.TB) testBinding {
	t.Helper()
	name := os.Getenv("BP_TEST_BINDING")
	b, ok := bindingNamed(name)
	if !ok {
		t.Fatalf("BP_TEST_BINDING=%q: want quic, xquic or tcp", name)
	}
	return b
}

// requireQUICGo skips a test that speaks QUIC itself unless the binding
// under test is quic-go's.
func requireQUICGo(t testing.TB) {
	t.Helper()
	requireStack(t, "quic", "speaks QUIC to a quic-go server itself")
}

// requireStack skips a test that depends on how one binding behaves
// underneath (its buffers, its stream handling) unless that binding is
// under test; why says what it depends on.
func requireStack(t testing.TB, name, why string) {
	t.Helper()
	if b := currentBinding(t); b.name != name {
		t.Skipf("%s: the binding under test is %s", why, b.name)
	}
}

// requireQUIC skips a test that speaks QUIC itself (a quic-go raw peer's
// own streams) unless a QUIC binding is under test.
func requireQUIC(t testing.TB) {
	t.Helper()
	if b := currentBinding(t); b.name != "quic" && b.name != "xquic" {
		t.Skipf("speaks QUIC itself; the binding under test is %s", b.name)
	}
}
