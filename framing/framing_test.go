package framing_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/bpmux/bp/framing"
	"github.com/quic-go/quic-go/quicvarint"
)

const maxV = framing.MaxVarint

// roundTripFrames covers every frame type with small, boundary and maximal
// field values.
var roundTripFrames = []framing.Frame{
	{Header: hdr(framing.TypeData, 0, 1, 0), Data: []byte{}},
	{Header: hdr(framing.TypeData, framing.FlagFIN, 2, 0), Data: []byte{}},
	{Header: hdr(framing.TypeData, 0, 63, 0), Data: []byte("x")},
	{Header: hdr(framing.TypeData, framing.FlagFIN, 64, 0), Data: bytes.Repeat([]byte{0xa5}, 16383)},
	{Header: hdr(framing.TypeData, 0, maxV, 0), Data: bytes.Repeat([]byte{1}, 16384)},
	{Header: hdr(framing.TypeData, framing.FlagFIN, 1<<30, 0), Data: make([]byte, framing.MaxDataPayload)},
	{Header: hdr(framing.TypeWindowUpdate, 0, 1, 0), Offset: 0},
	{Header: hdr(framing.TypeWindowUpdate, 0, 1, 0), Offset: 65536, Consumed: 1},
	{Header: hdr(framing.TypeWindowUpdate, 0, 3, 0), Offset: 1 << 40, Consumed: 1<<40 - 1<<24},
	{Header: hdr(framing.TypeWindowUpdate, 0, maxV, 0), Offset: maxV, Consumed: maxV},
	{Header: hdr(framing.TypeBlocked, 0, 5, 0), Offset: 1<<30 - 1},
	{Header: hdr(framing.TypeBlocked, 0, 6, 0), Offset: 1 << 30},
	{Header: hdr(framing.TypeReset, 0, 7, 0), ErrorCode: framing.NoError},
	{Header: hdr(framing.TypeReset, 0, 8, 0), ErrorCode: framing.ErrorCode(maxV)},
	{Header: hdr(framing.TypeStopSending, 0, 9, 0), ErrorCode: framing.Cancel},
	{Header: hdr(framing.TypeStopSending, 0, 1000000, 0), ErrorCode: framing.KeepaliveTimeout},
	{Header: hdr(framing.TypePing, 0, 0, 0)},
	{Header: hdr(framing.TypePing, framing.FlagACK, 0, 0), PingData: [8]byte{0xff, 0, 0xff, 0, 1, 2, 3, 4}},
	{Header: hdr(framing.TypeGoAway, 0, 0, 0)},
	{Header: hdr(framing.TypeGoAway, 0, 0, 0), LastStreamID: maxV, ErrorCode: framing.ErrorCode(maxV)},
	{Header: hdr(framing.TypeSettings, 0, 0, 0)},
	{Header: hdr(framing.TypeSettings, 0, 0, 0), Settings: framing.Settings{InitialWindow: 65536}},
	{Header: hdr(framing.TypeSettings, 0, 0, 0), Settings: framing.Settings{MaxFramePayload: framing.MaxDataPayload}},
	{Header: hdr(framing.TypeSettings, 0, 0, 0), Settings: framing.Settings{MaxStreams: 1}},
	{Header: hdr(framing.TypeSettings, 0, 0, 0), Settings: framing.Settings{InitialWindow: maxV, MaxFramePayload: 16384, MaxStreams: maxV}},
}

