// Package fuzz holds the fuzz targets of bp/1 and their seed corpora
// (testdata/fuzz/<Target>/).
package fuzz

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"slices"
	"testing"

	"github.com/bpmux/bp/framing"
	"github.com/quic-go/quic-go/quicvarint"
)

// maxFrames bounds the frames decoded from one input.
const maxFrames = 1000

// FuzzDecodeFrame reads frames from arbitrary bytes as a receiver reads a
// lane: header, then payload (skipped for DATA, which the codec leaves to
// the caller). It must never panic; every error must be one the codec
// documents; and every frame of a known type that decodes must re-encode to
// bytes that decode to the same frame, and to the very same bytes when the
// input was encoded canonically (minimal varints, settings in order).
func FuzzDecodeFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for range maxFrames {
			start := len(in) - r.Len()
			h, err := framing.ReadHeader(r)
			if err != nil {
				checkHeaderErr(t, in[start:], err)
				return
			}
			hlen := len(in) - r.Len() - start

			// ParseHeader agrees with ReadHeader.
			ph, pn, perr := framing.ParseHeader(in[start:])
			if perr != nil || ph != h || pn != hlen {
				t.Fatalf("ParseHeader(%x) = %+v, %d, %v; ReadHeader = %+v, %d", in[start:], ph, pn, perr, h, hlen)
			}

			// The payload, bounded by what is there.
			n := min(h.Length, uint64(r.Len()))
			payload := in[start+hlen : start+hlen+int(n)]
			if _, err := r.Seek(int64(n), io.SeekCurrent); err != nil {
				t.Fatal(err)
			}
			if n < h.Length {
				return // truncated frame: the lane ended early
			}
			orig := in[start : start+hlen+int(n)]

			var fr framing.Frame
			switch {
			case h.Type == framing.TypeData:
				fr.Header = h
				fr.Data = payload
				if err := framing.DecodePayload(&framing.Frame{}, h, payload); !errors.Is(err, framing.ErrMalformed) {
					t.Fatalf("DecodePayload of DATA: %v", err)
				}
			case !h.Type.Known():
				if err := framing.DecodePayload(&fr, h, payload); err != nil {
					t.Fatalf("DecodePayload of unknown type %v: %v", h.Type, err)
				}
				continue // skipped, as a receiver does
			default:
				if err := framing.DecodePayload(&fr, h, payload); err != nil {
					if !errors.Is(err, framing.ErrMalformed) {
						t.Fatalf("DecodePayload(%x): %v is not ErrMalformed", orig, err)
					}
					return // a receiver closes the session
				}
			}
			checkReencode(t, orig, &fr)
		}
	})
}

// checkHeaderErr checks that ReadHeader failed the way it documents: a
// clean io.EOF only between frames, io.ErrUnexpectedEOF inside a header,
// otherwise ErrMalformed or ErrFrameSize, and that ParseHeader agrees.
func checkHeaderErr(t *testing.T, rest []byte, err error) {
	t.Helper()
	_, _, perr := framing.ParseHeader(rest)
	switch {
	case len(rest) == 0:
		if err != io.EOF {
			t.Fatalf("ReadHeader at the end: %v, want io.EOF", err)
		}
	case err == io.ErrUnexpectedEOF:
		if perr != io.ErrUnexpectedEOF {
			t.Fatalf("ParseHeader(%x) = %v, ReadHeader says truncated", rest, perr)
		}
	case errors.Is(err, framing.ErrMalformed) || errors.Is(err, framing.ErrFrameSize):
		if perr == nil || perr.Error() != err.Error() {
			t.Fatalf("ParseHeader(%x) = %v, ReadHeader = %v", rest, perr, err)
		}
	default:
		t.Fatalf("ReadHeader(%x): unexpected error %v", rest, err)
	}
}

