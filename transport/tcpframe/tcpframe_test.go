package tcpframe_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/bpmux/bp/transport/tcpframe"
)

// The test vectors of SPEC.md, section 13.7. Every hex string here
// appears verbatim in SPEC.md (TestVectorsInSpec checks it).

// vector is a canonical frame: hex decodes to frame (and data, the
// LANE_DATA payload that follows its header), and encodes back to hex.
type vector struct {
	name  string
	hex   string
	frame tcpframe.Frame
	data  string
}

var vectors = []vector{
	{"LANE_DATA on lane 0, \"hi\"", "0000026869", tcpframe.Frame{Type: tcpframe.TypeData, Lane: 0, Length: 2}, "hi"},
	{"LANE_DATA on lane 5, \"ok\"", "0005026f6b", tcpframe.Frame{Type: tcpframe.TypeData, Lane: 5, Length: 2}, "ok"},
	{"LANE_DATA on the client's control lane 2, \"s\"", "00020173", tcpframe.Frame{Type: tcpframe.TypeData, Lane: 2, Length: 1}, "s"},
	{"LANE_DATA of 16384 bytes on lane 4 (header)", "000480004000", tcpframe.Frame{Type: tcpframe.TypeData, Lane: 4, Length: 16384}, ""},
	{"LANE_FIN on lane 0", "0100", tcpframe.Frame{Type: tcpframe.TypeFin, Lane: 0}, ""},
	{"LANE_RESET on lane 4, code 0x10c", "0204410c", tcpframe.Frame{Type: tcpframe.TypeReset, Lane: 4, Code: 0x10c}, ""},
	{"LANE_STOP on lane 1, code 7", "030107", tcpframe.Frame{Type: tcpframe.TypeStop, Lane: 1, Code: 7}, ""},
	{"MAX_LANES 256", "044100", tcpframe.Frame{Type: tcpframe.TypeMaxLanes, Value: 256}, ""},
	{"PING", "050102030405060708", tcpframe.Frame{Type: tcpframe.TypePing, Value: 0x0102030405060708}, ""},
	{"PONG", "060102030405060708", tcpframe.Frame{Type: tcpframe.TypePong, Value: 0x0102030405060708}, ""},
	{"CLOSE code 0, \"bye\"", "070003627965", tcpframe.Frame{Type: tcpframe.TypeClose, Code: 0, Reason: []byte("bye")}, ""},
	{"ABORT REFUSED, \"full\"", "08010466756c6c", tcpframe.Frame{Type: tcpframe.TypeAbort, Code: tcpframe.AbortRefused, Reason: []byte("full")}, ""},
	{"ABORT BUFFER_EXCEEDED, no reason", "080300", tcpframe.Frame{Type: tcpframe.TypeAbort, Code: tcpframe.AbortBufferExceeded, Reason: []byte{}}, ""},
}

// altVectors decode like their canonical form but are not it.
var altVectors = []struct{ name, hex, canonical string }{
	{"LANE_FIN with a 2-byte Lane ID", "014000", "0100"},
	{"MAX_LANES 256 in 8 bytes", "04c000000000000100", "044100"},
}

// badVectors are not frames.
var badVectors = []struct{ name, hex string }{
	{"unknown type 0x09", "09"},
	{"LANE_DATA with Length 16385", "000080004001"},
	{"CLOSE with a Reason Length of 1025", "07004401"},
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			in := unhex(t, v.hex)
			f, n, err := tcpframe.Parse(in)
			if err != nil {
				t.Fatalf("Parse(%s): %v", v.hex, err)
			}
			if !reflect.DeepEqual(f, v.frame) {
				t.Fatalf("Parse(%s) = %+v, want %+v", v.hex, f, v.frame)
			}
			if got := string(in[n:]); got != v.data {
				t.Fatalf("payload %q, want %q", got, v.data)
			}
			out := tcpframe.Append(nil, v.frame)
			out = append(out, v.data...)
			if f.Type == tcpframe.TypeData && len(v.data) > 0 {
				if data := tcpframe.AppendData(nil, f.Lane, []byte(v.data)); !bytes.Equal(data, out) {
					t.Fatalf("AppendData = %x, want %x", data, out)
				}
			}
			if hex.EncodeToString(out) != v.hex {
				t.Fatalf("Append = %x, want %s", out, v.hex)
			}
			// Every proper prefix of the header is short.
			for i := range n {
				if _, _, err := tcpframe.Parse(in[:i]); err != tcpframe.ErrShort {
					t.Fatalf("Parse(%x) = %v, want ErrShort", in[:i], err)
				}
			}
		})
	}
	for _, v := range altVectors {
		t.Run(v.name, func(t *testing.T) {
			f, n, err := tcpframe.Parse(unhex(t, v.hex))
			if err != nil || n != len(v.hex)/2 {
				t.Fatalf("Parse(%s) = %v, %d", v.hex, err, n)
			}
			if got := hex.EncodeToString(tcpframe.Append(nil, f)); got != v.canonical {
				t.Fatalf("Append = %s, want %s", got, v.canonical)
			}
		})
	}
	for _, v := range badVectors {
		t.Run(v.name, func(t *testing.T) {
			_, _, err := tcpframe.Parse(unhex(t, v.hex))
			if !errors.Is(err, tcpframe.ErrMalformed) {
				t.Fatalf("Parse(%s) = %v, want ErrMalformed", v.hex, err)
			}
		})
	}
}