func TestRoundTrip(t *testing.T) {
	for _, want := range roundTripFrames {
		t.Run(want.Type.String(), func(t *testing.T) {
			wire := encodeFrame(t, &want)

			// ReadHeader over a bytes.Reader.
			var got framing.Frame
			r := bytes.NewReader(wire)
			if err := readFrame(r, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if r.Len() != 0 {
				t.Fatalf("%d bytes left", r.Len())
			}
			if got.Length != uint64(len(wire)-headerLen(t, wire)) {
				t.Fatalf("Length %d does not match the payload", got.Length)
			}
			want.Length = got.Length
			if !equalFrames(got, want) {
				t.Fatalf("decoded %+v, want %+v", got.Header, want.Header)
			}

			// ParseHeader + DecodePayload.
			h, n, err := framing.ParseHeader(wire)
			if err != nil || h != got.Header || n != headerLen(t, wire) {
				t.Fatalf("ParseHeader = %+v, %d, %v", h, n, err)
			}
			if h.Type != framing.TypeData {
				var f2 framing.Frame
				if err := framing.DecodePayload(&f2, h, wire[n:]); err != nil || !equalFrames(f2, want) {
					t.Fatalf("DecodePayload = %+v, %v", f2, err)
				}
			}
		})
	}
}

// headerLen returns the length of the header at the start of wire, from the
// varint length prefixes alone.
func headerLen(t testing.TB, wire []byte) int {
	t.Helper()
	n := 2
	for range 2 {
		_, l, err := quicvarint.Parse(wire[n:])
		if err != nil {
			t.Fatalf("header of %x: %v", wire, err)
		}
		n += l
	}
	return n
}

func TestReadHeaderMatchesParseHeader(t *testing.T) {
	var all []string
	for _, v := range vectors {
		all = append(all, v.hex)
	}
	for _, v := range altVectors {
		all = append(all, v.hex)
	}
	for _, v := range skipVectors {
		all = append(all, v.hex)
	}
	for _, v := range badVectors {
		all = append(all, v.hex)
	}
	for _, s := range all {
		wire := mustHex(t, s)
		r := bytes.NewReader(wire)
		h1, err1 := framing.ReadHeader(r)
		h2, n, err2 := framing.ParseHeader(wire)
		if h1 != h2 || (err1 == nil) != (err2 == nil) {
			t.Errorf("%s: ReadHeader = %+v, %v; ParseHeader = %+v, %v", s, h1, err1, h2, err2)
		}
		if err1 == nil && len(wire)-r.Len() != n {
			t.Errorf("%s: ReadHeader consumed %d bytes, ParseHeader %d", s, len(wire)-r.Len(), n)
		}
	}
}

func TestHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    framing.Header
		err  error // nil: valid
	}{
		{"DATA on stream 0", hdr(framing.TypeData, 0, 0, 0), framing.ErrMalformed},
		{"WINDOW_UPDATE on stream 0", hdr(framing.TypeWindowUpdate, 0, 0, 1), framing.ErrMalformed},
		{"BLOCKED on stream 0", hdr(framing.TypeBlocked, 0, 0, 1), framing.ErrMalformed},
		{"RESET on stream 0", hdr(framing.TypeReset, 0, 0, 1), framing.ErrMalformed},
		{"STOP_SENDING on stream 0", hdr(framing.TypeStopSending, 0, 0, 1), framing.ErrMalformed},
		{"PING on stream 1", hdr(framing.TypePing, 0, 1, 8), framing.ErrMalformed},
		{"GOAWAY on stream 3", hdr(framing.TypeGoAway, 0, 3, 2), framing.ErrMalformed},
		{"SETTINGS on stream max", hdr(framing.TypeSettings, 0, maxV, 0), framing.ErrMalformed},
		{"DATA flags 0x04", hdr(framing.TypeData, 0x04, 1, 0), framing.ErrMalformed},
		{"DATA flags 0x80", hdr(framing.TypeData, 0x81, 1, 0), framing.ErrMalformed},
		{"WINDOW_UPDATE flags 0x02", hdr(framing.TypeWindowUpdate, 0x02, 1, 1), framing.ErrMalformed},
		{"BLOCKED flags 0x01", hdr(framing.TypeBlocked, 0x01, 1, 1), framing.ErrMalformed},
		{"RESET flags 0x02", hdr(framing.TypeReset, 0x02, 1, 1), framing.ErrMalformed},
		{"STOP_SENDING flags 0x40", hdr(framing.TypeStopSending, 0x40, 1, 1), framing.ErrMalformed},
		{"PING flags 0x03", hdr(framing.TypePing, 0x03, 0, 8), framing.ErrMalformed},
		{"GOAWAY flags 0x02", hdr(framing.TypeGoAway, 0x02, 0, 2), framing.ErrMalformed},
		{"SETTINGS flags 0x01", hdr(framing.TypeSettings, 0x01, 0, 0), framing.ErrMalformed},
		{"WINDOW_UPDATE Length 257", hdr(framing.TypeWindowUpdate, 0, 1, 257), framing.ErrFrameSize},
		{"SETTINGS Length max", hdr(framing.TypeSettings, 0, 0, maxV), framing.ErrFrameSize},
		{"PING Length 257", hdr(framing.TypePing, 0, 0, 257), framing.ErrFrameSize},
		{"DATA Length 2^24+1", hdr(framing.TypeData, 0, 1, framing.MaxDataPayload+1), framing.ErrFrameSize},
		{"DATA Length max", hdr(framing.TypeData, framing.FlagFIN, 1, maxV), framing.ErrFrameSize},
		{"unknown Length 257", hdr(0x08, 0, 0, 257), framing.ErrFrameSize},
		// Valid headers at the limits.
		{"WINDOW_UPDATE Length 256", hdr(framing.TypeWindowUpdate, 0, 1, 256), nil},
		{"DATA Length 2^24", hdr(framing.TypeData, framing.FlagFIN, maxV, framing.MaxDataPayload), nil},
		{"unknown type 0x08 Length 256", hdr(0x08, 0xff, 0, 256), nil},
		{"unknown type 0xff on a stream", hdr(0xff, 0, 9, 0), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire := framing.AppendHeader(nil, tc.h)
			h, err := framing.ReadHeader(bytes.NewReader(wire))
			checkErr(t, "ReadHeader", err, tc.err)
			if h != tc.h {
				t.Errorf("ReadHeader returned %+v, want %+v", h, tc.h)
			}
			_, _, err = framing.ParseHeader(wire)
			checkErr(t, "ParseHeader", err, tc.err)
		})
	}
}

