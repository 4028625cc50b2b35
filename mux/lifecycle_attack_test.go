package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/interop/impair"
	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/require"
)

// The attacks of this file go after the session's lifecycle rather than
// its frames: a peer that churns streams faster than the application
// accepts them, lanes that end before saying anything, a flood of tiny
// legal DATA frames, sessions that never finish setting up, and a peer
// that vanishes. Each runs beside an honest session on the same listener,
// which must keep working; the victim must stay responsive (Close and
// Shutdown return promptly) and leak nothing.

// honestRate moves data on a new stream of an honest session pair for d
// and returns the bytes per second the server's application read.
func honestRate(t *testing.T, client, server *Session, d time.Duration) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	c, err := client.Open(ctx)
	require.NoError(t, err)
	_, err = c.Write([]byte("x")) // so that the server learns of the stream
	require.NoError(t, err)
	s, err := server.Accept(ctx)
	require.NoError(t, err)
	var read atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			read.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	start := time.Now()
	c.SetWriteDeadline(start.Add(d))
	for {
		if _, err := c.Write(buf); err != nil {
			break
		}
	}
	got := read.Load()
	elapsed := time.Since(start)
	c.Reset(framing.Cancel)
	s.Close()
	<-done
	return float64(got) / elapsed.Seconds()
}

// pairedRatio measures the honest rate alone and under attack, in turn,
// rounds times, and returns the median ratio (attacked / alone). attack
// starts the attack and returns a function that stops it.
func pairedRatio(t *testing.T, client, server *Session, rounds int, attack func() (stop func())) float64 {
	t.Helper()
	const window = 300 * time.Millisecond
	var ratios []float64
	for range rounds {
		alone := honestRate(t, client, server, window)
		stop := attack()
		attacked := honestRate(t, client, server, window)
		stop()
		ratios = append(ratios, attacked/alone)
		t.Logf("honest session: %.0f MB/s alone, %.0f MB/s under attack (%.2f)", alone/1e6, attacked/1e6, attacked/alone)
	}
	slices.Sort(ratios)
	return ratios[len(ratios)/2]
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// requireResponsive checks that a session's calls that take its lock all
// return at once: none of them may be stuck behind a wedged goroutine.
func requireResponsive(t *testing.T, sess *Session) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Stats()
		sess.Streams()
	}()
	select {
	case <-done:
	case <-time.After(rawWait):
		t.Fatal("the session is wedged: Stats and Streams do not return")
	}
}

// TestAttackChurnSlowAcceptor: a peer that opens and resets streams ten
// times MaxStreams over, against an application that accepts one stream a
// second (as `bpcat listen` accepts one), cannot wedge the session: a
// stream reset before it was accepted leaves the queue, the queue never
// blocks the lane readers, and the session stays responsive, serves the
// peer's next honest stream, and closes at once when told to.
func TestAttackChurnSlowAcceptor(t *testing.T) {
	const maxStreams = 16
	srv := newRawServer(t, &Config{MaxStreams: maxStreams, KeepAliveInterval: -1}, transport.QUICConfig{MaxStreams: 4 * maxStreams})
	honestClient, honestServer := srv.dialSession(t, &Config{KeepAliveInterval: -1})
	p := dialRaw(t, srv)
	baseline := runtime.NumGoroutine()
	heapBefore := heapInUse()

	// The slow application: one Accept a second, reading what it gets.
	accepted := make(chan *Stream, 100)
	appCtx, stopApp := context.WithCancel(context.Background())
	defer stopApp()
	go func() {
		for {
			s, err := p.sess.Accept(appCtx)
			if err != nil {
				return
			}
			accepted <- s
			select {
			case <-time.After(time.Second):
			case <-appCtx.Done():
				return
			}
		}
	}()

	const cycles = 10 * maxStreams
	var held []*rawLane
	for i := range cycles {
		l := p.openLane()
		require.NoError(t, l.write(rfData(l.ID, []byte("request"), false)))
		if i%2 == 0 { // half of them reset at once, half after the next one opens
			abandon(t, l)
		} else {
			held = append(held, l)
		}
		if len(held) > 0 && i%2 == 0 {
			abandon(t, held[0])
			held = held[1:]
		}
		requireResponsive(t, p.sess)
		require.LessOrEqual(t, p.sess.Stats().AcceptQueue, maxStreams, "accept queue")
	}
	for _, h := range held {
		abandon(t, h)
	}
	waitFor(t, "the reset streams to retire", func() bool {
		st := p.sess.Stats()
		return st.AcceptQueue == 0 && st.Streams <= 1 // at most the one the app accepted first
	})
	require.NoError(t, p.sess.Err(), "churn below the rate limit is not an error")
	require.Less(t, heapInUse(), heapBefore+8<<20, "the churn left memory behind")
	require.Positive(t, honestRate(t, honestClient, honestServer, 100*time.Millisecond), "the honest session beside")

	// The next honest stream is served, although the application accepts
	// only one a second and the churn came first.
	l := p.onStreamData([]byte("still here"), true)
	var s *Stream
	waitFor(t, "the honest stream to be accepted", func() bool {
		for {
			select {
			case a := <-accepted:
				if a.ID() == l.ID {
					s = a
					return true
				}
			default:
				return false
			}
		}
	})
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	require.Equal(t, "still here", string(got))

	// And the session closes at once, leaving nothing behind.
	stopApp()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	p.sess.Shutdown(ctx)
	require.Less(t, time.Since(start), 2*time.Second)
	p.closeWithError(0, "")
	waitFor(t, fmt.Sprintf("goroutines back to the baseline of %d", baseline), func() bool {
		return runtime.NumGoroutine() <= baseline
	})
}

