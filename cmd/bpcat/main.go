// Command bpcat pipes bytes over bp/1 (a transport with end-to-end
// backpressure on QUIC, so over UDP) and shows the flow-control window at
// work: netcat, pv and iperf3 in one tool.
//
// Usage:
//
//	bpcat listen  [flags] [HOST] PORT | HOST:PORT    accept a session, like nc -l
//	bpcat connect [flags] HOST PORT | HOST:PORT      connect, like nc host port
//	bpcat relay   [flags] LISTEN_ADDR UPSTREAM_ADDR  forward streams to another hop
//	bpcat bench   [flags] (-l ADDR | ADDR)           measure throughput
//	bpcat plot    [flags] TRACE -o OUT               draw a trace as SVG or PNG
//	bpcat demo    [flags]                            see backpressure on this machine
//
// Flags go before or after the arguments; `bpcat COMMAND -h` lists them.
// Exit codes: 0 success, 1 failure, 2 usage, 130/143 interrupted by
// SIGINT/SIGTERM (see exitCode).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// command is one subcommand.
type command struct {
	name  string
	args  string // positional arguments, for usage
	short string // one line of description
	run   func(ctx context.Context, env *env, args []string) error
}

// env is what a subcommand may touch of the outside world, so that tests
// (and the demo) can run commands in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// stderrTTY says whether stderr is a terminal (live view by default);
	// stdinTTY and stdoutTTY the same of stdin and stdout (interactive
	// use: see pipeStream and startView).
	stderrTTY, stdinTTY, stdoutTTY bool
	// stdinSize is the number of bytes left in stdin when it is a regular
	// file, or -1 when that is not known.
	stdinSize int64
	// width returns the terminal width of stderr in columns, or 0 if it
	// is not known. Nil: not known.
	width func() int
}

// columns returns e's terminal width, or 0 if it is not known.
func (e *env) columns() int {
	if e.width == nil {
		return 0
	}
	return e.width()
}

// summaries describe the commands in one line each.
var summaries = map[string]string{
	"listen":  "accept a session (one, or one after another with -k); its stream carries stdin to the peer and the peer's bytes to stdout",
	"connect": "connect to HOST PORT; stdin goes to the peer, the peer's bytes to stdout",
	"relay":   "accept sessions and forward each stream to UPSTREAM_ADDR with bounded memory",
	"bench":   "measure throughput: -l ADDR serves, ADDR measures",
	"plot":    "draw window and credit over time from a trace as SVG or PNG",
	"demo":    "run a sender and a deliberately slow receiver here and watch backpressure",
}

var commands = []command{
	{"listen", "[flags] [HOST] PORT | HOST:PORT", summaries["listen"], runListen},
	{"connect", "[flags] HOST PORT | HOST:PORT", summaries["connect"], runConnect},
	{"relay", "[flags] LISTEN_ADDR UPSTREAM_ADDR", summaries["relay"], runRelay},
	{"bench", "[flags] (-l ADDR | ADDR)", summaries["bench"], runBench},
	{"plot", "[flags] TRACE -o OUT", summaries["plot"], runPlot},
	{"demo", "[flags]", summaries["demo"], runDemo},
}

func main() {
	// A closed stdout (bpcat listen ... | head -c 100) must give the
	// writing code EPIPE, so that bpcat can stop its stream, tell the
	// peer and say so, rather than die of SIGPIPE in silence.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := notifyInterrupt(context.Background())
	e := &env{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		stderrTTY: isTerminal(os.Stderr), stdinTTY: isTerminal(os.Stdin), stdoutTTY: isTerminal(os.Stdout),
		stdinSize: regularSize(os.Stdin),
		width:     func() int { return terminalWidth(os.Stderr) },
	}
	code := run(ctx, e, os.Args[1:])
	stop()
	os.Exit(code)
}

// terminalWidth returns the width in columns of the terminal f is, or 0.
func terminalWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

// regularSize returns the bytes left to read in f if it is a regular file,
// or -1.
func regularSize(f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off > fi.Size() {
		return -1
	}
	return fi.Size() - off
}

// interruptedError is the cause of the context of a command interrupted
// by a signal.
type interruptedError struct{ sig os.Signal }

func (e *interruptedError) Error() string {
	name := e.sig.String()
	switch e.sig {
	case os.Interrupt:
		name = "SIGINT"
	case syscall.SIGTERM:
		name = "SIGTERM"
	}
	return "interrupted (" + name + ")"
}

// errInterrupted is the cause when the signal is not known.
var errInterrupted = errors.New("interrupted")

// interruption returns why ctx ended as an error: the signal that
// interrupted the command, or errInterrupted.
func interruption(ctx context.Context) error {
	var ie *interruptedError
	if err := context.Cause(ctx); errors.As(err, &ie) {
		return ie
	}
	return errInterrupted
}