func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Errorf("%s: unexpected error %v", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

func TestPayloadErrors(t *testing.T) {
	v := func(x uint64) []byte { return quicvarint.Append(nil, x) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name    string
		typ     framing.Type
		id      uint64
		payload []byte
	}{
		{"WINDOW_UPDATE empty", framing.TypeWindowUpdate, 1, nil},
		{"WINDOW_UPDATE without Consumed", framing.TypeWindowUpdate, 1, v(5)},
		{"WINDOW_UPDATE trailing", framing.TypeWindowUpdate, 1, cat(v(5), v(0), []byte{0})},
		{"WINDOW_UPDATE truncated Consumed", framing.TypeWindowUpdate, 1, cat(v(5), v(1 << 20)[:3])},
		{"WINDOW_UPDATE truncated 8-byte varint", framing.TypeWindowUpdate, 1, v(maxV)[:7]},
		{"BLOCKED empty", framing.TypeBlocked, 1, nil},
		{"BLOCKED trailing", framing.TypeBlocked, 1, cat(v(5), v(5))},
		{"RESET empty", framing.TypeReset, 1, nil},
		{"RESET trailing", framing.TypeReset, 1, cat(v(6), []byte{0})},
		{"STOP_SENDING truncated", framing.TypeStopSending, 1, []byte{0x80, 0}},
		{"STOP_SENDING trailing", framing.TypeStopSending, 1, cat(v(6), []byte{0})},
		{"PING empty", framing.TypePing, 0, nil},
		{"PING 7 bytes", framing.TypePing, 0, make([]byte, 7)},
		{"PING 9 bytes", framing.TypePing, 0, make([]byte, 9)},
		{"GOAWAY empty", framing.TypeGoAway, 0, nil},
		{"GOAWAY no code", framing.TypeGoAway, 0, v(7)},
		{"GOAWAY trailing", framing.TypeGoAway, 0, cat(v(7), v(0), v(0))},
		{"SETTINGS odd", framing.TypeSettings, 0, cat(v(1), v(65536), v(2))},
		{"SETTINGS truncated value", framing.TypeSettings, 0, cat(v(1), v(65536)[:2])},
		{"SETTINGS_MAX_FRAME_PAYLOAD 2^24+1", framing.TypeSettings, 0, cat(v(2), v(framing.MaxDataPayload+1))},
		{"SETTINGS_MAX_FRAME_PAYLOAD max", framing.TypeSettings, 0, cat(v(1), v(65536), v(2), v(maxV))},
		{"control payload of 256 bytes", framing.TypeWindowUpdate, 1, cat(v(1), make([]byte, 255))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hdr(tc.typ, 0, tc.id, uint64(len(tc.payload)))
			wire := append(framing.AppendHeader(nil, h), tc.payload...)
			var f framing.Frame
			err := readFrame(bytes.NewReader(wire), &f)
			if !errors.Is(err, framing.ErrMalformed) {
				t.Fatalf("decode %x: %v, want ErrMalformed", wire, err)
			}
			// ParseHeader + DecodePayload agree.
			h2, n, err := framing.ParseHeader(wire)
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if err := framing.DecodePayload(&f, h2, wire[n:]); !errors.Is(err, framing.ErrMalformed) {
				t.Fatalf("DecodePayload: %v, want ErrMalformed", err)
			}
		})
	}
}

