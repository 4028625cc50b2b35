package mux

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
	"github.com/stretchr/testify/require"
)

// The known attacks on multiplexed protocols (BRIEF.md, "Reliability and
// security"; SPEC.md, section 10), each played by the raw peer of
// rawpeer_test.go against a real server Session over quic-go, each with the
// precise outcome asserted. Every loop is bounded in count and time, and
// time only ever bounds a failure.

// rawSettings is what the raw peer announces unless a test says otherwise.
var rawSettings = framing.Settings{InitialWindow: 256 << 10, MaxFramePayload: 64 << 10, MaxStreams: 100}

// dialRaw connects a raw peer and sends its SETTINGS.
func dialRaw(t *testing.T, srv *rawServer) *rawPeer {
	t.Helper()
	p := srv.dial(t, nil)
	p.settings(rawSettings)
	return p
}

// attackCase is one malformed or abusive input and the session error it
// must cause.
type attackCase struct {
	name string
	// noSettings leaves the control lane to run; otherwise SETTINGS is
	// sent first.
	noSettings bool
	run        func(t *testing.T, p *rawPeer)
	want       framing.ErrorCode
}

func runAttackCases(t *testing.T, srv *rawServer, cases []attackCase, after func(t *testing.T)) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := srv.dial(t, nil)
			if !tc.noSettings {
				p.settings(rawSettings)
			}
			tc.run(t, p)
			p.expectClose(tc.want)
			p.checkBudget()
			if after != nil {
				after(t)
			}
		})
	}
}

// onNewLane opens a lane and writes frames as its very first bytes.
func (p *rawPeer) onNewLane(frames ...[]byte) *rawLane {
	l := p.openLane()
	l.write(frames...)
	return l
}

// onStreamData opens a stream with its opening frame, then sends payload
// on it in one DATA frame.
func (p *rawPeer) onStreamData(payload []byte, fin bool) *rawLane {
	l := p.openStream()
	l.write(rfData(l.ID, payload, fin))
	return l
}

// onStream opens a stream with its opening frame, then writes frames.
func (p *rawPeer) onStream(frames ...[]byte) *rawLane {
	l := p.openStream()
	l.write(frames...)
	return l
}

func zeros(n int) []byte { return make([]byte, n) }

// TestAttackDataPastCredit: DATA beyond the credit granted closes the
// session with FLOW_CONTROL_ERROR, whether the very first frame of a new
// stream already exceeds the initial window or earlier valid DATA used the
// credit up. The server checks before it reads the payload, so a header
// alone is enough.
func TestAttackDataPastCredit(t *testing.T) {
	const iw = 64 << 10
	srv := newRawServer(t, &Config{InitialWindow: iw, MaxWindow: iw, MaxFramePayload: 256 << 10, KeepAliveInterval: -1}, transport.QUICConfig{})
	runAttackCases(t, srv, []attackCase{
		{name: "first frame of a new stream", want: framing.FlowControlError, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfData(1, zeros(iw+1), false))
		}},
		{name: "first frame header alone", want: framing.FlowControlError, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfHeader(framing.TypeData, 0, 1, 200<<10))
		}},
		{name: "first frame with FIN", want: framing.FlowControlError, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfData(1, zeros(iw+1), true))
		}},
		{name: "after valid data", want: framing.FlowControlError, run: func(t *testing.T, p *rawPeer) {
			l := p.onStream(rfData(1, zeros(iw/2), false), rfData(1, zeros(iw/2), false))
			waitFor(t, "the valid data to arrive", func() bool { return p.sess.Stats().BytesReceived == iw })
			require.NoError(t, p.sess.Err(), "data up to the limit is fine")
			l.write(rfData(1, zeros(1), false))
		}},
		{name: "on a second stream after the first used its credit", want: framing.FlowControlError, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfData(1, zeros(iw), false))
			p.onStream(rfData(3, zeros(iw), false), rfData(3, zeros(1), true))
		}},
	}, nil)
}

