package mux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/framing"
	"github.com/quic-go/quic-go/quicvarint"
)

// This file is per-stream compression (SPEC.md 5.9): what each side
// announces, the opener's choice, and the DATA frames that carry
// compressed blocks. Credit counts the application's bytes throughout:
// the sender reserves credit for the bytes it compresses, and the
// receiver checks a frame's declared decoded length against its credit
// before it decodes, and decodes no further than that.

// StreamOptions are the choices for one stream that Session.OpenStream
// makes when it opens it.
type StreamOptions struct {
	// Compression is the codec both directions of the stream use: this
	// side's, and (it is announced in the opening frame) the peer's,
	// unless its application chooses otherwise. It takes effect only if
	// the peer accepts it; otherwise the stream is sent plain, which
	// Stream.Stats shows. codec.None: no compression.
	Compression codec.Codec
	// Priority is the stream's priority (Stream.SetPriority); nil means
	// DefaultPriority.
	Priority *Priority
}

// ErrCodecNotAccepted means the peer does not accept the codec asked for.
var ErrCodecNotAccepted = errors.New("mux: the peer does not accept this compression")

// CompressionStats counts a stream's or a session's compression.
// BytesSent / WireBytesSent is the compression ratio of what was sent.
type CompressionStats struct {
	// Codec is the codec this side's direction of the stream uses now
	// (codec.None when it is sent plain). Streams only.
	Codec codec.Codec
	// WireBytesSent and WireBytesReceived count DATA payload bytes as
	// they were on the wire, compressed or not; BytesSent and
	// BytesReceived count the application's bytes.
	WireBytesSent, WireBytesReceived uint64
	// FramesCompressed counts DATA frames sent compressed; FramesPlain,
	// the frames of a compressing stream that went plain: they did not
	// shrink, the probe skipped them after frames that did not shrink,
	// or every encoder was busy.
	FramesCompressed, FramesPlain uint64
	// FramesDecompressed counts compressed DATA frames received.
	FramesDecompressed uint64
	// CodecMemory is the memory the session's encoders and decoders hold,
	// charged to its budget. Sessions only.
	CodecMemory uint64
}

// Ratio returns app bytes per wire byte: the compression ratio of a
// stream's or a session's sending side (1 before anything was sent).
func Ratio(app, wire uint64) float64 {
	if wire == 0 {
		return 1
	}
	return float64(app) / float64(wire)
}

// sessionCompression is the session's side of compression.
type sessionCompression struct {
	pool       *codec.Pool // the codecs, shared by the streams
	accepts    codec.Set   // what this side announced
	peer       atomic.Uint64
	settled    chan struct{} // closed when the peer's SETTINGS arrive
	wireSent   atomic.Uint64
	wireRecvd  atomic.Uint64
	compressed atomic.Uint64
	plain      atomic.Uint64
	decoded    atomic.Uint64
}

// maxEncoders and maxDecoders bound a session's codecs: at most that many
// of its writers compress, or readers decode, at once.
const (
	maxEncoders = 4
	maxDecoders = 2
)

// initCompression makes the session's codec pool. One decoder is charged
// to the budget at once, so that a peer told this side accepts
// compression always finds one; a budget too small for it, or
// NoDecompression, announces no codec. Encoders are made as writers
// first need them.
func (sess *Session) initCompression() {
	cs := &sess.compress
	cs.settled = make(chan struct{})
	cs.pool = codec.NewPool(codec.PoolConfig{
		MaxBlock:    int(min(sess.cfg.MaxFramePayload, codec.MaxBlock)),
		MaxEncoders: maxEncoders,
		MaxDecoders: maxDecoders,
		Charge:      sess.budget.Charge,
		Release:     sess.budget.Uncharge,
	})
	if !sess.cfg.NoDecompression && sess.cfg.AcceptCompression != 0 && cs.pool.ReserveDecoder() {
		cs.accepts = sess.cfg.AcceptCompression & codec.Supported
	}
}

// peerSettled records the peer's SETTINGS_COMPRESSION.
func (sess *Session) peerSettled(accepts uint64) {
	sess.compress.peer.Store(accepts)
	close(sess.compress.settled)
}

func (sess *Session) peerAccepts(c codec.Codec) bool {
	return c != codec.None && codec.Set(sess.compress.peer.Load()).Has(c)
}

// PeerCompression returns the codecs the peer accepts; it is empty until
// the peer's SETTINGS have arrived.
func (sess *Session) PeerCompression() codec.Set {
	return codec.Set(sess.compress.peer.Load())
}