func TestDecodePayloadMisuse(t *testing.T) {
	var f framing.Frame
	// Payload length differs from the header's Length.
	h := hdr(framing.TypeWindowUpdate, 0, 1, 2)
	if err := framing.DecodePayload(&f, h, []byte{5}); !errors.Is(err, framing.ErrMalformed) {
		t.Errorf("short payload: %v", err)
	}
	if err := framing.DecodePayload(&f, h, []byte{0x40, 5, 0}); !errors.Is(err, framing.ErrMalformed) {
		t.Errorf("long payload: %v", err)
	}
	// DATA payloads are not decoded by DecodePayload.
	if err := framing.DecodePayload(&f, hdr(framing.TypeData, 0, 1, 1), []byte{1}); !errors.Is(err, framing.ErrMalformed) {
		t.Errorf("DATA: %v", err)
	}
	// Unknown types decode to nothing, and leave the typed fields alone.
	f = framing.Frame{Offset: 42}
	if err := framing.DecodePayload(&f, hdr(0x30, 0, 0, 3), []byte{1, 2, 3}); err != nil {
		t.Errorf("unknown type: %v", err)
	}
	if f.Offset != 42 || f.Type != 0x30 {
		t.Errorf("unknown type changed the frame to %+v", f)
	}
	// SETTINGS resets fields missing from the frame.
	f = framing.Frame{Settings: framing.Settings{InitialWindow: 1, MaxFramePayload: 2, MaxStreams: 3}}
	if err := framing.DecodePayload(&f, hdr(framing.TypeSettings, 0, 0, 2), []byte{3, 9}); err != nil {
		t.Fatal(err)
	}
	if f.Settings != (framing.Settings{MaxStreams: 9}) {
		t.Errorf("SETTINGS decoded into a used frame: %+v", f.Settings)
	}
}

