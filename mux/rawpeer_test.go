package mux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// This file is a raw bp/1 peer for tests: it plays the client side of the
// protocol by hand, frame by frame, over a real quic-go connection to a
// mux server Session on 127.0.0.1, so that tests can send what a
// well-behaved Session never would and watch how the server answers.

// rawWait bounds every wait of the raw peer: it is only a failure bound,
// never a timing assertion.
const rawWait = 10 * time.Second

// rawServer is a mux server listening on 127.0.0.1. Every connection it
// accepts becomes a server Session, handed out in order by next.
type rawServer struct {
	t        testing.TB
	ln       transport.Listener
	pin      string
	sessions chan *Session
}

// newRawServer starts a listener whose sessions use cfg (nil for the
// defaults) over a QUIC connection configured by qcfg. Everything is
// closed when the test ends.
//
// The server runs over the binding under test. The raw peer is a quic-go
// client for the QUIC bindings (under x/net/quic, the attacks cross
// stacks), and a TCP binding client for TCP: either way it writes bp/1
// frames by hand on the lanes it opens.
func newRawServer(t testing.TB, cfg *Config, qcfg transport.QUICConfig) *rawServer {
	t.Helper()
	b := currentBinding(t)
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := b.listen("127.0.0.1:0", transport.ServerConfig(cert), qcfg)
	require.NoError(t, err)
	srv := &rawServer{t: t, ln: ln, pin: transport.Fingerprint(cert.Certificate[0]), sessions: make(chan *Session, 16)}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var mu sync.Mutex
	var all []*Session
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			s, err := New(c, cfg)
			if err != nil {
				c.CloseWithError(uint64(framing.InternalError), err.Error())
				continue
			}
			mu.Lock()
			all = append(all, s)
			mu.Unlock()
			select {
			case srv.sessions <- s:
			default: // nobody will ever look at it
				s.Close()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, s := range all {
			s.Close()
		}
	})
	return srv
}

// next returns the server session of the connection accepted next.
func (srv *rawServer) next(t testing.TB) *Session {
	t.Helper()
	select {
	case s := <-srv.sessions:
		return s
	case <-time.After(rawWait):
		t.Fatal("no server session")
		return nil
	}
}