func TestAppendCutsReason(t *testing.T) {
	long := strings.Repeat("x", tcpframe.MaxReason+10)
	b := tcpframe.Append(nil, tcpframe.Frame{Type: tcpframe.TypeClose, Code: 1, Reason: []byte(long)})
	f, n, err := tcpframe.Parse(b)
	if err != nil || n != len(b) || len(f.Reason) != tcpframe.MaxReason {
		t.Fatalf("Parse = %v, %d of %d, reason of %d", err, n, len(b), len(f.Reason))
	}
	if len(b) > tcpframe.MaxFrame {
		t.Fatalf("a CLOSE of %d bytes is above MaxFrame %d", len(b), tcpframe.MaxFrame)
	}
}

func TestAppendPanicsOnBadFrames(t *testing.T) {
	for _, f := range []tcpframe.Frame{
		{Type: 0x09},
		{Type: tcpframe.TypeData, Length: tcpframe.MaxData + 1},
		{Type: tcpframe.TypeData, Length: -1},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Append(%+v) did not panic", f)
				}
			}()
			tcpframe.Append(nil, f)
		}()
	}
}

func TestLaneID(t *testing.T) {
	tests := []struct {
		n           uint64
		server, uni bool
		want        uint64
	}{
		{0, false, false, 0}, {0, true, false, 1}, {0, false, true, 2}, {0, true, true, 3},
		{1, false, false, 4}, {1, true, false, 5}, {2, false, false, 8}, {250, true, false, 1001},
	}
	for _, tt := range tests {
		if got := tcpframe.LaneID(tt.n, tt.server, tt.uni); got != tt.want {
			t.Errorf("LaneID(%d, %v, %v) = %d, want %d", tt.n, tt.server, tt.uni, got, tt.want)
		}
	}
}

func TestNames(t *testing.T) {
	if got := tcpframe.TypeMaxLanes.String(); got != "MAX_LANES" {
		t.Errorf("String = %q", got)
	}
	if got := tcpframe.Type(0x42).String(); got != "type 0x42" {
		t.Errorf("String = %q", got)
	}
	if got := tcpframe.AbortName(tcpframe.AbortLaneLimit); got != "LANE_LIMIT" {
		t.Errorf("AbortName = %q", got)
	}
	if got := tcpframe.AbortName(0x77); got != "ABORT_0x77" {
		t.Errorf("AbortName = %q", got)
	}
	if !tcpframe.TypeStop.HasLane() || tcpframe.TypeMaxLanes.HasLane() {
		t.Error("HasLane")
	}
}

// TestVectorsInSpec checks that SPEC.md shows every vector of this file.
func TestVectorsInSpec(t *testing.T) {
	spec, err := os.ReadFile("../../SPEC.md")
	if err != nil {
		t.Fatalf("reading SPEC.md: %v", err)
	}
	var all []string
	for _, v := range vectors {
		all = append(all, v.hex)
	}
	for _, v := range altVectors {
		all = append(all, v.hex, v.canonical)
	}
	for _, v := range badVectors {
		all = append(all, v.hex)
	}
	for _, h := range all {
		if !strings.Contains(string(spec), "`"+h+"`") {
			t.Errorf("SPEC.md does not show the vector `%s`", h)
		}
	}
}
