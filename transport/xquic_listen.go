package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	xquic "golang.org/x/net/quic"
)

// xquicAcceptQueue bounds the connections an XQUICListener holds between
// their handshake and Accept when QUICConfig.MaxHandshakes does not, as
// quic-go's accept queue does.
const xquicAcceptQueue = 32

// ListenXQUIC is ListenQUIC over golang.org/x/net/quic instead of quic-go:
// it listens for bp/1 sessions on the UDP address addr, with the same
// checks of its arguments. tlsConf must not be nil and must carry a
// certificate (see ServerConfig).
//
// x/net/quic runs every handshake itself and hands a connection over
// only once its handshake is complete, with no hook before, so the caps
// are weaker than ListenQUIC's:
//
//   - QUICConfig.MaxConns counts connections from the end of their
//     handshake until they close. At the cap, a connection is closed as
//     soon as its handshake completes, with the application code 0x0
//     (NO_ERROR) and a reason that says so: x/net/quic cannot send QUIC's
//     CONNECTION_REFUSED, so the client sees a session closed by the peer,
//     not ErrConnRefused.
//   - QUICConfig.MaxHandshakes cannot bound the handshakes in progress,
//     which x/net/quic neither counts nor bounds. It caps the connections
//     that have completed their handshake and wait for Accept (otherwise
//     32 at most), closing the rest as above; and if it is set, every
//     client must first prove its address with a QUIC Retry (x/net/quic
//     has no threshold for that), which costs a round trip and keeps
//     spoofed packets from starting handshakes.
//   - QUICConfig.SessionRate and SessionBurst are checked at the same
//     point, once the handshake is complete, so they bound the sessions
//     handed on, not the handshakes' CPU. A connection over the rate is
//     closed as above, with a reason that gives the rate and when the next
//     connection would be admitted ("retry after 20ms"), and counted in
//     ListenerStats.RefusedRate. The reason is text for people and logs:
//     the client's Dial has already succeeded by then, and its session
//     ends with an *ApplicationError holding the reason, not an error
//     with a RetryAfter method.
//
// x/net/quic is not ready for production use (its package says so), and
// it slows down badly when packets are reordered.
func ListenXQUIC(addr string, tlsConf *tls.Config, cfg QUICConfig) (*XQUICListener, error) {
	if err := checkTLS(tlsConf, true); err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w: %w", addr, ErrInvalidConfig, err)
	}
	uaddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", uaddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	conf := cfg.XQUICConfig(tlsConf)
	conf.RequireAddressValidation = cfg.MaxHandshakes > 0
	// Stateless resets tell a client at once that this listener no
	// longer knows its connection (after it ended, or a restart).
	rand.Read(conf.StatelessResetKey[:])
	if cfg.QlogDir != "" {
		os.MkdirAll(cfg.QlogDir, 0o755) // if it fails, connections go untraced
	}
	ep, err := xquic.NewEndpoint(udp, conf)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	queue := xquicAcceptQueue
	if cfg.MaxHandshakes > 0 {
		queue = cfg.MaxHandshakes
	}
	l := &XQUICListener{
		ep:       ep,
		addr:     udp.LocalAddr(),
		maxConns: cfg.MaxConns,
		rate:     newAdmission(cfg.SessionRate, cfg.SessionBurst),
		rateCfg:  cfg.SessionRate,
		now:      time.Now,
		queue:    make(chan xquicQueued, queue),
		closing:  make(chan struct{}),
		pumped:   make(chan struct{}),
	}
	go l.pump()
	return l, nil
}

// XQUICListener is a Listener for bp/1 over golang.org/x/net/quic. It
// bounds and counts the connections it holds, as far as x/net/quic lets
// it (see ListenXQUIC).
type XQUICListener struct {
	ep       *xquic.Endpoint
	addr     net.Addr
	maxConns int
	rateCfg  float64          // QUICConfig.SessionRate, for the reason
	now      func() time.Time // the admission bucket's clock
	queue    chan xquicQueued // established, waiting for Accept
	closing  chan struct{}    // closed by Close
	pumped   chan struct{}    // closed when pump returns

	mu        sync.Mutex
	pending   int    // in queue
	accepted  int    // returned by Accept, not yet ended
	refused   uint64 // closed at a cap or after Close
	rate      admission
	refusedR  uint64 // closed over the rate
	closed    bool
	closeOnce sync.Once
}

// xquicQueued is a connection waiting for Accept.
type xquicQueued struct {
	c  *xquicConn
	st *xquicState
}

// xquicState is a connection's place in the listener's counts, guarded
// by the listener's mu.
type xquicState struct{ counted, accepted, closed bool }

