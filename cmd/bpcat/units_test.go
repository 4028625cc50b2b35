package main

import (
	"bytes"
	"context"
	"io"
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
		{[]string{"connect", "--bogus", "127.0.0.1:1"}, "flag provided but not defined: --bogus", exitUsage},
		{[]string{"connect", "127.0.0.1:1", "--pin", "x"}, "--pin", exitUsage},
		{[]string{"connect", "nowhere"}, `address "nowhere": want HOST PORT or HOST:PORT`, exitUsage},
		{[]string{"connect", "127.0.0.1", "http-nope"}, `port "http-nope"`, exitUsage},
		{[]string{"connect", "a", "b", "c"}, "too many arguments", exitUsage},
		{[]string{"listen", "--window", "100GiB", "4242"}, "--window: 100.00 GiB is more than the 1.00 GiB", exitUsage},
		{[]string{"listen", "--max-window", "0", "4242"}, "--max-window: a window of 0 bytes", exitUsage},
		{[]string{"listen", "4242", "--read-rate", "0"}, "--read-rate 0: want a rate above 0", exitUsage},
		{[]string{"listen", "--send-only", "--recv-only", "4242"}, "contradict", exitUsage},
		{[]string{"listen", "-4", "-6", "4242"}, "contradict", exitUsage},
		{[]string{"connect", "-4", "::1", "4242"}, "::1 is not an IPv4 address", exitUsage},
		{[]string{"help", "nope"}, `unknown command "nope"`, exitUsage},
		{[]string{"connect", "--pin", "sha256:abc", "127.0.0.1:1"}, "--pin", exitUsage},
		{[]string{"connect", "--insecure", "--pin", "sha256:abc", "127.0.0.1:1"}, "--insecure contradicts", exitUsage},
		{[]string{"listen", "--window", "1KiB", "127.0.0.1:0"}, "below the protocol minimum", exitUsage},
		{[]string{"listen", "--cert", "x.pem", "127.0.0.1:0"}, "--cert and --key go together", exitUsage},
		{[]string{"listen", "256.1.1.1:0"}, "256.1.1.1:0", exitError},
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

// TestHelp: help goes to stdout with status 0, names flags as they are
// typed (--cert, -k), says that bpcat uses UDP, and gives the exit codes.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"help", "connect"}, {"connect", "-h"}, {"listen", "--help"}} {
		var stdout, stderr bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
		code := run(context.Background(), e, args)
		assert.Equal(t, exitOK, code, "%v", args)
		assert.Contains(t, stdout.String(), "Usage", "%v", args)
		assert.Empty(t, stderr.String(), "%v", args)
	}
	help := func(args ...string) string {
		var stdout bytes.Buffer
		run(context.Background(), &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: io.Discard}, args)
		return stdout.String()
	}
	general := help("help")
	assert.Contains(t, general, "UDP")
	assert.Contains(t, general, "130")
	listen := help("help", "listen")
	assert.Contains(t, listen, "  --cert FILE\n")
	assert.Contains(t, listen, "  -k, --keep-open\n")
	assert.Contains(t, listen, "  -w, --idle-timeout DURATION\n")
	assert.NotRegexp(t, `(?m)^  -[a-z][a-z-]+`, listen, "a long flag with one dash")
	assert.Regexp(t, `^bpcat \S+ \(protocol bp/1`, help("--version"))
}

// TestParseFlagsAnywhere: flags before, between and after the arguments;
// "--" ends them.
func TestParseFlagsAnywhere(t *testing.T) {
	for _, tc := range []struct {
		args []string
		rest []string
	}{
		{[]string{"-v", "h", "1"}, []string{"h", "1"}},
		{[]string{"h", "-v", "1"}, []string{"h", "1"}},
		{[]string{"h", "1", "--pin", "x", "-v"}, []string{"h", "1"}},
		{[]string{"h", "--", "-1"}, []string{"h", "-1"}},
	} {
		var v bool
		var pin string
		fs := newFlagSet(&env{stdout: io.Discard}, "t", "A B")
		fs.BoolVar(&v, "v", false, "")
		fs.StringVar(&pin, "pin", "", "")
		rest, err := fs.parse(tc.args, 0, 2)
		require.NoError(t, err, "%q", tc.args)
		assert.Equal(t, tc.rest, rest, "%q", tc.args)
	}
}

// TestHostPort: nc's address forms and Go's.
func TestHostPort(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		portOnly bool
		want     string
	}{
		{[]string{"4242"}, true, ":4242"},
		{[]string{"127.0.0.1", "4242"}, false, "127.0.0.1:4242"},
		{[]string{"::1", "4242"}, false, "[::1]:4242"},
		{[]string{"[::1]:4242"}, false, "[::1]:4242"},
		{[]string{"localhost:0"}, true, "localhost:0"},
	} {
		a, err := parseHostPort(tc.args, tc.portOnly)
		require.NoError(t, err, "%q", tc.args)
		assert.Equal(t, tc.want, a.String())
	}
	_, err := parseHostPort([]string{"4242"}, false)
	assert.Error(t, err, "connect needs a host")
}
