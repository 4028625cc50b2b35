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

// maxPlotFiles bounds the traces one picture overlays.
const maxPlotFiles = 16

// runPlot is `bpcat plot`: one or more traces drawn as SVG or PNG. Several
// traces (the two ends of a transfer, the hops of a relay) share one
// wall-clock time axis.
func runPlot(ctx context.Context, e *env, args []string) error {
	var pf plotFlags
	fs := newFlagSet(e, "plot", "[flags] TRACE [TRACE...] -o OUT")
	fs.StringVar(&pf.out, "o", "", "write the picture to `OUT`: .svg or .png")
	fs.StringVar(&pf.title, "title", "", "picture `TITLE` (default: what the traces hold, by side and host)")
	fs.IntVar(&pf.width, "width", 960, "picture width in `PIXELS`")
	fs.IntVar(&pf.height, "height", 720, "picture height in `PIXELS`")
	fs.IntVar(&pf.maxRecords, "max-records", 1_000_000, "refuse traces with more than `N` records in all (memory bound)")
	// The usage puts -o after the traces: parse flags among them too.
	fs.trailing = true
	var files []string
	rest, err := fs.parse(args, 0, 1<<10)
	for err == nil && len(rest) > 0 {
		files = append(files, rest[0])
		rest, err = fs.parse(rest[1:], 0, 1<<10)
	}
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return usageErrorf("missing arguments: want %s", fs.args)
	}
	if len(files) > maxPlotFiles {
		return usageErrorf("%d traces: at most %d in one picture", len(files), maxPlotFiles)
	}
	if pf.out == "" {
		return usageErrorf("missing -o OUT (a .svg or .png file)")
	}
	if pf.width < 100 || pf.height < 100 || pf.width > 10000 || pf.height > 10000 {
		return usageErrorf("size %dx%d: want 100 to 10000 pixels each way", pf.width, pf.height)
	}
	n, err := plotFiles(files, pf.out, trace.PlotOptions{Title: pf.title, Width: pf.width, Height: pf.height}, pf.maxRecords)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "plotted %d records of %s to %s\n", n, strings.Join(files, ", "), pf.out)
	return nil
}

// plotDrawer returns the drawing function for out's extension.
func plotDrawer(out string) (func(io.Writer, []trace.Source, trace.PlotOptions) error, error) {
	switch strings.ToLower(filepath.Ext(out)) {
	case ".svg":
		return trace.PlotSources, nil
	case ".png":
		return trace.PlotSourcesPNG, nil
	}
	return nil, usageErrorf("-o %s: the picture must be .svg or .png", out)
}

// plotFile draws the trace in file tr to out, chosen by out's extension,
// and returns the number of records drawn.
func plotFile(tr, out string, opts trace.PlotOptions, maxRecords int) (int, error) {
	return plotFiles([]string{tr}, out, opts, maxRecords)
}

// plotFiles draws the traces in files trs on one picture, out, and
// returns the number of records read. maxRecords (0: no limit) bounds
// the records of all files together.
func plotFiles(trs []string, out string, opts trace.PlotOptions, maxRecords int) (int, error) {
	draw, err := plotDrawer(out)
	if err != nil {
		return 0, err
	}
	var srcs []trace.Source
	total, events := 0, 0
	for _, tr := range trs {
		limit := 0
		if maxRecords > 0 {
			if limit = maxRecords - total; limit <= 0 {
				return 0, fmt.Errorf("%s: more than --max-records %d in all the traces", tr, maxRecords)
			}
		}
		recs, err := readTrace(tr, limit)
		if err != nil {
			if maxRecords > 0 && len(trs) > 1 {
				err = fmt.Errorf("%w (--max-records %d bounds all the traces together)", err, maxRecords)
			}
			return 0, err
		}
		for _, r := range recs {
			if r.Event != trace.EventTrace && r.Event != trace.EventSession {
				events++
			}
		}
		total += len(recs)
		srcs = append(srcs, trace.Source{Name: filepath.Base(tr), Records: recs})
	}
	if events == 0 {
		return 0, fmt.Errorf("%s: no events to plot", strings.Join(trs, ", "))
	}
	f, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	err = draw(f, srcs, opts)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return 0, fmt.Errorf("draw %s: %w", out, err)
	}
	return total, nil
}

// readTrace reads the trace in file tr, at most limit records (0: any).
func readTrace(tr string, limit int) ([]trace.Record, error) {
	in, err := os.Open(tr)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	recs, err := trace.Read(in, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tr, err)
	}
	return recs, nil
}
