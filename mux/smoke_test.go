package mux

import (
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSmokeEcho(t *testing.T) {
	p := newPair(t, nil, nil)
	c, s := p.openPair(t)
	go func() {
		io.Copy(s, s)
		s.CloseWrite()
	}()
	msg := make([]byte, 1<<20)
	for i := range msg {
		msg[i] = byte(i)
	}
	go func() {
		c.Write(msg)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, msg, got)
}