// abandon resets a raw stream in both directions as a conforming peer may
// without waiting for anything: RESET and STOP_SENDING, then its QUIC FIN
// (SPEC.md 3.4 allows the FIN once it asked the other side to stop). A
// stream the server refused as it arrived has its lane stopped at the
// QUIC level, so the write may fail; that is an answer, not an error.
func abandon(t *testing.T, l *rawLane) {
	t.Helper()
	l.write(rfReset(t, l.ID, framing.Cancel), rfStopSending(t, l.ID, framing.Cancel))
	l.fin()
}

// TestAttackAcceptQueueFull: MaxStreams streams the application never
// accepts fill the queue; the next ones are refused with REFUSED_STREAM
// instead of blocking anything, keepalive and GOAWAY still work, and
// Shutdown refuses the queued streams so that their opener may retry.
func TestAttackAcceptQueueFull(t *testing.T) {
	const maxStreams = 8
	srv := newRawServer(t, &Config{MaxStreams: maxStreams, KeepAliveInterval: 50 * time.Millisecond, DeadPeerTimeout: 10 * time.Second},
		transport.QUICConfig{MaxStreams: 4 * maxStreams})
	p := dialRaw(t, srv)
	ctl, _ := p.serverControl()
	var queued []*rawLane
	for range maxStreams {
		queued = append(queued, p.onStreamData([]byte("wait for me"), false))
	}
	waitFor(t, "the queue to fill", func() bool { return p.sess.Stats().AcceptQueue == maxStreams })
	extra := p.onStreamData([]byte("one too many"), false)
	frames, err := extra.readUntilEOF()
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(frames, func(f framing.Frame) bool {
		return f.Type == framing.TypeReset && f.ErrorCode == framing.RefusedStream
	}), "the stream past the limit is refused: %v", frames)
	requireResponsive(t, p.sess)

	// Housekeeping is not stuck either: the keepalive PING still comes.
	f, err := ctl.readFrame()
	require.NoError(t, err)
	require.Equal(t, framing.TypePing, f.Type)
	require.NoError(t, p.writeControl(rfPing(t, pingSeq(f), true)))

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), rawWait)
		defer cancel()
		shut <- p.sess.Shutdown(ctx)
	}()
	for _, l := range queued {
		frames, err := l.readUntilEOF()
		require.NoError(t, err)
		require.True(t, slices.ContainsFunc(frames, func(f framing.Frame) bool {
			return f.Type == framing.TypeReset && f.ErrorCode == framing.RefusedStream
		}), "a queued stream is refused at Shutdown: %v", frames)
		l.write(rfData(l.ID, nil, true))
		l.fin()
	}
	// The raw peer answers the GOAWAY with its own DONE.
	require.NoError(t, p.writeControl(rfFrame(t, framing.Frame{Header: framing.Header{Type: framing.TypeGoAway, Flags: framing.FlagDone}})))
	select {
	case err := <-shut:
		require.NoError(t, err)
	case <-time.After(rawWait):
		t.Fatal("Shutdown did not return")
	}
}