func TestSettingsDetails(t *testing.T) {
	v := func(x uint64) []byte { return quicvarint.Append(nil, x) }
	for _, tc := range []struct {
		name    string
		payload []byte
		want    framing.Settings
	}{
		{"unknown identifiers are ignored", bytes.Join([][]byte{v(0x21), v(maxV), v(1), v(65536), v(maxV), v(0)}, nil),
			framing.Settings{InitialWindow: 65536}},
		{"identifier 0 is ignored", bytes.Join([][]byte{v(0), v(7)}, nil), framing.Settings{}},
		{"a repeated identifier: the last value wins", bytes.Join([][]byte{v(3), v(10), v(3), v(20)}, nil),
			framing.Settings{MaxStreams: 20}},
		{"an explicit zero is the default", bytes.Join([][]byte{v(1), v(0), v(2), v(0), v(3), v(0)}, nil),
			framing.Settings{}},
		{"any order", bytes.Join([][]byte{v(3), v(1), v(2), v(16384), v(1), v(70000)}, nil),
			framing.Settings{InitialWindow: 70000, MaxFramePayload: 16384, MaxStreams: 1}},
		{"MAX_FRAME_PAYLOAD at 2^24", bytes.Join([][]byte{v(2), v(framing.MaxDataPayload)}, nil),
			framing.Settings{MaxFramePayload: framing.MaxDataPayload}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hdr(framing.TypeSettings, 0, 0, uint64(len(tc.payload)))
			var f framing.Frame
			if err := framing.DecodePayload(&f, h, tc.payload); err != nil {
				t.Fatal(err)
			}
			if f.Settings != tc.want {
				t.Fatalf("got %+v, want %+v", f.Settings, tc.want)
			}
		})
	}
}

// TestNonMinimalVarints: QUIC allows a varint in any of the lengths that can
// hold its value; so does bp/1, in the header and in payloads.
func TestNonMinimalVarints(t *testing.T) {
	w := func(x uint64, n int) []byte { return quicvarint.AppendWithLen(nil, x, n) }
	for _, n := range []int{1, 2, 4, 8} {
		for _, tc := range []struct {
			typ     framing.Type
			id      uint64
			payload []byte
			check   func(f *framing.Frame) bool
		}{
			{framing.TypeWindowUpdate, 1, append(w(37, n), w(10, n)...), func(f *framing.Frame) bool { return f.Offset == 37 && f.Consumed == 10 }},
			{framing.TypeBlocked, 3, w(0, n), func(f *framing.Frame) bool { return f.Offset == 0 }},
			{framing.TypeReset, 5, w(6, n), func(f *framing.Frame) bool { return f.ErrorCode == framing.Cancel }},
			{framing.TypeStopSending, 5, w(1, n), func(f *framing.Frame) bool { return f.ErrorCode == framing.ProtocolError }},
			{framing.TypeGoAway, 0, append(w(9, n), w(0, n)...), func(f *framing.Frame) bool { return f.LastStreamID == 9 && f.ErrorCode == 0 }},
			{framing.TypeSettings, 0, append(w(3, n), w(50, n)...), func(f *framing.Frame) bool { return f.Settings.MaxStreams == 50 }},
			{framing.TypePing, 0, make([]byte, 8), func(f *framing.Frame) bool { return f.PingData == [8]byte{} }},
		} {
			wire := []byte{byte(tc.typ), 0}
			wire = append(wire, w(tc.id, n)...)
			wire = append(wire, w(uint64(len(tc.payload)), n)...)
			wire = append(wire, tc.payload...)
			var f framing.Frame
			r := bytes.NewReader(wire)
			if err := readFrame(r, &f); err != nil || !tc.check(&f) || f.StreamID != tc.id || r.Len() != 0 {
				t.Errorf("%v with %d-byte varints %x: %+v, %v", tc.typ, n, wire, f, err)
			}
			if h, hn, err := framing.ParseHeader(wire); err != nil || h != f.Header || hn != 2+2*n {
				t.Errorf("ParseHeader(%x) = %+v, %d, %v", wire, h, hn, err)
			}
			// The re-encoding is minimal and decodes to the same frame.
			re := encodeFrame(t, &f)
			if n == 1 && !bytes.Equal(re, wire) {
				t.Errorf("minimal %x re-encoded to %x", wire, re)
			}
			var g framing.Frame
			if err := readFrame(bytes.NewReader(re), &g); err != nil || g.Length > f.Length {
				t.Errorf("re-encoding %x: %+v, %v", re, g, err)
			}
			g.Length = f.Length
			if !equalFrames(f, g) {
				t.Errorf("re-encoding of %x decodes to %+v, want %+v", wire, g, f)
			}
		}
	}
}

