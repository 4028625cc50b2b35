package bp

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/bpmux/bp/transport"
)

// Transport names a binding of bp/1 to a network transport. An address
// given to Dial or Listen may start with one, as a URL scheme:
// "tcp://example.com:4242". Without a scheme it is TransportQUIC.
type Transport string

// The bindings.
const (
	// TransportQUIC is bp/1 over QUIC with quic-go, the default: no
	// stream is ever held up by another's loss.
	TransportQUIC Transport = "quic"
	// TransportXQUIC is bp/1 over QUIC with golang.org/x/net/quic, a
	// second, independent QUIC stack. That package says it is not ready
	// for production; this binding is for interoperability testing.
	TransportXQUIC Transport = "xquic"
	// TransportTCP is bp/1 over one TLS 1.3 connection on TCP (SPEC.md
	// section 13), for networks that block UDP. bp/1's credit still keeps
	// a stalled stream from holding up its siblings, but a lost TCP
	// segment delays every stream until it is resent (head-of-line
	// blocking), which QUIC avoids.
	TransportTCP Transport = "tcp"
)

// Transports lists the bindings, the default first.
func Transports() []Transport { return []Transport{TransportQUIC, TransportXQUIC, TransportTCP} }

// SplitAddress splits an address of the form [transport://]host:port into
// its transport (TransportQUIC when there is no scheme) and host:port.
func SplitAddress(addr string) (Transport, string, error) {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		return TransportQUIC, addr, nil
	}
	t := Transport(strings.ToLower(scheme))
	for _, known := range Transports() {
		if t == known {
			return t, rest, nil
		}
	}
	return "", "", fmt.Errorf("%w: unknown transport %q in %q (want quic://, xquic:// or tcp://)", ErrInvalidArgument, scheme, addr)
}

// listener is what a binding's listener offers the bp.Listener.
type listener interface {
	transport.Listener
	Stats() transport.ListenerStats
}

// dial connects over t.
func dial(ctx context.Context, t Transport, addr string, tlsConf *tls.Config, qc transport.QUICConfig) (transport.Conn, error) {
	switch t {
	case TransportXQUIC:
		return transport.DialXQUIC(ctx, addr, tlsConf, qc)
	case TransportTCP:
		return transport.DialTCP(ctx, addr, tlsConf, qc.TCPConfig())
	}
	return transport.DialQUIC(ctx, addr, tlsConf, qc)
}

// listen listens over t.
func listen(t Transport, addr string, tlsConf *tls.Config, qc transport.QUICConfig) (listener, error) {
	switch t {
	case TransportXQUIC:
		return transport.ListenXQUIC(addr, tlsConf, qc)
	case TransportTCP:
		return transport.ListenTCP(addr, tlsConf, qc.TCPConfig())
	}
	return transport.ListenQUIC(addr, tlsConf, qc)
}
