package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDemo runs a short demo into a temporary directory: it exits 0 and
// writes a trace and a valid SVG.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "demo.svg")
	p := start(t, "demo", nil, nil, "demo", "-d", "1.5s", "-o", out)
	require.Equal(t, 0, p.wait(60*time.Second))
	stderr := p.stderrText()
	assert.Contains(t, stderr, "wrote the plot to "+out)
	assert.Contains(t, stderr, "writer stalled")
	svg, err := os.ReadFile(out)
	require.NoError(t, err)
	s := strings.TrimSpace(string(svg))
	assert.True(t, strings.HasPrefix(s, "<svg") || strings.HasPrefix(s, "<?xml"), "starts like SVG: %.60q", s)
	assert.True(t, strings.HasSuffix(s, "</svg>"), "ends like SVG")
	tr, err := os.ReadFile(filepath.Join(dir, "demo.jsonl"))
	require.NoError(t, err)
	assert.Contains(t, string(tr), `"side":"recv"`)
	assert.Contains(t, string(tr), `"event":"blocked"`)
}

// TestPlotPNG turns the demo's trace into a PNG with bpcat plot.
func TestPlotPNG(t *testing.T) {
	dir := t.TempDir()
	svg := filepath.Join(dir, "d.svg")
	p := start(t, "demo", nil, nil, "demo", "-d", "0.5s", "-o", svg)
	require.Equal(t, 0, p.wait(60*time.Second))
	png := filepath.Join(dir, "d.png")
	p = start(t, "plot", nil, nil, "plot", filepath.Join(dir, "d.jsonl"), "-o", png)
	require.Equal(t, 0, p.wait(60*time.Second))
	b, err := os.ReadFile(png)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(b), "\x89PNG"), "a PNG")
}