// TestAttackOversizedFrame: a frame longer than its type allows closes the
// session with FRAME_SIZE_ERROR, decided from the header alone (the
// payload is never sent, so the server must not wait for it, let alone
// allocate it).
func TestAttackOversizedFrame(t *testing.T) {
	const maxFrame = 64 << 10
	srv := newRawServer(t, &Config{MaxFramePayload: maxFrame, KeepAliveInterval: -1}, transport.QUICConfig{})
	runAttackCases(t, srv, []attackCase{
		{name: "DATA over SETTINGS_MAX_FRAME_PAYLOAD opening a lane", want: framing.FrameSizeError, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfData(1, zeros(maxFrame+1), false))
		}},
		{name: "DATA over SETTINGS_MAX_FRAME_PAYLOAD later", want: framing.FrameSizeError, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfData(1, zeros(100), false), rfHeader(framing.TypeData, 0, 1, maxFrame+1))
		}},
		{name: "DATA claiming 2^24+1 bytes", want: framing.FrameSizeError, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfHeader(framing.TypeData, 0, 1, framing.MaxDataPayload+1))
		}},
		{name: "DATA claiming 2^62-1 bytes opening a lane", want: framing.FrameSizeError, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfHeader(framing.TypeData, framing.FlagFIN, 1, framing.MaxVarint))
		}},
		{name: "WINDOW_UPDATE of 257 bytes", want: framing.FrameSizeError, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfHeader(framing.TypeWindowUpdate, 0, 1, 257))
		}},
		{name: "unknown type of 257 bytes on a lane", want: framing.FrameSizeError, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfHeader(0x21, 0, 1, 257))
		}},
		{name: "PING of 257 bytes", want: framing.FrameSizeError, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypePing, 0, 0, 257))
		}},
		{name: "unknown type of 257 bytes on the control lane", want: framing.FrameSizeError, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(0xfe, 0, 0, 257))
		}},
		{name: "SETTINGS of 1000 bytes", noSettings: true, want: framing.FrameSizeError, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypeSettings, 0, 0, 1000))
		}},
	}, nil)
}

// echoServer serves every stream of sess by echoing it, until sess closes.
func echoServer(sess *Session) {
	go func() {
		for {
			s, err := sess.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				io.Copy(s, s)
				s.Close()
			}()
		}
	}()
}

// echoOnce opens a stream on a well-behaved client session and checks that
// msg comes back.
func echoOnce(t *testing.T, client *Session, msg []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	s, err := client.Open(ctx)
	require.NoError(t, err)
	defer s.Close()
	s.SetDeadline(time.Now().Add(rawWait))
	_, err = s.Write(msg)
	require.NoError(t, err)
	require.NoError(t, s.CloseWrite())
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	require.Equal(t, msg, got)
}

// TestAttackMalformedFrames: every malformed frame closes its session with
// PROTOCOL_ERROR (SPEC.md sections 3, 4, 6, 7 and 12.4), the process does
// not panic, and a well-behaved session on the same listener keeps
// working while and after each bad one is closed.
func TestAttackMalformedFrames(t *testing.T) {
	srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
	good, goodServer := srv.dialSession(t, nil)
	echoServer(goodServer)
	echoOnce(t, good, []byte("before"))
	n := 0
	checkGood := func(t *testing.T) {
		n++
		echoOnce(t, good, []byte(fmt.Sprintf("after bad session %d", n)))
		require.NoError(t, goodServer.Err())
		require.NoError(t, good.Err())
	}
	ping := func(t *testing.T) []byte { return rfPing(t, 0x0102030405060708, false) }
	pr := framing.ProtocolError
	runAttackCases(t, srv, []attackCase{
		// Flag bits a type does not define.
		{name: "DATA with flag 0x02 opening a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfHeader(framing.TypeData, 0x02, 1, 0))
		}},
		{name: "WINDOW_UPDATE with flag 0x02", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfHeader(framing.TypeWindowUpdate, 0x02, 1, 2), []byte{0x05, 0x00})
		}},
		{name: "RESET with flag 0x80", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfHeader(framing.TypeReset, 0x80, 1, 1), []byte{0x06})
		}},
		{name: "PING with flag 0x02", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypePing, 0x02, 0, 8), zeros(8))
		}},
		{name: "SETTINGS with flag 0x01", noSettings: true, want: pr, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypeSettings, 0x01, 0, 0))
		}},
		// Frames on the wrong kind of lane, or with the wrong stream ID.
		{name: "stream frame on the control lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfWindowUpdate(t, 1, 1<<20, 0))
		}},
		{name: "DATA on the control lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfData(1, []byte("x"), false))
		}},
		{name: "session frame on stream 1 on the control lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypePing, 0, 1, 8), zeros(8))
		}},
		{name: "DATA on stream 0 opening a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfHeader(framing.TypeData, 0, 0, 0))
		}},
		{name: "PING opening a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(ping(t))
		}},
		{name: "SETTINGS opening a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfSettings(t, rawSettings))
		}},
		{name: "unknown type opening a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfUnknown(1))
		}},
		{name: "PING on a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(ping(t))
		}},
		{name: "GOAWAY on a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfGoAway(t, 0, framing.NoError))
		}},
		{name: "DATA of another open stream on a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			l1 := p.openStream()
			p.openStream() // stream 3
			waitFor(t, "both streams to be admitted", func() bool { return p.sess.Stats().StreamsAccepted == 2 })
			l1.write(rfData(3, []byte("misrouted"), false))
		}},
		{name: "WINDOW_UPDATE of an unknown stream on a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfWindowUpdate(t, 5, 1<<20, 0))
		}},
		{name: "RESET of another stream on a lane", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfReset(t, 7, framing.Cancel))
		}},
		// Stream IDs the peer may not use.
		{name: "lane opened with a server stream ID", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onNewLane(rfData(2, nil, false))
		}},
		{name: "lane opened with the ID of an open stream", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.openStream()
			waitFor(t, "stream 1 to be admitted", func() bool { return p.sess.Stats().StreamsAccepted == 1 })
			p.onNewLane(rfData(1, []byte("again"), false))
		}},
		// Stream states.
		{name: "DATA after FIN", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfData(1, []byte("end"), true), rfData(1, []byte("more"), false))
		}},
		{name: "RESET after FIN", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfData(1, []byte("end"), true), rfReset(t, 1, framing.Cancel))
		}},
		{name: "QUIC FIN without DATA FIN or RESET", want: pr, run: func(t *testing.T, p *rawPeer) {
			l := p.onStream(rfData(1, []byte("no fin"), false))
			l.fin()
		}},
		// Payloads that do not parse.
		{name: "WINDOW_UPDATE without Consumed", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfHeader(framing.TypeWindowUpdate, 0, 1, 1), []byte{0x05})
		}},
		{name: "WINDOW_UPDATE with a trailing byte", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfHeader(framing.TypeWindowUpdate, 0, 1, 3), []byte{0x05, 0x00, 0x00})
		}},
		{name: "WINDOW_UPDATE with a truncated varint", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfHeader(framing.TypeWindowUpdate, 0, 1, 1), []byte{0x40})
		}},
		{name: "RESET with a trailing byte", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfHeader(framing.TypeReset, 0, 1, 2), []byte{0x06, 0x00})
		}},
		{name: "PING with 7 bytes", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypePing, 0, 0, 7), zeros(7))
		}},
		{name: "GOAWAY without Error Code", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypeGoAway, 0, 0, 1), []byte{0x07})
		}},
		{name: "SETTINGS with an Identifier and no Value", noSettings: true, want: pr, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypeSettings, 0, 0, 1), []byte{0x01})
		}},
		// Frames cut short by the end of their lane.
		{name: "DATA payload cut by the lane's FIN", want: pr, run: func(t *testing.T, p *rawPeer) {
			l := p.onStream(rfHeader(framing.TypeData, 0, 1, 5), []byte("he"))
			l.fin()
		}},
		{name: "header cut by the lane's FIN", want: pr, run: func(t *testing.T, p *rawPeer) {
			l := p.onStream([]byte{byte(framing.TypeWindowUpdate), 0})
			l.fin()
		}},
		{name: "first frame cut by the lane's FIN", want: pr, run: func(t *testing.T, p *rawPeer) {
			l := p.onNewLane([]byte{byte(framing.TypeData), 0})
			l.fin()
		}},
		{name: "first frame's payload cut by the lane's FIN", want: pr, run: func(t *testing.T, p *rawPeer) {
			l := p.onNewLane(rfHeader(framing.TypeData, 0, 1, 10), []byte("cut"))
			l.fin()
		}},
		{name: "control frame cut by the control lane's FIN", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypePing, 0, 0, 8), []byte{1, 2, 3})
			p.closeControl()
		}},
		{name: "control lane ended", want: pr, run: func(t *testing.T, p *rawPeer) {
			p.closeControl()
		}},
	}, checkGood)
}

