package main

import (
	"time"

	"github.com/bpmux/bp/interop/impair"
)

// proxy is the impairment proxy between client and server in the rtt
// cases. It runs in the client (parent) process.
type proxy interface {
	Addr() string
	Close() error
}

type udpProxy struct{ p *impair.UDPProxy }

func (u udpProxy) Addr() string { return u.p.Addr().String() }
func (u udpProxy) Close() error { return u.p.Close() }

// delayConfig delays each direction by oneWay and does nothing else.
func delayConfig(oneWay time.Duration) impair.Config {
	return impair.Config{Up: impair.Direction{Delay: oneWay}, Down: impair.Direction{Delay: oneWay}, Seed: 1}
}

// newDelayProxy puts a proxy that adds oneWay in each direction in front of
// target: UDP for the QUIC-based implementations, TCP for the others.
func newDelayProxy(udp bool, target string, oneWay time.Duration) (proxy, error) {
	if udp {
		p, err := impair.NewUDP("127.0.0.1:0", target, delayConfig(oneWay))
		if err != nil {
			return nil, err
		}
		return udpProxy{p}, nil
	}
	return newTCPProxy(target, oneWay)
}

type tcpProxy struct{ p *impair.TCPProxy }

func (t tcpProxy) Addr() string { return t.p.Addr().String() }
func (t tcpProxy) Close() error { return t.p.Close() }

func newTCPProxy(target string, oneWay time.Duration) (proxy, error) {
	p, err := impair.NewTCP("127.0.0.1:0", target, delayConfig(oneWay))
	if err != nil {
		return nil, err
	}
	return tcpProxy{p}, nil
}
