package transport

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	xquic "golang.org/x/net/quic"
)

// BenchmarkXQUICLane measures one lane carrying 64 KiB writes to a peer
// that reads as fast as it can, over loopback: through this binding
// (lane), through x/net/quic directly with the same configuration
// (plain: one stream, writes not flushed until the end), and, for
// comparison, through the quic-go binding. The binding's overhead is the
// ratio of lane to plain. Each run ends once the reader has read
// everything.
func BenchmarkXQUICLane(b *testing.B) {
	const chunk = 64 << 10
	b.Run("lane", func(b *testing.B) {
		xqBenchLane(b, xqStackPairs[0], chunk)
	})
	b.Run("plain", func(b *testing.B) {
		xqBenchPlain(b, chunk)
	})
	b.Run("quic-go-lane", func(b *testing.B) {
		xqBenchLane(b, xqStackPair{"quicgo-quicgo", DialQUIC, xqListenQ}, chunk)
	})
}

func xqBenchLane(b *testing.B, p xqStackPair, chunk int) {
	c, s := p.connect(b, QUICConfig{})
	ctx := xctx(b)
	l, err := c.OpenLane(ctx)
	require.NoError(b, err)
	buf := make([]byte, chunk)
	_, err = l.Write(buf[:1])
	require.NoError(b, err)
	r, err := s.AcceptLane(ctx)
	require.NoError(b, err)
	read := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, r)
		read <- n
	}()
	b.SetBytes(int64(chunk))
	b.ResetTimer()
	for range b.N {
		if _, err := l.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	require.NoError(b, l.CloseWrite())
	n := <-read
	b.StopTimer()
	require.Equal(b, int64(b.N*chunk+1), n)
}

func xqBenchPlain(b *testing.B, chunk int) {
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(b, err)
	cfg := QUICConfig{}
	srv, err := xquic.Listen("udp", "127.0.0.1:0", cfg.XQUICConfig(ServerConfig(cert)))
	require.NoError(b, err)
	cli, err := xquic.Listen("udp", "127.0.0.1:0", nil)
	require.NoError(b, err)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cli.Close(ctx)
		srv.Close(ctx)
	})
	ctx := xctx(b)
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(b, err)
	cc, err := cli.Dial(ctx, "udp", srv.LocalAddr().String(), cfg.XQUICConfig(conf))
	require.NoError(b, err)
	sc, err := srv.Accept(ctx)
	require.NoError(b, err)
	w, err := cc.NewStream(ctx)
	require.NoError(b, err)
	buf := make([]byte, chunk)
	_, err = w.Write(buf[:1])
	require.NoError(b, err)
	require.NoError(b, w.Flush())
	r, err := sc.AcceptStream(ctx)
	require.NoError(b, err)
	read := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, r)
		read <- n
	}()
	b.SetBytes(int64(chunk))
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	require.NoError(b, w.CloseWrite())
	n := <-read
	b.StopTimer()
	require.Equal(b, int64(b.N*chunk+1), n)
}
