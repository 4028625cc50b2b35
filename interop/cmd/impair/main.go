// Command impair runs the impairment proxy of package
// github.com/bpmux/bp/interop/impair between clients and one target.
//
//	impair [-udp|-tcp] -listen ADDR -target ADDR [-delay 25ms] [-jitter 0]
//	       [-loss 0.01] [-reorder 0] [-reorder-by 0] [-rate 10MB] [-queue 1MB]
//	       [-seed N] [-max-flows 1024] [-idle 60s] [-stats 0]
//
// Every impairment applies to both directions; -up-X and -down-X (for X one
// of delay, jitter, loss, reorder, reorder-by, rate, queue) override it for
// client -> server and server -> client traffic. Sizes take KB/MB/GB
// (powers of 1000) or KiB/MiB/GiB (powers of 1024) suffixes; rates are
// sizes per second ("10MB" or "10MB/s"). On SIGINT or SIGTERM the command
// prints the proxy's statistics to stdout and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/bpmux/bp/internal/units"
	"github.com/bpmux/bp/interop/impair"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// sizeFlag is a byte count or rate flag, parsed as every command of the
// project parses them (KiB/MiB/GiB and KB/MB/GB, an optional "/s").
type sizeFlag int64

func (s *sizeFlag) String() string { return fmt.Sprint(int64(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := units.ParseRate(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

// dirFlags are the impairment flags of one direction (or of both).
type dirFlags struct {
	delay, jitter, reorderBy time.Duration
	loss, reorder            float64
	rate, queue              sizeFlag
}

func (d *dirFlags) register(fs *flag.FlagSet, prefix, which string) {
	fs.DurationVar(&d.delay, prefix+"delay", 0, "one-way delay"+which)
	fs.DurationVar(&d.jitter, prefix+"jitter", 0, "uniform random extra delay (keeps order)"+which)
	fs.Float64Var(&d.loss, prefix+"loss", 0, "UDP loss probability in [0,1]"+which)
	fs.Float64Var(&d.reorder, prefix+"reorder", 0, "UDP reordering probability in [0,1]"+which)
	fs.DurationVar(&d.reorderBy, prefix+"reorder-by", 0, "how long a reordered packet is held back (0: max(delay/2, 1ms))"+which)
	fs.Var(&d.rate, prefix+"rate", "bandwidth cap per second, e.g. 10MB (0: unlimited)"+which)
	fs.Var(&d.queue, prefix+"queue", "bandwidth queue bound, e.g. 1MB (0: 100ms of rate, at least 64KiB)"+which)
}

// merge returns base with the fields overridden whose flags (prefix+name)
// were set.
func (d *dirFlags) merge(base *dirFlags, prefix string, set map[string]bool) impair.Direction {
	pick := func(name string) *dirFlags {
		if set[prefix+name] {
			return d
		}
		return base
	}
	return impair.Direction{
		Delay:     pick("delay").delay,
		Jitter:    pick("jitter").jitter,
		Loss:      pick("loss").loss,
		Reorder:   pick("reorder").reorder,
		ReorderBy: pick("reorder-by").reorderBy,
		Rate:      int64(pick("rate").rate),
		Queue:     int(min(int64(pick("queue").queue), 1<<31-1)),
	}
}

// proxy is what both proxies offer.
type proxy interface {
	Stats() impair.Stats
	Close() error
}

// run is the command: it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("impair", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	useUDP := fs.Bool("udp", false, "proxy UDP (the default)")
	useTCP := fs.Bool("tcp", false, "proxy TCP")
	listen := fs.String("listen", "", "address to listen on, e.g. 127.0.0.1:4443 (required)")
	target := fs.String("target", "", "address to forward to (required)")
	seed := fs.Uint64("seed", 1, "seed of all random decisions")
	maxFlows := fs.Int("max-flows", 0, "bound of client flows or connections (0: 1024)")
	idle := fs.Duration("idle", 0, "UDP flow idle timeout (0: 60s)")
	every := fs.Duration("stats", 0, "also print statistics at this interval (0: only at exit)")
	var base, up, down dirFlags
	base.register(fs, "", " (both directions)")
	up.register(fs, "up-", " (client -> server)")
	down.register(fs, "down-", " (server -> client)")

	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "impair: "+format+"\n", a...)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: impair [-udp|-tcp] -listen ADDR -target ADDR [flags]")
			fs.PrintDefaults()
			return 0
		}
		return fail("%v", err)
	}
	switch {
	case fs.NArg() > 0:
		return fail("unexpected argument %q", fs.Arg(0))
	case *useUDP && *useTCP:
		return fail("-udp and -tcp exclude each other")
	case *listen == "":
		return fail("-listen is required")
	case *target == "":
		return fail("-target is required")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg := impair.Config{
		Up:          up.merge(&base, "up-", set),
		Down:        down.merge(&base, "down-", set),
		Seed:        *seed,
		MaxFlows:    *maxFlows,
		IdleTimeout: *idle,
	}
	if err := cfg.Validate(); err != nil {
		return fail("%v", strings.TrimPrefix(err.Error(), "impair: "))
	}
	if *every < 0 {
		return fail("-stats %v is negative", *every)
	}

	var p proxy
	var addr, proto string
	if *useTCP {
		tp, err := impair.NewTCP(*listen, *target, cfg)
		if err != nil {
			return fail("%v", strings.TrimPrefix(err.Error(), "impair: "))
		}
		p, addr, proto = tp, tp.Addr().String(), "tcp"
	} else {
		up, err := impair.NewUDP(*listen, *target, cfg)
		if err != nil {
			return fail("%v", strings.TrimPrefix(err.Error(), "impair: "))
		}
		p, addr, proto = up, up.Addr().String(), "udp"
	}
	fmt.Fprintf(stderr, "impair: %s %s -> %s\n  up:   %v\n  down: %v\n", proto, addr, *target, cfg.Up, cfg.Down)

	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			fmt.Fprintf(stdout, "%s\n", p.Stats())
		case <-ctx.Done():
			err := p.Close()
			fmt.Fprintf(stdout, "%s\n", p.Stats())
			if err != nil {
				fmt.Fprintf(stderr, "impair: close: %v\n", err)
				return 1
			}
			return 0
		}
	}
}
