package bp

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/bpmux/bp/mux"
)

// Listener-wide defaults of ListenConfig.
const (
	// DefaultMaxSessions is the default ListenConfig.MaxSessions.
	DefaultMaxSessions = 1000
	// DefaultMaxHandshakes is the default ListenConfig.MaxHandshakes.
	DefaultMaxHandshakes = 256
	// DefaultIdleSessionTimeout is the default
	// ListenConfig.IdleSessionTimeout.
	DefaultIdleSessionTimeout = 5 * time.Minute
	// DefaultSessionRate is the default ListenConfig.SessionRate, in new
	// sessions per second. It is a ceiling on what a flood of new
	// connections can make the listener spend on handshakes, set well
	// above what a service sees from honest clients: setting up a session
	// costs about 1.3 ms of CPU for both ends together on our 2-core
	// machines (any binding), so 500 a second keep the server's side to
	// about a third of a core, while MaxHandshakes and MaxSessions still
	// bound the memory.
	DefaultSessionRate = 500
	// DefaultSessionBurst is the default ListenConfig.SessionBurst: a
	// second's worth of DefaultSessionRate, more than MaxHandshakes
	// (DefaultMaxHandshakes), so that a crowd of clients reconnecting at
	// once (after a restart, say) meets the handshake cap, which makes it
	// wait, before the rate, which refuses it.
	DefaultSessionBurst = 500
)

// ListenConfig holds the options of a bp/1 listener, in the spirit of
// net.ListenConfig. The zero value is ready to use: every zero field
// takes the safe default given in its comment.
//
// What a listener holds is bounded: at most MaxSessions connections at
// once, of which at most MaxHandshakes have not yet been returned by
// Accept. A connection counts from the first packet of its QUIC handshake
// until it closes, so the handshakes quic-go runs (it bounds neither their
// number nor their memory, only their time, by the 10 s handshake
// timeout) and the at most 32 connections in its accept queue are inside
// the caps, as are accepted sessions whose peer has not sent SETTINGS
// (closed after the Session config's SettingsTimeout, 10 s by default).
// A connection over a cap is refused with QUIC's CONNECTION_REFUSED
// before quic-go builds any state for it, and the client's Dial fails
// with an error matching transport.ErrConnRefused.
//
// The rate of new sessions is bounded too: a token bucket per listener
// (SessionRate, SessionBurst) admits each new connection that is under
// the caps only if it finds a token, and refuses the others just as
// cheaply, counting them in ListenerStats.RefusedRate. None of the
// bindings can tell the client when to come back without first paying
// for the handshake the bucket exists to avoid: QUIC's CONNECTION_REFUSED
// is sent before any state exists and has no reason phrase, and over TCP
// the refusal is a reset before TLS. The client's Dial fails with
// transport.ErrConnRefused and no retry-after hint, and a client backs
// off by its own policy: see DialConfig.Retry. (Over TransportXQUIC,
// where x/net/quic gives no hook before the handshake, refusals of every
// kind come only after it, as a session closed by the server with a
// reason; the rate's reason says when to retry, as text.)
type ListenConfig struct {
	// Session configures every accepted session; nil means the defaults.
	// QUIC's idle timeout is its DeadPeerTimeout, as with Dial.
	Session *mux.Config
	// MaxSessions caps the connections the listener holds at once, from
	// the first packet of the handshake until the session ends. Default
	// DefaultMaxSessions (1000); negative means no cap.
	MaxSessions int
	// MaxHandshakes caps the connections not yet returned by Accept (in
	// the QUIC handshake or waiting to be accepted); once half of them are
	// in use, new clients must first prove their address with a QUIC
	// Retry (one more round trip). Default DefaultMaxHandshakes (256);
	// negative means no cap. It is never more than MaxSessions.
	MaxHandshakes int
	// IdleSessionTimeout ends an accepted session gracefully (GOAWAY) once
	// it has had no stream for this long: it sets Session.IdleTimeout
	// when that is zero. Default DefaultIdleSessionTimeout (5 minutes);
	// negative disables it.
	IdleSessionTimeout time.Duration
	// SessionRate is the number of new sessions a second the listener
	// admits on average: each new connection under the caps takes a token
	// from a bucket that refills at this rate and holds up to
	// SessionBurst, when its first packet arrives (QUIC), when it is
	// accepted (TCP, before TLS), or once its handshake is done
	// (TransportXQUIC, which allows no earlier hook). A connection that
	// finds the bucket empty is refused the way the caps refuse one. A
	// refused attempt takes no token and owes none, so a storm of
	// refusals does not delay the next admission. Default
	// DefaultSessionRate (500); negative means no rate limit.
	SessionRate float64
	// SessionBurst is the size of the bucket: how many new sessions the
	// listener admits at once after a quiet spell. Zero means
	// DefaultSessionBurst (500) when SessionRate is zero too, and one
	// second's worth of SessionRate (at least 1) when SessionRate is set.
	// It must not be negative.
	SessionBurst int
}

// Listener accepts bp/1 sessions.
type Listener struct {
	ln        listener
	cfg       mux.Config
	transport Transport
}