// TestAttackSettings: SETTINGS must come first on the control lane and
// exactly once; a flood of them, a repeat, a missing one or a value out of
// range closes the session with SETTINGS_ERROR.
func TestAttackSettings(t *testing.T) {
	srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
	st := func(t *testing.T) []byte { return rfSettings(t, rawSettings) }
	se := framing.SettingsError
	// A SETTINGS_MAX_FRAME_PAYLOAD of 2^24+1 cannot be built by AppendFrame.
	tooLarge := quicvarint.Append(quicvarint.Append(nil, framing.SettingMaxFramePayload), framing.MaxDataPayload+1)
	runAttackCases(t, srv, []attackCase{
		{name: "repeated", noSettings: true, want: se, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(st(t), st(t))
		}},
		{name: "flood", noSettings: true, want: se, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(repeat(st(t), 1000))
		}},
		{name: "repeated after other frames", want: se, run: func(t *testing.T, p *rawPeer) {
			p.onStream(rfData(1, []byte("x"), false))
			p.writeControl(rfPing(t, 1, false), rfSettings(t, framing.Settings{}))
		}},
		{name: "missing: PING first", noSettings: true, want: se, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfPing(t, 1, false))
		}},
		{name: "missing: GOAWAY first", noSettings: true, want: se, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfGoAway(t, 0, framing.NoError))
		}},
		{name: "missing: unknown type first", noSettings: true, want: se, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfUnknown(0), st(t))
		}},
		{name: "INITIAL_WINDOW below the minimum", noSettings: true, want: se, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfSettings(t, framing.Settings{InitialWindow: DefaultInitialWindow - 1}))
		}},
		{name: "MAX_FRAME_PAYLOAD below the minimum", noSettings: true, want: se, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfSettings(t, framing.Settings{MaxFramePayload: DefaultMaxFramePayload - 1}))
		}},
		{name: "MAX_FRAME_PAYLOAD above 2^24", noSettings: true, want: se, run: func(t *testing.T, p *rawPeer) {
			p.writeControl(rfHeader(framing.TypeSettings, 0, 0, uint64(len(tooLarge))), tooLarge)
		}},
	}, nil)
}

// floodUntilClosed writes batch on w until the connection closes, at most
// rounds times.
func floodUntilClosed(p *rawPeer, write func([]byte) error, batch []byte, rounds int) {
	for i := 0; i < rounds && !p.closed(); i++ {
		if write(batch) != nil {
			return
		}
	}
}

// TestAttackPingFlood: PINGs sent faster than allowed close the session
// with ENHANCE_YOUR_CALM, and the answers to PINGs are coalesced, so a
// peer that never reads gets a bounded number of answers, the latest
// always among them, whatever it sends.
func TestAttackPingFlood(t *testing.T) {
	t.Run("flood", func(t *testing.T) {
		srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
		p := dialRaw(t, srv)
		var batch []byte
		for i := range 2500 {
			batch = append(batch, rfPing(t, uint64(i), false)...)
		}
		// The raw peer never reads the server's control lane.
		floodUntilClosed(p, func(b []byte) error { return p.writeControl(b) }, batch, 20)
		p.expectClose(framing.EnhanceYourCalm)
		require.Less(t, p.sess.Stats().PingsReceived, uint64(20*2500))
	})

	t.Run("answers coalesced", func(t *testing.T) {
		requireStack(t, "quic", "needs a control-lane write the transport holds; x/net/quic buffers 17 MiB instead")
		// The raw peer grants the server's control lane only a small QUIC
		// window and does not read it, so the server's control writer
		// blocks, and every PING that arrives meanwhile can only replace
		// the one pending answer.
		const quicWindow = 1200
		const pings = 900 // below the limit of 1000 a second
		srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
		p := srv.dial(t, &quic.Config{InitialStreamReceiveWindow: quicWindow, MaxStreamReceiveWindow: quicWindow})
		p.settings(rawSettings)
		// PINGs go out a few at a time, each batch processed before the
		// next, so that the server's writer has had many chances to answer
		// and fill the window; sleeping here only makes that likelier,
		// the bound below holds whatever the scheduling.
		const perBatch = 3
		for i := 1; i <= pings; i += perBatch {
			var batch []byte
			for j := i; j < i+perBatch; j++ {
				batch = append(batch, rfPing(t, uint64(j), false)...)
			}
			require.NoError(t, p.writeControl(batch))
			waitFor(t, "the server to process the PINGs", func() bool { return p.sess.Stats().PingsReceived == uint64(i+perBatch-1) })
			time.Sleep(100 * time.Microsecond)
		}
		require.NoError(t, p.sess.Err())

		ctl, _ := p.serverControl()
		acks, last := 0, uint64(0)
		for last != pings {
			f, err := ctl.readFrame()
			require.NoError(t, err, "after %d answers, the latest for PING %d", acks, last)
			require.Equal(t, framing.TypePing, f.Type)
			require.Equal(t, framing.FlagACK, f.Flags)
			seq := pingSeq(f)
			require.Greater(t, seq, last, "answers come in order, older ones dropped")
			last = seq
			acks++
			require.LessOrEqual(t, acks, pings)
		}
		// What fits in the QUIC window, one frame quic-go buffers beyond it
		// (at most 1452 bytes), and the coalesced answer written once the
		// window opens; each answer is 12 bytes.
		const pingAckLen = 12
		bound := (quicWindow+1452)/pingAckLen + 4
		t.Logf("%d PINGs got %d answers (bound %d)", pings, acks, bound)
		require.LessOrEqual(t, acks, bound, "answers to PINGs queued up while the peer did not read")
		require.NoError(t, p.sess.Err())
	})
}

