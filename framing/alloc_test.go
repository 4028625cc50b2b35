package framing_test

import (
	"bytes"
	"testing"

	"github.com/bpmux/bp/framing"
)

// Steady-state encoding and decoding allocate nothing: the sender appends
// into a reused buffer, the receiver reads headers from a long-lived reader
// and decodes payloads into a reused Frame. These are allocation counts,
// not timings.

var sinkFrame framing.Frame

func TestEncodeAllocs(t *testing.T) {
	buf := make([]byte, 0, 1024)
	for _, v := range vectors {
		f := v.frame
		if n := testing.AllocsPerRun(100, func() {
			b, err := framing.AppendFrame(buf[:0], &f)
			if err != nil {
				t.Fatal(err)
			}
			buf = b
		}); n != 0 {
			t.Errorf("AppendFrame(%s): %v allocs/op", v.name, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		buf = framing.AppendDataHeader(buf[:0], 1<<40, framing.MaxDataPayload, true)
	}); n != 0 {
		t.Errorf("AppendDataHeader: %v allocs/op", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		buf = framing.AppendHeader(buf[:0], framing.Header{Type: framing.TypeReset, StreamID: 5, Length: 1})
	}); n != 0 {
		t.Errorf("AppendHeader: %v allocs/op", n)
	}
}

func TestDecodeAllocs(t *testing.T) {
	r := new(bytes.Reader)
	var f framing.Frame
	for _, v := range vectors {
		wire := mustHex(t, v.hex)
		if n := testing.AllocsPerRun(100, func() {
			r.Reset(wire)
			h, err := framing.ReadHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			if h.Type == framing.TypeData {
				return
			}
			start := len(wire) - r.Len()
			if err := framing.DecodePayload(&f, h, wire[start:start+int(h.Length)]); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("ReadHeader+DecodePayload(%s): %v allocs/op", v.name, n)
		}
		if n := testing.AllocsPerRun(100, func() {
			h, hn, err := framing.ParseHeader(wire)
			if err != nil {
				t.Fatal(err)
			}
			if h.Type != framing.TypeData {
				if err := framing.DecodePayload(&f, h, wire[hn:]); err != nil {
					t.Fatal(err)
				}
			}
		}); n != 0 {
			t.Errorf("ParseHeader+DecodePayload(%s): %v allocs/op", v.name, n)
		}
	}
	sinkFrame = f
}

func BenchmarkAppendDataHeader(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, framing.MaxHeaderLen)
	for i := 0; b.Loop(); i++ {
		buf = framing.AppendDataHeader(buf[:0], uint64(i)|1, 16384, i&1 == 0)
	}
}

func BenchmarkReadHeader(b *testing.B) {
	b.ReportAllocs()
	wire := mustHex(b, "000143e8026f6b")
	r := new(bytes.Reader)
	for b.Loop() {
		r.Reset(wire)
		if _, err := framing.ReadHeader(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeWindowUpdate(b *testing.B) {
	b.ReportAllocs()
	wire := mustHex(b, "010001088001800080008000")
	r := new(bytes.Reader)
	var f framing.Frame
	for b.Loop() {
		r.Reset(wire)
		h, err := framing.ReadHeader(r)
		if err != nil {
			b.Fatal(err)
		}
		if err := framing.DecodePayload(&f, h, wire[len(wire)-r.Len():]); err != nil {
			b.Fatal(err)
		}
	}
	sinkFrame = f
}

func BenchmarkAppendFrame(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 64)
	f := framing.Frame{Header: framing.Header{Type: framing.TypeWindowUpdate, StreamID: 1}, Consumed: 32768}
	for i := 0; b.Loop(); i++ {
		f.Offset = 98304 + uint64(i)
		var err error
		if buf, err = framing.AppendFrame(buf[:0], &f); err != nil {
			b.Fatal(err)
		}
	}
}