// waitSettings waits for the peer's SETTINGS, which tell what it accepts.
func (sess *Session) waitSettings(ctx context.Context) error {
	select {
	case <-sess.compress.settled:
		return nil
	case <-sess.done:
		return sess.err()
	case <-ctx.Done():
		return fmt.Errorf("mux: open: waiting for the peer's SETTINGS: %w", ctx.Err())
	}
}

// fillCompression adds the session's compression counts to st.
func (sess *Session) fillCompression(st *SessionStats) {
	cs := &sess.compress
	st.Compression = CompressionStats{
		WireBytesSent:      cs.wireSent.Load(),
		WireBytesReceived:  cs.wireRecvd.Load(),
		FramesCompressed:   cs.compressed.Load(),
		FramesPlain:        cs.plain.Load(),
		FramesDecompressed: cs.decoded.Load(),
		CodecMemory:        cs.pool.Charged(),
	}
}

// OpenStream opens a new stream with the given options; Open is
// OpenStream with the options Config sets. A stream that asks for
// compression first waits for the peer's SETTINGS (normally there before
// the first open), bounded by ctx.
func (sess *Session) OpenStream(ctx context.Context, opts StreamOptions) (*Stream, error) {
	if opts.Compression != codec.None {
		if !opts.Compression.Known() {
			return nil, fmt.Errorf("mux: open: unknown compression %v", opts.Compression)
		}
		if err := sess.waitSettings(ctx); err != nil {
			return nil, err
		}
		if !sess.peerAccepts(opts.Compression) {
			opts.Compression = codec.None // sent plain; Stats say so
		}
	}
	return sess.open(ctx, opts)
}

// SetCompression chooses the codec this side's direction of the stream
// uses from its next Write on; codec.None sends it plain. It fails with
// ErrCodecNotAccepted when the peer's SETTINGS have arrived and do not
// accept c. The peer's direction is the peer's choice.
func (s *Stream) SetCompression(c codec.Codec) error {
	if c != codec.None && !c.Known() {
		return fmt.Errorf("mux: unknown compression %v", c)
	}
	if c != codec.None && s.sess.settingsRecvd.Load() && !s.sess.peerAccepts(c) {
		return fmt.Errorf("%w: %v (it accepts %v)", ErrCodecNotAccepted, c, s.sess.PeerCompression())
	}
	s.setSendCodec(c)
	return nil
}

// appendOpening appends the stream's opening frame: an empty DATA, or the
// announcement of its codec.
func appendOpening(b []byte, id uint64, c codec.Codec) []byte {
	if c == codec.None {
		return framing.AppendDataHeader(b, id, 0, false)
	}
	b = framing.AppendHeader(b, framing.Header{Type: framing.TypeData, Flags: framing.FlagCompressed, StreamID: id, Length: uint64(codec.PrefixLen(0))})
	return codec.AppendPrefix(b, c, 0)
}

// compressedFrame is what a writer sends for a chunk of its Write.
type compressedFrame struct {
	payload []byte
	flags   framing.Flags
	enc     *codec.Encoder // lent while payload lives in it
}

// encode compresses p as codec c if that is worth it. The caller holds
// writeMu (s.probe is the writer's) and gives back f.enc once the frame
// is written.
func (s *Stream) encode(c codec.Codec, p []byte) (f compressedFrame) {
	f.payload = p
	if c == codec.None || !s.sess.peerAccepts(c) {
		return f
	}
	if s.probe.Try() {
		if enc := s.sess.compress.pool.Encoder(); enc != nil {
			b, ok := enc.Encode(c, p)
			s.probe.Result(ok)
			if ok {
				f.payload, f.flags, f.enc = b, framing.FlagCompressed, enc
				return f
			}
			s.sess.compress.pool.PutEncoder(enc)
		}
	}
	return f
}

// sentFrameLocked counts a DATA frame written.
func (s *Stream) sentFrameLocked(c codec.Codec, f *compressedFrame) {
	cs := &s.sess.compress
	cs.wireSent.Add(uint64(len(f.payload)))
	s.stats.Compression.WireBytesSent += uint64(len(f.payload))
	switch {
	case f.flags&framing.FlagCompressed != 0:
		s.stats.Compression.FramesCompressed++
		cs.compressed.Add(1)
	case s.sess.peerAccepts(c): // a compressing stream's frame that went plain
		s.stats.Compression.FramesPlain++
		cs.plain.Add(1)
	}
}

// sendCodec is the codec this side's direction uses, if the peer takes it.
// It is read on every DATA frame, so it is an atomic rather than under mu.
func (s *Stream) sendCodec() codec.Codec { return codec.Codec(s.codec.Load()) }

