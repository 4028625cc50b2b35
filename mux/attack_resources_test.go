package mux

// The attacks of this file go after resources: streams, memory, credit
// and the lanes' QUIC windows. attack_test.go has the frame-level ones
// and the helpers.

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// TestAttackRapidReset: streams opened and reset at once, before the
// application accepts them, cost a bounded amount: the accept queue never
// holds more than MaxStreams, the rest are refused, the goroutines they
// started end, and a flood of them closes the session with
// ENHANCE_YOUR_CALM.
func TestAttackRapidReset(t *testing.T) {
	const maxStreams = 8
	// The QUIC lane limit is above MaxStreams, so that bp/1's own refusal
	// is what bounds the streams.
	qcfg := transport.QUICConfig{MaxStreams: 64}

	// resetStream opens a stream and resets it at once: opening frame,
	// RESET and QUIC FIN in one go.
	resetStream := func(t *testing.T, p *rawPeer) error {
		l := p.openLane()
		if err := l.write(rfData(l.ID, nil, false), rfReset(t, l.ID, framing.Cancel)); err != nil {
			return err
		}
		return l.fin()
	}
	checkQueue := func(t *testing.T, p *rawPeer) {
		require.LessOrEqual(t, p.sess.Stats().AcceptQueue, maxStreams, "accept queue")
		require.LessOrEqual(t, p.sess.Stats().Streams, maxStreams, "open streams")
	}

	t.Run("flood", func(t *testing.T) {
		srv := newRawServer(t, &Config{MaxStreams: maxStreams, MaxUselessFramesPerSecond: 200, KeepAliveInterval: -1}, qcfg)
		p := dialRaw(t, srv)
		baseline := runtime.NumGoroutine()
		deadline := time.Now().Add(rawWait)
		opened := 0
		for ; opened < 3000 && !p.closed() && time.Now().Before(deadline); opened++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			l, err := p.tryOpenLane(ctx)
			cancel()
			if err != nil {
				break
			}
			if l.write(rfData(l.ID, nil, false), rfReset(t, l.ID, framing.Cancel)) != nil {
				break
			}
			l.fin()
			checkQueue(t, p)
		}
		t.Logf("opened and reset %d streams", opened)
		p.expectClose(framing.EnhanceYourCalm)
		st := p.sess.Stats()
		// Each stream reset before it was accepted is refused and counts
		// as churn, so the flood ends after about the limit's worth.
		require.LessOrEqual(t, st.StreamsAccepted, uint64(200+maxStreams))
		p.closeWithError(0, "")
		p.sess.Close() // waits for the session's goroutines
		waitFor(t, fmt.Sprintf("goroutines back to the baseline of %d", baseline), func() bool {
			return runtime.NumGoroutine() <= baseline
		})
	})

	t.Run("below the rate limit", func(t *testing.T) {
		srv := newRawServer(t, &Config{MaxStreams: maxStreams, KeepAliveInterval: -1}, qcfg)
		p := dialRaw(t, srv)
		waitFor(t, "the session to settle", func() bool { return p.sess.peerInitial.Load() == rawSettings.InitialWindow })
		baseline := runtime.NumGoroutine()
		const n = 40
		for range n {
			require.NoError(t, resetStream(t, p))
			checkQueue(t, p)
		}
		// A stream reset before the application accepted it is refused
		// and retired at once: it never reaches Accept, and never holds a
		// place in the queue or against MaxStreams.
		waitFor(t, "every stream to be retired", func() bool {
			st := p.sess.Stats()
			return st.StreamsAccepted+st.StreamsRefused == n && st.Streams == 0 && st.AcceptQueue == 0
		})
		require.NoError(t, p.sess.Err())
		waitFor(t, fmt.Sprintf("goroutines back to the baseline of %d", baseline), func() bool {
			return runtime.NumGoroutine() <= baseline
		})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := p.sess.Accept(ctx)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "a reset stream was handed to the application")
		l := p.onStreamData([]byte("still here"), true)
		s := acceptStream(t, p.sess)
		require.Equal(t, l.ID, s.ID())
		got, err := io.ReadAll(s)
		require.NoError(t, err)
		require.Equal(t, "still here", string(got))
		require.NoError(t, p.sess.Err())
		p.checkBudget()
	})
}

// TestAttackStreamLimit: a peer opening more streams than MaxStreams has
// the extra ones refused with RESET REFUSED_STREAM (or cannot open them at
// all when the QUIC lane limit is as low), and the allowed ones keep
// working.
func TestAttackStreamLimit(t *testing.T) {
	const maxStreams = 4

	t.Run("refused", func(t *testing.T) {
		srv := newRawServer(t, &Config{MaxStreams: maxStreams, KeepAliveInterval: -1}, transport.QUICConfig{MaxStreams: 16})
		p := dialRaw(t, srv)
		var allowed []*rawLane
		for range maxStreams {
			allowed = append(allowed, p.openStream())
		}
		waitFor(t, "the allowed streams to be admitted", func() bool { return p.sess.Stats().StreamsAccepted == maxStreams })
		for range 3 {
			l := p.onStreamData([]byte("refuse me"), false)
			frames, err := l.readUntilEOF()
			require.NoError(t, err, "stream %d", l.ID)
			require.Len(t, frames, 2, "stream %d: %v", l.ID, frames)
			types := map[framing.Type]framing.Frame{}
			for _, f := range frames {
				require.Equal(t, l.ID, f.StreamID)
				types[f.Type] = f
			}
			require.Contains(t, types, framing.TypeReset)
			require.Contains(t, types, framing.TypeStopSending)
			require.Equal(t, framing.RefusedStream, types[framing.TypeReset].ErrorCode)
			require.Equal(t, framing.RefusedStream, types[framing.TypeStopSending].ErrorCode)
		}
		st := p.sess.Stats()
		require.Equal(t, uint64(3), st.StreamsRefused)
		require.Equal(t, uint64(maxStreams), st.StreamsAccepted)
		require.NoError(t, p.sess.Err())

		// The allowed streams work: echo on the first, through to the end.
		// (The server admits lanes concurrently, so in any order.)
		first := allowed[0]
		var echo *Stream
		for range maxStreams {
			if s := acceptStream(t, p.sess); s.ID() == first.ID {
				echo = s
			}
		}
		require.NotNil(t, echo)
		go func() {
			b, _ := io.ReadAll(echo)
			echo.Write(b)
			echo.Close()
		}()
		require.NoError(t, first.write(rfData(first.ID, []byte("echo"), true)))
		got, fin, _, err := first.readData(5)
		require.NoError(t, err)
		require.True(t, fin)
		require.Equal(t, "echo", string(got))
		require.NoError(t, first.fin())
		_, err = first.readUntilEOF()
		require.NoError(t, err)

		// Its place is free again for a new stream.
		waitFor(t, "the finished stream to be gone", func() bool { return p.sess.Stats().Streams == maxStreams-1 })
		l := p.onStreamData([]byte("new"), false)
		waitFor(t, "the new stream to be admitted", func() bool { return p.sess.Stats().StreamsAccepted == maxStreams+1 })
		s := acceptStream(t, p.sess)
		require.Equal(t, l.ID, s.ID())
		require.NoError(t, p.sess.Err())
	})

	t.Run("QUIC lane limit", func(t *testing.T) {
		requireQUIC(t)
		srv := newRawServer(t, &Config{MaxStreams: maxStreams, KeepAliveInterval: -1}, transport.QUICConfig{MaxStreams: maxStreams})
		p := dialRaw(t, srv)
		for range maxStreams {
			s, err := p.conn.OpenStream()
			require.NoError(t, err)
			_, err = s.Write(rfData(p.nextID, nil, false))
			require.NoError(t, err)
			p.nextID += 2
		}
		_, err := p.conn.OpenStream()
		var limitErr *quic.StreamLimitReachedError
		require.ErrorAs(t, err, &limitErr)
		waitFor(t, "the allowed streams to be admitted", func() bool { return p.sess.Stats().StreamsAccepted == maxStreams })
		require.Zero(t, p.sess.Stats().StreamsRefused)
		require.NoError(t, p.sess.Err())
	})
}

