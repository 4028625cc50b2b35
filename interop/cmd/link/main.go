// Command link joins two network namespaces by the packet-level impaired
// link of package github.com/bpmux/bp/interop/link and forwards between
// them until interrupted. It needs root, /dev/net/tun and iproute2's ip.
//
//	link [-a bpA] [-b bpB] [-addr-a 10.99.0.1/24] [-addr-b 10.99.0.2/24]
//	     [-delay 15ms] [-jitter 0] [-loss 0] [-burst-p 0 -burst-r 0]
//	     [-reorder 0] [-reorder-by 0] [-rate 10Mbit] [-queue 25]
//	     [-queue-bytes 0] [-blackhole PASS/DROP[/once]] [-corrupt 0]
//	     [-seed 1] [-mtu 1500] [-stats 0]
//
// The defaults are the QUIC interop runner's: 15 ms one way, 10 Mbit/s and
// a 25-packet drop-tail queue each way; -delay 0 -rate 0 gives a clean
// link. Every impairment applies to both directions; -ab-X and -ba-X (for X
// one of delay, jitter, loss, burst-p, burst-r, burst-loss-good,
// burst-loss-bad, reorder, reorder-by, rate, queue, queue-bytes, blackhole,
// corrupt) override it for A -> B and B -> A traffic.
//
// Rates take bits per second with bit, kbit, Mbit or Gbit (powers of 1000,
// as tc counts them: "10Mbit") or bytes per second as every command of the
// project reads them ("1MiB", "1.25MB/s"). Forms ending in "bps" are
// refused as ambiguous. A blackhole schedule "5s/2s" passes packets for
// 5 s, then drops everything for 2 s, and repeats; "1s/3s/once" drops
// once, from 1 s to 4 s after the start.
//
// On SIGINT or SIGTERM the command removes the namespaces, prints the
// link's statistics to stdout and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bpmux/bp/internal/units"
	"github.com/bpmux/bp/interop/link"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// rateFlag is a rate in bytes per second, read from bits or bytes.
type rateFlag int64

func (r *rateFlag) String() string {
	if *r == 0 {
		return "0"
	}
	return strconv.FormatFloat(float64(*r)/float64(link.Mbit), 'g', -1, 64) + "Mbit"
}

func (r *rateFlag) Set(v string) error {
	n, err := parseRate(v)
	if err != nil {
		return err
	}
	*r = rateFlag(n)
	return nil
}

// parseRate parses "10Mbit" (bits per second, powers of 1000) or a byte
// rate such as "1MiB" or "1.25MB/s", and returns bytes per second.
func parseRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "/s")
	if strings.HasSuffix(t, "bps") {
		return 0, fmt.Errorf("rate %q is ambiguous (bits or bytes?): say 10Mbit or 10MB/s", s)
	}
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		num, ok := strings.CutSuffix(t, u.suffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || v < 0 || math.IsInf(v, 0) {
			return 0, fmt.Errorf("rate %q: bad number %q", s, num)
		}
		b := v * u.mult / 8
		if b >= math.MaxInt64 {
			return 0, fmt.Errorf("rate %q is too large", s)
		}
		return int64(b), nil
	}
	n, err := units.ParseRate(s)
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("rate %q is too large", s)
	}
	return int64(n), nil
}

// sizeFlag is a byte count.
type sizeFlag int

