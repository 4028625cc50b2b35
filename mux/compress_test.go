package mux

import (
	"bytes"
	"crypto/rand"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/internal/logtext"
	"github.com/bpmux/bp/transport"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestCompressionBothWays sends data each way on streams opened with each
// codec: the bytes arrive intact, the acceptor compresses its direction as
// the opener announced, compressible data shrinks on the wire and random
// data goes plain.
func TestCompressionBothWays(t *testing.T) {
	const size = 1 << 20
	for _, c := range []codec.Codec{codec.Zstd, codec.S2, codec.None} {
		for _, data := range []struct {
			name     string
			bytes    []byte
			minRatio float64
		}{{"logs", logtext.JSON(1, size), 3}, {"random", randomBytes(size), 0.99}} {
			t.Run(c.String()+"/"+data.name, func(t *testing.T) {
				p := newPair(t, nil, nil)
				cs, err := p.client.OpenStream(ctxT(t), StreamOptions{Compression: c})
				require.NoError(t, err)
				ss, err := p.server.Accept(ctxT(t))
				require.NoError(t, err)

				echo := make(chan error, 1)
				go func() { // the server sends the same bytes back
					_, err := io.Copy(ss, io.LimitReader(ss, size))
					if err == nil {
						err = ss.CloseWrite()
					}
					echo <- err
				}()
				wrote := make(chan error, 1)
				go func() {
					_, err := cs.Write(data.bytes)
					wrote <- err
				}()
				got := make([]byte, size)
				_, err = io.ReadFull(cs, got)
				require.NoError(t, err)
				require.NoError(t, <-echo)
				// A Write counts its last frame's wire bytes after the lane
				// write, which the echo can overtake.
				require.NoError(t, <-wrote)
				require.True(t, bytes.Equal(data.bytes, got), "the bytes came back intact")

				for side, st := range map[string]StreamStats{"client": cs.Stats(), "server": ss.Stats()} {
					cst := st.Compression
					assert.Equal(t, uint64(size), st.BytesSent, side)
					assert.Equal(t, c, cst.Codec, side)
					ratio := Ratio(st.BytesSent, cst.WireBytesSent)
					t.Logf("%s: ratio %.2f, %d frames compressed, %d plain", side, ratio, cst.FramesCompressed, cst.FramesPlain)
					switch {
					case c == codec.None:
						assert.Equal(t, uint64(size), cst.WireBytesSent, side)
						assert.Zero(t, cst.FramesCompressed+cst.FramesPlain, side)
					case data.name == "logs":
						assert.GreaterOrEqual(t, ratio, data.minRatio, side)
						assert.Zero(t, cst.FramesPlain, side)
					default: // random: plain, and the probe skips most tries
						assert.InDelta(t, 1.0, ratio, 0.001, side)
						assert.Zero(t, cst.FramesCompressed, side)
					}
				}
				sst := p.server.Stats().Compression
				assert.Equal(t, p.server.Stats().BytesReceived, uint64(size))
				if c != codec.None && data.name == "logs" {
					assert.Positive(t, sst.FramesDecompressed)
					assert.Positive(t, sst.CodecMemory)
					assert.Less(t, sst.WireBytesReceived, uint64(size)/3)
				}
			})
		}
	}
}

// TestCompressionCountsAppBytes checks that windows, credit and Consumed
// count the application's bytes, exactly, whatever the wire carried.
func TestCompressionCountsAppBytes(t *testing.T) {
	const window = 128 << 10
	cfg := &Config{InitialWindow: window, MaxWindow: window, Compression: codec.Zstd}
	p := newPair(t, cfg, cfg)
	cs, err := p.client.Open(ctxT(t))
	require.NoError(t, err)
	const sent = 100_000
	data := logtext.JSON(1, sent)
	_, err = cs.Write(data)
	require.NoError(t, err)
	ss, err := p.server.Accept(ctxT(t))
	require.NoError(t, err)
	waitFor(t, "the data to arrive", func() bool { return ss.Stats().BytesReceived == sent })

	st := ss.Stats()
	assert.Equal(t, uint64(sent), st.Buffered, "the buffer holds decoded bytes")
	assert.Equal(t, uint64(window), st.RecvLimit)
	assert.Less(t, st.Compression.WireBytesReceived, uint64(sent)/3)
	assert.Equal(t, st.Compression.WireBytesReceived, cs.Stats().Compression.WireBytesSent)

	got := make([]byte, sent)
	_, err = io.ReadFull(ss, got)
	require.NoError(t, err)
	require.Equal(t, data, got)
	// 100,000 consumed is more than a quarter of the window: the update
	// grants consumed + window, in application bytes.
	waitFor(t, "the update", func() bool { return cs.Stats().PeerConsumed == sent })
	cst := cs.Stats()
	assert.Equal(t, uint64(sent+window), cst.SendLimit)
	assert.Equal(t, uint64(window), cst.SendCredit)
	assert.Equal(t, uint64(sent), cst.BytesSent)
	assert.Zero(t, cst.ConsumerLag)
	st = ss.Stats()
	assert.Equal(t, uint64(sent), st.BytesConsumed)
	assert.Equal(t, uint64(sent+window), st.RecvLimit)
}

// TestCompressionRequestResponse makes 200 exchanges of 1 KiB each way
// on a compressed stream: each Write goes out at once, without waiting
// for more data, so the other side can answer it.
func TestCompressionRequestResponse(t *testing.T) {
	for _, c := range []codec.Codec{codec.Zstd, codec.S2} {
		t.Run(c.String(), func(t *testing.T) {
			p := newPair(t, nil, nil)
			cs, err := p.client.OpenStream(ctxT(t), StreamOptions{Compression: c})
			require.NoError(t, err)
			ss, err := p.server.Accept(ctxT(t))
			require.NoError(t, err)
			go func() {
				buf := make([]byte, 1024)
				for {
					if _, err := io.ReadFull(ss, buf); err != nil {
						return
					}
					if _, err := ss.Write(buf); err != nil {
						return
					}
				}
			}()
			logs := logtext.JSON(1, 200<<10)
			resp := make([]byte, 1024)
			require.NoError(t, cs.SetDeadline(time.Now().Add(time.Minute)))
			for i := range 200 {
				req := logs[i*1024 : (i+1)*1024]
				_, err := cs.Write(req)
				require.NoError(t, err)
				_, err = io.ReadFull(cs, resp)
				require.NoError(t, err, "exchange %d", i)
				require.Equal(t, req, resp)
			}
			st := cs.Stats().Compression
			assert.Equal(t, uint64(200), st.FramesCompressed, "every 1 KiB request went out compressed, as one frame")
			// The answer's Write counts its frame after the lane write, which
			// the client may have read before the count.
			waitFor(t, "every answer counted", func() bool { return ss.Stats().Compression.FramesCompressed >= 200 })
			assert.Equal(t, uint64(200), ss.Stats().Compression.FramesCompressed, "and so did every answer")
		})
	}
}

// TestCompressionNotAccepted: a peer that accepts no codec gets plain
// frames, and says so.
func TestCompressionNotAccepted(t *testing.T) {
	p := newPair(t, &Config{Compression: codec.Zstd}, &Config{NoDecompression: true})
	cs, err := p.client.Open(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, codec.Set(0), p.client.PeerCompression())
	assert.ErrorIs(t, cs.SetCompression(codec.S2), ErrCodecNotAccepted)
	data := logtext.JSON(1, 256<<10)
	go cs.Write(data)
	ss, err := p.server.Accept(ctxT(t))
	require.NoError(t, err)
	got := make([]byte, len(data))
	_, err = io.ReadFull(ss, got)
	require.NoError(t, err)
	assert.Equal(t, data, got)
	st := cs.Stats()
	assert.Equal(t, codec.None, st.Compression.Codec)
	assert.Equal(t, st.BytesSent, st.Compression.WireBytesSent)
	assert.Zero(t, st.Compression.FramesPlain+st.Compression.FramesCompressed, "a stream the peer cannot take compressed is not a compressing stream")
	assert.Zero(t, p.server.Stats().Compression.CodecMemory, "a session that accepts nothing holds no decoder")
}

// compressedData is a compressed DATA frame with the given prefix and block.
func compressedData(id uint64, c codec.Codec, decoded int, block []byte) []byte {
	payload := append(codec.AppendPrefix(nil, c, decoded), block...)
	return append(rfHeader(framing.TypeData, framing.FlagCompressed, id, uint64(len(payload))), payload...)
}

func zstdBlock(t *testing.T, p []byte) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	require.NoError(t, err)
	return enc.EncodeAll(p, nil)
}

