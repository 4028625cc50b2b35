package mux

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/bpmux/bp/framing"
	"github.com/bpmux/bp/transport"
	"github.com/bpmux/bp/transport/memconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recordingConn is a transport.Conn whose lanes record each Write.
type recordingConn struct {
	transport.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) OpenLane(ctx context.Context) (transport.Lane, error) {
	l, err := c.Conn.OpenLane(ctx)
	if err != nil {
		return nil, err
	}
	return &recordingLane{Lane: l, c: c}, nil
}

type recordingLane struct {
	transport.Lane
	c *recordingConn
}

func (l *recordingLane) Write(p []byte) (int, error) {
	l.c.mu.Lock()
	l.c.writes = append(l.c.writes, append([]byte(nil), p...))
	l.c.mu.Unlock()
	return l.Lane.Write(p)
}

// TestDataHeaderNotAlone: a DATA frame's header goes to the lane in one
// Write with the first bytes of its payload (up to dataHeadSize in all),
// and the rest of the payload in one more, so that no packet carries a
// header alone; the bytes are the frame's, in order, whatever the size.
func TestDataHeaderNotAlone(t *testing.T) {
	hdrLen := len(framing.AppendHeader(nil, framing.Header{Type: framing.TypeData, StreamID: 1, Length: 1 << 16}))
	for _, n := range []int{1, 100, dataHeadSize - hdrLen - 1, dataHeadSize - hdrLen, dataHeadSize - hdrLen + 1, 16 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("payload %d", n), func(t *testing.T) {
			cc, sc := memconn.Pair()
			rc := &recordingConn{Conn: cc}
			cfg := &Config{MaxFramePayload: 64 << 10, DeadPeerTimeout: time.Minute}
			client, err := New(rc, cfg)
			require.NoError(t, err)
			server, err := New(sc, cfg)
			require.NoError(t, err)
			t.Cleanup(func() { client.Close(); server.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			st, err := client.Open(ctx)
			require.NoError(t, err)
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			_, err = st.Write(payload)
			require.NoError(t, err)
			require.NoError(t, st.Close())
			peer, err := server.Accept(ctx)
			require.NoError(t, err)
			got, err := io.ReadAll(peer)
			require.NoError(t, err)
			require.Equal(t, payload, got)

			rc.mu.Lock()
			defer rc.mu.Unlock()
			var sent []byte // the DATA payloads, in the order written
			frames := 0
			for i := 0; i < len(rc.writes); i++ {
				w := rc.writes[i]
				h, hl, err := framing.ParseHeader(w)
				if err != nil || h.Type != framing.TypeData || h.Length == 0 {
					continue // control frames, or an empty DATA (FIN)
				}
				frames++
				first := min(int(h.Length), dataHeadSize-hl)
				require.Equal(t, hl+first, len(w), "write %d: the header and the payload's first %d bytes", i, first)
				sent = append(sent, w[hl:]...)
				if rest := int(h.Length) - first; rest > 0 {
					require.Less(t, i+1, len(rc.writes), "the rest of the payload never written")
					i++
					require.Len(t, rc.writes[i], rest, "write %d: the rest of the payload in one write", i)
					sent = append(sent, rc.writes[i]...)
				}
			}
			assert.Positive(t, frames)
			assert.Equal(t, payload, sent)
		})
	}
}
