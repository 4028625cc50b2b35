package mux

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// TestNetConn runs the net.Conn conformance suite against a pair of streams
// over a real quic-go connection on 127.0.0.1.
func TestNetConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		p := newPair(t, nil, nil)
		a, b := p.openPair(t)
		stop = func() {
			a.Close()
			b.Close()
			p.client.Close()
			p.server.Close()
		}
		return a, b, stop, nil
	})
}
