package bp_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/transport"
)

func TestSplitAddress(t *testing.T) {
	cases := []struct {
		in       string
		want     bp.Transport
		hostport string
		bad      bool
	}{
		{"127.0.0.1:4242", bp.TransportQUIC, "127.0.0.1:4242", false},
		{"quic://example.com:443", bp.TransportQUIC, "example.com:443", false},
		{"xquic://[::1]:4242", bp.TransportXQUIC, "[::1]:4242", false},
		{"tcp://:4242", bp.TransportTCP, ":4242", false},
		{"TCP://host:1", bp.TransportTCP, "host:1", false},
		{"udp://host:1", "", "", true},
		{"http://host:1", "", "", true},
	}
	for _, c := range cases {
		got, hp, err := bp.SplitAddress(c.in)
		if c.bad {
			assert.ErrorIs(t, err, bp.ErrInvalidArgument, c.in)
			continue
		}
		require.NoError(t, err, c.in)
		assert.Equal(t, c.want, got, c.in)
		assert.Equal(t, c.hostport, hp, c.in)
	}
}

// TestEveryTransport: Dial and Listen with each scheme give a session
// that moves data, and the listener says which binding it serves.
func TestEveryTransport(t *testing.T) {
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	for _, tr := range bp.Transports() {
		t.Run(string(tr), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ln, err := bp.Listen(string(tr)+"://127.0.0.1:0", transport.ServerConfig(cert), nil)
			require.NoError(t, err)
			defer ln.Close()
			assert.Equal(t, tr, ln.Transport())
			go func() {
				sess, err := ln.Accept(ctx)
				if err != nil {
					return
				}
				defer sess.Close()
				s, err := sess.Accept(ctx)
				if err != nil {
					return
				}
				io.Copy(s, s)
				s.Close()
				<-sess.Done()
			}()
			sess, err := bp.Dial(ctx, string(tr)+"://"+ln.Addr().String(), pin, nil)
			require.NoError(t, err)
			defer sess.Close()
			s, err := sess.Open(ctx)
			require.NoError(t, err)
			msg := []byte("over " + string(tr))
			_, err = s.Write(msg)
			require.NoError(t, err)
			require.NoError(t, s.CloseWrite())
			got, err := io.ReadAll(s)
			require.NoError(t, err)
			assert.Equal(t, msg, got)
			s.Close()
			require.NoError(t, sess.Shutdown(ctx))
		})
	}
	_, err = bp.Dial(context.Background(), "udp://127.0.0.1:1", pin, nil)
	assert.ErrorIs(t, err, bp.ErrInvalidArgument)
	_, err = bp.Listen("sctp://127.0.0.1:0", transport.ServerConfig(cert), nil)
	assert.ErrorIs(t, err, bp.ErrInvalidArgument)
}
