package transport_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/nettest"
)

// Cross-stack interoperability: bp/1 sessions (package mux) over an
// x/net/quic client and a quic-go server, a quic-go client and an
// x/net/quic server, and x/net/quic at both ends.

const xqMuxTimeout = 20 * time.Second

func xqMuxCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), xqMuxTimeout)
	t.Cleanup(cancel)
	return ctx
}

type xqStacks struct {
	name   string
	dial   func(context.Context, string, *tls.Config, transport.QUICConfig) (transport.Conn, error)
	listen func(string, *tls.Config, transport.QUICConfig) (transport.Listener, error)
}

var xqMuxStacks = []xqStacks{
	{"xquic-client-quicgo-server", transport.DialXQUIC, xqListenQ},
	{"quicgo-client-xquic-server", transport.DialQUIC, xqListenX},
	{"xquic-both", transport.DialXQUIC, xqListenX},
}

func xqListenX(addr string, conf *tls.Config, cfg transport.QUICConfig) (transport.Listener, error) {
	return transport.ListenXQUIC(addr, conf, cfg)
}

func xqListenQ(addr string, conf *tls.Config, cfg transport.QUICConfig) (transport.Listener, error) {
	return transport.ListenQUIC(addr, conf, cfg)
}

func xqEachStacks(t *testing.T, f func(t *testing.T, st xqStacks)) {
	for _, st := range xqMuxStacks {
		t.Run(st.name, func(t *testing.T) { f(t, st) })
	}
}

