package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/trace"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeTrace writes a trace of n events of one side to a file in dir.
func writeTrace(t *testing.T, dir, name, side string, kind mux.EventKind, start time.Time, n int) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	require.NoError(t, err)
	w := trace.NewWriter(f, start)
	hook := w.Hook(side)
	for i := range n {
		hook(mux.Event{Time: start.Add(time.Duration(i) * time.Millisecond), Stream: 1, Kind: kind, Consumed: uint64(i) << 16, Window: 1 << 18, Credit: uint64(i%4) << 14})
	}
	require.NoError(t, w.Close())
	return path
}

func TestPlotFiles(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	a := writeTrace(t, dir, "a.jsonl", "listen", mux.EventGrant, start, 500)
	b := writeTrace(t, dir, "b.jsonl", "connect", mux.EventCredit, start.Add(20*time.Millisecond), 500)
	empty := writeTrace(t, dir, "empty.jsonl", "listen", mux.EventGrant, start, 0)
	tests := []struct {
		name       string
		files      []string
		out        string
		maxRecords int
		wantN      int
		wantErr    string
	}{
		{"one end", []string{a}, "one.png", 0, 501, ""},
		{"two ends overlaid", []string{a, b}, "two.png", 0, 1002, ""},
		{"svg", []string{a, b}, "two.svg", 0, 1002, ""},
		{"bound over all files", []string{a, b}, "big.png", 600, 0, "--max-records 600"},
		{"no events", []string{empty}, "none.png", 0, 0, "no events to plot"},
		{"bad extension", []string{a}, "x.gif", 0, 0, ".svg or .png"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, tt.out)
			n, err := plotFiles(tt.files, out, trace.PlotOptions{}, tt.maxRecords)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.NoFileExists(t, out)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantN, n)
			if filepath.Ext(out) != ".png" {
				return
			}
			f, err := os.Open(out)
			require.NoError(t, err)
			defer f.Close()
			img, err := png.Decode(f)
			require.NoError(t, err)
			assert.Equal(t, 960, img.Bounds().Dx())
			assert.Equal(t, 720, img.Bounds().Dy())
		})
	}
}