// TestTruncated: every proper prefix of a valid frame is an
// io.ErrUnexpectedEOF (io.EOF for the empty prefix, which is a clean end of
// the lane between frames), never a panic or another error.
func TestTruncated(t *testing.T) {
	var all [][]byte
	for _, v := range vectors {
		all = append(all, mustHex(t, v.hex))
	}
	for _, v := range altVectors {
		all = append(all, mustHex(t, v.hex))
	}
	for _, f := range roundTripFrames {
		if len(f.Data) < 1<<16 {
			all = append(all, encodeFrame(t, &f))
		}
	}
	for _, wire := range all {
		hl := headerLen(t, wire)
		for i := range len(wire) {
			prefix := wire[:i]
			want := io.ErrUnexpectedEOF
			if i == 0 {
				want = io.EOF
			}
			var f framing.Frame
			if err := readFrame(bytes.NewReader(prefix), &f); err != want {
				t.Errorf("readFrame(%x) = %v, want %v", prefix, err, want)
			}
			_, err := framing.ReadHeader(bytes.NewReader(prefix))
			if i < hl && err != want {
				t.Errorf("ReadHeader(%x) = %v, want %v", prefix, err, want)
			}
			_, _, err = framing.ParseHeader(prefix)
			if i < hl && err != io.ErrUnexpectedEOF {
				t.Errorf("ParseHeader(%x) = %v, want io.ErrUnexpectedEOF", prefix, err)
			}
			if i >= hl {
				h, _, err := framing.ParseHeader(wire)
				if err != nil {
					t.Fatal(err)
				}
				if h.Type != framing.TypeData {
					if err := framing.DecodePayload(&f, h, wire[hl:i]); !errors.Is(err, framing.ErrMalformed) {
						t.Errorf("DecodePayload of a truncated payload %x: %v", wire[hl:i], err)
					}
				}
			}
		}
	}
}

// errReader fails after its data with a non-EOF error.
type errReader struct {
	b   []byte
	err error
}

func (r *errReader) ReadByte() (byte, error) {
	if len(r.b) == 0 {
		return 0, r.err
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

func TestReadHeaderPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	wire := mustHex(t, "010001088001800080008000")
	for i := range 4 {
		_, err := framing.ReadHeader(&errReader{b: wire[:i], err: boom})
		if err != boom {
			t.Errorf("after %d bytes: %v, want the reader's error", i, err)
		}
	}
}

func TestAppendFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    framing.Frame
		err  error
	}{
		{"DATA on stream 0", framing.Frame{Header: hdr(framing.TypeData, 0, 0, 0)}, framing.ErrMalformed},
		{"RESET on stream 0", framing.Frame{Header: hdr(framing.TypeReset, 0, 0, 0)}, framing.ErrMalformed},
		{"PING on stream 1", framing.Frame{Header: hdr(framing.TypePing, 0, 1, 0)}, framing.ErrMalformed},
		{"SETTINGS on stream 2", framing.Frame{Header: hdr(framing.TypeSettings, 0, 2, 0)}, framing.ErrMalformed},
		{"DATA flag 0x04", framing.Frame{Header: hdr(framing.TypeData, 0x04, 1, 0)}, framing.ErrMalformed},
		{"GOAWAY flag 0x02", framing.Frame{Header: hdr(framing.TypeGoAway, 0x02, 0, 0)}, framing.ErrMalformed},
		{"unknown type", framing.Frame{Header: hdr(0x08, 0, 0, 0)}, framing.ErrMalformed},
		{"stream ID 2^62", framing.Frame{Header: hdr(framing.TypeWindowUpdate, 0, maxV+1, 0)}, framing.ErrMalformed},
		{"Offset 2^62", framing.Frame{Header: hdr(framing.TypeWindowUpdate, 0, 1, 0), Offset: maxV + 1}, framing.ErrMalformed},
		{"ErrorCode 2^64-1", framing.Frame{Header: hdr(framing.TypeReset, 0, 1, 0), ErrorCode: ^framing.ErrorCode(0)}, framing.ErrMalformed},
		{"Consumed 2^62", framing.Frame{Header: hdr(framing.TypeWindowUpdate, 0, 1, 0), Consumed: maxV + 1}, framing.ErrMalformed},
		{"LastStreamID 2^62", framing.Frame{Header: hdr(framing.TypeGoAway, 0, 0, 0), LastStreamID: maxV + 1}, framing.ErrMalformed},
		{"InitialWindow 2^62", framing.Frame{Header: hdr(framing.TypeSettings, 0, 0, 0), Settings: framing.Settings{InitialWindow: maxV + 1}}, framing.ErrMalformed},
		{"DATA 2^24+1 bytes", framing.Frame{Header: hdr(framing.TypeData, 0, 1, 0), Data: make([]byte, framing.MaxDataPayload+1)}, framing.ErrFrameSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("keep")
			b, err := framing.AppendFrame(prefix, &tc.f)
			if !errors.Is(err, tc.err) {
				t.Fatalf("AppendFrame: %v, want %v", err, tc.err)
			}
			if string(b) != "keep" {
				t.Fatalf("AppendFrame appended %x on error", b[len(prefix):])
			}
		})
	}
}

