package units

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		err  string
	}{
		{"0", 0, ""},
		{"4096", 4096, ""},
		{"10B", 10, ""},
		{"1KiB", 1 << 10, ""},
		{"8MiB", 8 << 20, ""},
		{"8mib", 8 << 20, ""},
		{"2GiB", 2 << 30, ""},
		{"1.5MiB", 3 << 19, ""},
		{"64KB", 64000, ""},
		{"3MB", 3e6, ""},
		{"1GB", 1e9, ""},
		{"16K", 16 << 10, ""},
		{" 8 MiB ", 8 << 20, ""},
		{"", 0, "want a number"},
		{"MiB", 0, "want a number"},
		{"8XB", 0, "unknown unit"},
		{"1.2.3KiB", 0, "bad number"},
		{"-1KiB", 0, "negative"},
		{"99999999999TiB", 0, "too large"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				assert.NotContains(t, err.Error(), "\n")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"8MiB", 8 << 20, true},
		{"8MiB/s", 8 << 20, true},
		{"8MiB/sec", 8 << 20, true},
		{"10MBps", 10e6, true},
		{"512KiB/s", 512 << 10, true},
		{"100", 100, true},
		{"0", 0, true},
		{"fast", 0, false},
		{"/s", 0, false},
		{"8MiB/h", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRate(tc.in)
			if !tc.ok {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "rate")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
