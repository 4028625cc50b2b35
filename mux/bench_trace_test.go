package mux

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"

	"github.com/bpmux/bp/transport"
	"github.com/quic-go/quic-go/qlogwriter"
)

// BenchmarkTracing moves one stream's bytes with tracing off and on, in
// one run: "off" has no hook; "bp-qlog" writes the sessions' events (both
// ends) into a qlog trace of their own; "qlog" turns on QUIC's qlog too
// (QlogDir), so the trace holds both stacks' events as users get it from
// QLOGDIR. The goal is bp-qlog within 10 % of off; "qlog" shows what
// quic-go's own tracing adds on top.
func BenchmarkTracing(b *testing.B) {
	b.Run("off", func(b *testing.B) {
		p := newPair(b, nil, nil)
		c, s := p.openPair(b)
		benchTransfer(b, c, s)
	})
	b.Run("bp-qlog", func(b *testing.B) {
		cc, sc := newConnPair(b)
		dir := b.TempDir()
		client, err := New(withTrace(b, cc, filepath.Join(dir, "client.sqlog")), nil)
		if err != nil {
			b.Fatal(err)
		}
		server, err := New(withTrace(b, sc, filepath.Join(dir, "server.sqlog")), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { client.Close(); server.Close() })
		c, s := sessionPair{client, server}.openPair(b)
		benchTransfer(b, c, s)
	})
	b.Run("qlog", func(b *testing.B) {
		p := newQlogPair(b, b.TempDir())
		c, s := p.openPair(b)
		benchTransfer(b, c, s)
	})
}

// tracedConn is a transport.Conn with a qlog trace of its own.
type tracedConn struct {
	transport.Conn
	trace qlogwriter.Trace
}

func (c tracedConn) QlogTrace() qlogwriter.Trace { return c.trace }

// withTrace gives conn a qlog trace written to path, as quic-go would.
func withTrace(tb testing.TB, conn transport.Conn, path string) transport.Conn {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	seq := qlogwriter.NewConnectionFileSeq(&flushCloser{bufio.NewWriterSize(f, 64<<10), f}, conn.IsClient(), qlogwriter.ConnectionID{})
	go seq.Run()
	return tracedConn{conn, seq}
}

type flushCloser struct {
	*bufio.Writer
	f *os.File
}

func (w *flushCloser) Close() error {
	w.Flush()
	return w.f.Close()
}