func (s *Stream) setSendCodec(c codec.Codec) { s.codec.Store(uint32(c)) }

// release gives back the encoder the frame's payload lived in.
func (f *compressedFrame) release(sess *Session) {
	if f.enc != nil {
		sess.compress.pool.PutEncoder(f.enc)
		f.enc = nil
	}
}

// receivedFrameLocked counts a DATA frame received, and takes the
// opener's announcement of its codec as this side's choice.
func (s *Stream) receivedFrameLocked(h framing.Header, ch compressedHeader) {
	cs := &s.sess.compress
	if ch.codec != codec.None && ch.decoded == 0 {
		// The opener's announcement (readCompressedPrefix checked it):
		// it carries no stream bytes.
		s.setSendCodec(ch.codec)
		return
	}
	s.stats.Compression.WireBytesReceived += h.Length
	cs.wireRecvd.Add(h.Length)
	if ch.codec != codec.None {
		s.stats.Compression.FramesDecompressed++
		cs.decoded.Add(1)
	}
}

// compressedHeader is the prefix of a compressed DATA frame received.
type compressedHeader struct {
	codec   codec.Codec
	decoded int // the application bytes it carries
	block   int // the block's length on the wire
}

// readCompressedPrefix reads and checks a compressed DATA frame's prefix
// (SPEC.md 5.9), never reading past the frame.
func (s *Stream) readCompressedPrefix(br *bufio.Reader, h framing.Header, opening bool) (compressedHeader, error) {
	sess := s.sess
	fail := func(code framing.ErrorCode, format string, a ...any) (compressedHeader, error) {
		return compressedHeader{}, sess.protocolErr(code, fmt.Errorf("stream %d: compressed DATA: "+format, append([]any{s.id}, a...)...))
	}
	if h.Length < 2 {
		return fail(framing.ProtocolError, "payload of %d bytes has no room for its prefix", h.Length)
	}
	b, err := br.Peek(2)
	if err != nil {
		return compressedHeader{}, midFrame(err)
	}
	c := codec.Codec(b[0])
	if c == codec.None || !sess.compress.accepts.Has(c) {
		return fail(framing.ProtocolError, "codec %v, which this side did not announce (it accepts %v)", c, sess.compress.accepts)
	}
	prefix := 1 + 1<<(b[1]>>6) // a varint's length is in its first two bits
	if uint64(prefix) > h.Length {
		return fail(framing.ProtocolError, "prefix of %d bytes in a payload of %d", prefix, h.Length)
	}
	br.Discard(1)
	decoded, err := quicvarint.Read(br)
	if err != nil {
		return compressedHeader{}, midFrame(err)
	}
	fin := h.Flags&framing.FlagFIN != 0
	maxBlock := uint64(sess.compress.pool.MaxBlock())
	switch {
	case decoded == 0 && (!opening || fin || h.Length != uint64(prefix)):
		return fail(framing.ProtocolError, "decoded length 0 other than as an opening announcement")
	case decoded > maxBlock:
		return fail(framing.FrameSizeError, "decoded length %d exceeds %d", decoded, maxBlock)
	case decoded > 0 && h.Length > decoded:
		return fail(framing.ProtocolError, "payload of %d bytes is longer than the %d it decodes to", h.Length, decoded)
	}
	return compressedHeader{codec: c, decoded: int(decoded), block: int(h.Length) - prefix}, nil
}

// fillDecoded reads a compressed block from the lane and decodes it into
// the stream's buffer, whose free region holds exactly its decoded length
// n. It runs on the lane reader, outside the stream's lock.
func (s *Stream) fillDecoded(br *bufio.Reader, ch compressedHeader, n int) error {
	pool := s.sess.compress.pool
	dec, err := pool.Decoder(s.sess.done)
	if err != nil {
		if s.sess.isClosed() {
			return s.sess.err()
		}
		return s.sess.protocolErr(framing.InternalError, err)
	}
	defer pool.PutDecoder(dec)
	in := dec.Input(ch.block)
	if _, err := io.ReadFull(br, in); err != nil {
		return midFrame(err)
	}
	out, err := dec.Decode(ch.codec, in, ch.decoded)
	switch {
	case errors.Is(err, codec.ErrTooLarge):
		return s.sess.protocolErr(framing.FlowControlError, fmt.Errorf("stream %d: %w", s.id, err))
	case err != nil:
		return s.sess.protocolErr(framing.ProtocolError, fmt.Errorf("stream %d: %w", s.id, err))
	}
	for off := 0; off < n; {
		p1, p2 := s.fillRegion(off, n-off)
		off += copy(p1, out[off:])
		off += copy(p2, out[off:])
	}
	return nil
}
