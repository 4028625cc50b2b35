package framing_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/bpmux/bp/framing"
	"github.com/quic-go/quic-go/quicvarint"
)

// The test vectors of SPEC.md, section "Test vectors". Every hex string here
// appears verbatim in SPEC.md (TestVectorsInSpec checks it), so the spec and
// the codec cannot drift apart silently.

// vector is a canonical frame: it decodes to frame and frame encodes to
// exactly hex.
type vector struct {
	name  string
	hex   string
	frame framing.Frame // Header.Length is checked on decode; Data is the DATA payload
}

func hdr(t framing.Type, fl framing.Flags, id, length uint64) framing.Header {
	return framing.Header{Type: t, Flags: fl, StreamID: id, Length: length}
}

var vectors = []vector{
	{
		name:  "DATA opening frame, empty, stream 1",
		hex:   "00000100",
		frame: framing.Frame{Header: hdr(framing.TypeData, 0, 1, 0), Data: []byte{}},
	},
	{
		name:  "DATA with payload \"hello\", stream 1",
		hex:   "0000010568656c6c6f",
		frame: framing.Frame{Header: hdr(framing.TypeData, 0, 1, 5), Data: []byte("hello")},
	},
	{
		name:  "DATA with FIN and payload \"bye\", stream 2",
		hex:   "00010203627965",
		frame: framing.Frame{Header: hdr(framing.TypeData, framing.FlagFIN, 2, 3), Data: []byte("bye")},
	},
	{
		name:  "DATA with FIN, empty, stream 3",
		hex:   "00010300",
		frame: framing.Frame{Header: hdr(framing.TypeData, framing.FlagFIN, 3, 0), Data: []byte{}},
	},
	{
		name:  "DATA with FIN, stream 1000 (2-byte varint), payload \"ok\"",
		hex:   "000143e8026f6b",
		frame: framing.Frame{Header: hdr(framing.TypeData, framing.FlagFIN, 1000, 2), Data: []byte("ok")},
	},
	{
		name:  "WINDOW_UPDATE stream 3, Maximum Offset 16383 (2-byte varint), Consumed 63",
		hex:   "010003037fff3f",
		frame: framing.Frame{Header: hdr(framing.TypeWindowUpdate, 0, 3, 3), Offset: 16383, Consumed: 63},
	},
	{
		name:  "WINDOW_UPDATE stream 1, Maximum Offset 98304 (4-byte varint), Consumed 32768",
		hex:   "010001088001800080008000",
		frame: framing.Frame{Header: hdr(framing.TypeWindowUpdate, 0, 1, 8), Offset: 98304, Consumed: 32768},
	},
	{
		name:  "WINDOW_UPDATE stream 7, Maximum Offset 5000000000 (8-byte varint), Consumed 4983222784",
		hex:   "01000710c00000012a05f200c00000012905f200",
		frame: framing.Frame{Header: hdr(framing.TypeWindowUpdate, 0, 7, 16), Offset: 5000000000, Consumed: 4983222784},
	},
	{
		name:  "BLOCKED stream 1, Limit 65536",
		hex:   "0200010480010000",
		frame: framing.Frame{Header: hdr(framing.TypeBlocked, 0, 1, 4), Offset: 65536},
	},
	{
		name:  "RESET stream 2, CANCEL",
		hex:   "0300020106",
		frame: framing.Frame{Header: hdr(framing.TypeReset, 0, 2, 1), ErrorCode: framing.Cancel},
	},
	{
		name:  "RESET stream 3, REFUSED_STREAM",
		hex:   "0300030105",
		frame: framing.Frame{Header: hdr(framing.TypeReset, 0, 3, 1), ErrorCode: framing.RefusedStream},
	},
	{
		name:  "STOP_SENDING stream 1, CANCEL",
		hex:   "0400010106",
		frame: framing.Frame{Header: hdr(framing.TypeStopSending, 0, 1, 1), ErrorCode: framing.Cancel},
	},
	{
		name:  "PING",
		hex:   "050000080102030405060708",
		frame: framing.Frame{Header: hdr(framing.TypePing, 0, 0, 8), PingData: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}},
	},
	{
		name:  "PING with ACK",
		hex:   "050100080102030405060708",
		frame: framing.Frame{Header: hdr(framing.TypePing, framing.FlagACK, 0, 8), PingData: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}},
	},
	{
		name:  "GOAWAY Last Stream ID 7, NO_ERROR",
		hex:   "060000020700",
		frame: framing.Frame{Header: hdr(framing.TypeGoAway, 0, 0, 2), LastStreamID: 7, ErrorCode: framing.NoError},
	},
	{
		name:  "GOAWAY Last Stream ID 300, PROTOCOL_ERROR",
		hex:   "06000003412c01",
		frame: framing.Frame{Header: hdr(framing.TypeGoAway, 0, 0, 3), LastStreamID: 300, ErrorCode: framing.ProtocolError},
	},
	{
		name:  "GOAWAY with DONE, Last Stream ID 7, NO_ERROR",
		hex:   "060100020700",
		frame: framing.Frame{Header: hdr(framing.TypeGoAway, framing.FlagDone, 0, 2), LastStreamID: 7, ErrorCode: framing.NoError},
	},
	{
		name: "SETTINGS with all three settings",
		hex:  "0700000d018004000002800100000343e8",
		frame: framing.Frame{Header: hdr(framing.TypeSettings, 0, 0, 13), Settings: framing.Settings{
			InitialWindow: 262144, MaxFramePayload: 65536, MaxStreams: 1000,
		}},
	},
	{
		name:  "WINDOW_UPDATE with BUDGET_LIMITED, stream 1, Maximum Offset 65536, Consumed 16384",
		hex:   "010101088001000080004000",
		frame: framing.Frame{Header: hdr(framing.TypeWindowUpdate, framing.FlagBudgetLimited, 1, 8), Offset: 65536, Consumed: 16384},
	},
	{
		name:  "SETTINGS with SETTINGS_BUDGET_SIGNAL 1",
		hex:   "070000020401",
		frame: framing.Frame{Header: hdr(framing.TypeSettings, 0, 0, 2), Settings: framing.Settings{BudgetSignal: 1}},
	},
	{
		name:  "SETTINGS with SETTINGS_COMPRESSION zstd and s2",
		hex:   "070000020503",
		frame: framing.Frame{Header: hdr(framing.TypeSettings, 0, 0, 2), Settings: framing.Settings{Compression: 3}},
	},
	{
		name:  "DATA, opening frame announcing zstd, stream 1",
		hex:   "000201020100",
		frame: framing.Frame{Header: hdr(framing.TypeData, framing.FlagCompressed, 1, 2), Data: []byte{0x01, 0x00}},
	},
	{
		name:  "DATA compressed with s2, stream 1, 64 bytes \"abab...\"",
		hex:   "0002010a02404040046162f60200",
		frame: framing.Frame{Header: hdr(framing.TypeData, framing.FlagCompressed, 1, 10), Data: unhex("02404040046162f60200")},
	},
	{
		name:  "DATA compressed with zstd, stream 1, 64 bytes \"abab...\"",
		hex:   "0002011501404028b52ffd20404d000010616201540202272b",
		frame: framing.Frame{Header: hdr(framing.TypeData, framing.FlagCompressed, 1, 21), Data: unhex("01404028b52ffd20404d000010616201540202272b")},
	},
	{
		name:  "SETTINGS with SETTINGS_RETRY_AFTER 1",
		hex:   "070000020601",
		frame: framing.Frame{Header: hdr(framing.TypeSettings, 0, 0, 2), Settings: framing.Settings{RetryAfter: 1}},
	},
	{
		name:  "RESET with RETRY_AFTER, stream 1, REFUSED_STREAM, retry after 250 ms",
		hex:   "030101030540fa",
		frame: framing.Frame{Header: hdr(framing.TypeReset, framing.FlagRetryAfter, 1, 3), ErrorCode: framing.RefusedStream, RetryAfter: 250},
	},
	{
		name:  "SETTINGS empty (all defaults)",
		hex:   "07000000",
		frame: framing.Frame{Header: hdr(framing.TypeSettings, 0, 0, 0)},
	},
}

