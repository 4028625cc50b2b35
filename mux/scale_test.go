package mux

import (
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTenThousandStreams opens 10,000 concurrent streams on one session,
// moves a few bytes on each, and reports the heap each idle stream costs
// (both ends of the session live in this process).
func TestTenThousandStreams(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	cfg := &Config{
		InitialWindow: DefaultInitialWindow,
		MaxWindow:     DefaultInitialWindow,
		SessionBudget: withOverhead(uint64(n+1)*DefaultInitialWindow, n+1),
		MaxStreams:    n,
		// Exactly the streams' floors: no room for the decoder a session
		// that accepts compression holds.
		NoDecompression: true,
	}
	p := newPair(t, cfg, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()

	clients := make([]*Stream, 0, n)
	servers := make([]*Stream, 0, n)
	for range n {
		c, err := p.client.Open(ctx)
		require.NoError(t, err)
		s, err := p.server.Accept(ctx)
		require.NoError(t, err)
		clients, servers = append(clients, c), append(servers, s)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := (int64(after.HeapInuse) - int64(before.HeapInuse)) / int64(n)
	stack := (int64(after.StackInuse) - int64(before.StackInuse)) / int64(n)
	t.Logf("%d idle streams, per stream (both ends together): %d bytes of heap, %d bytes of goroutine stack, %d goroutines",
		n, heap, stack, (runtime.NumGoroutine()-goroutinesBefore)/n)

	// Every stream works: a few bytes each way on every one.
	for i, c := range clients {
		_, err := c.Write([]byte{byte(i)})
		require.NoError(t, err)
	}
	b := make([]byte, 1)
	for i, s := range servers {
		_, err := io.ReadFull(s, b)
		require.NoError(t, err)
		require.Equal(t, byte(i), b[0])
	}
	require.Equal(t, n, p.server.Stats().Streams)
	// Each lane reader has handled DATA now and parks at 2 KiB of stack:
	// a frame path that grows it to 4 KiB doubles what an idle stream
	// costs (the idle-streams benchmark). Two readers per stream here,
	// one at each end; a few may have grown.
	runtime.GC()
	var worked runtime.MemStats
	runtime.ReadMemStats(&worked)
	stack = (int64(worked.StackInuse) - int64(before.StackInuse)) / int64(n)
	t.Logf("after a DATA frame each way: %d bytes of goroutine stack per stream", stack)
	// Not over x/net/quic, whose Read path beneath the parked reader is
	// deeper; not with the race detector, whose frames are larger.
	if !raceEnabled && currentBinding(t).name != "xquic" {
		require.LessOrEqual(t, stack, int64(2*2048*5/4), "the lane readers' stacks grew past 2 KiB")
	}
	for i := range n {
		require.NoError(t, clients[i].Close())
		require.NoError(t, servers[i].Close())
	}
	require.Eventually(t, func() bool {
		return p.server.Stats().Streams == 0 && p.client.Stats().Streams == 0
	}, time.Minute, 50*time.Millisecond, "all streams retire")
	require.Zero(t, p.server.Stats().WindowBytes())
}