// notifyInterrupt returns a copy of parent that is canceled, with an
// *interruptedError as its cause, at the first SIGINT or SIGTERM. The
// command then ends its work gracefully within a bounded grace; a second
// signal has its default effect and ends the process at once.
func notifyInterrupt(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-sigs:
			signal.Stop(sigs)
			cancel(&interruptedError{sig})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel(nil)
	}
}

// Exit codes: one table for every subcommand (README.md, "Exit codes").
const (
	exitOK     = 0   // the command did what it was asked to
	exitError  = 1   // the transfer (or whatever the command does) failed
	exitUsage  = 2   // bad command line
	exitSIGINT = 130 // interrupted by SIGINT (Ctrl-C): 128+2, as a shell reports it
	exitSIGTRM = 143 // interrupted by SIGTERM: 128+15
)

// exitCode is the exit status for what a command returned, err, when its
// context was ctx: interrupted (130 or 143) if a signal ended ctx,
// whatever the command made of it (a relay or a server ends normally on
// an interrupt, and still exits 130); otherwise 0 for nil, 2 for a
// *usageError, and 1 for any other error. Every subcommand's status comes
// from here, through run.
func exitCode(ctx context.Context, err error) int {
	var ie *interruptedError
	if errors.As(context.Cause(ctx), &ie) || errors.As(err, &ie) {
		if ie.sig == syscall.SIGTERM {
			return exitSIGTRM
		}
		return exitSIGINT
	}
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, errInterrupted):
		return exitSIGINT
	}
	return exitError
}

// usageError is a bad command line: reported with a hint, exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// errHelp is returned when help was asked for and printed.
var errHelp = errors.New("help requested")

// run runs the command line args and returns the exit code (exitCode).
// Every error is printed as one line on stderr.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		switch {
		case len(args) == 1:
			usage(e.stdout)
			return exitOK
		case len(args) > 2:
			fmt.Fprintf(e.stderr, "bpcat help: want at most one COMMAND, got %q (see 'bpcat help')\n", args[1:])
			return exitUsage
		case args[1] == "version":
			return run(ctx, e, args[1:])
		}
		if c := lookup(args[1]); c != nil {
			return run(ctx, e, []string{c.name, "-h"})
		}
		fmt.Fprintf(e.stderr, "bpcat help: unknown command %q (see 'bpcat help')\n", args[1])
		return exitUsage
	case "version", "-version", "--version":
		fmt.Fprintln(e.stdout, version())
		return exitOK
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(e.stderr, "bpcat: unknown command %q (see 'bpcat help')\n", name)
		return exitUsage
	}
	err := c.run(ctx, e, args[1:])
	code := exitCode(ctx, err)
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "bpcat %s: %v (see 'bpcat %s -h')\n", c.name, oneLine(err), c.name)
	default:
		fmt.Fprintf(e.stderr, "bpcat %s: %v\n", c.name, oneLine(err))
	}
	return code
}

// version describes this build: the module version (or "devel") and, when
// the build recorded it, the VCS revision.
func version() string {
	v, rev := "devel", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " " + s.Value[:12]
			}
		}
	}
	return fmt.Sprintf("bpcat %s%s (protocol bp/1 over QUIC, %s)", v, rev, runtime.Version())
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// oneLine keeps an error message on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func usage(w io.Writer) {
	fmt.Fprint(w, `bpcat pipes bytes over bp/1, a transport with end-to-end backpressure on
QUIC, and shows the flow-control window at work. QUIC runs over UDP: a
firewall must let UDP through to the listening port.

Usage:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  bpcat %-8s %s\n", c.name, c.args)
		fmt.Fprintf(w, "      %s\n", c.short)
	}
	fmt.Fprint(w, `  bpcat version
      print the version

Flags go before or after the arguments; 'bpcat help COMMAND' lists a
command's flags. Sizes take KiB/MiB/GiB or KB/MB/GB suffixes (8MiB), rates
the same per second (8MiB or 8MiB/s), durations Go's form (1.5s, 2m) or
seconds (10).

When listen and connect end: a side sends its stdin and, at its end,
half-closes (as nc -N does) and waits until the peer's application has
read everything; it receives until the peer half-closes. It exits once
both directions are done, or once the peer's data ended if its stdin is a
terminal (as nc -l does), so an interactive side never waits for a Ctrl-D.
--send-only never writes what arrives (the peer is told to stop sending),
--recv-only never reads stdin; -q D stops receiving D after stdin ended.

A transfer that cannot finish (an interrupt, a stream the peer reset or
stopped reading, a stdout that closed) resets its stream, so the peer
learns that data was lost, and ends the session within 3s; a second Ctrl-C
or SIGTERM exits at once. A peer that answers nothing for --dead-peer
(10s) is given up for gone.

Exit codes: 0 done; 1 failed (the transfer, or the command's work); 2 bad
command line; 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM, for every
command (a relay or a server ends only that way).

Start with: bpcat demo
`)
}

// isTerminal reports whether f is a terminal (not merely a character
// device: /dev/null and /dev/zero are those too).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