// TestAttackSlowloris: a peer that opens streams and never reads them
// (zero-window hold-open) gets exactly its window of data from each; the
// server's writers then block with nothing buffered, and a write
// deadline, a stream Reset, a stream Close or the session's Close
// unblocks them.
func TestAttackSlowloris(t *testing.T) {
	const peerWindow = 100_000 // the raw peer's SETTINGS_INITIAL_WINDOW
	srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
	p := srv.dial(t, nil)
	p.settings(framing.Settings{InitialWindow: peerWindow, MaxFramePayload: 16 << 10, MaxStreams: 100})
	waitFor(t, "the server to see the SETTINGS", func() bool { return p.sess.peerInitial.Load() == peerWindow })

	const nStreams = 4
	big := make([]byte, 4<<20)
	var lanes []*rawLane
	var streams []*Stream
	for range nStreams {
		lanes = append(lanes, p.openStream())
		streams = append(streams, acceptStream(t, p.sess))
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	type result struct {
		n   int
		err error
	}
	results := make([]chan result, nStreams)
	for i, s := range streams {
		results[i] = make(chan result, 1)
		go func() {
			n, err := s.Write(big)
			results[i] <- result{n, err}
		}()
	}
	for i, s := range streams {
		waitFor(t, fmt.Sprintf("stream %d's writer to block", s.ID()), func() bool {
			st := s.Stats()
			return st.BytesSent == peerWindow && st.SendCredit == 0 && st.Stalls > 0
		})
		select {
		case r := <-results[i]:
			t.Fatalf("Write returned (%d, %v) without credit", r.n, r.err)
		default:
		}
	}
	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	grown := int64(during.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %d bytes with %d writers of %d bytes blocked", grown, nStreams, len(big))
	require.Less(t, grown, int64(len(big)), "the blocked writers' data is buffered somewhere")

	wait := func(i int) result {
		select {
		case r := <-results[i]:
			return r
		case <-time.After(rawWait):
			t.Fatalf("stream %d's Write did not return", streams[i].ID())
			return result{}
		}
	}
	// A write deadline.
	streams[0].SetWriteDeadline(time.Now())
	r := wait(0)
	require.Equal(t, peerWindow, r.n)
	require.ErrorIs(t, r.err, os.ErrDeadlineExceeded)
	// A reset.
	streams[1].Reset(framing.Cancel)
	r = wait(1)
	require.Equal(t, peerWindow, r.n)
	require.ErrorIs(t, r.err, ErrStreamReset)
	// The stream's Close.
	require.NoError(t, streams[2].Close())
	r = wait(2)
	require.Equal(t, peerWindow, r.n)
	require.ErrorIs(t, r.err, ErrClosed)

	// The server sent exactly the window, in frames no larger than the
	// peer allows, then said it was blocked there.
	got, fin, others, err := lanes[0].readData(peerWindow)
	require.NoError(t, err)
	require.False(t, fin)
	require.Equal(t, peerWindow, len(got))
	require.Empty(t, others)
	f, err := lanes[0].readFrame()
	require.NoError(t, err)
	require.Equal(t, framing.TypeBlocked, f.Type)
	require.Equal(t, uint64(peerWindow), f.Offset)
	require.NoError(t, p.sess.Err())

	// The session's Close.
	require.NoError(t, p.sess.Close())
	r = wait(3)
	require.Equal(t, peerWindow, r.n)
	require.ErrorIs(t, r.err, ErrSessionClosed)
}

// TestAttackBudget: a peer that fills every stream's credit while the
// application reads nothing cannot push the session's receive buffering
// past its budget; a stream that cannot get its initial window from the
// budget is refused with REFUSED_STREAM instead of given no credit, and
// once budget is freed, new streams are admitted again.
func TestAttackBudget(t *testing.T) {
	const iw = 64 << 10
	budget := withOverhead(4*iw, 4) // four streams, no decoder
	srv := newRawServer(t, &Config{InitialWindow: iw, MaxWindow: iw, SessionBudget: budget, KeepAliveInterval: -1}, transport.QUICConfig{})
	p := dialRaw(t, srv)

	// Watch the budget all along.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var overrun error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st := p.sess.Stats()
			if st.BudgetUsed > st.BudgetTotal && overrun == nil {
				overrun = fmt.Errorf("budget used %d of %d", st.BudgetUsed, st.BudgetTotal)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	stopWatch := func() {
		close(stop)
		wg.Wait()
		require.NoError(t, overrun)
	}

	var lanes []*rawLane
	for range 4 {
		lanes = append(lanes, p.onStreamData(zeros(iw), false))
	}
	waitFor(t, "every stream's credit to be filled", func() bool { return p.sess.Stats().BytesReceived == 4*iw })
	for _, s := range p.sess.Streams() {
		st := s.Stats()
		require.Equal(t, uint64(iw), st.Buffered)
		require.Equal(t, uint64(iw), st.RecvLimit)
	}
	require.Equal(t, uint64(budget), p.sess.Stats().BudgetUsed)

	// A fifth stream cannot get its initial window.
	l := p.onStreamData(zeros(1000), false)
	frames, err := l.readUntilEOF()
	require.NoError(t, err)
	require.Len(t, frames, 2, "%v", frames)
	for _, f := range frames {
		require.Contains(t, []framing.Type{framing.TypeReset, framing.TypeStopSending}, f.Type)
		require.Equal(t, framing.RefusedStream, f.ErrorCode)
	}
	st := p.sess.Stats()
	require.Equal(t, uint64(1), st.StreamsRefused)
	require.Equal(t, uint64(4), st.StreamsAccepted)
	require.NoError(t, p.sess.Err())

	// The application abandons one stream; the raw peer answers the
	// STOP_SENDING with RESET and ends the lane, so the stream is gone and
	// its reservation returns to the budget.
	s := acceptStream(t, p.sess)
	var lane *rawLane
	for _, l := range lanes {
		if l.ID == s.ID() {
			lane = l
		}
	}
	require.NotNil(t, lane)
	require.NoError(t, s.Reset(framing.Cancel))
	require.NoError(t, lane.write(rfReset(t, lane.ID, framing.Cancel)))
	require.NoError(t, lane.fin())
	waitFor(t, "the stream's budget to be released", func() bool { return p.sess.Stats().BudgetUsed <= budget-iw })

	// Now a new stream fits again.
	l = p.onStreamData([]byte("fits"), false)
	waitFor(t, "the new stream to be admitted", func() bool { return p.sess.Stats().StreamsAccepted == 5 })
	require.Equal(t, uint64(1), p.sess.Stats().StreamsRefused)
	require.NoError(t, p.sess.Err())
	stopWatch()
	p.checkBudget()
	_ = l
}

// TestAttackTinyDataFrames: a window's worth of one-byte DATA frames costs
// the receiver that window and no more: no per-frame overhead, no memory
// beyond what the budget accounts for.
func TestAttackTinyDataFrames(t *testing.T) {
	const iw = 64 << 10
	srv := newRawServer(t, &Config{InitialWindow: iw, MaxWindow: iw, KeepAliveInterval: -1}, transport.QUICConfig{})
	p := dialRaw(t, srv)
	l := p.openStream()
	s := acceptStream(t, p.sess)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	var frames []byte
	for i := range iw {
		frames = append(frames, rfData(l.ID, []byte{byte(i * 13)}, false)...)
	}
	require.NoError(t, l.write(frames))
	frames = nil
	waitFor(t, "every byte to arrive", func() bool { return s.Stats().BytesReceived == iw })

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %d bytes for %d one-byte DATA frames", grown, iw)
	require.Less(t, grown, int64(16*iw), "per-frame overhead pins memory")
	st := s.Stats()
	require.Equal(t, uint64(iw), st.Buffered)
	require.Equal(t, uint64(iw), st.Reserved)
	require.Equal(t, uint64(iw), p.sess.Stats().WindowBytes())
	require.NoError(t, p.sess.Err())

	// Every byte is there, in order.
	got := make([]byte, iw)
	s.SetReadDeadline(time.Now().Add(rawWait))
	_, err := io.ReadFull(s, got)
	require.NoError(t, err)
	for i, b := range got {
		require.Equal(t, byte(i*13), b, "byte %d", i)
	}
}

// TestAttackDataDribble: a peer that grants credit one byte at a time gets
// one byte per grant, never more; the server's writer stays blocked in
// between with nothing buffered, and its deadline still works.
func TestAttackDataDribble(t *testing.T) {
	const iw = DefaultInitialWindow
	srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
	p := srv.dial(t, nil)
	p.settings(framing.Settings{InitialWindow: iw, MaxFramePayload: DefaultMaxFramePayload, MaxStreams: 100})
	l := p.openStream()
	s := acceptStream(t, p.sess)
	done := make(chan error, 1)
	var written int
	go func() {
		var err error
		written, err = s.Write(make([]byte, 1<<20))
		done <- err
	}()
	got, _, _, err := l.readData(iw)
	require.NoError(t, err)
	require.Len(t, got, iw)

	const rounds = 100
	limit := uint64(iw)
	for range rounds {
		limit++
		require.NoError(t, l.write(rfWindowUpdate(t, l.ID, limit, uint64(len(got)))))
		for {
			f, err := l.readFrame()
			require.NoError(t, err)
			if f.Type == framing.TypeBlocked {
				require.LessOrEqual(t, f.Offset, limit)
				continue
			}
			require.Equal(t, framing.TypeData, f.Type)
			require.Len(t, f.Data, 1, "one byte of credit, one byte of data")
			got = append(got, f.Data...)
			break
		}
	}
	waitFor(t, "the writer to block again", func() bool {
		st := s.Stats()
		return st.BytesSent == limit && st.SendCredit == 0
	})
	require.NoError(t, p.sess.Err())
	s.SetWriteDeadline(time.Now())
	select {
	case err := <-done:
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.Equal(t, int(limit), written)
	case <-time.After(rawWait):
		t.Fatal("Write did not return at its deadline")
	}
}

// TestAttackQUICWindowHold: a peer that grants bp/1 credit without end but
// stops reading its lane leaves the server's writer blocked on QUIC's own
// flow control instead (the "internal data buffering" attack): the memory
// held stays bounded by the QUIC window, and the writer must still be
// unblocked by its write deadline, a Reset, its Close, or the session's
// Close.
func TestAttackQUICWindowHold(t *testing.T) {
	requireStack(t, "quic", "holds quic-go's own stream window")
	const quicWindow = 64 << 10
	const frame = 16 << 10
	big := make([]byte, 4<<20)
	for _, u := range []struct {
		name    string
		unblock func(s *Stream)
		want    error
		bug     string
	}{
		{"session Close", func(s *Stream) { s.Session().Close() }, ErrSessionClosed, ""},
		{"write deadline", func(s *Stream) { s.SetWriteDeadline(time.Now()) }, os.ErrDeadlineExceeded, ""},
		{"Reset", func(s *Stream) { s.Reset(framing.Cancel) }, ErrStreamReset, ""},
		{"Close", func(s *Stream) { s.Close() }, ErrClosed, ""},
	} {
		t.Run(u.name, func(t *testing.T) {
			if u.bug != "" {
				t.Skip("BUG: " + u.bug)
			}
			srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
			p := srv.dial(t, &quic.Config{InitialStreamReceiveWindow: quicWindow, MaxStreamReceiveWindow: quicWindow})
			p.settings(framing.Settings{InitialWindow: 1 << 20, MaxFramePayload: frame, MaxStreams: 100})
			waitFor(t, "the server to see the SETTINGS", func() bool { return p.sess.peerMaxFrame.Load() == frame })
			l := p.openStream()
			s := acceptStream(t, p.sess)
			require.NoError(t, l.write(rfWindowUpdate(t, l.ID, framing.MaxVarint, 0)))
			waitFor(t, "the update to arrive", func() bool { return s.Stats().SendLimit == framing.MaxVarint })

			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			type result struct {
				n   int
				err error
			}
			res := make(chan result, 1)
			go func() {
				n, err := s.Write(big)
				res <- result{n, err}
			}()
			waitFor(t, "the writer to fill the QUIC window", func() bool { return s.Stats().BytesSent >= quicWindow })
			runtime.GC()
			var during runtime.MemStats
			runtime.ReadMemStats(&during)
			grown := int64(during.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("heap grew by %d bytes, %d bytes taken from credit", grown, s.Stats().BytesSent)
			require.Less(t, grown, int64(len(big)/2), "the writer's data is buffered somewhere")
			// At most the QUIC window and the frames in flight into it.
			require.LessOrEqual(t, s.Stats().BytesSent, uint64(quicWindow+2*frame))

			done := make(chan struct{})
			go func() {
				u.unblock(s)
				close(done)
			}()
			select {
			case r := <-res:
				require.ErrorIs(t, r.err, u.want)
				require.LessOrEqual(t, r.n, quicWindow+2*frame)
			case <-time.After(rawWait):
				t.Fatalf("%s does not unblock a Write blocked on QUIC flow control", u.name)
			}
			select {
			case <-done:
			case <-time.After(rawWait):
				t.Fatalf("%s itself blocks behind a Write blocked on QUIC flow control", u.name)
			}
		})
	}
}
