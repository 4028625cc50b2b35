package mux

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/framing"
)

// Protocol defaults (SPEC.md, "SETTINGS"): what a peer may assume before it
// has seen this endpoint's SETTINGS.
const (
	// DefaultInitialWindow is the protocol's default and minimum
	// SETTINGS_INITIAL_WINDOW.
	DefaultInitialWindow = 16 << 10
	// DefaultMaxFramePayload is the protocol's default and minimum
	// SETTINGS_MAX_FRAME_PAYLOAD.
	DefaultMaxFramePayload = 16 << 10
	// DefaultMaxStreams is the protocol's default SETTINGS_MAX_STREAMS.
	DefaultMaxStreams = 256
)

// What the session budget holds besides the streams' windows, so that it
// bounds the memory a peer can make a session hold (Config.SessionBudget).
const (
	// SessionOverhead is what a session charges to its SessionBudget for
	// itself, from the start: the transport's connection (its buffers and
	// TLS state) and the session's own state and goroutines. An idle
	// session with no streams holds 80-170 KB on each side (quic-go's and
	// x/net/quic's less, TCP+TLS's more); a busy one more than that, as
	// its buffers and stacks grow.
	SessionOverhead = 256 << 10
	// StreamOverhead is what each stream charges to SessionBudget
	// besides its receive window, for its whole life: its state, its lane
	// reader's goroutine and the transport's stream, 5-11 KB on each side.
	StreamOverhead = 8 << 10
)

// DefaultDeadPeerTimeout is the default Config.DeadPeerTimeout: a peer
// that vanishes is noticed within it.
const DefaultDeadPeerTimeout = 10 * time.Second

// SmallFrameBytes is the payload size below which a DATA frame counts
// toward Config.MaxSmallFramesPerSecond.
const SmallFrameBytes = 1024

// Config tunes a session. The zero value is ready to use: every zero field
// takes the default given in its comment.
type Config struct {
	// InitialWindow is the receive window every stream starts with, and
	// the floor an idle stream shrinks back to. Default 128 KiB; at least
	// DefaultInitialWindow.
	InitialWindow uint64
	// MaxWindow is the largest a stream's receive window may auto-tune to.
	// Default 16 MiB. Set it equal to InitialWindow for a fixed window.
	MaxWindow uint64
	// SessionBudget bounds the memory the peer can make the session hold:
	// the sum of all streams' receive buffering (and the credit that could
	// fill it), the compression codecs the peer's streams use, the
	// session's own fixed memory (SessionOverhead) and each stream's
	// (StreamOverhead). Default 64 MiB; at least SessionOverhead +
	// InitialWindow + StreamOverhead, room for one stream.
	SessionBudget uint64
	// MaxStreams is how many concurrent streams the peer may open. Default
	// DefaultMaxStreams.
	MaxStreams int
	// MaxFramePayload is the largest DATA payload this endpoint accepts.
	// Default 64 KiB.
	MaxFramePayload uint64
	// DeadPeerTimeout is how long the session may hear nothing from the
	// peer before it gives the peer up for gone: the session closes with
	// KEEPALIVE_TIMEOUT and an error matching ErrPeerUnreachable. It
	// sets the keepalive (a PING every DeadPeerTimeout/4 unless
	// KeepAliveInterval says otherwise, answered within what is left),
	// and bp.Dial and bp.Listen give QUIC the same idle timeout, so the
	// two agree. Default DefaultDeadPeerTimeout (10 s).
	DeadPeerTimeout time.Duration
	// KeepAliveInterval is how often the session sends a PING. Default
	// DeadPeerTimeout/4; negative disables keepalive PINGs (the
	// transport's idle timeout still applies).
	KeepAliveInterval time.Duration
	// SettingsTimeout closes a session whose peer has not sent its
	// SETTINGS this long after the session started (SETTINGS_ERROR).
	// Default 10 s.
	SettingsTimeout time.Duration
	// IdleTimeout ends a session gracefully (GOAWAY) once it has had no
	// stream for this long. Zero means never; bp.Listen uses 5 minutes for
	// the sessions it accepts unless told otherwise.
	IdleTimeout time.Duration
	// IdleShrinkAfter is how long a stream with unread data may go without
	// a read before its window shrinks back to InitialWindow. Default 1 s;
	// negative disables.
	IdleShrinkAfter time.Duration
	// MaxUselessFramesPerSecond bounds frames that do no work (PINGs,
	// empty DATA, WINDOW_UPDATEs that raise nothing, stale BLOCKEDs,
	// unknown types, streams reset before they were accepted). A peer
	// exceeding it is closed with ENHANCE_YOUR_CALM. Default 1000.
	MaxUselessFramesPerSecond int
	// MaxSmallFramesPerSecond bounds the rate at which the session
	// processes small DATA frames (payload under SmallFrameBytes, without
	// FIN) from the peer. Past it, the session reads the peer's lanes no
	// faster than that rate, so a peer dribbling tiny frames within its
	// credit slows only itself (SPEC.md section 10). Default 20,000.
	MaxSmallFramesPerSecond int
	// Compression is the codec of the streams Open opens (OpenStream
	// chooses per stream): zstd for ratio, s2 for speed. Both directions
	// of such a stream are compressed if the peer accepts the codec.
	// Default codec.None.
	Compression codec.Codec
	// AcceptCompression is the set of codecs this side accepts from the
	// peer, announced in SETTINGS (SPEC.md 5.9). Default codec.Supported.
	// Accepting costs nothing until the peer compresses: the session's
	// decoders are shared by its streams and charged to SessionBudget.
	AcceptCompression codec.Set
	// NoDecompression announces no codec at all, so that the peer never
	// compresses toward this side.
	NoDecompression bool
	// StreamRate is how many new streams a second the session admits from
	// the peer, with a burst of StreamBurst: a stream over the rate is
	// refused with REFUSED_STREAM and a retry-after hint (SPEC.md 5.4).
	// Default DefaultStreamRate; negative: no limit. StreamBurst defaults
	// to twice MaxStreams, and at least DefaultStreamBurst.
	StreamRate  int
	StreamBurst int
	// Breaker, if set, gives the session a circuit breaker on the streams
	// it opens: while the peer refuses them or leaves them stalled, Open
	// fails fast with ErrOverloaded (BreakerConfig).
	Breaker *BreakerConfig
	// OnEvent, if set, is called for every flow-control event of every
	// stream. It is called synchronously from the goroutine that caused
	// the event, with no lock held; it must be quick.
	OnEvent func(Event)
	// Thresholds sets warning and critical levels of consumer lag, unread
	// bytes and stall duration; crossing one emits EventThreshold. Zero
	// fields are off.
	Thresholds Thresholds
	// Logger, if set, receives the session's own events: opened, GOAWAY,
	// closed with its code and reason, and abuse limits hit (at Warn).
	// The session logs nothing without it.
	Logger *slog.Logger
	// QlogDir, if set, asks bp.Dial and bp.Listen to have QUIC write a
	// qlog trace of every connection into this directory, one file per
	// connection; the session adds its own events to it (package qlog).
	// Default $QLOGDIR, as quic-go users know it. mux.New itself adds its
	// events to the trace of any connection that has one, whoever set it
	// up.
	QlogDir string
	// DisableQlog keeps the session's events out of the connection's qlog
	// trace even when it has one.
	DisableQlog bool
	// Now returns the current time; default time.Now. Tests may inject a
	// clock: it stamps events and drives window auto-tuning.
	Now func() time.Time
}