// TestAttackUselessFrameFloods: frames that do no work, sent faster than
// MaxUselessFramesPerSecond, close the session with ENHANCE_YOUR_CALM.
func TestAttackUselessFrameFloods(t *testing.T) {
	const iw = 64 << 10
	srv := newRawServer(t, &Config{InitialWindow: iw, MaxWindow: iw, KeepAliveInterval: -1}, transport.QUICConfig{})
	cases := []struct {
		name  string
		setup func(t *testing.T, p *rawPeer) func([]byte) error // returns where to write
		frame func(t *testing.T) []byte
	}{
		{
			name: "WINDOW_UPDATE raising nothing",
			setup: func(t *testing.T, p *rawPeer) func([]byte) error {
				l := p.openStream()
				acceptStream(t, p.sess)
				return func(b []byte) error { return l.write(b) }
			},
			frame: func(t *testing.T) []byte { return rfWindowUpdate(t, 1, 1000, 0) },
		},
		{
			name: "empty DATA",
			setup: func(t *testing.T, p *rawPeer) func([]byte) error {
				l := p.openStream()
				return func(b []byte) error { return l.write(b) }
			},
			frame: func(t *testing.T) []byte { return rfData(1, nil, false) },
		},
		{
			name: "BLOCKED for a limit never reached",
			setup: func(t *testing.T, p *rawPeer) func([]byte) error {
				l := p.onStream(rfData(1, zeros(100), false))
				return func(b []byte) error { return l.write(b) }
			},
			frame: func(t *testing.T) []byte { return rfBlocked(t, 1, iw) },
		},
		{
			name: "BLOCKED repeated at the reached limit",
			setup: func(t *testing.T, p *rawPeer) func([]byte) error {
				l := p.onStream(rfData(1, zeros(iw), false))
				return func(b []byte) error { return l.write(b) }
			},
			frame: func(t *testing.T) []byte { return rfBlocked(t, 1, iw) },
		},
		{
			name: "STOP_SENDING repeated",
			setup: func(t *testing.T, p *rawPeer) func([]byte) error {
				l := p.openStream()
				acceptStream(t, p.sess)
				return func(b []byte) error { return l.write(b) }
			},
			frame: func(t *testing.T) []byte { return rfStopSending(t, 1, framing.Cancel) },
		},
		{
			name: "unknown frame types on a lane",
			setup: func(t *testing.T, p *rawPeer) func([]byte) error {
				l := p.openStream()
				return func(b []byte) error { return l.write(b) }
			},
			frame: func(t *testing.T) []byte { return rfUnknown(1) },
		},
		{
			name: "unknown frame types on the control lane",
			setup: func(t *testing.T, p *rawPeer) func([]byte) error {
				return func(b []byte) error { return p.writeControl(b) }
			},
			frame: func(t *testing.T) []byte { return rfUnknown(0) },
		},
		{
			name: "PING ACKs answering nothing",
			setup: func(t *testing.T, p *rawPeer) func([]byte) error {
				return func(b []byte) error { return p.writeControl(b) }
			},
			frame: func(t *testing.T) []byte { return rfPing(t, 42, true) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := dialRaw(t, srv)
			write := tc.setup(t, p)
			floodUntilClosed(p, write, repeat(tc.frame(t), 2500), 20)
			p.expectClose(framing.EnhanceYourCalm)
			p.checkBudget()
		})
	}
}

