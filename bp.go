// Package bp is a transport with honest, end-to-end backpressure: bp/1
// sessions over QUIC, in which every stream has an application-level receive
// window and the receiver returns credit only as its application reads, so a
// slow reader stalls its writer end to end.
//
// Dial and Listen are the shortest way in: they run a bp/1 session over
// quic-go with QUIC sized so that bp/1's windows govern. The pieces are in
// the sub-packages: framing (the wire format), window (flow-control logic),
// mux (sessions and streams), transport (connection bindings and TLS
// helpers). SPEC.md describes the protocol.
package bp

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

// Dial connects to a bp/1 server at addr (host:port, UDP) and starts a
// client session. tlsConf must verify the server (see
// transport.PinnedClientConfig); ALPN and TLS 1.3 are set for you. cfg may
// be nil for the defaults.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, cfg *mux.Config) (*mux.Session, error) {
	conn, err := transport.DialQUIC(ctx, addr, tlsConf, quicConfig(cfg))
	if err != nil {
		return nil, err
	}
	sess, err := mux.New(conn, cfg)
	if err != nil {
		conn.CloseWithError(0, "")
		return nil, fmt.Errorf("bp: %w", err)
	}
	return sess, nil
}

// Listener accepts bp/1 sessions.
type Listener struct {
	ln  transport.Listener
	cfg *mux.Config
}

// Listen listens for bp/1 sessions on the UDP address addr. cfg may be nil
// for the defaults; it applies to every accepted session.
func Listen(addr string, tlsConf *tls.Config, cfg *mux.Config) (*Listener, error) {
	if cfg != nil { // validate before binding the port
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
	}
	ln, err := transport.ListenQUIC(addr, tlsConf, quicConfig(cfg))
	if err != nil {
		return nil, err
	}
	return &Listener{ln: ln, cfg: cfg}, nil
}

// Accept waits for the next session.
func (l *Listener) Accept(ctx context.Context) (*mux.Session, error) {
	conn, err := l.ln.Accept(ctx)
	if err != nil {
		return nil, err
	}
	sess, err := mux.New(conn, l.cfg)
	if err != nil {
		conn.CloseWithError(0, "")
		return nil, fmt.Errorf("bp: %w", err)
	}
	return sess, nil
}

// Close stops listening; sessions already accepted stay open.
func (l *Listener) Close() error { return l.ln.Close() }

// Addr returns the address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// quicConfig sizes QUIC so that it never limits what cfg's windows allow.
func quicConfig(cfg *mux.Config) transport.QUICConfig {
	if cfg == nil {
		return transport.QUICConfig{}
	}
	return transport.QUICConfig{
		MaxStreamWindow: cfg.MaxWindow,
		SessionBudget:   cfg.SessionBudget,
		MaxStreams:      int64(cfg.MaxStreams),
	}
}