// pump takes each connection x/net/quic has completed a handshake for
// and queues it for Accept, or closes it at a cap or after Close. It ends
// when the endpoint closes.
func (l *XQUICListener) pump() {
	defer close(l.pumped)
	for {
		qc, err := l.ep.Accept(context.Background())
		if err != nil {
			return
		}
		st := &xquicState{}
		c := newXQUICConn(qc, nil, l.addr, false, func() { l.release(st) })
		l.mu.Lock()
		reason := ""
		overRate := false
		switch {
		case st.closed: // it ended already
			l.mu.Unlock()
			continue
		case l.closed:
			reason = "listener closed"
		case l.maxConns > 0 && l.pending+l.accepted >= l.maxConns:
			reason = fmt.Sprintf("connection refused: listener at its cap of %d connections", l.maxConns)
		case len(l.queue) == cap(l.queue): // only pump sends: no race
			reason = fmt.Sprintf("connection refused: %d connections already wait to be accepted", cap(l.queue))
		default:
			if ok, wait := l.rate.admit(clockNow(l.now)); !ok {
				reason, overRate = rateReason(l.rateCfg, wait), true
				break
			}
			l.queue <- xquicQueued{c, st} // room, checked above
			st.counted = true
			l.pending++
		}
		switch {
		case overRate:
			l.refusedR++
			st.closed = true // never counted
		case reason != "":
			l.refused++
			st.closed = true
		}
		l.mu.Unlock()
		if reason != "" {
			c.CloseWithError(0, reason)
		}
	}
}

// release forgets a connection that ended; the last one after Close
// closes the endpoint and its socket.
func (l *XQUICListener) release(st *xquicState) {
	l.mu.Lock()
	counted := st.counted && !st.closed
	st.closed = true
	if !counted {
		l.mu.Unlock()
		return
	}
	if st.accepted {
		l.accepted--
	} else {
		l.pending--
	}
	last := l.closed && l.pending+l.accepted == 0
	l.mu.Unlock()
	if last {
		l.closeEndpoint()
	}
}

func (l *XQUICListener) closeEndpoint() {
	l.closeOnce.Do(func() { closeEndpoint(l.ep, xquicDrainWait) })
}

// Accept waits for the next connection that has completed its handshake.
func (l *XQUICListener) Accept(ctx context.Context) (Conn, error) {
	if ctx == nil {
		return nil, fmt.Errorf("transport: accept: %w: nil context", ErrInvalidConfig)
	}
	for {
		select {
		case <-l.closing:
			return nil, fmt.Errorf("transport: accept: %w", net.ErrClosed)
		default:
		}
		select {
		case q := <-l.queue:
			if l.take(q.st) {
				return q.c, nil
			}
			// It ended while it waited; take the next.
		case <-l.closing:
			return nil, fmt.Errorf("transport: accept: %w", net.ErrClosed)
		case <-ctx.Done():
			return nil, fmt.Errorf("transport: accept: %w", ctx.Err())
		}
	}
}

// take moves a connection from the queue to the accepted ones, unless it
// has ended meanwhile.
func (l *XQUICListener) take(st *xquicState) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st.closed {
		return false // release has counted it already
	}
	st.accepted = true
	l.pending--
	l.accepted++
	return true
}

// Stats returns the listener's counts. Handshaking counts connections
// that completed their handshake and wait for Accept: x/net/quic shows
// none before.
func (l *XQUICListener) Stats() ListenerStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return ListenerStats{Handshaking: l.pending, Accepted: l.accepted, Refused: l.refused, RefusedRate: l.refusedR}
}

// Close stops listening: Accept returns net.ErrClosed, connections
// waiting to be accepted are closed, and so is any that completes its
// handshake from now on (x/net/quic cannot refuse one before), while
// connections already accepted stay open. The endpoint and its socket
// close with the last of them; after that, a client's DialQUIC or
// DialXQUIC is refused at once (ICMP port unreachable).
func (l *XQUICListener) Close() error {
	l.mu.Lock()
	again := l.closed
	l.closed = true
	l.mu.Unlock()
	if again {
		return nil
	}
	close(l.closing)
	for {
		select {
		case q := <-l.queue:
			q.c.CloseWithError(0, "listener closed")
			continue
		default:
		}
		break
	}
	l.mu.Lock()
	last := l.accepted == 0
	l.mu.Unlock()
	if last {
		l.closeEndpoint()
	}
	return nil
}

// Addr returns the UDP address the listener is bound to.
func (l *XQUICListener) Addr() net.Addr { return l.addr }
