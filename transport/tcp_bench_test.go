package transport

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchLane measures one lane's throughput with 64 KiB writes. The TCP
// binding has no flow control of its own: bp/1's credit is what bounds a
// lane, and a writer that outruns its reader by more than MaxLaneBuffer
// breaks the connection. So the writer keeps at most benchWindow bytes
// unacknowledged, as a bp/1 window would, and the reader acknowledges
// every benchAck bytes it has read, with one byte back on the lane; the
// QUIC benchmark does the same.
func benchLane(b *testing.B, c, s Conn) {
	const benchWindow, benchAck = 8 << 20, 1 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lc, err := c.OpenLane(ctx)
	require.NoError(b, err)
	_, err = lc.Write([]byte{0})
	require.NoError(b, err)
	ls, err := s.AcceptLane(ctx)
	require.NoError(b, err)
	_, err = io.ReadFull(ls, make([]byte, 1))
	require.NoError(b, err)
	done := make(chan int64, 1)
	go func() {
		var n int64
		for {
			k, err := io.CopyN(io.Discard, ls, benchAck)
			n += k
			if err != nil {
				done <- n
				return
			}
			if _, err := ls.Write([]byte{1}); err != nil {
				done <- n
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	ack := make([]byte, 1)
	var sent, acked int64
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		for sent-acked > benchWindow {
			if _, err := io.ReadFull(lc, ack); err != nil {
				b.Fatal(err)
			}
			acked += benchAck
		}
		if _, err := lc.Write(buf); err != nil {
			b.Fatal(err)
		}
		sent += int64(len(buf))
	}
	require.NoError(b, lc.CloseWrite())
	n := <-done // everything arrived
	b.StopTimer()
	require.Equal(b, int64(b.N)*int64(len(buf)), n)
}

// BenchmarkTCPLane is one lane of the TCP binding over loopback.
func BenchmarkTCPLane(b *testing.B) {
	c, s := tcpPair(b, TCPConfig{}, TCPConfig{})
	benchLane(b, c, s)
}

// BenchmarkQUICLane is the same over the QUIC binding, to compare.
func BenchmarkQUICLane(b *testing.B) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(b, err)
	ln, err := ListenQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{})
	require.NoError(b, err)
	defer ln.Close()
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(b, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan Conn, 1)
	go func() {
		sc, err := ln.Accept(ctx)
		if err != nil {
			sc = nil
		}
		accepted <- sc
	}()
	c, err := DialQUIC(ctx, ln.Addr().String(), conf, QUICConfig{})
	require.NoError(b, err)
	defer c.CloseWithError(0, "")
	s := <-accepted
	require.NotNil(b, s)
	defer s.CloseWithError(0, "")
	benchLane(b, c, s)
}