func (s *sizeFlag) String() string { return strconv.Itoa(int(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := units.ParseSize(v)
	if err != nil {
		return err
	}
	if n > math.MaxInt32 {
		return fmt.Errorf("size %q is too large", v)
	}
	*s = sizeFlag(n)
	return nil
}

// blackholeFlag is a schedule "PASS/DROP" or "PASS/DROP/once".
type blackholeFlag link.Blackhole

func (b *blackholeFlag) String() string {
	if b.Drop == 0 {
		return ""
	}
	return link.Blackhole(*b).String()
}

func (b *blackholeFlag) Set(v string) error {
	parts := strings.Split(strings.TrimSpace(v), "/")
	var s link.Blackhole
	switch {
	case len(parts) == 3 && parts[2] == "once":
		s.Once = true
	case len(parts) == 2:
	case v == "" || v == "0":
		*b = blackholeFlag{}
		return nil
	default:
		return fmt.Errorf("blackhole %q: want PASS/DROP or PASS/DROP/once, like 5s/2s", v)
	}
	var err error
	if s.Pass, err = time.ParseDuration(parts[0]); err != nil {
		return fmt.Errorf("blackhole %q: %w", v, err)
	}
	if s.Drop, err = time.ParseDuration(parts[1]); err != nil {
		return fmt.Errorf("blackhole %q: %w", v, err)
	}
	if s.Pass < 0 || s.Drop < 0 {
		return fmt.Errorf("blackhole %q is negative", v)
	}
	*b = blackholeFlag(s)
	return nil
}

// dirFlags are the impairment flags of one direction (or of both).
type dirFlags struct {
	delay, jitter, reorderBy  time.Duration
	loss, reorder, corrupt    float64
	burstP, burstR, good, bad float64
	rate                      rateFlag
	queue                     int
	queueBytes                sizeFlag
	blackhole                 blackholeFlag
}

func (d *dirFlags) register(fs *flag.FlagSet, prefix, which string) {
	def := link.DefaultDirection()
	if prefix == "" {
		d.delay, d.rate, d.queue = def.Delay, rateFlag(def.Rate), def.QueuePackets
	}
	fs.DurationVar(&d.delay, prefix+"delay", d.delay, "one-way delay"+which)
	fs.DurationVar(&d.jitter, prefix+"jitter", 0, "uniform random extra delay (keeps order)"+which)
	fs.Float64Var(&d.loss, prefix+"loss", 0, "random loss probability in [0,1]"+which)
	fs.Float64Var(&d.burstP, prefix+"burst-p", 0, "Gilbert-Elliott: probability of going from good to bad"+which)
	fs.Float64Var(&d.burstR, prefix+"burst-r", 0, "Gilbert-Elliott: probability of going from bad to good"+which)
	fs.Float64Var(&d.good, prefix+"burst-loss-good", 0, "Gilbert-Elliott: loss probability when good"+which)
	fs.Float64Var(&d.bad, prefix+"burst-loss-bad", 0, "Gilbert-Elliott: loss probability when bad (0: 1)"+which)
	fs.Float64Var(&d.reorder, prefix+"reorder", 0, "reordering probability in [0,1]"+which)
	fs.DurationVar(&d.reorderBy, prefix+"reorder-by", 0, "how long a reordered packet is held back (0: max(delay/2, 1ms))"+which)
	fs.Var(&d.rate, prefix+"rate", "rate cap, e.g. 10Mbit or 1MB/s (0: unlimited)"+which)
	fs.IntVar(&d.queue, prefix+"queue", d.queue, "queue bound in packets (0 with -queue-bytes 0: 25)"+which)
	fs.Var(&d.queueBytes, prefix+"queue-bytes", "queue bound in bytes, e.g. 64KiB (0: none)"+which)
	fs.Var(&d.blackhole, prefix+"blackhole", "blackhole schedule PASS/DROP[/once], e.g. 5s/2s"+which)
	fs.Float64Var(&d.corrupt, prefix+"corrupt", 0, "probability in [0,1] of flipping a payload bit"+which)
}

// merge returns base with the fields overridden whose flags (prefix+name)
// were set.
func (d *dirFlags) merge(base *dirFlags, prefix string, set map[string]bool) link.Direction {
	pick := func(name string) *dirFlags {
		if set[prefix+name] {
			return d
		}
		return base
	}
	return link.Direction{
		Delay:     pick("delay").delay,
		Jitter:    pick("jitter").jitter,
		Loss:      pick("loss").loss,
		Reorder:   pick("reorder").reorder,
		ReorderBy: pick("reorder-by").reorderBy,
		Burst: link.GilbertElliott{
			P:        pick("burst-p").burstP,
			R:        pick("burst-r").burstR,
			LossGood: pick("burst-loss-good").good,
			LossBad:  pick("burst-loss-bad").bad,
		},
		Rate:         int64(pick("rate").rate),
		QueuePackets: pick("queue").queue,
		QueueBytes:   int(pick("queue-bytes").queueBytes),
		Blackhole:    link.Blackhole(pick("blackhole").blackhole),
		Corrupt:      pick("corrupt").corrupt,
	}
}

// errHelp is parse's answer to -h.
var errHelp = errors.New("help")

// parse reads the command line into a link configuration and the stats
// interval.
func parse(args []string, stderr io.Writer) (link.Config, time.Duration, error) {
	fs := flag.NewFlagSet("link", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg link.Config
	fs.StringVar(&cfg.A, "a", "bpA", "name of namespace A")
	fs.StringVar(&cfg.B, "b", "bpB", "name of namespace B")
	fs.StringVar(&cfg.AddrA, "addr-a", "10.99.0.1/24", "address of A's device, with prefix length")
	fs.StringVar(&cfg.AddrB, "addr-b", "10.99.0.2/24", "address of B's device, with prefix length")
	fs.StringVar(&cfg.DevA, "dev-a", "link0", "name of A's device")
	fs.StringVar(&cfg.DevB, "dev-b", "link0", "name of B's device")
	fs.IntVar(&cfg.MTU, "mtu", 1500, "MTU of both devices")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of all random decisions")
	every := fs.Duration("stats", 0, "also print statistics at this interval (0: only at exit)")
	var base, ab, ba dirFlags
	base.register(fs, "", " (both directions)")
	ab.register(fs, "ab-", " (A -> B)")
	ba.register(fs, "ba-", " (B -> A)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: link [flags]: join two network namespaces by an impaired link (needs root)")
			fs.PrintDefaults()
			return cfg, 0, errHelp
		}
		return cfg, 0, err
	}
	if fs.NArg() > 0 {
		return cfg, 0, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *every < 0 {
		return cfg, 0, fmt.Errorf("-stats %v is negative", *every)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg.AtoB = ab.merge(&base, "ab-", set)
	cfg.BtoA = ba.merge(&base, "ba-", set)
	if err := cfg.Validate(); err != nil {
		return cfg, 0, errors.New(strings.TrimPrefix(err.Error(), "link: "))
	}
	return cfg, *every, nil
}

// run is the command: it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, every, err := parse(args, stderr)
	switch {
	case errors.Is(err, errHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "link: %v\n", err)
		return 2
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	l, err := link.Setup(setupCtx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "link: %v\n", strings.TrimPrefix(err.Error(), "link: "))
		return 1
	}
	a, b := l.AddrA(), l.AddrB()
	fmt.Fprintf(stderr, `link: namespace %s (%v on %s) <-> namespace %s (%v on %s)
  a->b: %v
  b->a: %v
run programs in them with ip netns exec, for example:
  ip netns exec %s bpcat listen %v 4242
  ip netns exec %s bpcat connect --pin sha256:... %v 4242
forwarding until interrupted (SIGINT or SIGTERM removes the namespaces)
`, cfg.A, a, devName(cfg.DevA), cfg.B, b, devName(cfg.DevB), cfg.AtoB, cfg.BtoA, cfg.B, b, cfg.A, b)

	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			fmt.Fprintf(stdout, "%s\n", l.Stats())
		case <-ctx.Done():
			err := l.Close()
			fmt.Fprintf(stdout, "%s\n", l.Stats())
			if err != nil {
				fmt.Fprintf(stderr, "link: close: %v\n", err)
				return 1
			}
			return 0
		}
	}
}

func devName(s string) string {
	if s == "" {
		return "link0"
	}
	return s
}