// TestAttackCompression: bombs and malformed compressed frames from a raw
// peer close the session with the right code, and the victim's memory
// stays within its budget.
func TestAttackCompression(t *testing.T) {
	const iw = 64 << 10
	srv := newRawServer(t, &Config{InitialWindow: iw, MaxWindow: iw, SessionBudget: 4 << 20, KeepAliveInterval: -1}, transport.QUICConfig{})
	zeros := make([]byte, 64<<20)
	zstdBomb, s2Bomb := zstdBlock(t, zeros), s2.Encode(nil, zeros[:4<<20])
	t.Logf("bombs: zstd %d bytes for %d, s2 %d bytes for %d", len(zstdBomb), len(zeros), len(s2Bomb), 4<<20)
	open := func(p *rawPeer) *rawLane { return p.openStream() }
	for _, tc := range []struct {
		name  string
		frame func(id uint64) []byte
		want  framing.ErrorCode
	}{
		// A bomb that declares what it is exceeds the credit (or the
		// block limit) and is refused before anything is decoded.
		{"zstd bomb declared honestly", func(id uint64) []byte { return compressedData(id, codec.Zstd, len(zeros), zstdBomb) }, framing.FrameSizeError},
		{"zstd declares more than the credit", func(id uint64) []byte {
			return compressedData(id, codec.Zstd, iw+1, zstdBlock(t, zeros[:iw+1]))
		}, framing.FrameSizeError},
		// A bomb that lies about its size is stopped at the size it declared.
		{"zstd bomb declared as 60000 bytes", func(id uint64) []byte { return compressedData(id, codec.Zstd, 60000, zstdBomb) }, framing.FlowControlError},
		// Its 7 KiB on the wire are more than 1000: refused as not compressed.
		{"zstd bomb declared as 1000 bytes", func(id uint64) []byte { return compressedData(id, codec.Zstd, 1000, zstdBomb) }, framing.ProtocolError},
		{"s2 bomb declared as 1000 bytes", func(id uint64) []byte { return compressedData(id, codec.S2, 1000, s2Bomb) }, framing.FlowControlError},
		{"s2 bomb declared as 60000 bytes", func(id uint64) []byte { return compressedData(id, codec.S2, 60000, s2Bomb) }, framing.FlowControlError},
		{"zstd decodes to fewer bytes", func(id uint64) []byte { return compressedData(id, codec.Zstd, 5000, zstdBlock(t, zeros[:4000])) }, framing.ProtocolError},
		{"corrupt s2 block", func(id uint64) []byte {
			return compressedData(id, codec.S2, 5000, append([]byte{0x88, 0x27}, randomBytes(100)...))
		}, framing.ProtocolError},
		{"unknown codec", func(id uint64) []byte { return compressedData(id, codec.Codec(9), 5000, s2.Encode(nil, zeros[:5000])) }, framing.ProtocolError},
		{"payload longer than it decodes to", func(id uint64) []byte { return compressedData(id, codec.S2, 10, randomBytes(100)) }, framing.ProtocolError},
		{"announcement after the opening frame", func(id uint64) []byte { return compressedData(id, codec.Zstd, 0, nil) }, framing.ProtocolError},
		{"prefix cut short", func(id uint64) []byte {
			return append(rfHeader(framing.TypeData, framing.FlagCompressed, id, 2), byte(codec.S2), 0x40)
		}, framing.ProtocolError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := srv.dial(t, nil)
			p.settings(rawSettings)
			l := open(p)
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			require.NoError(t, l.write(tc.frame(l.ID)))
			p.expectClose(tc.want)
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			p.checkBudget()
			grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("heap grew %d bytes", grew)
			assert.Less(t, grew, int64(4<<20), "the victim's heap stays within its 4 MiB budget")
		})
	}

	t.Run("compressed DATA to a session that accepts none", func(t *testing.T) {
		srv := newRawServer(t, &Config{NoDecompression: true, KeepAliveInterval: -1}, transport.QUICConfig{})
		p := srv.dial(t, nil)
		p.settings(rawSettings)
		l := p.openStream()
		require.NoError(t, l.write(compressedData(l.ID, codec.S2, 5000, s2.Encode(nil, zeros[:5000]))))
		p.expectClose(framing.ProtocolError)
	})
}

// TestCompressionFromRawPeer: a raw peer's well-formed compressed frames,
// of both codecs, arrive as the bytes they encode, and count as such.
func TestCompressionFromRawPeer(t *testing.T) {
	srv := newRawServer(t, &Config{KeepAliveInterval: -1}, transport.QUICConfig{})
	p := srv.dial(t, nil)
	settings := rawSettings
	settings.Compression = uint64(codec.Supported)
	p.settings(settings)
	l := p.openLane()
	data := logtext.JSON(1, 30000)
	require.NoError(t, l.write(
		compressedData(l.ID, codec.Zstd, 0, nil), // the announcement
		compressedData(l.ID, codec.S2, 10000, s2.Encode(nil, data[:10000])),
		compressedData(l.ID, codec.Zstd, 10000, zstdBlock(t, data[10000:20000])),
		rfData(l.ID, data[20000:], true),
	))
	s := acceptStream(t, p.sess)
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, data, got)
	st := s.Stats()
	assert.Equal(t, uint64(30000), st.BytesReceived)
	assert.Equal(t, uint64(2), st.Compression.FramesDecompressed)
	assert.Equal(t, codec.Zstd, st.Compression.Codec, "the acceptor mirrors the announced codec")
}