// checkReencode encodes fr, decoded from orig, and checks the result.
func checkReencode(t *testing.T, orig []byte, fr *framing.Frame) {
	t.Helper()
	var enc []byte
	if fr.Type == framing.TypeData {
		enc = framing.AppendDataHeader(nil, fr.StreamID, len(fr.Data), fr.Flags&framing.FlagFIN != 0)
		if fr.Flags&framing.FlagCompressed != 0 {
			enc = framing.AppendHeader(nil, framing.Header{Type: framing.TypeData, Flags: fr.Flags, StreamID: fr.StreamID, Length: uint64(len(fr.Data))})
		}
		enc = append(enc, fr.Data...)
		alt, err := framing.AppendFrame(nil, fr)
		if err != nil || !bytes.Equal(alt, enc) {
			t.Fatalf("AppendFrame(DATA) = %x, %v; AppendDataHeader+payload = %x", alt, err, enc)
		}
	} else {
		var err error
		if enc, err = framing.AppendFrame(nil, fr); err != nil {
			t.Fatalf("AppendFrame(%+v) of a decoded frame: %v", fr, err)
		}
	}

	// The re-encoding decodes to the same frame (Length aside: a
	// non-minimal or redundant payload shrinks).
	r := bytes.NewReader(enc)
	h, err := framing.ReadHeader(r)
	if err != nil {
		t.Fatalf("re-encoding %x of %x: %v", enc, orig, err)
	}
	var again framing.Frame
	if h.Type == framing.TypeData {
		again.Header = h
		again.Data = enc[len(enc)-r.Len():]
	} else if err := framing.DecodePayload(&again, h, enc[len(enc)-r.Len():]); err != nil {
		t.Fatalf("re-encoding %x of %x: %v", enc, orig, err)
	}
	if r.Len() != int(h.Length) {
		t.Fatalf("re-encoding %x has %d payload bytes, Length %d", enc, r.Len(), h.Length)
	}
	if again.Length > fr.Length {
		t.Fatalf("re-encoding %x of %x is longer", enc, orig)
	}
	a, b := *fr, again
	a.Length, b.Length = 0, 0
	if !bytes.Equal(a.Data, b.Data) {
		t.Fatalf("DATA payload changed: %x -> %x", a.Data, b.Data)
	}
	a.Data, b.Data = nil, nil
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("%x decodes to\n %+v\nits re-encoding %x to\n %+v", orig, *fr, enc, again)
	}

	// Canonical input re-encodes byte for byte. The encoder never makes a
	// field longer, so equal lengths mean every varint was minimal and
	// nothing was dropped; only the order of SETTINGS pairs may differ.
	if len(enc) > len(orig) {
		t.Fatalf("re-encoding %x of %x is longer", enc, orig)
	}
	if len(enc) == len(orig) && !bytes.Equal(enc, orig) {
		if fr.Type != framing.TypeSettings || !samePairs(orig[len(orig)-int(fr.Length):], enc[len(enc)-int(again.Length):]) {
			t.Fatalf("canonical %x re-encoded to %x", orig, enc)
		}
	}
}

// samePairs reports whether two SETTINGS payloads hold the same pairs in
// some order.
func samePairs(a, b []byte) bool {
	pa, pb := pairs(a), pairs(b)
	return pa != nil && pb != nil && slices.Equal(pa, pb)
}

func pairs(p []byte) [][2]uint64 {
	var out [][2]uint64
	for len(p) > 0 {
		id, n, err := quicvarint.Parse(p)
		if err != nil {
			return nil
		}
		v, m, err := quicvarint.Parse(p[n:])
		if err != nil {
			return nil
		}
		out = append(out, [2]uint64{id, v})
		p = p[n+m:]
	}
	slices.SortFunc(out, func(x, y [2]uint64) int {
		if x[0] != y[0] {
			if x[0] < y[0] {
				return -1
			}
			return 1
		}
		if x[1] < y[1] {
			return -1
		} else if x[1] > y[1] {
			return 1
		}
		return 0
	})
	return out
}