// sessions connects two mux sessions over st, with cfg (nil for the
// defaults) at both ends and QUIC sized for it, as mux/pair_test.go does.
func (st xqStacks) sessions(t testing.TB, cfg *mux.Config) (client, server *mux.Session) {
	t.Helper()
	var qcfg transport.QUICConfig
	if cfg != nil {
		qcfg = transport.QUICConfig{MaxStreamWindow: cfg.MaxWindow, SessionBudget: cfg.SessionBudget, MaxStreams: int64(cfg.MaxStreams)}
	}
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := st.listen("127.0.0.1:0", transport.ServerConfig(cert), qcfg)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	ctx := xqMuxCtx(t)
	accepted := make(chan transport.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	conf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	cc, err := st.dial(ctx, ln.Addr().String(), conf, qcfg)
	require.NoError(t, err)
	sc := <-accepted
	require.NotNil(t, sc)
	client, err = mux.New(cc, cfg)
	require.NoError(t, err)
	server, err = mux.New(sc, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// xqPattern returns n bytes that differ from stream to stream.
func xqPattern(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>9 + seed*7)
	}
	return b
}

// xqSendRecv writes out on s and closes its writing half, while reading s
// to the end; it returns the sha256 of what was read.
func xqSendRecv(s *mux.Stream, out []byte) (sum [sha256.Size]byte, n int64, err error) {
	werr := make(chan error, 1)
	go func() {
		_, err := s.Write(out)
		if err == nil {
			err = s.CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, err = io.Copy(h, s)
	if e := <-werr; err == nil {
		err = e
	}
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

// TestXQUICMuxTransfer moves data both ways at once on several streams
// opened from both ends, and checks every byte by sha256.
func TestXQUICMuxTransfer(t *testing.T) {
	xqEachStacks(t, func(t *testing.T, st xqStacks) {
		client, server := st.sessions(t, nil)
		ctx := xqMuxCtx(t)
		const streams, size = 4, 4 << 20
		type end struct {
			opener, acceptor *mux.Session
			name             string
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4*streams)
		for _, e := range []end{{client, server, "client"}, {server, client, "server"}} {
			for i := range streams {
				seed := i
				if e.name == "server" {
					seed += streams
				}
				up, down := xqPattern(seed, size), xqPattern(seed+100, size)
				wg.Add(2)
				go func() { // the opener
					defer wg.Done()
					s, err := e.opener.Open(ctx)
					if err != nil {
						errs <- fmt.Errorf("%s open %d: %w", e.name, i, err)
						return
					}
					sum, n, err := xqSendRecv(s, up)
					switch {
					case err != nil:
						errs <- fmt.Errorf("%s stream %d: %w", e.name, i, err)
					case n != size || sum != sha256.Sum256(down):
						errs <- fmt.Errorf("%s stream %d: read %d bytes, sha256 differs", e.name, i, n)
					}
				}()
				go func() { // the acceptor: answers each stream by its first bytes
					defer wg.Done()
					s, err := e.acceptor.Accept(ctx)
					if err != nil {
						errs <- fmt.Errorf("%s accept: %w", e.name, err)
						return
					}
					head := make([]byte, 64)
					if _, err := io.ReadFull(s, head); err != nil {
						errs <- err
						return
					}
					var want, reply []byte
					for j := range 2 * streams {
						if p := xqPattern(j, size); bytes.Equal(p[:64], head) {
							want, reply = p, xqPattern(j+100, size)
						}
					}
					if want == nil {
						errs <- errors.New("an unknown stream")
						return
					}
					h := sha256.New()
					h.Write(head)
					werr := make(chan error, 1)
					go func() {
						_, err := s.Write(reply)
						if err == nil {
							err = s.CloseWrite()
						}
						werr <- err
					}()
					n, err := io.Copy(h, s)
					if err == nil {
						err = <-werr
					}
					switch {
					case err != nil:
						errs <- err
					case n+64 != size || !bytes.Equal(h.Sum(nil), xqSumOf(want)):
						errs <- fmt.Errorf("accepted stream: read %d bytes, sha256 differs", n+64)
					}
					s.Close()
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		cs := client.Stats()
		assert.GreaterOrEqual(t, cs.BytesSent, uint64(2*streams*size))
	})
}

func xqSumOf(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestXQUICMuxReset: a stream reset by either end reaches the other as a
// *mux.StreamError with the code, and the session goes on.
func TestXQUICMuxReset(t *testing.T) {
	xqEachStacks(t, func(t *testing.T, st xqStacks) {
		client, server := st.sessions(t, nil)
		ctx := xqMuxCtx(t)
		for _, resetter := range []string{"opener", "acceptor"} {
			c, err := client.Open(ctx)
			require.NoError(t, err)
			_, err = c.Write([]byte("before the reset"))
			require.NoError(t, err)
			s, err := server.Accept(ctx)
			require.NoError(t, err)
			got := make([]byte, 16)
			_, err = io.ReadFull(s, got)
			require.NoError(t, err)

			from, to := c, s
			if resetter == "acceptor" {
				from, to = s, c
			}
			require.NoError(t, from.Reset(framing.Cancel))
			_, err = io.Copy(io.Discard, to)
			var se *mux.StreamError
			require.ErrorAs(t, err, &se, "%s reset: %v", resetter, err)
			assert.Equal(t, framing.Cancel, se.Code)
			assert.True(t, se.Remote)
			from.Close()
			to.Close()
		}
		// The session goes on: an echo on a new stream.
		go func() {
			if s, err := server.Accept(ctx); err == nil {
				io.Copy(s, s)
				s.Close()
			}
		}()
		c, err := client.Open(ctx)
		require.NoError(t, err)
		msg := xqPattern(1, 1<<20)
		sum, n, err := xqSendRecv(c, msg)
		require.NoError(t, err)
		assert.EqualValues(t, len(msg), n)
		assert.Equal(t, sha256.Sum256(msg), sum)
	})
}

// TestXQUICMuxShutdown: a graceful Shutdown lets the stream in progress
// finish, then both sessions end with NO_ERROR.
func TestXQUICMuxShutdown(t *testing.T) {
	xqEachStacks(t, func(t *testing.T, st xqStacks) {
		client, server := st.sessions(t, nil)
		ctx := xqMuxCtx(t)
		c, err := client.Open(ctx)
		require.NoError(t, err)
		_, err = c.Write([]byte("x"))
		require.NoError(t, err)
		s, err := server.Accept(ctx)
		require.NoError(t, err)

		done := make(chan error, 1)
		go func() { done <- server.Shutdown(ctx) }()
		msg := xqPattern(3, 2<<20)
		go func() {
			c.Write(msg)
			c.CloseWrite()
		}()
		got, err := io.ReadAll(s)
		require.NoError(t, err)
		require.Equal(t, append([]byte("x"), msg...), got)
		require.NoError(t, s.Close())
		_, err = io.ReadAll(c)
		require.NoError(t, err)
		require.NoError(t, c.Close())
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-ctx.Done():
			t.Fatal("Shutdown did not return")
		}
		select {
		case <-client.Done():
		case <-ctx.Done():
			t.Fatal("the client session did not end")
		}
		var se *mux.SessionError
		require.ErrorAs(t, client.Err(), &se)
		assert.Equal(t, framing.NoError, se.Code)
	})
}

// TestXQUICMuxLaneReuse runs many short streams through a small stream
// limit: each finished stream must give its QUIC stream back, in both
// directions, which x/net/quic does only once both halves are closed.
func TestXQUICMuxLaneReuse(t *testing.T) {
	xqEachStacks(t, func(t *testing.T, st xqStacks) {
		const maxStreams, n = 3, 40
		client, server := st.sessions(t, &mux.Config{MaxStreams: maxStreams})
		ctx := xqMuxCtx(t)
		go func() {
			for {
				s, err := server.Accept(ctx)
				if err != nil {
					return
				}
				go func() {
					io.Copy(s, s)
					s.Close()
				}()
			}
		}()
		for i := range n {
			s, err := client.Open(ctx)
			require.NoError(t, err, "stream %d", i)
			msg := bytes.Repeat([]byte{byte(i)}, 1000+i)
			_, err = s.Write(msg)
			require.NoError(t, err)
			require.NoError(t, s.CloseWrite())
			got, err := io.ReadAll(s)
			require.NoError(t, err)
			require.Equal(t, msg, got)
			require.NoError(t, s.Close())
		}
	})
}

// TestXQUICMuxNetConn runs the net.Conn conformance suite against a pair
// of mux streams over x/net/quic at both ends.
func TestXQUICMuxNetConn(t *testing.T) {
	st := xqMuxStacks[2]
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		client, server := st.sessions(t, nil)
		ctx, cancel := context.WithTimeout(context.Background(), xqMuxTimeout)
		defer cancel()
		a, err := client.Open(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		b, err := server.Accept(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		stop = func() {
			a.Close()
			b.Close()
			client.Close()
			server.Close()
		}
		return a, b, stop, nil
	})
}