// TestAttackLaneChurn: lanes that end before their first frame (a QUIC FIN
// or a QUIC reset, with nothing sent) and streams accepted and then reset
// at the QUIC level without carrying any data are churn: they count as
// frames that do no work, so a flood of them closes the session with
// ENHANCE_YOUR_CALM after about the limit's worth, while an honest session
// on the same listener goes on.
func TestAttackLaneChurn(t *testing.T) {
	requireStack(t, "quic", "x/net/quic hands over no lane that carried no data, so such churn never reaches the session (a known gap of that binding)")
	const limit = 200
	churn := map[string]func(p *rawPeer) error{
		"FIN before any frame": func(p *rawPeer) error {
			s, err := p.conn.OpenStream()
			if err != nil {
				return err
			}
			s.Write([]byte{}) // nothing: the lane is known to the peer only by its FIN
			return s.Close()
		},
		"QUIC reset before any frame": func(p *rawPeer) error {
			s, err := p.conn.OpenStream()
			if err != nil {
				return err
			}
			s.Write([]byte{0}) // part of a header: the lane is known, its frame never completes
			s.CancelWrite(7)
			return nil
		},
		"QUIC reset after the opening frame": func(p *rawPeer) error {
			s, err := p.conn.OpenStream()
			if err != nil {
				return err
			}
			id := p.nextID
			p.nextID += 2
			if _, err := s.Write(rfData(id, nil, false)); err != nil {
				return err
			}
			s.CancelWrite(7)
			s.CancelRead(7)
			return nil
		},
	}
	for name, open := range churn {
		t.Run(name, func(t *testing.T) {
			srv := newRawServer(t, &Config{MaxUselessFramesPerSecond: limit, KeepAliveInterval: -1}, transport.QUICConfig{MaxStreams: 1000})
			honestClient, honestServer := srv.dialSession(t, &Config{KeepAliveInterval: -1})
			p := dialRaw(t, srv)
			go acceptAndDiscard(p.sess)
			lanes := 0
			for ; lanes < 50*limit && !p.closed(); lanes++ {
				if open(p) != nil {
					break
				}
			}
			t.Logf("%d lanes before the close", lanes)
			p.expectClose(framing.EnhanceYourCalm)
			require.Less(t, p.sess.Stats().StreamsAccepted, uint64(3*limit), "streams admitted before the close")
			require.Positive(t, honestRate(t, honestClient, honestServer, 100*time.Millisecond))
		})
	}
}

// acceptAndDiscard is an application that accepts every stream and reads
// it to the end.
func acceptAndDiscard(sess *Session) {
	for {
		s, err := sess.Accept(context.Background())
		if err != nil {
			return
		}
		go func() {
			io.Copy(io.Discard, s)
			s.Close()
		}()
	}
}

