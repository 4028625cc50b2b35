package bp

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bpmux/bp/transport"
)

// TestListenConfigSessionRate: how SessionRate and SessionBurst become
// the transport's rate and burst (zero rate: no limit; zero burst: a
// second's worth of the rate, filled in by the transport).
func TestListenConfigSessionRate(t *testing.T) {
	tests := []struct {
		name      string
		rate      float64
		burst     int
		wantRate  float64
		wantBurst int
		invalid   bool
	}{
		{"defaults", 0, 0, DefaultSessionRate, DefaultSessionBurst, false},
		{"default rate, own burst", 0, 20, DefaultSessionRate, 20, false},
		{"own rate, burst of a second", 50, 0, 50, 0, false},
		{"own rate and burst", 50, 10, 50, 10, false},
		{"disabled", -1, 0, 0, 0, false},
		{"disabled, burst ignored", -1, 10, 0, 0, false},
		{"negative burst", 50, -1, 0, 0, true},
		{"NaN", math.NaN(), 0, 0, 0, true},
		{"infinite", math.Inf(1), 0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rate, burst, err := ListenConfig{SessionRate: tt.rate, SessionBurst: tt.burst}.sessionRate()
			if tt.invalid {
				require.ErrorIs(t, err, ErrInvalidArgument)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantRate, rate)
			assert.Equal(t, tt.wantBurst, burst)
		})
	}
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	_, err = ListenConfig{SessionBurst: -1}.Listen("127.0.0.1:0", transport.ServerConfig(cert))
	assert.ErrorIs(t, err, ErrInvalidArgument)
}