// TestAttackCreditArithmetic: credit never overflows. A WINDOW_UPDATE to
// the largest offset a varint can carry lets the writer go on without
// wrapping anything, a later smaller one is ignored, and a WINDOW_UPDATE
// reporting more consumed than was sent (or than it grants) closes the
// session with PROTOCOL_ERROR.
func TestAttackCreditArithmetic(t *testing.T) {
	srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})

	t.Run("maximum offset 2^62-1", func(t *testing.T) {
		p := dialRaw(t, srv)
		l := p.openStream()
		s := acceptStream(t, p.sess)
		require.NoError(t, l.write(rfWindowUpdate(t, l.ID, framing.MaxVarint, 0)))
		waitFor(t, "the update to arrive", func() bool { return s.Stats().SendLimit == framing.MaxVarint })
		require.Equal(t, uint64(framing.MaxVarint), s.Stats().SendCredit)

		msg := make([]byte, 1<<20)
		for i := range msg {
			msg[i] = byte(i * 7)
		}
		done := make(chan error, 1)
		go func() {
			_, err := s.Write(msg)
			if err == nil {
				err = s.CloseWrite()
			}
			done <- err
		}()
		var got []byte
		for fin := false; !fin; {
			f, err := l.readFrame()
			require.NoError(t, err)
			if f.Type != framing.TypeData {
				continue
			}
			require.LessOrEqual(t, f.Length, rawSettings.MaxFramePayload)
			got = append(got, f.Data...)
			fin = f.Flags&framing.FlagFIN != 0
			require.LessOrEqual(t, len(got), len(msg), "the server sent more than it had")
		}
		require.True(t, bytes.Equal(msg, got), "the data arrived intact")
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(rawWait):
			t.Fatal("Write did not return")
		}
		st := s.Stats()
		require.Equal(t, uint64(len(msg)), st.BytesSent)
		require.Equal(t, uint64(framing.MaxVarint)-uint64(len(msg)), st.SendCredit)

		// A smaller limit is ignored; its Consumed is recorded.
		require.NoError(t, l.write(rfWindowUpdate(t, l.ID, uint64(len(msg)), uint64(len(msg)))))
		ctx, cancel := context.WithTimeout(context.Background(), rawWait)
		defer cancel()
		require.NoError(t, s.WaitConsumed(ctx))
		st = s.Stats()
		require.Equal(t, uint64(framing.MaxVarint), st.SendLimit)
		require.Equal(t, uint64(framing.MaxVarint)-uint64(len(msg)), st.SendCredit)
		require.Zero(t, st.ConsumerLag)
		require.NoError(t, p.sess.Err())
	})

	t.Run("consumed beyond sent", func(t *testing.T) {
		p := dialRaw(t, srv)
		l := p.openStream()
		acceptStream(t, p.sess)
		l.write(rfWindowUpdate(t, l.ID, 1<<20, 1))
		p.expectClose(framing.ProtocolError)
	})

	t.Run("consumed beyond maximum offset", func(t *testing.T) {
		p := dialRaw(t, srv)
		l := p.openStream()
		s := acceptStream(t, p.sess)
		_, err := s.Write(zeros(100))
		require.NoError(t, err)
		got, _, _, err := l.readData(100)
		require.NoError(t, err)
		require.Len(t, got, 100)
		l.write(rfWindowUpdate(t, l.ID, 50, 60))
		p.expectClose(framing.ProtocolError)
	})

	t.Run("consumed beyond sent at the maximum offset", func(t *testing.T) {
		p := dialRaw(t, srv)
		l := p.openStream()
		acceptStream(t, p.sess)
		l.write(rfWindowUpdate(t, l.ID, framing.MaxVarint, framing.MaxVarint))
		p.expectClose(framing.ProtocolError)
	})
}

// TestAttackGoAwayValidation: a GOAWAY naming a stream of the wrong parity,
// or raising Last Stream ID, is a PROTOCOL_ERROR (SPEC.md 5.7).
func TestAttackGoAwayValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lasts []uint64
	}{
		{"wrong parity", []uint64{3}},
		{"raised", []uint64{2, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
			p := srv.dial(t, nil)
			p.settings(framing.Settings{})
			p.openStream() // an open stream keeps the session up after the first GOAWAY
			acceptStream(t, p.sess)
			for _, last := range tc.lasts {
				require.NoError(t, p.writeControl(rfGoAway(t, last, framing.NoError)))
			}
			p.expectClose(framing.ProtocolError)
		})
	}
}