// dialSession connects a well-behaved client Session to the server and
// returns it with its server-side Session.
func (srv *rawServer) dialSession(t testing.TB, cfg *Config) (client, server *Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	tlsConf, err := transport.PinnedClientConfig(srv.pin)
	require.NoError(t, err)
	cc, err := currentBinding(t).dial(ctx, srv.ln.Addr().String(), tlsConf, transport.QUICConfig{})
	require.NoError(t, err)
	client, err = New(cc, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	return client, srv.next(t)
}

// rawPeer is the hand-played client side of one connection.
type rawPeer struct {
	t testing.TB
	// conn is the raw peer's QUIC connection (QUIC bindings), tc its TCP
	// binding connection (TCP): exactly one is set. Tests that speak QUIC
	// itself use conn, and run on the QUIC bindings only.
	conn *quic.Conn
	tc   transport.Conn
	// sess is the server's Session for this connection.
	sess *Session

	ctlOnce sync.Once
	ctl     rawSend
	srvCtl  *rawReader // the server's control lane, once accepted
	nextID  uint64     // next client stream ID
}

// rawSend is the sending half of a raw lane; Close ends it with a FIN.
type rawSend interface {
	io.Writer
	Close() error
}

// rawStream is a raw lane of either kind.
type rawStream interface {
	io.Reader
	rawSend
	SetWriteDeadline(time.Time) error
	cancelWrite(code framing.ErrorCode)
	cancelRead(code framing.ErrorCode)
}

// quicStream is a quic-go stream as a rawStream.
type quicStream struct{ *quic.Stream }

func (s quicStream) cancelWrite(code framing.ErrorCode) { s.CancelWrite(quic.StreamErrorCode(code)) }
func (s quicStream) cancelRead(code framing.ErrorCode)  { s.CancelRead(quic.StreamErrorCode(code)) }

// laneStream is a transport.Lane as a rawStream.
type laneStream struct{ transport.Lane }

func (s laneStream) Close() error                       { return s.CloseWrite() }
func (s laneStream) cancelWrite(code framing.ErrorCode) { s.CancelWrite(uint64(code)) }
func (s laneStream) cancelRead(code framing.ErrorCode)  { s.CancelRead(uint64(code)) }

// sendLane is a transport.SendLane as a rawSend.
type sendLane struct{ transport.SendLane }

func (s sendLane) Close() error { return s.CloseWrite() }

// readDeadline bounds the reads of a lane that has no read deadline of
// its own: past t, cancel unblocks them (the lane is then done for; a
// timeout is a test failure anyway).
func readDeadline(cancel func()) func(time.Time) error {
	var timer *time.Timer
	return func(t time.Time) error {
		if timer != nil {
			timer.Stop()
		}
		if !t.IsZero() {
			timer = time.AfterFunc(time.Until(t), cancel)
		}
		return nil
	}
}

// dial connects a raw peer to the server. qconf may be nil for quic-go's
// defaults; ALPN bp/1 and TLS 1.3 are always used, and the server is
// checked against its pinned certificate.
func (srv *rawServer) dial(t testing.TB, qconf *quic.Config) *rawPeer {
	t.Helper()
	tlsConf, err := transport.PinnedClientConfig(srv.pin)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	if currentBinding(t).name == "tcp" {
		require.Nil(t, qconf, "a QUIC configuration for a TCP raw peer")
		tc, err := transport.DialTCP(ctx, srv.ln.Addr().String(), tlsConf, transport.TCPConfig{})
		require.NoError(t, err)
		t.Cleanup(func() { tc.CloseWithError(0, "") })
		return &rawPeer{t: t, tc: tc, sess: srv.next(t), nextID: 1}
	}
	conn, err := quic.DialAddr(ctx, srv.ln.Addr().String(), tlsConf, qconf)
	require.NoError(t, err)
	require.Equal(t, transport.ALPN, conn.ConnectionState().TLS.NegotiatedProtocol)
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return &rawPeer{t: t, conn: conn, sess: srv.next(t), nextID: 1}
}

// closeWithError closes the raw peer's connection with a bp/1 code.
func (p *rawPeer) closeWithError(code framing.ErrorCode, reason string) {
	if p.tc != nil {
		p.tc.CloseWithError(uint64(code), reason)
		return
	}
	p.conn.CloseWithError(quic.ApplicationErrorCode(code), reason)
}

// done is closed when the raw peer's connection has closed.
func (p *rawPeer) done() <-chan struct{} {
	if p.tc != nil {
		return p.tc.Done()
	}
	return p.conn.Context().Done()
}

// control returns the raw peer's control lane, opening it on first use.
func (p *rawPeer) control() rawSend {
	p.ctlOnce.Do(func() {
		if p.tc != nil {
			ctx, cancel := context.WithTimeout(context.Background(), rawWait)
			defer cancel()
			s, err := p.tc.OpenControl(ctx)
			require.NoError(p.t, err)
			p.ctl = sendLane{s}
			return
		}
		s, err := p.conn.OpenUniStream()
		require.NoError(p.t, err)
		p.ctl = s
	})
	return p.ctl
}

// writeControl writes frames on the control lane (opening it if needed).
// The error is returned, not checked: an attack may close the connection
// while it is being written.
func (p *rawPeer) writeControl(frames ...[]byte) error {
	return writeAll(p.control(), frames)
}

// settings opens the control lane and sends SETTINGS as its first frame.
func (p *rawPeer) settings(s framing.Settings) {
	require.NoError(p.t, p.writeControl(rfSettings(p.t, s)))
}

// closeControl ends the control lane with a QUIC FIN.
func (p *rawPeer) closeControl() error { return p.control().Close() }

// serverControl returns a reader of the server's control lane, accepting it
// on first use and checking that its first frame is SETTINGS, which is
// returned too.
func (p *rawPeer) serverControl() (*rawReader, framing.Settings) {
	p.t.Helper()
	if p.srvCtl != nil {
		return p.srvCtl, framing.Settings{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	if p.tc != nil {
		r, err := p.tc.AcceptControl(ctx)
		require.NoError(p.t, err)
		tc := p.tc
		p.srvCtl = &rawReader{r: r, br: bufio.NewReader(r), setDeadline: readDeadline(func() { tc.CloseWithError(0, "raw peer: read timed out") })}
	} else {
		s, err := p.conn.AcceptUniStream(ctx)
		require.NoError(p.t, err)
		p.srvCtl = &rawReader{r: s, br: bufio.NewReader(s), setDeadline: s.SetReadDeadline}
	}
	f, err := p.srvCtl.readFrame()
	require.NoError(p.t, err)
	require.Equal(p.t, framing.TypeSettings, f.Type, "first frame on the server's control lane")
	return p.srvCtl, f.Settings
}

// rawLane is a bidirectional QUIC stream the raw peer opened: the lane of
// stream ID (the ID it means to use; frames on it may say otherwise).
type rawLane struct {
	*rawReader
	s  rawStream
	ID uint64
}

// openLane opens a new lane for the next client stream ID. Nothing is sent
// yet: the server learns of the lane with its first frame.
func (p *rawPeer) openLane() *rawLane {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	l, err := p.tryOpenLane(ctx)
	require.NoError(p.t, err)
	return l
}

// tryOpenLane opens a new lane for the next client stream ID, waiting at
// the transport's lane limit until ctx ends.
func (p *rawPeer) tryOpenLane(ctx context.Context) (*rawLane, error) {
	if p.tc != nil {
		l, err := p.tc.OpenLane(ctx)
		if err != nil {
			return nil, err
		}
		id := p.nextID
		p.nextID += 2
		return &rawLane{rawReader: &rawReader{r: l, br: bufio.NewReader(l), setDeadline: readDeadline(func() { l.CancelRead(0) })}, s: laneStream{l}, ID: id}, nil
	}
	s, err := p.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	id := p.nextID
	p.nextID += 2
	return &rawLane{rawReader: &rawReader{r: s, br: bufio.NewReader(s), setDeadline: s.SetReadDeadline}, s: quicStream{s}, ID: id}, nil
}

// openStream opens a lane and sends the opening frame (empty DATA).
func (p *rawPeer) openStream() *rawLane {
	p.t.Helper()
	l := p.openLane()
	require.NoError(p.t, l.write(rfData(l.ID, nil, false)))
	return l
}

// write writes frames on the lane; the error is returned, not checked.
func (l *rawLane) write(frames ...[]byte) error { return writeAll(l.s, frames) }

// fin ends the lane's sending direction with a QUIC FIN.
func (l *rawLane) fin() error { return l.s.Close() }

func writeAll(w io.Writer, frames [][]byte) error {
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	_, err := w.Write(b)
	return err
}

// rawReader reads frames from a QUIC stream, each read bounded by rawWait.
type rawReader struct {
	r           io.Reader
	br          *bufio.Reader
	setDeadline func(time.Time) error
}

// readFrame reads the next frame. A DATA frame's payload is in Data.
// io.EOF means the lane ended cleanly between frames.
func (r *rawReader) readFrame() (framing.Frame, error) {
	r.setDeadline(time.Now().Add(rawWait))
	var f framing.Frame
	h, err := framing.ReadHeader(r.br)
	if err != nil {
		return f, err
	}
	payload := make([]byte, h.Length) // bounded by ReadHeader: 256, or 2^24 for DATA
	if _, err := io.ReadFull(r.br, payload); err != nil {
		return f, fmt.Errorf("%v payload: %w", h.Type, err)
	}
	if h.Type == framing.TypeData {
		f.Header, f.Data = h, payload
		return f, nil
	}
	return f, framing.DecodePayload(&f, h, payload)
}

// readUntilEOF reads frames until the lane ends cleanly (QUIC FIN).
func (r *rawReader) readUntilEOF() ([]framing.Frame, error) {
	var out []framing.Frame
	for i := 0; i < 1<<16; i++ {
		f, err := r.readFrame()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
	return out, errors.New("too many frames")
}

// readData reads frames until n DATA payload bytes or a FIN have arrived,
// returning the bytes and every non-DATA frame seen on the way.
func (r *rawReader) readData(n int) (data []byte, fin bool, others []framing.Frame, err error) {
	for len(data) < n && !fin {
		f, err := r.readFrame()
		if err != nil {
			return data, fin, others, err
		}
		if f.Type != framing.TypeData {
			others = append(others, f)
			continue
		}
		data = append(data, f.Data...)
		fin = f.Flags&framing.FlagFIN != 0
	}
	return data, fin, others, nil
}

// closeCode waits (at most rawWait) for the connection to close and returns
// the bp/1 error code the server closed it with.
func (p *rawPeer) closeCode() framing.ErrorCode {
	p.t.Helper()
	select {
	case <-p.done():
	case <-time.After(rawWait):
		p.t.Fatalf("the server did not close the connection; server session error: %v", p.sess.Err())
	}
	if p.tc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), rawWait)
		defer cancel()
		_, err := p.tc.AcceptLane(ctx) // fails at once, with why the connection closed
		var ae *transport.ApplicationError
		require.ErrorAs(p.t, err, &ae, "connection closed without an application error code")
		require.True(p.t, ae.Remote, "the raw peer closed the connection itself: %v", err)
		return framing.ErrorCode(ae.Code)
	}
	var ae *quic.ApplicationError
	cause := context.Cause(p.conn.Context())
	require.ErrorAs(p.t, cause, &ae, "connection closed without an application error code")
	require.True(p.t, ae.Remote, "the raw peer closed the connection itself: %v", cause)
	return framing.ErrorCode(ae.ErrorCode)
}

// expectClose checks that the server closed the session with code, on the
// wire (the QUIC application error code) and in the server Session's Err.
func (p *rawPeer) expectClose(code framing.ErrorCode) {
	p.t.Helper()
	got := p.closeCode()
	err := p.sessionErr()
	require.Equal(p.t, code, got, "close code on the wire; server session: %v", err)
	var se *SessionError
	require.ErrorAs(p.t, err, &se)
	require.Equal(p.t, code, se.Code, "server session error: %v", err)
	require.False(p.t, se.Remote, "the server session must have closed itself: %v", err)
	require.ErrorIs(p.t, err, ErrSessionClosed)
}

// sessionErr waits for the server session to end and returns its Err.
func (p *rawPeer) sessionErr() error {
	p.t.Helper()
	select {
	case <-p.sess.Done():
	case <-time.After(rawWait):
		p.t.Fatal("the server session did not end")
	}
	return p.sess.Err()
}

// closed reports whether the connection has closed.
func (p *rawPeer) closed() bool {
	select {
	case <-p.done():
		return true
	default:
		return false
	}
}

// checkBudget checks the server session's budget invariant.
func (p *rawPeer) checkBudget() {
	p.t.Helper()
	st := p.sess.Stats()
	require.LessOrEqual(p.t, st.BudgetUsed, st.BudgetTotal, "session budget overrun")
}

// waitFor polls cond until it holds, failing the test after rawWait.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(rawWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// acceptStream accepts the next stream on a server session, bounded by rawWait.
func acceptStream(t testing.TB, sess *Session) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	s, err := sess.Accept(ctx)
	require.NoError(t, err)
	return s
}