// altVector is an encoding that is valid but not the one an encoder
// produces (non-minimal varints, settings out of order, explicit zero):
// it decodes to frame, and frame re-encodes to canonical.
type altVector struct {
	name      string
	hex       string
	frame     framing.Frame
	canonical string
}

var altVectors = []altVector{
	{
		name:      "WINDOW_UPDATE with 2-byte Stream ID, Length, Maximum Offset and Consumed",
		hex:       "01004001400440254005",
		frame:     framing.Frame{Header: hdr(framing.TypeWindowUpdate, 0, 1, 4), Offset: 37, Consumed: 5},
		canonical: "010001022505",
	},
	{
		name:      "PING with 8-byte Length",
		hex:       "050000c0000000000000080102030405060708",
		frame:     framing.Frame{Header: hdr(framing.TypePing, 0, 0, 8), PingData: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}},
		canonical: "050000080102030405060708",
	},
	{
		name: "SETTINGS out of order, with an unknown identifier 0x21 and an explicit zero",
		hex:  "0700000c0343e8210501000280004000",
		frame: framing.Frame{Header: hdr(framing.TypeSettings, 0, 0, 12), Settings: framing.Settings{
			MaxStreams: 1000, MaxFramePayload: 16384,
		}},
		canonical: "0700000802800040000343e8",
	},
}

