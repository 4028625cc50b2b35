package transport

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"
)

// QlogConn is implemented by the connections of bindings that keep a qlog
// trace (the quic-go binding, when QUICConfig.QlogDir or $QLOGDIR is
// set). Package mux adds its own events to the trace, beside the QUIC
// stack's.
type QlogConn interface {
	// QlogTrace returns the connection's trace, or nil if it has none.
	QlogTrace() qlogwriter.Trace
}

// QlogTrace returns the connection's qlog trace, or nil.
func (c *quicConn) QlogTrace() qlogwriter.Trace { return c.c.QlogTrace() }

// qlogDir is the directory QUIC's qlog files go to: dir, or else
// $QLOGDIR, or "" for none.
func qlogDir(dir string) string {
	if dir != "" {
		return dir
	}
	return os.Getenv("QLOGDIR")
}

// qlogTracer returns a quic.Config.Tracer that writes each connection's
// trace to dir/<odcid>_<client|server>.sqlog, as quic-go's own
// qlog.DefaultConnectionTracer does, or nil for an empty dir. A file that
// cannot be created leaves that connection untraced; unlike quic-go's
// tracer it never ends the process. The file is flushed and closed when
// the last producer of the trace (QUIC's, and the session's) closes.
func qlogTracer(dir string) func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
	if dir == "" {
		return nil
	}
	return func(_ context.Context, isClient bool, connID quic.ConnectionID) qlogwriter.Trace {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil
		}
		label := "server"
		if isClient {
			label = "client"
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s_%s.sqlog", connID, label)))
		if err != nil {
			return nil
		}
		seq := qlogwriter.NewConnectionFileSeq(&bufferedFile{Writer: bufio.NewWriterSize(f, 64<<10), f: f}, isClient, connID)
		go seq.Run() // ends when the last producer closes the trace
		return seq
	}
}

// bufferedFile is a file written through a buffer, flushed on Close.
type bufferedFile struct {
	*bufio.Writer
	f io.Closer
}

func (b *bufferedFile) Close() error {
	err := b.Flush()
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	return err
}