// ListenerStats counts what a Listener holds.
type ListenerStats struct {
	// Sessions is the number of accepted sessions that have not ended.
	Sessions int
	// Handshaking is the number of connections not yet accepted: in the
	// QUIC handshake or waiting for Accept.
	Handshaking int
	// Refused is the number of connection attempts refused so far over
	// MaxSessions or MaxHandshakes, or after Close. It counts QUIC Initial
	// packets: a client whose first flight takes two counts twice.
	Refused uint64
	// RefusedRate is the number of connection attempts refused so far
	// over SessionRate, counted as Refused is and apart from it: Refused
	// plus RefusedRate is every refusal.
	RefusedRate uint64
}

// Listen listens for bp/1 sessions on the UDP address addr with the
// defaults of ListenConfig. tlsConf must carry the server's certificate
// (see transport.ServerConfig). cfg may be nil for the defaults; it
// applies to every accepted session.
func Listen(addr string, tlsConf *tls.Config, cfg *mux.Config) (*Listener, error) {
	return ListenConfig{Session: cfg}.Listen(addr, tlsConf)
}

// Listen listens for bp/1 sessions on addr: host:port (UDP) for QUIC, or
// with a transport as its scheme, as Dial takes it ("tcp://:4242"). tlsConf must
// carry the server's certificate (see transport.ServerConfig); ALPN and
// TLS 1.3 are set for you.
func (lc ListenConfig) Listen(addr string, tlsConf *tls.Config) (*Listener, error) {
	var sess mux.Config
	if lc.Session != nil {
		sess = *lc.Session
	}
	if lc.IdleSessionTimeout == 0 {
		lc.IdleSessionTimeout = DefaultIdleSessionTimeout
	}
	if sess.IdleTimeout == 0 && lc.IdleSessionTimeout > 0 {
		sess.IdleTimeout = lc.IdleSessionTimeout
	}
	if err := sess.Validate(); err != nil { // before binding the port
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	rate, burst, err := lc.sessionRate()
	if err != nil {
		return nil, err
	}
	qc := quicConfig(&sess)
	qc.SessionRate, qc.SessionBurst = rate, burst
	qc.MaxConns = limit(lc.MaxSessions, DefaultMaxSessions)
	qc.MaxHandshakes = limit(lc.MaxHandshakes, DefaultMaxHandshakes)
	if qc.MaxConns > 0 && (qc.MaxHandshakes == 0 || qc.MaxHandshakes > qc.MaxConns) {
		qc.MaxHandshakes = qc.MaxConns
	}
	t, hostport, err := SplitAddress(addr)
	if err != nil {
		return nil, err
	}
	ln, err := listen(t, hostport, tlsConf, qc) // checks tlsConf
	if err != nil {
		return nil, argError(err)
	}
	return &Listener{ln: ln, cfg: sess, transport: t}, nil
}

// limit turns a ListenConfig cap into a transport one: zero means def,
// negative means none (0).
func limit(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// sessionRate turns SessionRate and SessionBurst into the transport's
// (zero rate: no limit).
func (lc ListenConfig) sessionRate() (float64, int, error) {
	rate, burst := lc.SessionRate, lc.SessionBurst
	switch {
	case math.IsNaN(rate) || math.IsInf(rate, 0):
		return 0, 0, fmt.Errorf("%w: ListenConfig.SessionRate %v is not a finite number", ErrInvalidArgument, rate)
	case burst < 0:
		return 0, 0, fmt.Errorf("%w: ListenConfig.SessionBurst %d is negative", ErrInvalidArgument, burst)
	case rate < 0:
		return 0, 0, nil
	case rate == 0:
		rate = DefaultSessionRate
		if burst == 0 {
			burst = DefaultSessionBurst
		}
	}
	return rate, burst, nil // a zero burst: the transport's second of rate
}

// Accept waits for the next session. A session counts toward the
// listener's caps until its Done channel closes.
func (l *Listener) Accept(ctx context.Context) (*mux.Session, error) {
	if ctx == nil {
		return nil, fmt.Errorf("%w: nil context", ErrInvalidArgument)
	}
	conn, err := l.ln.Accept(ctx)
	if err != nil {
		return nil, err
	}
	sess, err := mux.New(conn, &l.cfg)
	if err != nil {
		conn.CloseWithError(0, "")
		return nil, fmt.Errorf("bp: %w", err)
	}
	return sess, nil
}

// Stats returns the listener's counts.
func (l *Listener) Stats() ListenerStats {
	s := l.ln.Stats()
	return ListenerStats{Sessions: s.Accepted, Handshaking: s.Handshaking, Refused: s.Refused, RefusedRate: s.RefusedRate}
}

// Sessions returns the number of accepted sessions that have not ended.
func (l *Listener) Sessions() int { return l.Stats().Sessions }

// Close stops listening: handshakes in progress are refused and
// connections not yet accepted are closed; sessions already accepted stay
// open.
func (l *Listener) Close() error { return l.ln.Close() }

// Addr returns the address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Transport returns the binding the listener serves.
func (l *Listener) Transport() Transport { return l.transport }