// TestAttackSmallFrameFlood: a peer sending 1-byte DATA frames within its
// credit, as fast as it can on several streams, is paced to the session's
// small-frame rate: it costs the victim no more than that many frames a
// second, and an honest session on the same listener keeps at least half
// its throughput. The flooder is held, not closed: small frames are legal.
//
// Over the TCP binding it is not: that binding has no flow control of its
// own, and the flooder's frame headers, which bp/1's credit does not
// count, overrun its lane buffer while the session paces the lane, so the
// binding aborts the connection (BUFFER_EXCEEDED, SPEC.md 13.5). Measured:
// lane 4 would have held 2113408 bytes unread, above 2097152. The test
// therefore runs over the QUIC bindings only; the gap is known.
func TestAttackSmallFrameFlood(t *testing.T) {
	requireQUIC(t)
	if testing.Short() {
		t.Skip("measures throughput for a few seconds")
	}
	const rate = 5000
	const streams = 4
	cfg := &Config{InitialWindow: 1 << 20, MaxWindow: 1 << 20, SessionBudget: 8 << 20, MaxSmallFramesPerSecond: rate, KeepAliveInterval: -1}
	// QUIC's windows sized from the config, as bp.Listen sizes them: they
	// hold a flooder once it has filled them, so what it costs the victim
	// after that is the paced frames, not QUIC's receive path.
	srv := newRawServer(t, cfg, quicConfigFor(*cfg))
	honestClient, honestServer := srv.dialSession(t, &Config{KeepAliveInterval: -1})
	p := dialRaw(t, srv)
	go acceptAndDiscard(p.sess)
	var lanes []*rawLane
	for range streams {
		lanes = append(lanes, p.openStream())
	}
	var batch []byte
	for i := range 16 << 10 {
		batch = append(batch, rfData(1, []byte{byte(i)}, false)...)
	}
	var sentFrames atomic.Int64
	attack := func() func() {
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for _, l := range lanes {
			b := slices.Clone(batch)
			for off := 0; off < len(b); off += 5 { // re-address each 5-byte frame to this lane
				b[off+2] = byte(l.ID)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.s.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
				pos := 0 // a write cut short by its deadline goes on where it stopped
				for {
					select {
					case <-stop:
						return
					default:
					}
					n, err := l.s.Write(b[pos:])
					sentFrames.Add(int64((pos+n)/5 - pos/5))
					pos = (pos + n) % len(b)
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						l.s.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
						continue
					}
					if err != nil {
						return
					}
				}
			}()
		}
		return func() { close(stop); wg.Wait() }
	}
	require.Less(t, lanes[streams-1].ID, uint64(64), "one-byte stream IDs, as the batch assumes")
	// Let the flood fill QUIC's windows first: from then on it is held,
	// and what it costs is the paced frames (filling the windows costs the
	// flooder's own sending, which in this test shares the machine).
	stop := attack()
	var last int64 = -1
	waitFor(t, "the flooder to be held by QUIC's flow control", func() bool {
		time.Sleep(100 * time.Millisecond)
		n := sentFrames.Load()
		held := n == last
		last = n
		return held
	})
	stop()
	before := p.sess.Stats()
	start := time.Now()
	ratio := pairedRatio(t, honestClient, honestServer, 5, attack)
	elapsed := time.Since(start)
	after := p.sess.Stats()
	processed := after.BytesReceived - before.BytesReceived // one byte a frame
	t.Logf("flooder sent %d small frames, the victim processed %d in %v (%.0f/s; limit %d/s), %d waited; honest median ratio %.2f",
		sentFrames.Load(), processed, elapsed.Round(time.Millisecond), float64(processed)/elapsed.Seconds(), rate, after.SmallFramesPaced, ratio)
	require.NoError(t, p.sess.Err(), "small frames are legal: the flooder is held, not closed")
	require.LessOrEqual(t, float64(processed), rate*elapsed.Seconds()+6*(rate/10+1)+streams, "frames processed beyond the rate (and a burst per round)")
	require.Positive(t, after.SmallFramesPaced)
	if raceEnabled {
		t.Logf("race detector on: the ratio %.2f is not asserted", ratio)
		return
	}
	require.GreaterOrEqual(t, ratio, 0.5, "the honest session lost more than half its throughput")
}

// TestAttackNoSettings: connections that complete the handshake and never
// send SETTINGS are closed with SETTINGS_ERROR after SettingsTimeout, and
// what they held is released.
func TestAttackNoSettings(t *testing.T) {
	const n = 50
	srv := newRawServer(t, &Config{SettingsTimeout: 300 * time.Millisecond, KeepAliveInterval: -1}, transport.QUICConfig{})
	baseline := runtime.NumGoroutine()
	var peers []*rawPeer
	for range n {
		peers = append(peers, srv.dial(t, nil))
	}
	for _, p := range peers {
		p.expectClose(framing.SettingsError)
		require.ErrorContains(t, p.sess.Err(), "no SETTINGS")
		p.sess.Close()
	}
	waitFor(t, fmt.Sprintf("goroutines back to the baseline of %d", baseline), func() bool {
		return runtime.NumGoroutine() <= baseline
	})
}

