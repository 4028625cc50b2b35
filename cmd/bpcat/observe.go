package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/metrics"
	"github.com/bpmux/bp/mux"
)

// observeFlags are the flags that make a command's sessions observable
// from outside: Prometheus metrics, qlog traces, and the warning and
// critical thresholds the live view marks.
type observeFlags struct {
	metrics string // --metrics ADDR: serve /metrics there
	qlog    string // --qlog DIR
	th      mux.Thresholds
}

func (o *observeFlags) register(fs *flagSet) {
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics of every session on http://`ADDR`/metrics: HOST:PORT, or PORT for every address "+
		"(:0 or 127.0.0.1:0 picks a free port; the address is printed on stderr)")
	fs.StringVar(&o.qlog, "qlog", "", "write a qlog trace of each connection (QUIC's events and bp/1's) into `DIR`, one file per connection; "+
		"DIR is created if missing (the QLOGDIR environment variable works too)")
	fs.Var(sizeFlag{&o.th.LagWarning}, "warn-lag", "mark a stream at warning when `SIZE` bytes it sent are not yet read by the peer's application")
	fs.Var(sizeFlag{&o.th.LagCritical}, "crit-lag", "mark a stream critical when `SIZE` bytes it sent are not yet read by the peer's application")
	fs.Var(sizeFlag{&o.th.UnreadWarning}, "warn-unread", "mark a stream at warning when `SIZE` bytes received wait unread by this side")
	fs.Var(sizeFlag{&o.th.UnreadCritical}, "crit-unread", "mark a stream critical when `SIZE` bytes received wait unread by this side")
	fs.Var(durationFlag{&o.th.StallWarning}, "warn-stall", "mark a stream at warning when its writer has been stalled for `DURATION`")
	fs.Var(durationFlag{&o.th.StallCritical}, "crit-stall", "mark a stream critical when its writer has been stalled for `DURATION`")
}

// apply sets the thresholds and the qlog directory of cfg, or returns a
// usage error for thresholds that contradict each other or a malformed
// --metrics address.
func (o *observeFlags) apply(cfg *mux.Config) error {
	th := o.th
	below := func(w, c uint64) bool { return w != 0 && c != 0 && c < w }
	switch {
	case below(th.LagWarning, th.LagCritical):
		return usageErrorf("--crit-lag %s is below --warn-lag %s", formatSize(th.LagCritical), formatSize(th.LagWarning))
	case below(th.UnreadWarning, th.UnreadCritical):
		return usageErrorf("--crit-unread %s is below --warn-unread %s", formatSize(th.UnreadCritical), formatSize(th.UnreadWarning))
	case th.StallWarning < 0 || th.StallCritical < 0:
		return usageErrorf("--warn-stall/--crit-stall: want a duration of 0 (off) or more")
	case below(uint64(th.StallWarning), uint64(th.StallCritical)):
		return usageErrorf("--crit-stall %v is below --warn-stall %v", th.StallCritical, th.StallWarning)
	}
	if o.metrics != "" {
		if _, err := o.metricsAddr(); err != nil {
			return err
		}
	}
	cfg.Thresholds = th
	if o.qlog != "" {
		cfg.QlogDir = o.qlog
	}
	return nil
}

// metricsAddr returns the address --metrics asked for, or a usage error.
func (o *observeFlags) metricsAddr() (string, error) {
	addr := o.metrics
	if isPort(addr) {
		return net.JoinHostPort("", addr), nil
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || !isPort(port) {
		return "", usageErrorf("--metrics %q: want HOST:PORT or PORT, like 127.0.0.1:9464 (:0 for a free port)", addr)
	}
	return addr, nil
}

// start creates the qlog directory and starts the metrics server, as
// asked, and returns the observer that tracks the command's sessions
// (nil when --metrics was not given: its methods then do nothing). The
// caller closes it when the command ends.
func (o *observeFlags) start(e *env) (*observer, error) {
	if o.qlog != "" {
		if err := os.MkdirAll(o.qlog, 0o755); err != nil {
			return nil, fmt.Errorf("--qlog: %w", err)
		}
	}
	if o.metrics == "" {
		return nil, nil
	}
	addr, err := o.metricsAddr()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, &plainError{fmt.Sprintf("--metrics %s: the address is in use (another bpcat, or another exporter?)", addr), err}
		}
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hm := http.NewServeMux()
	hm.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	ob := &observer{reg: reg, srv: &http.Server{Handler: hm, ReadHeaderTimeout: 10 * time.Second}, served: make(chan struct{}),
		cols: map[[2]string]*metrics.Collector{}}
	go func() {
		defer close(ob.served)
		ob.srv.Serve(ln) // ends with ErrServerClosed at close
	}()
	fmt.Fprintf(e.stderr, "bpcat: metrics on http://%s/metrics\n", ln.Addr())
	return ob, nil
}

// observer serves the metrics of the sessions a command tracks. A nil
// *observer tracks nothing.
type observer struct {
	reg    *prometheus.Registry
	srv    *http.Server
	served chan struct{} // closed when srv.Serve returned

	mu   sync.Mutex
	cols map[[2]string]*metrics.Collector // by constant label (name, value)
}

// tracker returns the tracker of the sessions labelled name=value on
// every metric (name "": no label). A command uses either no label or
// always the same label name, with a few values (relay: hop=downstream
// and hop=upstream).
func (o *observer) tracker(name, value string) tracker {
	if o == nil {
		return tracker{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	key := [2]string{name, value}
	c, ok := o.cols[key]
	if !ok {
		var opts metrics.Options
		if name != "" {
			opts.ConstLabels = prometheus.Labels{name: value}
		}
		c = metrics.NewCollector(&opts)
		o.reg.MustRegister(c) // distinct labels: cannot collide
		o.cols[key] = c
	}
	return tracker{c}
}

// sessions returns the tracker of a command with one kind of session.
func (o *observer) sessions() tracker { return o.tracker("", "") }

// close stops serving metrics.
func (o *observer) close() {
	if o == nil {
		return
	}
	o.srv.Close()
	<-o.served
}

// tracker adds sessions and listeners to a collector; its zero value
// does nothing.
type tracker struct{ c *metrics.Collector }

// track adds sess (nil: nothing).
func (t tracker) track(sess *mux.Session) {
	if t.c != nil && sess != nil {
		t.c.Track(sess)
	}
}

// trackListener adds ln's counts.
func (t tracker) trackListener(ln *bp.Listener) {
	if t.c != nil {
		t.c.TrackListener(ln)
	}
}

// logger returns the session logger of -v: the library's session events
// (opened, GOAWAY, closed with its code, abuse limits hit) as bpcat's
// other lines, "bpcat: " and slog's key=value text without the time.
func logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(prefixWriter{w, "bpcat: "}, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// prefixWriter writes prefix before each write (slog writes a record in
// one).
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}