// Frame builders.

func rfFrame(t testing.TB, f framing.Frame) []byte {
	t.Helper()
	b, err := framing.AppendFrame(nil, &f)
	require.NoError(t, err)
	return b
}

// rfHeader is a frame header with any values, valid or not.
func rfHeader(typ framing.Type, flags framing.Flags, id, length uint64) []byte {
	return framing.AppendHeader(nil, framing.Header{Type: typ, Flags: flags, StreamID: id, Length: length})
}

func rfData(id uint64, payload []byte, fin bool) []byte {
	return append(framing.AppendDataHeader(nil, id, len(payload), fin), payload...)
}

func rfWindowUpdate(t testing.TB, id, maxOffset, consumed uint64) []byte {
	return rfFrame(t, framing.Frame{Header: framing.Header{Type: framing.TypeWindowUpdate, StreamID: id}, Offset: maxOffset, Consumed: consumed})
}

func rfBlocked(t testing.TB, id, limit uint64) []byte {
	return rfFrame(t, framing.Frame{Header: framing.Header{Type: framing.TypeBlocked, StreamID: id}, Offset: limit})
}

func rfReset(t testing.TB, id uint64, code framing.ErrorCode) []byte {
	return rfFrame(t, framing.Frame{Header: framing.Header{Type: framing.TypeReset, StreamID: id}, ErrorCode: code})
}

