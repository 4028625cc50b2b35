package main

import (
	"time"

	"github.com/bpmux/bp/interop/impair"
)

type tcpProxy struct{ p *impair.TCPProxy }

func (t tcpProxy) Addr() string { return t.p.Addr().String() }
func (t tcpProxy) Close() error { return t.p.Close() }

var newTCPProxy = func(target string, oneWay time.Duration) (proxy, error) {
	p, err := impair.NewTCP("127.0.0.1:0", target, delayConfig(oneWay))
	if err != nil {
		return nil, err
	}
	return tcpProxy{p}, nil
}
