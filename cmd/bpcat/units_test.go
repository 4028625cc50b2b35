package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"10", 10 * time.Second, true},
		{"1.5", 1500 * time.Millisecond, true},
		{"250ms", 250 * time.Millisecond, true},
		{"2m", 2 * time.Minute, true},
		{"-1s", 0, false},
		{"-3", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseDuration(tc.in)
			if !tc.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFormat(t *testing.T) {
	assert.Equal(t, "512 B", formatSize(512))
	assert.Equal(t, "256.0 KiB", formatSize(256<<10))
	assert.Equal(t, "8.00 MiB", formatSize(8<<20))
	assert.Equal(t, "1.50 GiB", formatSize(3<<29))
	assert.Equal(t, "4.0 MiB/s", formatRate(4<<20))
	assert.Equal(t, "0 B/s", formatRate(0))
}

// TestCommandLine runs bad command lines in-process: each gets one line
// on stderr, no stack trace, and exit code 2.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{nil, "Usage:", exitUsage},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`, exitUsage},
		{[]string{"listen"}, "missing arguments", exitUsage},
		{[]string{"listen", "--window", "lots", "127.0.0.1:0"}, `size "lots"`, exitUsage},
		{[]string{"connect", "--read-rate", "fast", "127.0.0.1:1"}, `rate "fast"`, exitUsage},
		{[]string{"connect", "--bogus", "127.0.0.1:1"}, "flag provided but not defined: -bogus", exitUsage},
		{[]string{"connect", "127.0.0.1:1", "--pin", "x"}, "flags go before positional arguments", exitUsage},
		{[]string{"connect", "nowhere"}, `address "nowhere": want HOST:PORT`, exitUsage},
		{[]string{"connect", "--pin", "sha256:abc", "127.0.0.1:1"}, "--pin", exitUsage},
		{[]string{"connect", "--insecure", "--pin", "sha256:abc", "127.0.0.1:1"}, "--insecure contradicts", exitUsage},
		{[]string{"listen", "--window", "1KiB", "127.0.0.1:0"}, "below the protocol minimum", exitUsage},
		{[]string{"listen", "--cert", "x.pem", "127.0.0.1:0"}, "--cert and --key go together", exitUsage},
		{[]string{"listen", "256.1.1.1:0"}, "listen on 256.1.1.1:0", exitError},
		{[]string{"relay", "127.0.0.1:0"}, "missing arguments", exitUsage},
		{[]string{"bench"}, "missing arguments", exitUsage},
		{[]string{"bench", "-P", "0", "127.0.0.1:1"}, "-P 0", exitUsage},
		{[]string{"bench", "-l", "127.0.0.1:0", "127.0.0.1:1"}, "give one of them", exitUsage},
		{[]string{"plot", "missing.jsonl"}, "-o", exitUsage},
		{[]string{"plot", "-o", "x.gif", "missing.jsonl"}, ".svg or .png", exitUsage},
		{[]string{"plot", "missing.jsonl", "-o", "x.svg"}, "no such file", exitError},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			code := run(ctx, e, tc.args)
			assert.Equal(t, tc.code, code, "stderr: %s", stderr.String())
			assert.Contains(t, stderr.String(), tc.want)
			assert.NotContains(t, stderr.String(), "goroutine ")
			if tc.args != nil {
				assert.Equal(t, 1, strings.Count(strings.TrimSuffix(stderr.String(), "\n"), "\n")+1, "one line: %q", stderr.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"help", "connect"}, {"connect", "-h"}} {
		var stdout, stderr bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
		code := run(context.Background(), e, args)
		assert.Equal(t, exitOK, code, "%v", args)
		assert.Contains(t, stdout.String(), "Usage", "%v", args)
		assert.Empty(t, stderr.String(), "%v", args)
	}
}
