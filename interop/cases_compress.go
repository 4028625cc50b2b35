package interop

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/internal/logtext"
	"github.com/bpmux/bp/mux"
)

// runCompression opens a stream per codec and one more of incompressible
// data; the server echoes each. Every byte must come back intact, the
// server must compress its answers as the opener announced, text must
// shrink on the wire both ways, and random data must go plain.
func runCompression(ctx context.Context, e *Env) (string, error) {
	srv, err := e.serve(ctx, nil, echo)
	if err != nil {
		return "", err
	}
	sess, err := e.Dial(ctx, srv.addr, nil)
	if err != nil {
		return "", err
	}
	n := e.size(8<<20, 1<<20)
	type run struct {
		c      codec.Codec
		data   []byte
		text   bool
		stream *mux.Stream
		done   chan error
	}
	random := make([]byte, n)
	io.ReadFull(newPattern(9), random)
	runs := []*run{{c: codec.Zstd, data: logtext.JSON(1, n), text: true}, {c: codec.S2, data: logtext.JSON(2, n), text: true}, {c: codec.Zstd, data: random}}
	for _, r := range runs {
		if r.stream, err = sess.OpenStream(ctx, mux.StreamOptions{Compression: r.c}); err != nil {
			return "", fmt.Errorf("open a %v stream: %w", r.c, err)
		}
		r.done = make(chan error, 1)
		go func() {
			_, err := r.stream.Write(r.data)
			if err == nil {
				err = r.stream.CloseWrite()
			}
			r.done <- err
		}()
	}
	var details string
	for _, r := range runs {
		back, err := io.ReadAll(r.stream)
		if err != nil {
			return "", fmt.Errorf("%v stream: read the echo: %w", r.c, err)
		}
		if err := <-r.done; err != nil {
			return "", fmt.Errorf("%v stream: write: %w", r.c, err)
		}
		if !bytes.Equal(back, r.data) {
			return "", fmt.Errorf("%v stream: the echo differs from what was sent (%d of %d bytes)", r.c, len(back), len(r.data))
		}
		st := r.stream.Stats()
		cs := st.Compression
		sent, recvd := mux.Ratio(st.BytesSent, cs.WireBytesSent), mux.Ratio(st.BytesReceived, cs.WireBytesReceived)
		switch {
		case cs.Codec != r.c:
			return "", fmt.Errorf("%v stream: the peer does not accept %v (it accepts %v)", r.c, r.c, sess.PeerCompression())
		case r.text && (sent < 2 || recvd < 2):
			return "", fmt.Errorf("%v stream of text: ratio %.2f sent, %.2f received; want at least 2 each way", r.c, sent, recvd)
		case !r.text && (cs.FramesCompressed > 0 || cs.FramesDecompressed > 0):
			return "", fmt.Errorf("random data went out compressed: %+v", cs)
		}
		if r.text {
			details += fmt.Sprintf("%v %.1fx/%.1fx ", r.c, sent, recvd)
		}
		r.stream.Close()
	}
	if ss := srv.session(0); ss != nil {
		st := ss.Stats()
		if st.BudgetUsed > st.BudgetTotal {
			return "", fmt.Errorf("server budget overrun: %d of %d", st.BudgetUsed, st.BudgetTotal)
		}
		details += fmt.Sprintf("codecs %s", formatMiB(st.Compression.CodecMemory))
	}
	if err := srv.firstErr(); err != nil {
		return "", err
	}
	return details, nil
}

func formatMiB(n uint64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }
