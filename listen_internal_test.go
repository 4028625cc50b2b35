package bp

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

func TestQUICIdleTimeoutIsDeadPeerTimeout(t *testing.T) {
	tests := []struct {
		name string
		cfg  *mux.Config
		want time.Duration
	}{
		{"nil config", nil, mux.DefaultDeadPeerTimeout},
		{"zero field", &mux.Config{}, mux.DefaultDeadPeerTimeout},
		{"set", &mux.Config{DeadPeerTimeout: 3 * time.Second}, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, quicConfig(tt.cfg).IdleTimeout)
		})
	}
}

func TestListenConfigDefaults(t *testing.T) {
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	tests := []struct {
		name string
		lc   ListenConfig
		want time.Duration
	}{
		{"defaults", ListenConfig{}, DefaultIdleSessionTimeout},
		{"listener timeout", ListenConfig{IdleSessionTimeout: time.Minute}, time.Minute},
		{"session timeout wins", ListenConfig{IdleSessionTimeout: time.Minute, Session: &mux.Config{IdleTimeout: time.Hour}}, time.Hour},
		{"disabled", ListenConfig{IdleSessionTimeout: -1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := tt.lc.Listen("127.0.0.1:0", transport.ServerConfig(cert))
			require.NoError(t, err)
			defer ln.Close()
			assert.Equal(t, tt.want, ln.cfg.IdleTimeout)
		})
	}
	assert.Equal(t, DefaultMaxSessions, limit(0, DefaultMaxSessions))
	assert.Equal(t, 0, limit(-1, DefaultMaxSessions))
	assert.Equal(t, 7, limit(7, DefaultMaxSessions))
}