// skipVectors are frames of a type bp/1 does not define: ReadHeader accepts
// them and the receiver skips Length bytes.
var skipVectors = []struct {
	name string
	hex  string
	h    framing.Header
}{
	{"unknown type 0x21 on stream 0", "21000003abcdef", hdr(0x21, 0, 0, 3)},
	{"unknown type 0xfe with flags 0x80 on stream 5", "fe800503abcdef", hdr(0xfe, 0x80, 5, 3)},
}

// badVectors are frames a receiver MUST reject. code is the error code of
// SPEC.md; err is what this codec reports (the session maps ErrMalformed
// to PROTOCOL_ERROR except in SETTINGS values, and ErrFrameSize to
// FRAME_SIZE_ERROR).
var badVectors = []struct {
	name string
	hex  string
	err  error
	code framing.ErrorCode
}{
	{"DATA on stream 0", "00000000", framing.ErrMalformed, framing.ProtocolError},
	{"WINDOW_UPDATE on stream 0", "010000020500", framing.ErrMalformed, framing.ProtocolError},
	{"PING on stream 1", "050001080102030405060708", framing.ErrMalformed, framing.ProtocolError},
	{"GOAWAY on stream 2", "060002020700", framing.ErrMalformed, framing.ProtocolError},
	{"DATA with undefined flag 0x04", "00040100", framing.ErrMalformed, framing.ProtocolError},
	{"WINDOW_UPDATE with undefined flag 0x02", "010201020500", framing.ErrMalformed, framing.ProtocolError},
	{"SETTINGS_BUDGET_SIGNAL 2", "070000020402", framing.ErrMalformed, framing.SettingsError},
	{"PING with undefined flag 0x02", "050200080102030405060708", framing.ErrMalformed, framing.ProtocolError},
	{"WINDOW_UPDATE with Length 257", "0100014101", framing.ErrFrameSize, framing.FrameSizeError},
	{"DATA with Length 2^24+1", "00000181000001", framing.ErrFrameSize, framing.FrameSizeError},
	{"unknown type with Length 257", "2100004101", framing.ErrFrameSize, framing.FrameSizeError},
	{"WINDOW_UPDATE without Consumed", "0100010105", framing.ErrMalformed, framing.ProtocolError},
	{"WINDOW_UPDATE with a trailing byte", "01000103050000", framing.ErrMalformed, framing.ProtocolError},
	{"WINDOW_UPDATE with a truncated varint", "0100010140", framing.ErrMalformed, framing.ProtocolError},
	{"RESET with a trailing byte", "030001020600", framing.ErrMalformed, framing.ProtocolError},
	{"RESET with RETRY_AFTER and no hint", "0301010105", framing.ErrMalformed, framing.ProtocolError},
	{"SETTINGS_RETRY_AFTER 2", "070000020602", framing.ErrMalformed, framing.SettingsError},
	{"PING with 7 bytes", "0500000701020304050607", framing.ErrMalformed, framing.ProtocolError},
	{"GOAWAY without Error Code", "0600000107", framing.ErrMalformed, framing.ProtocolError},
	{"SETTINGS with an Identifier and no Value", "0700000101", framing.ErrMalformed, framing.ProtocolError},
	{"SETTINGS_MAX_FRAME_PAYLOAD 2^24+1", "070000050281000001", framing.ErrMalformed, framing.SettingsError},
}

