package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bpmux/bp/mux"
)

// flagSet is a flag.FlagSet that reports errors as one line and prints
// help on request.
type flagSet struct {
	*flag.FlagSet
	cmd, args string
	help      io.Writer
	// trailing allows flags after the positional arguments.
	trailing bool
}

func newFlagSet(e *env, cmd, args string) *flagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by run, help by parse
	return &flagSet{FlagSet: fs, cmd: cmd, args: args, help: e.stdout}
}

// parse parses args and checks that the positional arguments number
// between min and max.
func (fs *flagSet) parse(args []string, min, max int) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.printHelp()
			return nil, errHelp
		}
		return nil, &usageError{msg: err.Error()}
	}
	rest := fs.Args()
	for _, a := range rest {
		if !fs.trailing && strings.HasPrefix(a, "-") && len(a) > 1 {
			return nil, usageErrorf("flag %s after the arguments: flags go before positional arguments", a)
		}
	}
	switch {
	case len(rest) < min:
		return nil, usageErrorf("missing arguments: want %s", fs.args)
	case len(rest) > max:
		return nil, usageErrorf("too many arguments: %q (want %s)", rest, fs.args)
	}
	return rest, nil
}

func (fs *flagSet) printHelp() {
	fmt.Fprintf(fs.help, "Usage: bpcat %s %s\n", fs.cmd, fs.args)
	if s, ok := summaries[fs.cmd]; ok {
		fmt.Fprintf(fs.help, "\n%s.\n", s)
	}
	fmt.Fprintln(fs.help, "\nFlags:")
	fs.SetOutput(fs.help)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// sessionFlags configure the sessions a command makes: the receive
// windows this side grants and how long a silent peer is waited for.
type sessionFlags struct {
	window, maxWindow uint64
	deadPeer          time.Duration
}

func (f *sessionFlags) register(fs *flagSet) {
	fs.Var(sizeFlag{&f.window}, "window", "initial receive `SIZE` this side grants per stream (default 128KiB)")
	fs.Var(sizeFlag{&f.maxWindow}, "max-window", "largest receive window `SIZE` a stream auto-tunes to (default 16MiB, or --window if larger)")
	f.deadPeer = mux.DefaultDeadPeerTimeout
	fs.Var(durationFlag{&f.deadPeer}, "dead-peer", "give the peer up for gone when nothing is heard from it for `DURATION` (at least 1s)")
}

// config returns the mux configuration for the flags, with onEvent as the
// event hook (may be nil).
func (f *sessionFlags) config(onEvent func(mux.Event)) (*mux.Config, error) {
	if f.deadPeer < time.Second {
		return nil, usageErrorf("--dead-peer %v: want at least 1s", f.deadPeer)
	}
	cfg := &mux.Config{InitialWindow: f.window, MaxWindow: f.maxWindow, DeadPeerTimeout: f.deadPeer, OnEvent: onEvent}
	if cfg.MaxWindow == 0 && cfg.InitialWindow > 16<<20 {
		cfg.MaxWindow = cfg.InitialWindow
	}
	if cfg.InitialWindow == 0 && cfg.MaxWindow != 0 && cfg.MaxWindow < 128<<10 {
		cfg.InitialWindow = max(cfg.MaxWindow, mux.DefaultInitialWindow)
	}
	if cfg.MaxWindow != 0 && cfg.SessionBudget == 0 && cfg.MaxWindow > 64<<20 {
		cfg.SessionBudget = cfg.MaxWindow
	}
	if err := cfg.Validate(); err != nil {
		return nil, usageErrorf("--window/--max-window: %v", strings.TrimPrefix(err.Error(), "mux: "))
	}
	return cfg, nil
}

// describe is the package's describe, with the dead-peer bound in the
// words for a peer that stopped answering.
func (f *sessionFlags) describe(doing string, err error) error {
	if peerUnreachable(err) {
		return &plainError{fmt.Sprintf("%s: the peer stopped answering for %v (it, or the path to it, is gone)", doing, f.deadPeer), err}
	}
	return describe(doing, err)
}

// viewFlags control what a piping command shows and records.
type viewFlags struct {
	readRate uint64
	trace    string
	stats    bool
	quiet    bool
}

func (v *viewFlags) register(fs *flagSet) {
	fs.Var(rateFlag{&v.readRate}, "read-rate", "consume received data no faster than `RATE` per second (a slow receiver on demand), e.g. 8MiB")
	fs.StringVar(&v.trace, "trace", "", "write every flow-control event to `FILE` as JSON lines (see 'bpcat plot')")
	fs.BoolVar(&v.stats, "stats", false, "show the live window view on stderr even when it is not a terminal")
	fs.BoolVar(&v.quiet, "quiet", false, "show neither the live view nor the summary")
}

// live reports whether the live view is on.
func (v *viewFlags) live(e *env) bool { return !v.quiet && (v.stats || e.stderrTTY) }

// registerTimeout registers --timeout, the bound on connecting to a peer.
func registerTimeout(fs *flagSet, d *time.Duration) {
	*d = 10 * time.Second
	fs.Var(durationFlag{d}, "timeout", "give up connecting after `DURATION`")
}

// isSet reports whether the flag name was given on the command line.
func (fs *flagSet) isSet(name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