func TestAppendFrameAppends(t *testing.T) {
	b := []byte("prefix")
	b, err := framing.AppendFrame(b, &framing.Frame{Header: hdr(framing.TypePing, framing.FlagACK, 0, 99)})
	if err != nil {
		t.Fatal(err)
	}
	// The Length in the frame is ignored: it is computed from the payload.
	if want := "prefix" + string(mustHex(t, "050100080000000000000000")); string(b) != want {
		t.Fatalf("got %x, want %x", b, want)
	}
}

func TestNames(t *testing.T) {
	for typ, name := range map[framing.Type]string{
		framing.TypeData: "DATA", framing.TypeWindowUpdate: "WINDOW_UPDATE", framing.TypeBlocked: "BLOCKED",
		framing.TypeReset: "RESET", framing.TypeStopSending: "STOP_SENDING", framing.TypePing: "PING",
		framing.TypeGoAway: "GOAWAY", framing.TypeSettings: "SETTINGS", 0x08: "UNKNOWN(0x08)", 0xff: "UNKNOWN(0xff)",
	} {
		if typ.String() != name {
			t.Errorf("%d.String() = %q, want %q", uint8(typ), typ.String(), name)
		}
		if typ.Known() == strings.HasPrefix(name, "UNKNOWN") {
			t.Errorf("%v.Known() = %v", typ, typ.Known())
		}
		if typ.IsStreamFrame() != (typ <= framing.TypeStopSending) {
			t.Errorf("%v.IsStreamFrame() = %v", typ, typ.IsStreamFrame())
		}
	}
	for code, name := range map[framing.ErrorCode]string{
		framing.NoError: "NO_ERROR", framing.ProtocolError: "PROTOCOL_ERROR", framing.FlowControlError: "FLOW_CONTROL_ERROR",
		framing.FrameSizeError: "FRAME_SIZE_ERROR", framing.InternalError: "INTERNAL_ERROR", framing.RefusedStream: "REFUSED_STREAM",
		framing.Cancel: "CANCEL", framing.StreamLimitError: "STREAM_LIMIT_ERROR", framing.SettingsError: "SETTINGS_ERROR",
		framing.EnhanceYourCalm: "ENHANCE_YOUR_CALM", framing.KeepaliveTimeout: "KEEPALIVE_TIMEOUT", 0xb: "ERROR(0xb)",
	} {
		if code.String() != name {
			t.Errorf("%d.String() = %q, want %q", uint64(code), code.String(), name)
		}
	}
}
