// Package bp is a transport with honest, end-to-end backpressure: bp/1
// sessions over QUIC, in which every stream has an application-level receive
// window and the receiver returns credit only as its application reads, so a
// slow reader stalls its writer end to end.
//
// Dial and Listen are the shortest way in: they run a bp/1 session over
// quic-go with QUIC sized so that bp/1's windows govern. ListenConfig sets
// the listener-wide limits (caps and a rate of new sessions), DialConfig a
// client's retries. The pieces are in the sub-packages: framing
// (the wire format), window (flow-control logic), mux (sessions and
// streams), transport (connection bindings and TLS helpers). SPEC.md
// describes the protocol.
package bp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

// ErrInvalidArgument is returned (wrapped) by Dial, Listen and
// ListenConfig.Listen for an argument they cannot use, such as a nil
// context or an invalid configuration. An unusable *tls.Config gives an
// error matching transport.ErrInvalidConfig as well.
var ErrInvalidArgument = errors.New("bp: invalid argument")

// Dial connects to a bp/1 server at addr and starts a client session.
// addr is host:port for QUIC, or names the transport as a scheme:
// "quic://host:port", "xquic://host:port" (golang.org/x/net/quic),
// "tcp://host:port" (TLS over TCP); see Transport. tlsConf must verify the server (see
// transport.PinnedClientConfig); ALPN and TLS 1.3 are set for you. cfg may
// be nil for the defaults.
//
// QUIC's idle timeout is cfg's DeadPeerTimeout, so that a vanished server
// ends the session within it, with an error matching
// mux.ErrPeerUnreachable. A server over its session cap or rate refuses
// the connection: the error matches transport.ErrConnRefused. Dial makes
// one attempt; DialConfig.Retry makes it try again with backoff.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, cfg *mux.Config) (*mux.Session, error) {
	return dial1(ctx, addr, tlsConf, cfg)
}

// dial1 is one attempt of Dial.
func dial1(ctx context.Context, addr string, tlsConf *tls.Config, cfg *mux.Config) (*mux.Session, error) {
	if cfg != nil { // validate before dialling
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
	}
	t, hostport, err := SplitAddress(addr)
	if err != nil {
		return nil, err
	}
	conn, err := dial(ctx, t, hostport, tlsConf, quicConfig(cfg)) // checks ctx and tlsConf
	if err != nil {
		return nil, argError(err)
	}
	sess, err := mux.New(conn, cfg)
	if err != nil {
		conn.CloseWithError(0, "")
		return nil, fmt.Errorf("bp: %w", err)
	}
	return sess, nil
}

// argError marks an argument the transport could not use (its
// ErrInvalidConfig) as this package's ErrInvalidArgument too.
func argError(err error) error {
	if errors.Is(err, transport.ErrInvalidConfig) {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return err
}

// quicConfig sizes QUIC so that it never limits what cfg's windows allow,
// and gives it cfg's DeadPeerTimeout as its idle timeout, so that QUIC
// and bp/1's keepalive agree on when a peer is gone. QUIC's own keepalive
// runs every third of it. cfg's QlogDir (or $QLOGDIR) turns QUIC's qlog
// traces on; the session adds its events to them.
func quicConfig(cfg *mux.Config) transport.QUICConfig {
	var c mux.Config
	if cfg != nil {
		c = *cfg
	}
	dead := c.DeadPeerTimeout
	if dead <= 0 {
		dead = mux.DefaultDeadPeerTimeout
	}
	return transport.QUICConfig{
		MaxStreamWindow: c.MaxWindow,
		SessionBudget:   c.SessionBudget,
		MaxStreams:      int64(c.MaxStreams),
		IdleTimeout:     dead,
		QlogDir:         c.QlogDir, // empty: $QLOGDIR
	}
}
