package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/bpmux/bp/trace"
)

// plotFlags are the flags of `bpcat plot`.
type plotFlags struct {
	out           string
	title         string
	width, height int
	maxRecords    int
}

// runPlot is `bpcat plot`: a trace drawn as SVG or PNG.
func runPlot(ctx context.Context, e *env, args []string) error {
	var pf plotFlags
	fs := newFlagSet(e, "plot", "[flags] TRACE -o OUT")
	fs.StringVar(&pf.out, "o", "", "write the picture to `OUT`: .svg or .png")
	fs.StringVar(&pf.title, "title", "", "picture `TITLE` (default: the trace's file name)")
	fs.IntVar(&pf.width, "width", 960, "picture width in `PIXELS`")
	fs.IntVar(&pf.height, "height", 600, "picture height in `PIXELS`")
	fs.IntVar(&pf.maxRecords, "max-records", 1_000_000, "refuse traces with more than `N` records (memory bound)")
	// The usage puts -o after TRACE: parse flags on both sides of it.
	fs.trailing = true
	rest, err := fs.parse(args, 0, 1<<10)
	if err == nil && len(rest) > 1 {
		var more []string
		more, err = fs.parse(rest[1:], 0, 0)
		rest = append(rest[:1], more...)
	}
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageErrorf("want one TRACE file, got %d arguments", len(rest))
	}
	if pf.out == "" {
		return usageErrorf("missing -o OUT (a .svg or .png file)")
	}
	if pf.width < 100 || pf.height < 100 || pf.width > 10000 || pf.height > 10000 {
		return usageErrorf("size %dx%d: want 100 to 10000 pixels each way", pf.width, pf.height)
	}
	if pf.title == "" {
		pf.title = filepath.Base(rest[0])
	}
	n, err := plotFile(rest[0], pf.out, trace.PlotOptions{Title: pf.title, Width: pf.width, Height: pf.height}, pf.maxRecords)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "plotted %d records of %s to %s\n", n, rest[0], pf.out)
	return nil
}

// plotDrawer returns the drawing function for out's extension.
func plotDrawer(out string) (func(io.Writer, []trace.Record, trace.PlotOptions) error, error) {
	switch strings.ToLower(filepath.Ext(out)) {
	case ".svg":
		return trace.Plot, nil
	case ".png":
		return trace.PlotPNG, nil
	}
	return nil, usageErrorf("-o %s: the picture must be .svg or .png", out)
}

// plotFile draws the trace in file tr to out, chosen by out's extension,
// and returns the number of records drawn.
func plotFile(tr, out string, opts trace.PlotOptions, maxRecords int) (int, error) {
	draw, err := plotDrawer(out)
	if err != nil {
		return 0, err
	}
	in, err := os.Open(tr)
	if err != nil {
		return 0, err
	}
	recs, err := trace.Read(in, maxRecords)
	in.Close()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", tr, err)
	}
	if len(recs) == 0 {
		return 0, fmt.Errorf("%s: no records to plot", tr)
	}
	f, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	err = draw(f, recs, opts)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return 0, fmt.Errorf("draw %s: %w", out, err)
	}
	return len(recs), nil
}
