// Command bpcat pipes bytes over bp/1 (a transport with end-to-end
// backpressure on QUIC) and shows the flow-control window at work: netcat,
// pv and iperf3 in one tool.
//
// Usage:
//
//	bpcat listen  [flags] ADDR                      accept one session, like nc -l
//	bpcat connect [flags] ADDR                      connect, like nc host port
//	bpcat relay   [flags] LISTEN_ADDR UPSTREAM_ADDR forward streams to another hop
//	bpcat bench   [flags] (-l ADDR | ADDR)          measure throughput
//	bpcat plot    [flags] TRACE -o OUT              draw a trace as SVG or PNG
//	bpcat demo    [flags]                           see backpressure on this machine
//
// Flags go before positional arguments; `bpcat COMMAND -h` lists them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
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
	// stderrTTY says whether stderr is a terminal (live view by default).
	stderrTTY bool
}

// summaries describe the commands in one line each.
var summaries = map[string]string{
	"listen":  "accept one session; its first stream carries stdin to the peer and the peer's bytes to stdout",
	"connect": "connect to ADDR; stdin goes to the peer, the peer's bytes to stdout",
	"relay":   "accept sessions and forward each stream to UPSTREAM_ADDR with bounded memory",
	"bench":   "measure throughput: -l ADDR serves, ADDR measures",
	"plot":    "draw window and credit over time from a trace as SVG or PNG",
	"demo":    "run a sender and a deliberately slow receiver here and watch backpressure",
}

var commands = []command{
	{"listen", "[flags] ADDR", summaries["listen"], runListen},
	{"connect", "[flags] ADDR", summaries["connect"], runConnect},
	{"relay", "[flags] LISTEN_ADDR UPSTREAM_ADDR", summaries["relay"], runRelay},
	{"bench", "[flags] (-l ADDR | ADDR)", summaries["bench"], runBench},
	{"plot", "[flags] TRACE -o OUT", summaries["plot"], runPlot},
	{"demo", "[flags]", summaries["demo"], runDemo},
}

func main() {
	ctx, stop := notifyInterrupt(context.Background())
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, stderrTTY: isTerminal(os.Stderr)}
	code := run(ctx, e, os.Args[1:])
	stop()
	os.Exit(code)
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

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // bad command line
)

// usageError is a bad command line: reported with a hint, exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// errHelp is returned when help was asked for and printed.
var errHelp = errors.New("help requested")

// run runs the command line args and returns the exit code. Every error is
// printed as one line on stderr.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if c := lookup(args[1]); c != nil {
				return run(ctx, e, []string{c.name, "-h"})
			}
		}
		usage(e.stdout)
		return exitOK
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(e.stderr, "bpcat: unknown command %q (see 'bpcat help')\n", name)
		return exitUsage
	}
	err := c.run(ctx, e, args[1:])
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "bpcat %s: %v (see 'bpcat %s -h')\n", c.name, oneLine(err), c.name)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "bpcat %s: %v\n", c.name, oneLine(err))
		return exitError
	}
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
QUIC, and shows the flow-control window at work.

Usage:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  bpcat %-8s %s\n", c.name, c.args)
		fmt.Fprintf(w, "      %s\n", c.short)
	}
	fmt.Fprint(w, `
Flags go before positional arguments; 'bpcat COMMAND -h' lists a command's
flags. Sizes take KiB/MiB/GiB or KB/MB/GB suffixes (8MiB), rates the same
per second (8MiB or 8MiB/s), durations Go's form (1.5s, 2m).

A transfer that cannot finish (an interrupt, a stream the peer reset)
resets its stream, so the peer learns that data was lost, ends the session
within 3s, and exits 1; a second Ctrl-C or SIGTERM exits at once. A peer
that answers nothing for --dead-peer (10s) is given up for gone.

Start with: bpcat demo
`)
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
