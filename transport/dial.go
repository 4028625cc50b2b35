package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

// This file is how a client reaches a server: every address the name
// resolves to, in turn, with a probe beside each QUIC handshake that
// learns at once when nothing listens on the port (ICMP port
// unreachable), so that a closed port is reported in milliseconds rather
// than after the handshake timeout.

// errPortUnreachable is the cause of a handshake abandoned because the
// probe learned that nothing listens on the port.
var errPortUnreachable = errors.New("nothing listening (ICMP port unreachable)")

// probeInterval is how often the probe asks again while a handshake is in
// progress, and probeRounds bounds how often it does.
const (
	probeInterval = 250 * time.Millisecond
	probeRounds   = 40
)

// DialQUIC opens a QUIC connection to addr (host:port) for a bp/1
// session. tlsConf must not be nil; ALPN and TLS 1.3 are set on a copy of
// it. When the host has several addresses, each is tried in turn until one
// answers. A server that refuses the connection (over its cap), or a port
// on which nothing listens, gives an error matching ErrConnRefused at once;
// a server that never answers, an error matching ErrIdleTimeout after
// cfg.HandshakeTimeout, unless ctx ends first. The error names every
// address tried and what happened there.
func DialQUIC(ctx context.Context, addr string, tlsConf *tls.Config, cfg QUICConfig) (Conn, error) {
	targets, err := prepareDial(ctx, "udp", addr, tlsConf, cfg.validate)
	if err != nil {
		return nil, err
	}
	return dialTargets(ctx, addr, targets, withALPN(tlsConf), cfg.quicConfig())
}

// dialTargets dials each of targets in turn (dialEach) over QUIC.
func dialTargets(ctx context.Context, addr string, targets []netip.AddrPort, tlsConf *tls.Config, qconf *quic.Config) (Conn, error) {
	return dialEach(ctx, addr, targets, qconf.HandshakeIdleTimeout, func(target netip.AddrPort) (Conn, error) {
		c, err := dialOne(ctx, target, tlsConf, qconf)
		if err != nil {
			return nil, err
		}
		return &quicConn{c: c, client: true}, nil
	})
}

// prepareDial makes the checks every binding's Dial makes first (ctx,
// tlsConf, the binding's config) and resolves addr on network ("udp" or
// "tcp").
func prepareDial(ctx context.Context, network, addr string, tlsConf *tls.Config, validate func() error) ([]netip.AddrPort, error) {
	if ctx == nil {
		return nil, fmt.Errorf("transport: dial %s: %w: nil context", addr, ErrInvalidConfig)
	}
	if err := checkTLS(tlsConf, false); err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	if err := validate(); err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w: %w", addr, ErrInvalidConfig, err)
	}
	targets, err := resolve(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	return targets, nil
}

// dialEach tries each of the addresses addr resolved to with one, in
// turn, past those that refuse or do not answer within handshake, and
// returns the first connection. The error names every address tried and
// what happened there.
func dialEach(ctx context.Context, addr string, targets []netip.AddrPort, handshake time.Duration, one func(netip.AddrPort) (Conn, error)) (Conn, error) {
	var tried []string
	var last error
	for i, target := range targets {
		c, err := one(target)
		if err == nil {
			return c, nil
		}
		last = err
		tried = append(tried, fmt.Sprintf("%s: %s", target, describeDial(err, handshake)))
		if ctx.Err() != nil || i == len(targets)-1 || !errors.Is(err, ErrConnRefused) && !errors.Is(err, ErrIdleTimeout) {
			break
		}
	}
	if len(targets) == 1 {
		return nil, fmt.Errorf("transport: dial %s: %w", targets[0], last)
	}
	return nil, fmt.Errorf("transport: dial %s: tried %s: %w", addr, strings.Join(tried, "; "), last)
}

// describeDial says in a few words what happened to one address.
func describeDial(err error, handshake time.Duration) string {
	switch {
	case errors.Is(err, errPortUnreachable), errors.Is(err, errNothingListening):
		return "nothing listening"
	case errors.Is(err, ErrConnRefused):
		return "refused"
	case errors.Is(err, ErrIdleTimeout):
		return fmt.Sprintf("no answer within %v", handshake)
	}
	return "failed"
}

// resolve returns the addresses of host:port on network ("udp" or
// "tcp"), IP literals as they are and names in the resolver's order.
func resolve(ctx context.Context, network, addr string) ([]netip.AddrPort, error) {
	host, portName, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := net.DefaultResolver.LookupPort(ctx, network, portName)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip, uint16(port))}, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
	}
	return out, nil
}

// dialOne runs a QUIC handshake with one address, abandoning it as soon as
// the probe learns that nothing listens there.
func dialOne(ctx context.Context, target netip.AddrPort, tlsConf *tls.Config, qconf *quic.Config) (*quic.Conn, error) {
	dctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The probe's socket is made here, on the caller's thread, as QUIC's
	// own is: a caller that switched its thread into another network
	// namespace must probe from that namespace too.
	startProbe(dctx, target, func() { cancel(errPortUnreachable) })
	c, err := quic.DialAddr(dctx, target.String(), tlsConf, qconf)
	if err == nil {
		return c, nil
	}
	if context.Cause(dctx) == errPortUnreachable && ctx.Err() == nil {
		return nil, fmt.Errorf("%w: %w", ErrConnRefused, errPortUnreachable)
	}
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil, err
	}
	return nil, connError(err)
}

// startProbe makes the probe's socket on the caller's thread and runs
// probeConn in a goroutine of its own.
func startProbe(ctx context.Context, target netip.AddrPort, refused func()) {
	if conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target)); err == nil {
		go probeConn(ctx, conn, refused)
	}
}

// probeConn sends tiny datagrams to the target from conn, a
// connected UDP socket, on which the kernel reports an ICMP port
// unreachable as ECONNREFUSED, until ctx ends; it calls refused if that
// happens. A server drops such a datagram: it is too short to be a QUIC
// packet. The probe ends with ctx, and after probeRounds rounds at most;
// it closes conn.
func probeConn(ctx context.Context, conn *net.UDPConn, refused func()) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 1)
	for range probeRounds {
		if ctx.Err() != nil {
			return
		}
		_, werr := conn.Write(buf[:1])
		conn.SetReadDeadline(time.Now().Add(probeInterval))
		_, rerr := conn.Read(buf)
		if errors.Is(werr, syscall.ECONNREFUSED) || errors.Is(rerr, syscall.ECONNREFUSED) {
			if ctx.Err() == nil {
				refused()
			}
			return
		}
	}
}