// varintVectors are the examples of RFC 9000, appendix A.1, plus the
// largest value.
var varintVectors = []struct {
	hex string
	v   uint64
}{
	{"25", 37},
	{"7bbd", 15293},
	{"9d7f3e7d", 494878333},
	{"c2197c5eff14e88c", 151288809941952652},
	{"ffffffffffffffff", 1<<62 - 1},
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// readFrame reads one whole frame from r as a receiver would: the header,
// then Length payload bytes. For DATA, f.Data is the payload.
func readFrame(r *bytes.Reader, f *framing.Frame) error {
	h, err := framing.ReadHeader(r)
	if err != nil {
		return err
	}
	if h.Length > uint64(r.Len()) {
		// The caller reads at most what is there; a short payload is a
		// truncated frame.
		_, _ = r.Seek(0, io.SeekEnd)
		return io.ErrUnexpectedEOF
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(r, payload); err != nil {
		return err
	}
	if h.Type == framing.TypeData {
		f.Header = h
		f.Data = payload
		return nil
	}
	return framing.DecodePayload(f, h, payload)
}

// encodeFrame encodes f as a sender would: AppendFrame, or for DATA also
// AppendDataHeader followed by the payload, checking that both agree.
func encodeFrame(t testing.TB, f *framing.Frame) []byte {
	t.Helper()
	b, err := framing.AppendFrame(nil, f)
	if err != nil {
		t.Fatalf("AppendFrame(%+v): %v", f, err)
	}
	if f.Type == framing.TypeData {
		d := framing.AppendDataHeader(nil, f.StreamID, len(f.Data), f.Flags&framing.FlagFIN != 0)
		if f.Flags&framing.FlagCompressed != 0 {
			d = framing.AppendHeader(nil, framing.Header{Type: framing.TypeData, Flags: f.Flags, StreamID: f.StreamID, Length: uint64(len(f.Data))})
		}
		d = append(d, f.Data...)
		if !bytes.Equal(b, d) {
			t.Fatalf("AppendFrame gives %x, AppendDataHeader+payload gives %x", b, d)
		}
	}
	return b
}

func equalFrames(a, b framing.Frame) bool {
	if !bytes.Equal(a.Data, b.Data) {
		return false
	}
	a.Data, b.Data = nil, nil
	return reflect.DeepEqual(a, b)
}

func TestVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			wire := mustHex(t, v.hex)

			// Decode with ReadHeader over a bytes.Reader.
			var got framing.Frame
			r := bytes.NewReader(wire)
			if err := readFrame(r, &got); err != nil {
				t.Fatalf("decode %s: %v", v.hex, err)
			}
			if r.Len() != 0 {
				t.Fatalf("%d bytes left after the frame", r.Len())
			}
			if !equalFrames(got, v.frame) {
				t.Fatalf("decoded\n %+v\nwant\n %+v", got, v.frame)
			}

			// Decode with ParseHeader + DecodePayload.
			h, n, err := framing.ParseHeader(wire)
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if h != v.frame.Header || uint64(n)+h.Length != uint64(len(wire)) {
				t.Fatalf("ParseHeader = %+v, %d; want %+v", h, n, v.frame.Header)
			}
			if h.Type != framing.TypeData {
				var f2 framing.Frame
				if err := framing.DecodePayload(&f2, h, wire[n:]); err != nil {
					t.Fatalf("DecodePayload: %v", err)
				}
				if !equalFrames(f2, v.frame) {
					t.Fatalf("DecodePayload gives %+v, want %+v", f2, v.frame)
				}
			}

			// Re-encode: exactly the same bytes.
			if enc := encodeFrame(t, &got); !bytes.Equal(enc, wire) {
				t.Fatalf("re-encoded to %x, want %s", enc, v.hex)
			}
			// Encoding the table's frame (Length not needed) gives them too.
			f := v.frame
			f.Length = 0
			if enc := encodeFrame(t, &f); !bytes.Equal(enc, wire) {
				t.Fatalf("encoded to %x, want %s", enc, v.hex)
			}
		})
	}
}

