package fuzz

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

// minimizeShare is the part of a time-bounded fuzzing run that the
// minimization of one input may take when -fuzzminimizetime is not given.
const minimizeShare = 20

// TestMain bounds the minimization of each input to 1/minimizeShare of
// -fuzztime (1 s of a 20 s run) unless -fuzzminimizetime is given.
//
// Go's default is 60 s per input, and a worker counts no execs while it
// minimizes. The minimizer's subset pass is quadratic in the input's
// length, and inputs whose new coverage depends on how their bytes align
// into frames (a FuzzDecodeFrame input of 3 KB of 42-byte unknown frames,
// or any FuzzSession input, whose execs take milliseconds) cannot be
// shrunk a byte at a time, so their minimization runs into that bound: in
// a 20 s run both workers minimized from the third second to the end and
// the exec count froze. A minimization cut short keeps the input found, and
// a crasher is still reported; an unbounded run (no -fuzztime) or one
// bounded by a count keeps Go's default.
func TestMain(m *testing.M) {
	flag.Parse()
	boundMinimization()
	os.Exit(m.Run())
}

func boundMinimization() {
	given := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.fuzzminimizetime" {
			given = true
		}
	})
	fuzztime := flag.Lookup("test.fuzztime")
	if given || fuzztime == nil || strings.HasSuffix(fuzztime.Value.String(), "x") {
		return
	}
	d, err := time.ParseDuration(fuzztime.Value.String())
	if err != nil || d <= 0 {
		return
	}
	bound := max(d/minimizeShare, 100*time.Millisecond)
	if cur, err := time.ParseDuration(flag.Lookup("test.fuzzminimizetime").Value.String()); err == nil && bound < cur {
		_ = flag.Set("test.fuzzminimizetime", bound.String())
	}
}
