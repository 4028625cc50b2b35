package mux

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/require"
)

// benchChunk is the size of each Write in the throughput benchmarks.
const benchChunk = 64 << 10

// BenchmarkThroughput moves the same bytes through one bp/1 stream over
// quic-go ("mux") and through one plain quic-go stream with the same QUIC
// configuration ("quic"), in one run, so that the overhead of the mux is
// the ratio of the two. Run with -count to interleave repetitions.
func BenchmarkThroughput(b *testing.B) {
	b.Run("quic", func(b *testing.B) {
		cc, sc := newConnPair(b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w, err := cc.OpenLane(ctx)
		require.NoError(b, err)
		_, err = w.Write([]byte{0}) // make the lane known to the peer
		require.NoError(b, err)
		r, err := sc.AcceptLane(ctx)
		require.NoError(b, err)
		_, err = io.ReadFull(r, make([]byte, 1))
		require.NoError(b, err)
		benchTransfer(b, w, r)
	})
	b.Run("mux", func(b *testing.B) {
		p := newPair(b, nil, nil)
		c, s := p.openPair(b)
		benchTransfer(b, c, s)
	})
}

// benchTransfer writes b.N chunks to w while a goroutine drains r, and
// stops the clock when the last byte has been read.
func benchTransfer(b *testing.B, w io.Writer, r io.Reader) {
	total := int64(b.N) * benchChunk
	done := make(chan error, 1)
	go func() { // the same reader for both: 64 KiB reads
		rb := make([]byte, benchChunk)
		var err error
		for n, got := int64(0), 0; n < total && err == nil; n += int64(got) {
			got, err = r.Read(rb[:min(int64(len(rb)), total-n)])
		}
		done <- err
	}()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// newConnPair connects two transport.Conns over QUIC on 127.0.0.1.
func newConnPair(t testing.TB) (client, server transport.Conn) {
	t.Helper()
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := transport.ListenQUIC("127.0.0.1:0", transport.ServerConfig(cert), transport.QUICConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := make(chan transport.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			c = nil
		}
		ch <- c
	}()
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	client, err = transport.DialQUIC(ctx, ln.Addr().String(), tlsConf, transport.QUICConfig{})
	require.NoError(t, err)
	server = <-ch
	require.NotNil(t, server)
	t.Cleanup(func() {
		client.CloseWithError(0, "")
		server.CloseWithError(0, "")
	})
	return client, server
}
