package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/mux"
)

// budgetSlack is what a session budget sized for one large window holds
// besides it: mux.SessionOverhead, mux.StreamOverhead and a decoder of
// compressed data, 0.7 MiB in all, with room to spare.
const budgetSlack = 4 << 20

// flagSet is a flag.FlagSet that takes flags before and after the
// positional arguments, reports errors as one line and prints help on
// request.
type flagSet struct {
	*flag.FlagSet
	cmd, args string
	help      io.Writer
	// trailing is kept for callers written when flags had to come first;
	// flags are now allowed anywhere, so it changes nothing.
	trailing bool
	// shorts maps a long flag's name to its one-letter alias, for help.
	shorts map[string]string
}

func newFlagSet(e *env, cmd, args string) *flagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by run, help by parse
	return &flagSet{FlagSet: fs, cmd: cmd, args: args, help: e.stdout, shorts: map[string]string{}}
}

// alias makes -short another name of the flag --long, which must be
// registered already.
func (fs *flagSet) alias(short, long string) {
	f := fs.Lookup(long)
	fs.Var(f.Value, short, f.Usage)
	fs.shorts[long] = short
}

// flagName matches a flag's name in the flag package's messages.
var flagName = regexp.MustCompile(`(for flag|not defined:) -([A-Za-z0-9][A-Za-z0-9-]+)`)

// parse parses args, flags and positional arguments in any order ("--"
// ends the flags), and checks that the positional arguments number between
// min and max.
func (fs *flagSet) parse(args []string, min, max int) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.printHelp()
				return nil, errHelp
			}
			// Name flags as the help does: --window, -k.
			return nil, &usageError{msg: flagName.ReplaceAllString(err.Error(), "$1 --$2")}
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if used := len(args) - len(left); used > 0 && args[used-1] == "--" {
			rest = append(rest, left...)
			break
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
	switch {
	case len(rest) < min:
		return nil, usageErrorf("missing arguments: want %s", fs.args)
	case len(rest) > max:
		return nil, usageErrorf("too many arguments: %q (want %s)", rest, fs.args)
	}
	return rest, nil
}

