package mux

import (
	"context"
	"testing"
	"time"

	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/require"
)

// sessionPair holds two sessions over a real quic-go connection on
// 127.0.0.1: client dialled server.
type sessionPair struct {
	client, server *Session
}

// newPair connects two sessions over QUIC on loopback and closes them when
// the test ends.
func newPair(t testing.TB, clientCfg, serverCfg *Config) sessionPair {
	t.Helper()
	return newPairQlog(t, clientCfg, serverCfg, "")
}

// newQlogPair is newPair with QUIC's qlog traces (and so the sessions')
// written to dir.
func newQlogPair(t testing.TB, dir string) sessionPair {
	t.Helper()
	return newPairQlog(t, nil, nil, dir)
}

func newPairQlog(t testing.TB, clientCfg, serverCfg *Config, qlogDir string) sessionPair {
	t.Helper()
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	qcfg := transport.QUICConfig{}
	if serverCfg != nil {
		qcfg = quicConfigFor(*serverCfg)
	}
	qcfg.QlogDir = qlogDir
	b := currentBinding(t)
	ln, err := b.listen("127.0.0.1:0", transport.ServerConfig(cert), qcfg)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type accepted struct {
		c   transport.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept(ctx)
		ch <- accepted{c, err}
	}()
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	ccfg := transport.QUICConfig{}
	if clientCfg != nil {
		ccfg = quicConfigFor(*clientCfg)
	}
	ccfg.QlogDir = qlogDir
	cc, err := b.dial(ctx, ln.Addr().String(), tlsConf, ccfg)
	require.NoError(t, err)
	a := <-ch
	require.NoError(t, a.err)

	client, err := New(cc, clientCfg)
	require.NoError(t, err)
	server, err := New(a.c, serverCfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return sessionPair{client: client, server: server}
}

func quicConfigFor(c Config) transport.QUICConfig {
	return transport.QUICConfig{MaxStreamWindow: c.MaxWindow, SessionBudget: c.SessionBudget, MaxStreams: int64(c.MaxStreams)}
}

// openPair opens a stream from the client and accepts it on the server.
func (p sessionPair) openPair(t testing.TB) (c, s *Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.client.Open(ctx)
	require.NoError(t, err)
	s, err = p.server.Accept(ctx)
	require.NoError(t, err)
	return c, s
}