func rfStopSending(t testing.TB, id uint64, code framing.ErrorCode) []byte {
	return rfFrame(t, framing.Frame{Header: framing.Header{Type: framing.TypeStopSending, StreamID: id}, ErrorCode: code})
}

func rfPing(t testing.TB, data uint64, ack bool) []byte {
	f := framing.Frame{Header: framing.Header{Type: framing.TypePing}}
	if ack {
		f.Flags = framing.FlagACK
	}
	for i := range f.PingData {
		f.PingData[i] = byte(data >> (56 - 8*i))
	}
	return rfFrame(t, f)
}

func rfGoAway(t testing.TB, last uint64, code framing.ErrorCode) []byte {
	return rfFrame(t, framing.Frame{Header: framing.Header{Type: framing.TypeGoAway}, LastStreamID: last, ErrorCode: code})
}

func rfSettings(t testing.TB, s framing.Settings) []byte {
	return rfFrame(t, framing.Frame{Header: framing.Header{Type: framing.TypeSettings}, Settings: s})
}

// rfUnknown is a frame of an undefined type with a small payload.
func rfUnknown(id uint64) []byte {
	return append(rfHeader(0x21, 0, id, 3), 0xab, 0xcd, 0xef)
}

// pingSeq decodes the sequence number rfPing put in a PING's data.
func pingSeq(f framing.Frame) uint64 {
	var v uint64
	for _, b := range f.PingData {
		v = v<<8 | uint64(b)
	}
	return v
}