func TestAltVectors(t *testing.T) {
	for _, v := range altVectors {
		t.Run(v.name, func(t *testing.T) {
			var got framing.Frame
			r := bytes.NewReader(mustHex(t, v.hex))
			if err := readFrame(r, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if r.Len() != 0 {
				t.Fatalf("%d bytes left", r.Len())
			}
			if !equalFrames(got, v.frame) {
				t.Fatalf("decoded %+v, want %+v", got, v.frame)
			}
			if enc := encodeFrame(t, &got); hex.EncodeToString(enc) != v.canonical {
				t.Fatalf("re-encoded to %x, want %s", enc, v.canonical)
			}
		})
	}
}

func TestSkipVectors(t *testing.T) {
	for _, v := range skipVectors {
		t.Run(v.name, func(t *testing.T) {
			// An unknown frame followed by a PING: the receiver skips the
			// first and reads the second.
			wire := append(mustHex(t, v.hex), mustHex(t, "050000080102030405060708")...)
			r := bytes.NewReader(wire)
			h, err := framing.ReadHeader(r)
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if h != v.h {
				t.Fatalf("header %+v, want %+v", h, v.h)
			}
			if h.Type.Known() {
				t.Fatalf("type %v is known", h.Type)
			}
			payload := make([]byte, h.Length)
			if _, err := io.ReadFull(r, payload); err != nil {
				t.Fatal(err)
			}
			var f framing.Frame
			if err := framing.DecodePayload(&f, h, payload); err != nil {
				t.Fatalf("DecodePayload of an unknown type: %v", err)
			}
			if err := readFrame(r, &f); err != nil || f.Type != framing.TypePing {
				t.Fatalf("frame after the skipped one: %+v, %v", f.Header, err)
			}
			if _, err := framing.AppendFrame(nil, &framing.Frame{Header: v.h}); !errors.Is(err, framing.ErrMalformed) {
				t.Fatalf("AppendFrame of an unknown type: %v, want ErrMalformed", err)
			}
		})
	}
}

func TestBadVectors(t *testing.T) {
	for _, v := range badVectors {
		t.Run(v.name, func(t *testing.T) {
			var f framing.Frame
			err := readFrame(bytes.NewReader(mustHex(t, v.hex)), &f)
			if !errors.Is(err, v.err) {
				t.Fatalf("decode %s: %v, want %v", v.hex, err, v.err)
			}
			// The other sentinel must not match as well.
			other := framing.ErrFrameSize
			if v.err == framing.ErrFrameSize {
				other = framing.ErrMalformed
			}
			if errors.Is(err, other) {
				t.Fatalf("error %v matches both sentinels", err)
			}
		})
	}
}

func TestVarintVectors(t *testing.T) {
	for _, v := range varintVectors {
		b := mustHex(t, v.hex)
		got, n, err := quicvarint.Parse(b)
		if err != nil || n != len(b) || got != v.v {
			t.Errorf("Parse(%s) = %d, %d, %v; want %d", v.hex, got, n, err, v.v)
		}
		if enc := quicvarint.Append(nil, v.v); !bytes.Equal(enc, b) {
			t.Errorf("Append(%d) = %x, want %s", v.v, enc, v.hex)
		}
	}
}

// TestVectorsInSpec checks that SPEC.md shows every vector of this file.
func TestVectorsInSpec(t *testing.T) {
	spec, err := os.ReadFile("../SPEC.md")
	if err != nil {
		t.Fatalf("reading SPEC.md: %v", err)
	}
	s := string(spec)
	var all []string
	for _, v := range vectors {
		all = append(all, v.hex)
	}
	for _, v := range altVectors {
		all = append(all, v.hex, v.canonical)
	}
	for _, v := range skipVectors {
		all = append(all, v.hex)
	}
	for _, v := range badVectors {
		all = append(all, v.hex)
	}
	for _, v := range varintVectors {
		all = append(all, v.hex)
	}
	for _, h := range all {
		// Vectors are shown in code spans: `hex`.
		if !strings.Contains(s, "`"+h+"`") {
			t.Errorf("SPEC.md does not show vector `%s`", h)
		}
	}
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
