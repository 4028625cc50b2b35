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
// wall-clock time axis. A trace is a JSON-lines file (--trace) or a qlog
// file (.sqlog, --qlog), told apart by its first byte; a directory stands
// for every .sqlog file in it.
func runPlot(ctx context.Context, e *env, args []string) error {
	var pf plotFlags
	fs := newFlagSet(e, "plot", "[flags] TRACE|DIR [TRACE|DIR...] -o OUT")
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
	if files, err = expandPlotDirs(files); err != nil {
		return err
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
	n, err := plotTraces(files, pf.out, trace.PlotOptions{Title: pf.title, Width: pf.width, Height: pf.height}, pf.maxRecords, e.stderr)
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
	return plotTraces(trs, out, opts, maxRecords, nil)
}

// plotTraces is plotFiles, with warnings about the traces (a qlog file
// cut short) written to warn, if not nil.
func plotTraces(trs []string, out string, opts trace.PlotOptions, maxRecords int, warn io.Writer) (int, error) {
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
		recs, err := readTrace(tr, limit, warn)
		if err != nil {
			if maxRecords > 0 && len(trs) > 1 {
				err = fmt.Errorf("%w (--max-records %d bounds all the traces together)", err, maxRecords)
			}
			return 0, err
		}
		for _, r := range recs {
			switch r.Event {
			case trace.EventTrace, trace.EventSession, trace.EventEnd, trace.EventPacketLost:
			default:
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

// expandPlotDirs replaces each directory among args by the .sqlog files
// in it, in name order (the two ends of a connection, client and server,
// side by side).
func expandPlotDirs(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil || !fi.IsDir() {
			out = append(out, a) // a file, or an error for readTrace to report
			continue
		}
		ms, err := filepath.Glob(filepath.Join(a, "*.sqlog"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a, err)
		}
		if len(ms) == 0 {
			return nil, usageErrorf("%s: no .sqlog files in the directory", a)
		}
		if len(out)+len(ms) > maxPlotFiles {
			return nil, usageErrorf("%s: %d .sqlog files, with the other traces more than %d in one picture: name the files", a, len(ms), maxPlotFiles)
		}
		out = append(out, ms...) // Glob sorts them
	}
	return out, nil
}

// readTrace reads the trace in file tr, of either format, at most limit
// records (0: any). A qlog file without bp/1's events is an error that
// says so; a qlog file whose last record was cut short is read without
// it, and warn says so.
func readTrace(tr string, limit int, warn io.Writer) ([]trace.Record, error) {
	in, err := os.Open(tr)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	f, err := trace.ReadAny(in, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tr, err)
	}
	if q := f.Qlog; q != nil {
		if q.Truncated && warn != nil {
			fmt.Fprintf(warn, "%s: the last record was cut short (its writer stopped mid-record): read without it\n", tr)
		}
		if q.BP == 0 {
			why := "the trace has none"
			if !q.Header.HasSchema(trace.QlogSchema) {
				why = "its header does not list bp/1's schema " + trace.QlogSchema
			}
			return nil, fmt.Errorf("%s: no bp/1 events among its %d qlog events: %s", tr, q.Events, why)
		}
	}
	return f.Records, nil
}