// repeat concatenates n copies of frame.
func repeat(frame []byte, n int) []byte {
	out := make([]byte, 0, n*len(frame))
	for range n {
		out = append(out, frame...)
	}
	return out
}

// TestRawPeerHandshake checks the raw peer itself: it exchanges SETTINGS
// with a server session, opens a stream, echoes bytes through the server
// application, and closes gracefully.
func TestRawPeerHandshake(t *testing.T) {
	srv := newRawServer(t, &Config{InitialWindow: 64 << 10, MaxStreams: 7}, transport.QUICConfig{})
	p := srv.dial(t, nil)
	p.settings(framing.Settings{InitialWindow: 1 << 20, MaxFramePayload: 1 << 20, MaxStreams: 10})
	ctl, st := p.serverControl()
	require.NotNil(t, ctl)
	require.Equal(t, framing.Settings{InitialWindow: 64 << 10, MaxFramePayload: 64 << 10, MaxStreams: 7, BudgetSignal: 1, Compression: uint64(codec.Supported), RetryAfter: 1}, st)

	l := p.openStream()
	msg := []byte("hello, raw peer")
	require.NoError(t, l.write(rfData(l.ID, msg, true)))
	s := acceptStream(t, p.sess)
	require.Equal(t, l.ID, s.ID())
	go func() {
		b, _ := io.ReadAll(s)
		s.Write(b)
		s.Close()
	}()
	got, fin, others, err := l.readData(len(msg) + 1)
	require.NoError(t, err)
	require.True(t, fin)
	require.Equal(t, msg, got)
	for _, f := range others {
		require.Equal(t, framing.TypeWindowUpdate, f.Type, "only a final WINDOW_UPDATE may come besides DATA")
		require.Equal(t, uint64(len(msg)), f.Consumed)
	}
	require.NoError(t, l.fin())
	rest, err := l.readUntilEOF()
	require.NoError(t, err)
	for _, f := range rest {
		require.Equal(t, framing.TypeWindowUpdate, f.Type)
	}
	waitFor(t, "the stream to be gone", func() bool { return p.sess.Stats().Streams == 0 })
	p.checkBudget()
	require.NoError(t, p.sess.Err())

	p.closeWithError(0, "bye")
	err = p.sessionErr()
	var se *SessionError
	require.ErrorAs(t, err, &se)
	require.True(t, se.Remote, "%v", err)
	require.Equal(t, framing.NoError, se.Code)
}
