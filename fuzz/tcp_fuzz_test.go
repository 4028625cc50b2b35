package fuzz

import (
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/bpmux/bp/transport/tcpframe"
)

// FuzzTCPFrames reads the frames of the TCP binding (SPEC.md, section 13)
// from arbitrary bytes as its reader does: a frame, then a LANE_DATA's
// payload. Parse must never panic, nor take more bytes than it was given;
// every error must be ErrShort or match ErrMalformed; a short input must
// stay short for every prefix; and every frame must re-encode to bytes
// that parse to the same frame, no longer than the original.
func FuzzTCPFrames(f *testing.F) {
	for _, h := range []string{
		"0000026869", "0005026f6b", "00020173", "000480004000", "0100", "0204410c",
		"030107", "044100", "050102030405060708", "060102030405060708", "070003627965",
		"08010466756c6c", "080300", "014000", "04c000000000000100", "09", "000080004001",
		"07004401", "0000026869010003010704410005aabbccddeeff0011070003627965",
	} {
		b, err := hex.DecodeString(h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rest := in
		for range maxFrames {
			if len(rest) == 0 {
				return
			}
			fr, n, err := tcpframe.Parse(rest)
			if err != nil {
				if err != tcpframe.ErrShort && !errors.Is(err, tcpframe.ErrMalformed) {
					t.Fatalf("Parse(%x): undocumented error %v", rest, err)
				}
				if err == tcpframe.ErrShort {
					for i := range rest {
						if _, _, perr := tcpframe.Parse(rest[:i]); perr != tcpframe.ErrShort {
							t.Fatalf("Parse(%x) = %v, but its extension %x is short", rest[:i], perr, rest)
						}
					}
				}
				return
			}
			if n <= 0 || n > len(rest) || n > tcpframe.MaxFrame {
				t.Fatalf("Parse(%x) took %d bytes", rest, n)
			}
			if fr.Type == tcpframe.TypeData && (fr.Length < 0 || fr.Length > tcpframe.MaxData) {
				t.Fatalf("Parse(%x): Length %d", rest, fr.Length)
			}
			if len(fr.Reason) > tcpframe.MaxReason {
				t.Fatalf("Parse(%x): Reason of %d bytes", rest, len(fr.Reason))
			}
			enc := tcpframe.Append(nil, fr)
			again, m, err := tcpframe.Parse(enc)
			if err != nil || m != len(enc) || !sameFrame(fr, again) {
				t.Fatalf("%+v encodes to %x, which parses to %+v, %d, %v", fr, enc, again, m, err)
			}
			if len(enc) > n {
				t.Fatalf("%x re-encodes to the longer %x", rest[:n], enc)
			}
			rest = rest[n:]
			if fr.Type == tcpframe.TypeData {
				if len(rest) < fr.Length {
					return // the stream ended inside the payload
				}
				rest = rest[fr.Length:]
			}
		}
	})
}

// sameFrame compares frames, an empty Reason equal to a nil one.
func sameFrame(a, b tcpframe.Frame) bool {
	if len(a.Reason) == 0 && len(b.Reason) == 0 {
		a.Reason, b.Reason = nil, nil
	}
	return reflect.DeepEqual(a, b)
}
