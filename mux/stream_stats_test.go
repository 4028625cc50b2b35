package mux

import (
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStreamCountersSnapshot checks that snapshot copies every counter
// into the StreamStats field of the same name, and the histograms.
func TestStreamCountersSnapshot(t *testing.T) {
	var c streamCounters
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() == reflect.Uint64 {
			f.SetUint(uint64(i + 1))
		}
	}
	c.Blocked.add(ReasonPeerWindow, time.Second)
	c.Compression.FramesCompressed = 99
	c.histograms().signal.Observe(time.Millisecond)
	c.histograms().updateDelay.Observe(2 * time.Millisecond)
	st := c.snapshot()
	sv := reflect.ValueOf(st)
	typ := v.Type()
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		if name == "hist" {
			continue
		}
		sf := sv.FieldByName(name)
		require.True(t, sf.IsValid(), "StreamStats has no field %s", name)
		assert.Equal(t, v.Field(i).Interface(), sf.Interface(), "field %s", name)
	}
	assert.Equal(t, uint64(1), st.SignalLatency.Count)
	assert.Equal(t, uint64(1), st.UpdateDelay.Count)
	assert.Zero(t, (&streamCounters{}).snapshot().SignalLatency.Count, "no histograms until the first observation")
	t.Logf("Stream is %d bytes, its counters %d", unsafe.Sizeof(Stream{}), unsafe.Sizeof(c))
}

// TestWindowBytes: the windows' share of the budget is what the codecs and
// the fixed memory leave of it, and 0 when a snapshot caught them
// disagreeing (a stream released between the reads), never a wrap-around.
func TestWindowBytes(t *testing.T) {
	for _, tc := range []struct {
		used, codec, overhead, want uint64
	}{
		{used: 1000, codec: 100, overhead: 300, want: 600},
		{used: 400, codec: 100, overhead: 300, want: 0},
		{used: 300, codec: 0, overhead: 300 + StreamOverhead, want: 0},
		{used: 0, codec: 0, overhead: 0, want: 0},
	} {
		st := SessionStats{BudgetUsed: tc.used, Overhead: tc.overhead}
		st.Compression.CodecMemory = tc.codec
		assert.Equal(t, tc.want, st.WindowBytes(), "%+v", tc)
	}
}
