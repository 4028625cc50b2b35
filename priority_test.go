package bp_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/interop/impair"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPrioritySendOrder: on a 20 Mbit/s path, two streams write 2 MiB
// each at once; the urgent one, not incremental, is sent first by QUIC's
// scheduler, so its reader has everything while the other's has little.
// (The TCP and x/net/quic bindings do not schedule by priority.)
func TestPrioritySendOrder(t *testing.T) {
	const size = 2 << 20
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	cfg := &mux.Config{InitialWindow: 4 << 20, MaxWindow: 4 << 20}
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), cfg)
	require.NoError(t, err)
	defer ln.Close()
	dir := impair.Direction{Delay: 5 * time.Millisecond, Rate: 20e6 / 8}
	proxy, err := impair.NewUDP("127.0.0.1:0", ln.Addr().String(), impair.Config{Up: dir, Down: dir, Seed: 1})
	require.NoError(t, err)
	defer proxy.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// When a stream has been read to its end, the result says how much
	// of the other the server had received by then.
	type result struct {
		id         uint64
		otherBytes uint64
	}
	results := make(chan result, 2)
	go func() {
		sess, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		var streams [2]*mux.Stream
		for i := range streams {
			if streams[i], err = sess.Accept(ctx); err != nil {
				return
			}
		}
		for i, s := range streams {
			other := streams[1-i]
			go func() {
				io.Copy(io.Discard, s)
				results <- result{s.ID(), other.Stats().BytesReceived}
			}()
		}
	}()
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	sess, err := bp.Dial(ctx, proxy.Addr().String(), tlsConf, cfg)
	require.NoError(t, err)
	defer sess.Close()
	low, err := sess.OpenStream(ctx, mux.StreamOptions{Priority: &mux.Priority{Urgency: 7, Incremental: true}})
	require.NoError(t, err)
	high, err := sess.OpenStream(ctx, mux.StreamOptions{Priority: &mux.Priority{Urgency: 0}})
	require.NoError(t, err)
	data := make([]byte, size)
	for _, s := range []*mux.Stream{low, high} {
		go func() {
			s.Write(data)
			s.CloseWrite()
		}()
	}
	first := <-results
	assert.Equal(t, high.ID(), first.id, "the urgent stream finished first")
	t.Logf("when the urgent stream was done, the other had %d of its %d bytes there", first.otherBytes, size)
	assert.Less(t, first.otherBytes, uint64(size/4), "the other waited for it")
	<-results
}
