package transport_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/nettest"
)

// bp/1 sessions (package mux) over the TCP binding.

// tcpSessions starts a mux session on each end of a TCP binding
// connection.
func tcpSessions(t testing.TB, tcfg transport.TCPConfig, cfg *mux.Config) (client, server *mux.Session) {
	t.Helper()
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := transport.ListenTCP("127.0.0.1:0", transport.ServerConfig(cert), tcfg)
	require.NoError(t, err)
	defer ln.Close()
	conf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan transport.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	cc, err := transport.DialTCP(ctx, ln.Addr().String(), conf, tcfg)
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

func payload(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestTCPMuxBothWays moves data both ways on several streams at once,
// each checked by its SHA-256.
func TestTCPMuxBothWays(t *testing.T) {
	const streams, size = 4, 3 << 20
	client, server := tcpSessions(t, transport.TCPConfig{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	serverErr := make(chan error, streams)
	go func() {
		for range streams {
			s, err := server.Accept(ctx)
			if err != nil {
				serverErr <- err
				return
			}
			go func() {
				// Read the client's data (its first 8 bytes name its seed)
				// while sending our own, then answer with the digest.
				var seed [1]byte
				if _, err := io.ReadFull(s, seed[:]); err != nil {
					serverErr <- err
					return
				}
				sent := make(chan error, 1)
				go func() {
					_, err := s.Write(payload(100+uint64(seed[0]), size))
					sent <- err
				}()
				h := sha256.New()
				if _, err := io.CopyN(h, s, size); err != nil {
					serverErr <- err
					return
				}
				if err := <-sent; err != nil {
					serverErr <- err
					return
				}
				_, err := s.Write(h.Sum(nil))
				if err == nil {
					err = s.CloseWrite()
				}
				serverErr <- err
			}()
		}
	}()

	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := client.Open(ctx)
			if !assertNoError(t, err) {
				return
			}
			defer st.Close()
			mine := payload(uint64(i), size)
			go func() {
				st.Write([]byte{byte(i)})
				st.Write(mine)
			}()
			h := sha256.New()
			_, err = io.CopyN(h, st, size)
			if !assertNoError(t, err) {
				return
			}
			theirs := sha256.Sum256(payload(100+uint64(i), size))
			require.Equal(t, theirs[:], h.Sum(nil), "stream %d: server to client", i)
			digest, err := io.ReadAll(st)
			if !assertNoError(t, err) {
				return
			}
			want := sha256.Sum256(mine)
			require.Equal(t, want[:], digest, "stream %d: client to server", i)
		}()
	}
	wg.Wait()
	for range streams {
		require.NoError(t, <-serverErr)
	}
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestTCPMuxLaneReuse runs many short streams through a small lane limit:
// each finished stream must give its lane back.
func TestTCPMuxLaneReuse(t *testing.T) {
	const maxLanes, streams = 3, 40
	client, server := tcpSessions(t, transport.TCPConfig{MaxLanes: maxLanes}, &mux.Config{MaxStreams: maxLanes, KeepAliveInterval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
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
	for i := range streams {
		st, err := client.Open(ctx)
		require.NoError(t, err, "stream %d", i)
		msg := bytes.Repeat([]byte{byte(i)}, 1000+i)
		_, err = st.Write(msg)
		require.NoError(t, err)
		require.NoError(t, st.CloseWrite())
		got, err := io.ReadAll(st)
		require.NoError(t, err)
		require.Equal(t, msg, got)
		require.NoError(t, st.Close())
	}
}

// TestTCPMuxClose: a session closed on one side ends the other with the
// same code, carried by CLOSE.
func TestTCPMuxClose(t *testing.T) {
	client, server := tcpSessions(t, transport.TCPConfig{}, nil)
	require.NoError(t, client.Close())
	select {
	case <-server.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the server's session did not end")
	}
	var se *mux.SessionError
	require.ErrorAs(t, server.Err(), &se)
	require.True(t, se.Remote, "%v", server.Err())
}

// TestTCPMuxNetConn runs the net.Conn conformance suite against a pair of
// mux streams over the TCP binding.
func TestTCPMuxNetConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		client, server := tcpSessions(t, transport.TCPConfig{}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