// Validate reports whether the configuration is usable.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// WithDefaults returns c with every field left unset filled in with its
// default, as New uses it, or the error Validate returns for c.
func (c Config) WithDefaults() (Config, error) { return c.withDefaults() }

func (c Config) withDefaults() (Config, error) {
	setDefault(&c.InitialWindow, 128<<10)
	setDefault(&c.MaxWindow, max(16<<20, c.InitialWindow))
	setDefault(&c.SessionBudget, 64<<20)
	setDefault(&c.MaxStreams, DefaultMaxStreams)
	setDefault(&c.MaxFramePayload, 64<<10)
	setDefault(&c.DeadPeerTimeout, DefaultDeadPeerTimeout)
	setDefault(&c.KeepAliveInterval, c.DeadPeerTimeout/4)
	setDefault(&c.SettingsTimeout, 10*time.Second)
	setDefault(&c.MaxSmallFramesPerSecond, 20000)
	setDefault(&c.IdleShrinkAfter, time.Second)
	setDefault(&c.MaxUselessFramesPerSecond, 1000)
	setDefault(&c.AcceptCompression, codec.Supported)
	setDefault(&c.StreamRate, DefaultStreamRate)
	setDefault(&c.StreamBurst, max(2*c.MaxStreams, DefaultStreamBurst))
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.InitialWindow < DefaultInitialWindow || c.InitialWindow > framing.MaxVarint:
		return c, fmt.Errorf("mux: InitialWindow %d is below the protocol minimum %d", c.InitialWindow, DefaultInitialWindow)
	case c.MaxWindow < c.InitialWindow || c.MaxWindow > framing.MaxVarint:
		return c, fmt.Errorf("mux: MaxWindow %d is below InitialWindow %d", c.MaxWindow, c.InitialWindow)
	case c.SessionBudget < SessionOverhead+c.InitialWindow+StreamOverhead:
		return c, fmt.Errorf("mux: SessionBudget %d cannot hold the session (SessionOverhead %d) and one stream (InitialWindow %d + StreamOverhead %d)",
			c.SessionBudget, SessionOverhead, c.InitialWindow, StreamOverhead)
	case c.MaxFramePayload < DefaultMaxFramePayload || c.MaxFramePayload > framing.MaxDataPayload:
		return c, fmt.Errorf("mux: MaxFramePayload %d outside [%d, %d]", c.MaxFramePayload, DefaultMaxFramePayload, framing.MaxDataPayload)
	case c.DeadPeerTimeout < 0:
		return c, fmt.Errorf("mux: DeadPeerTimeout %v is negative", c.DeadPeerTimeout)
	case c.KeepAliveInterval > 0 && c.KeepAliveInterval >= c.DeadPeerTimeout:
		return c, fmt.Errorf("mux: KeepAliveInterval %v must be shorter than DeadPeerTimeout %v", c.KeepAliveInterval, c.DeadPeerTimeout)
	case c.SettingsTimeout < 0 || c.IdleTimeout < 0:
		return c, fmt.Errorf("mux: negative SettingsTimeout %v or IdleTimeout %v", c.SettingsTimeout, c.IdleTimeout)
	case c.MaxSmallFramesPerSecond < 0:
		return c, fmt.Errorf("mux: MaxSmallFramesPerSecond %d is negative", c.MaxSmallFramesPerSecond)
	case c.Compression != codec.None && !c.Compression.Known():
		return c, fmt.Errorf("mux: unknown Compression %v", c.Compression)
	case c.StreamBurst < 0:
		return c, fmt.Errorf("mux: StreamBurst %d is negative", c.StreamBurst)
	case c.MaxStreams < 0:
		return c, fmt.Errorf("mux: MaxStreams %d is negative", c.MaxStreams)
	}
	if err := c.Thresholds.validate(); err != nil {
		return c, err
	}
	return c, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