// printHelp prints the usage and the flags, long ones with two dashes.
func (fs *flagSet) printHelp() {
	fmt.Fprintf(fs.help, "Usage: bpcat %s %s\n", fs.cmd, fs.args)
	if s, ok := summaries[fs.cmd]; ok {
		fmt.Fprintf(fs.help, "\n%s.\n", s)
	}
	fmt.Fprintln(fs.help, "\nFlags:")
	aliased := map[string]bool{}
	for _, short := range fs.shorts {
		aliased[short] = true
	}
	fs.VisitAll(func(f *flag.Flag) {
		if aliased[f.Name] {
			return
		}
		arg, usage := flag.UnquoteUsage(f)
		names := dashed(f.Name)
		if short, ok := fs.shorts[f.Name]; ok {
			names = dashed(short) + ", " + names
		}
		if arg != "" {
			names += " " + arg
		}
		def := ""
		switch f.DefValue {
		case "", "0", "false", "0s":
		default:
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(fs.help, "  %s\n    \t%s%s\n", names, strings.ReplaceAll(usage, "\n", "\n    \t"), def)
	})
}

// dashed writes a flag's name as it is typed: -k, --keep-open.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// sessionFlags configure the sessions a command makes: the receive
// windows this side grants, how long a silent peer is waited for, and
// how the sessions are observed (metrics, qlog, thresholds).
type sessionFlags struct {
	window, maxWindow uint64
	deadPeer          time.Duration
	transport         string // --transport: quic, xquic or tcp
	compress          string // --compress: zstd, s2 or none
	codec             codec.Codec
	obs               observeFlags
	// observer tracks the command's sessions for --metrics once
	// startObserver has run (nil: not asked for, or not yet).
	observer *observer
}

// startObserver starts what the observation flags ask for (the metrics
// server, the qlog directory); the command closes f.observer when it
// ends.
func (f *sessionFlags) startObserver(e *env) error {
	o, err := f.obs.start(e)
	f.observer = o
	return err
}

func (f *sessionFlags) register(fs *flagSet) {
	fs.Var(windowFlag{&f.window}, "window", "initial receive `SIZE` this side grants per stream, up to 1GiB (default 128KiB)")
	fs.Var(windowFlag{&f.maxWindow}, "max-window", "largest receive window `SIZE` a stream auto-tunes to, up to 1GiB (default 16MiB, or --window if larger)")
	f.deadPeer = mux.DefaultDeadPeerTimeout
	fs.Var(durationFlag{&f.deadPeer}, "dead-peer", "give the peer up for gone when nothing is heard from it for `DURATION` (at least 1s)")
	fs.StringVar(&f.transport, "transport", string(bp.TransportQUIC), "the `TRANSPORT` to run bp/1 over: quic (quic-go), xquic (golang.org/x/net/quic: not for production) or tcp (TLS over TCP, where UDP is blocked; a lost packet then delays every stream); both ends must use the same")
	fs.StringVar(&f.compress, "compress", "none", "compress with `CODEC`: zstd (ratio), s2 (speed) or none. It applies to the streams this side opens, both ways if the peer accepts it (the other end answers in kind), and to what this side sends on the streams it accepts; data that does not compress goes as it is")
	f.obs.register(fs)
}

// applyCompression gives a stream the peer opened the codec --compress
// asked for, when it was asked for; a stream without it follows its
// opener's choice.
func (f *sessionFlags) applyCompression(s *mux.Stream) error {
	if f.codec == codec.None {
		return nil
	}
	return s.SetCompression(f.codec)
}

// address returns hostport as bp.Dial and bp.Listen take it for the
// --transport chosen.
func (f *sessionFlags) address(hostport string) string {
	if f.transport == "" || f.transport == string(bp.TransportQUIC) {
		return hostport
	}
	return f.transport + "://" + hostport
}

// config returns the mux configuration for the flags, with onEvent as the
// event hook (may be nil).
func (f *sessionFlags) config(onEvent func(mux.Event)) (*mux.Config, error) {
	if f.deadPeer < time.Second {
		return nil, usageErrorf("--dead-peer %v: want at least 1s", f.deadPeer)
	}
	t, _, err := bp.SplitAddress(f.transport + "://")
	if err != nil || f.transport == "" {
		return nil, usageErrorf("--transport %q: want quic, xquic or tcp", f.transport)
	}
	f.transport = string(t)
	if f.codec, err = codec.Parse(f.compress); err != nil {
		return nil, usageErrorf("--compress %q: want zstd, s2 or none", f.compress)
	}
	cfg := &mux.Config{InitialWindow: f.window, MaxWindow: f.maxWindow, DeadPeerTimeout: f.deadPeer, OnEvent: onEvent, Compression: f.codec}
	if err := f.obs.apply(cfg); err != nil {
		return nil, err
	}
	if cfg.MaxWindow == 0 && cfg.InitialWindow > 16<<20 {
		cfg.MaxWindow = cfg.InitialWindow
	}
	if cfg.InitialWindow == 0 && cfg.MaxWindow != 0 && cfg.MaxWindow < 128<<10 {
		cfg.InitialWindow = max(cfg.MaxWindow, mux.DefaultInitialWindow)
	}
	// One stream may reach the largest window asked for: the budget
	// holds it and what else it holds (the session's and the stream's
	// fixed memory, the decoder of compressed data: under budgetSlack).
	if cfg.MaxWindow != 0 && cfg.SessionBudget == 0 && cfg.MaxWindow+budgetSlack > 64<<20 {
		cfg.SessionBudget = cfg.MaxWindow + budgetSlack
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
	size     uint64
	trace    string
	stats    bool
	quiet    bool
}

func (v *viewFlags) register(fs *flagSet) {
	fs.Var(rateFlag{&v.readRate}, "read-rate", "consume received data no faster than `RATE` per second (a slow receiver on demand), e.g. 8MiB")
	fs.Var(sizeFlag{&v.size}, "size", "expect `SIZE` bytes, for the view's percentage and ETA, as pv -s (default: the size of a regular file on stdin)")
	fs.alias("s", "size")
	fs.StringVar(&v.trace, "trace", "", "write every flow-control event to `FILE` as JSON lines (see 'bpcat plot')")
	fs.BoolVar(&v.stats, "stats", false, "show the live window view on stderr even when it is not a terminal, or in a chat")
	fs.BoolVar(&v.quiet, "quiet", false, "show neither the live view nor the summary")
}

// check validates the flags once parsed.
func (v *viewFlags) check(fs *flagSet) error {
	if fs.isSet("read-rate") && v.readRate == 0 {
		return usageErrorf("--read-rate 0: want a rate above 0 (leave the flag out to read at full speed)")
	}
	if v.stats && v.quiet {
		return usageErrorf("--stats and --quiet contradict each other")
	}
	return nil
}

// chat reports whether e is an interactive chat: stdin and stdout both on
// terminals.
func (e *env) chat() bool { return e.stdinTTY && e.stdoutTTY }

// live reports whether the live view is on: on a terminal unless in a
// chat (where it would mix with what is typed and received), or when
// asked for.
func (v *viewFlags) live(e *env) bool {
	return !v.quiet && (v.stats || e.stderrTTY && !e.chat())
}

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
