package transport

import (
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/bpmux/bp/transport/tcpframe"
	"github.com/stretchr/testify/require"
)

// Fairness of the TCP binding: no lane's unsent or unread data holds up
// another lane.

// schedConn is a connection with no socket and no goroutines, whose
// writer's batches a test takes by hand.
func schedConn() *tcpConn {
	return &tcpConn{
		set:       TCPConfig{LaneSendBuffer: 4 << 20}.settings(),
		lanes:     make(map[uint64]*tcpLane),
		writeWake: make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// queue writes data on l as Write would, without waiting.
func (c *tcpConn) queue(l *tcpLane, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.out.Write(data)
	l.scheduleLocked()
}

// batch takes the writer's next batch and returns the lane and length of
// each LANE_DATA in it, in order.
func (c *tcpConn) batch(t *testing.T) (lanes []uint64, lens []int) {
	t.Helper()
	c.mu.Lock()
	b := c.fillLocked(nil, time.Now())
	c.mu.Unlock()
	for len(b) > 0 {
		f, n, err := tcpframe.Parse(b)
		require.NoError(t, err)
		b = b[n:]
		if f.Type == tcpframe.TypeData {
			lanes = append(lanes, f.Lane)
			lens = append(lens, f.Length)
			b = b[f.Length:]
		}
	}
	return lanes, lens
}

// TestTCPSchedulerRoundRobin: a lane with a small message waits behind at
// most one chunk of a lane with megabytes queued, and lanes with much to
// send share the connection equally.
func TestTCPSchedulerRoundRobin(t *testing.T) {
	c := schedConn()
	a, b := c.newLane(0, true), c.newLane(4, true)
	c.queue(a, make([]byte, 3<<20))
	for round := range 50 {
		c.queue(b, []byte("small message"))
		lanes, lens := c.batch(t)
		before := 0 // bytes of a sent ahead of b's message
		for i, id := range lanes {
			require.LessOrEqual(t, lens[i], tcpframe.MaxData)
			if id == b.id {
				break
			}
			before += lens[i]
		}
		require.Contains(t, lanes, b.id, "round %d: b's message waited for a later batch", round)
		require.LessOrEqual(t, before, tcpframe.MaxData, "round %d: b waited behind %d bytes of a", round, before)
	}

	// Three busy lanes get equal shares, within a chunk.
	c = schedConn()
	var ls []*tcpLane
	for i := range 3 {
		l := c.newLane(uint64(4*i), true)
		c.queue(l, make([]byte, 2<<20))
		ls = append(ls, l)
	}
	sent := map[uint64]int{}
	for range 40 {
		lanes, lens := c.batch(t)
		for i, id := range lanes {
			sent[id] += lens[i]
		}
	}
	lo, hi := sent[ls[0].id], sent[ls[0].id]
	for _, l := range ls {
		lo, hi = min(lo, sent[l.id]), max(hi, sent[l.id])
	}
	require.Positive(t, lo)
	require.LessOrEqual(t, hi-lo, tcpframe.MaxData, "shares: %v", sent)
}

// TestTCPFairness: while one lane carries a 64 MiB Write to a reader that
// takes it slowly, small request-response rounds on another lane all
// complete before the first half of the big transfer has arrived.
func TestTCPFairness(t *testing.T) {
	tcpCheckNoLeak(t)
	const total, rounds = 64 << 20, 10
	// The whole big Write fits in the lane's send buffer, so that only the
	// scheduler decides when the small lane gets its turn.
	c, s := tcpPair(t, TCPConfig{LaneSendBuffer: total}, TCPConfig{MaxLaneBuffer: 80 << 20, MaxConnBuffer: 90 << 20})
	// Small socket buffers, so that what waits in the kernel ahead of a
	// small message is small too: the scheduler is what is tested.
	require.NoError(t, c.(*tcpConn).raw.(*net.TCPConn).SetWriteBuffer(32<<10))
	require.NoError(t, s.(*tcpConn).raw.(*net.TCPConn).SetReadBuffer(32<<10))
	bigC, bigS := openAccept(t, tcpCtx(t), c, s, "big")
	smallC, smallS := openAccept(t, tcpCtx(t), c, s, "small")

	big := make([]byte, total)
	for i := range big {
		big[i] = byte(i>>10 + i)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := bigC.Write(big)
		werr <- err
	}()
	// The slow reader: small reads, each hashed.
	bigRead := make(chan []byte, 1)
	var readSoFar int64
	progress := make(chan int64, 1)
	go func() {
		h := sha256.New()
		buf := make([]byte, 1024)
		var n int64
		for n < total {
			k, err := bigS.Read(buf)
			h.Write(buf[:k])
			n += int64(k)
			select {
			case <-progress:
			default:
			}
			progress <- n
			if err != nil {
				break
			}
		}
		bigRead <- h.Sum(nil)
	}()
	// Wait until the big transfer is under way.
	for readSoFar == 0 {
		readSoFar = <-progress
	}

	echo := make(chan error, 1)
	go func() {
		buf := make([]byte, 8)
		for range rounds {
			if _, err := io.ReadFull(smallS, buf); err != nil {
				echo <- err
				return
			}
			if _, err := smallS.Write(buf); err != nil {
				echo <- err
				return
			}
		}
		echo <- nil
	}()
	buf := make([]byte, 8)
	for i := range rounds {
		_, err := smallC.Write([]byte{byte(i), 1, 2, 3, 4, 5, 6, 7})
		require.NoError(t, err)
		_, err = io.ReadFull(smallC, buf)
		require.NoError(t, err)
		require.Equal(t, byte(i), buf[0])
	}
	require.NoError(t, <-echo)

	// How much of the big lane had arrived when the last round ended.
	sc := s.(*tcpConn)
	sc.mu.Lock()
	arrived := int64(bigS.(*tcpLane).in.Len())
	sc.mu.Unlock()
	select {
	case n := <-progress:
		arrived += n
	default:
		arrived += readSoFar
	}
	t.Logf("%d request-response rounds done with %.1f of %d MiB of the big lane arrived", rounds, float64(arrived)/(1<<20), total>>20)
	// A fair scheduler lets each round through behind a few chunks of
	// the big lane (and what the small socket buffers hold): a few MiB in
	// all, even under the race detector. One that let the big lane finish
	// first would show all 64 MiB arrived.
	require.Less(t, arrived, int64(total/2), "the small lane's rounds waited for the big transfer")

	require.NoError(t, <-werr)
	want := sha256.Sum256(big)
	require.Equal(t, want[:], <-bigRead)
}

// TestTCPUnreadLaneDoesNotBlock: a lane whose reader never reads holds
// its data in its own buffer, and the other lanes go on.
func TestTCPUnreadLaneDoesNotBlock(t *testing.T) {
	tcpCheckNoLeak(t)
	c, s := tcpPair(t, TCPConfig{}, TCPConfig{})
	stuckC, stuckS := openAccept(t, tcpCtx(t), c, s, "stuck")
	_, err := stuckC.Write(make([]byte, 4<<20)) // never read
	require.NoError(t, err)
	lc, ls := openAccept(t, tcpCtx(t), c, s, "other")
	buf := make([]byte, 5)
	for range 10 {
		_, err := lc.Write([]byte("hello"))
		require.NoError(t, err)
		_, err = io.ReadFull(ls, buf)
		require.NoError(t, err)
	}
	// All of the stuck lane's data is there, waiting for its reader.
	sc := s.(*tcpConn)
	require.Eventually(t, func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return stuckS.(*tcpLane).in.Len() == 4<<20
	}, tcpTestTimeout, time.Millisecond)
}