// TestSpecConformanceLanes: frames of unknown type are skipped on a lane
// whatever their Stream ID (SPEC.md 3.5), and a control lane must start
// with SETTINGS even when its first frame is of an unknown type (3.2).
func TestSpecConformanceLanes(t *testing.T) {
	srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
	t.Run("unknown type with another stream ID", func(t *testing.T) {
		p := dialRaw(t, srv)
		l := p.openStream()
		require.NoError(t, l.write(rfUnknown(l.ID+100), rfUnknown(0), rfData(l.ID, []byte("ok"), true)))
		s := acceptStream(t, p.sess)
		got, err := io.ReadAll(s)
		require.NoError(t, err)
		require.Equal(t, "ok", string(got))
		require.NoError(t, p.sess.Err())
	})
	t.Run("unknown type first on the control lane", func(t *testing.T) {
		p := srv.dial(t, nil)
		require.NoError(t, p.writeControl(rfUnknown(0)))
		p.expectClose(framing.SettingsError)
	})
	t.Run("no useless final update", func(t *testing.T) {
		// The server reads nothing before it sees the end: its final
		// WINDOW_UPDATE would raise neither the limit nor Consumed.
		p := dialRaw(t, srv)
		l := p.onStreamData(nil, true)
		s := acceptStream(t, p.sess)
		_, err := s.Read(make([]byte, 1))
		require.ErrorIs(t, err, io.EOF)
		require.NoError(t, s.Close())
		frames, err := l.readUntilEOF()
		require.NoError(t, err)
		for _, f := range frames {
			require.NotEqual(t, framing.TypeWindowUpdate, f.Type, "a useless WINDOW_UPDATE: %v", frames)
		}
	})
}

// TestDeadPeer: a peer that vanishes behind a blackhole (traffic through
// the impairment proxy, then nothing at all, either way) is noticed within
// the dead-peer timeout, on an idle and on a stalled session, with an
// error that says what happened. QUIC's own idle timeout is set far longer
// here, so that bp/1's keepalive is what notices.
func TestDeadPeer(t *testing.T) {
	requireQUICGo(t) // over quic-go and the UDP proxy, whatever the binding
	const timeout = 2 * time.Second
	for _, stalled := range []bool{false, true} {
		t.Run(map[bool]string{false: "idle", true: "stalled writer"}[stalled], func(t *testing.T) {
			cfg := &Config{DeadPeerTimeout: timeout, InitialWindow: 64 << 10, MaxWindow: 64 << 10}
			qcfg := transport.QUICConfig{IdleTimeout: time.Minute}
			cert, err := transport.SelfSigned("127.0.0.1")
			require.NoError(t, err)
			ln, err := transport.ListenQUIC("127.0.0.1:0", transport.ServerConfig(cert), qcfg)
			require.NoError(t, err)
			defer ln.Close()
			proxy, err := impair.NewUDP("127.0.0.1:0", ln.Addr().String(), impair.Config{})
			require.NoError(t, err)
			defer proxy.Close()
			tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
			require.NoError(t, err)
			ctx := ctxT(t)
			accepted := make(chan transport.Conn, 1)
			go func() {
				c, err := ln.Accept(ctx)
				if err == nil {
					accepted <- c
				}
			}()
			cc, err := transport.DialQUIC(ctx, proxy.Addr().String(), tlsConf, qcfg)
			require.NoError(t, err)
			client, err := New(cc, cfg)
			require.NoError(t, err)
			defer client.Close()
			server, err := New(<-accepted, cfg)
			require.NoError(t, err)
			defer server.Close()

			c, err := client.Open(ctx)
			require.NoError(t, err)
			_, err = c.Write([]byte("hello"))
			require.NoError(t, err)
			s, err := server.Accept(ctx)
			require.NoError(t, err)
			_, err = io.ReadFull(s, make([]byte, 5))
			require.NoError(t, err)
			if stalled { // the server stops reading; the client's writer blocks on credit
				go c.Write(make([]byte, 1<<20))
				waitFor(t, "the writer to stall", func() bool { return c.Stats().SendCredit == 0 })
			}

			proxy.Blackhole(time.Hour)
			start := time.Now()
			for _, sess := range []*Session{client, server} {
				select {
				case <-sess.Done():
				case <-time.After(timeout + 3*time.Second):
					t.Fatalf("the session still thinks its peer is alive after %v", time.Since(start))
				}
				err := sess.Err()
				require.ErrorIs(t, err, ErrPeerUnreachable)
				var se *SessionError
				require.ErrorAs(t, err, &se)
				require.Equal(t, framing.KeepaliveTimeout, se.Code)
				require.ErrorContains(t, err, "stopped answering")
				t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
			}
		})
	}
}
