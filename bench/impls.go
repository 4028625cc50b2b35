package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
	"github.com/hashicorp/yamux"
	"github.com/quic-go/quic-go"
	"github.com/xtaci/smux"
	"golang.org/x/net/http2"
)

// Every implementation is a small adapter behind these two interfaces, so
// that the cases are written once. A client is one session (one transport
// connection); Open opens one stream on it.

type client interface {
	Open(ctx context.Context) (io.ReadWriteCloser, error)
	Close() error
}

// server accepts sessions and hands every stream to handle, in a goroutine
// of its own. handle may return before the stream is closed: the stream
// stays open until its Close.
type server interface {
	Addr() string
	Close() error
}

type opts struct {
	// manyStreams asks for a configuration that allows 10,000 concurrent
	// streams on one session (the idle-streams case).
	manyStreams bool
}

type impl struct {
	name string
	udp  bool // the transport is UDP (QUIC): the rtt cases need a UDP proxy
	// budget is the bound on the receiver's buffering for one session with
	// the given number of streams, in the default configuration.
	budget func(streams int) int64
	listen func(cert tls.Certificate, host string, o opts, handle func(io.ReadWriteCloser)) (server, error)
	dial   func(ctx context.Context, addr string, tlsConf *tls.Config, o opts) (client, error)
}

var impls = []impl{
	{name: "ours", udp: true, budget: func(int) int64 { return 64 << 20 }, listen: listenOurs(bp.TransportQUIC), dial: dialOurs(bp.TransportQUIC)},
	{name: "ours-tcp", budget: func(int) int64 { return 64 << 20 }, listen: listenOurs(bp.TransportTCP), dial: dialOurs(bp.TransportTCP)},
	{name: "ours-xquic", udp: true, budget: func(int) int64 { return 64 << 20 }, listen: listenOurs(bp.TransportXQUIC), dial: dialOurs(bp.TransportXQUIC)},
	{name: "xquic", udp: true, budget: func(int) int64 { return 64 << 20 }, listen: listenXQUIC, dial: dialXQUIC},
	{name: "quic-go", udp: true, budget: func(int) int64 { return 15 << 20 }, listen: listenQUIC(false), dial: dialQUIC(false)},
	{name: "quic-go-large", udp: true, budget: func(int) int64 { return 256 << 20 }, listen: listenQUIC(true), dial: dialQUIC(true)},
	{name: "yamux", budget: func(n int) int64 { return int64(n) * 256 << 10 }, listen: listenYamux, dial: dialYamux},
	{name: "smux", budget: func(int) int64 { return 4 << 20 }, listen: listenSmux, dial: dialSmux},
	{name: "http2", budget: func(int) int64 { return 1 << 20 }, listen: listenH2, dial: dialH2},
}

func implByName(name string) (impl, bool) {
	for _, im := range impls {
		if im.name == name {
			return im, true
		}
	}
	return impl{}, false
}

const benchALPN = "bp-bench"

// ---- ours: bp/1 over quic-go (and over TCP+TLS), default configuration ----

func oursConfig(o opts) *mux.Config {
	if !o.manyStreams {
		return nil // the defaults
	}
	// 10,000 initial windows with their streams' fixed memory, the
	// session's, and slack for what else the session may charge to its
	// budget (shared decoders, say): the budget is a bound, not memory
	// taken.
	return &mux.Config{
		MaxStreams:    10000,
		InitialWindow: mux.DefaultInitialWindow,
		SessionBudget: mux.SessionOverhead + 10001*(mux.DefaultInitialWindow+mux.StreamOverhead) + 16<<20,
	}
}

type oursServer struct {
	ln     *bp.Listener
	cancel context.CancelFunc
}

// listenOurs listens for bp/1 over transport t.
func listenOurs(t bp.Transport) func(tls.Certificate, string, opts, func(io.ReadWriteCloser)) (server, error) {
	return func(cert tls.Certificate, host string, o opts, handle func(io.ReadWriteCloser)) (server, error) {
		ln, err := bp.Listen(string(t)+"://"+net.JoinHostPort(host, "0"), transport.ServerConfig(cert), oursConfig(o))
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		go acceptEach(func() (*mux.Session, error) { return ln.Accept(ctx) }, func(sess *mux.Session) {
			acceptEach(func() (io.ReadWriteCloser, error) { return sess.Accept(ctx) }, handle)
		})
		return &oursServer{ln: ln, cancel: cancel}, nil
	}
}

func (s *oursServer) Addr() string { return s.ln.Addr().String() }
func (s *oursServer) Close() error { s.cancel(); return s.ln.Close() }

type oursClient struct{ sess *mux.Session }

// dialOurs dials bp/1 over transport t.
func dialOurs(t bp.Transport) func(context.Context, string, *tls.Config, opts) (client, error) {
	return func(ctx context.Context, addr string, tlsConf *tls.Config, o opts) (client, error) {
		sess, err := bp.Dial(ctx, string(t)+"://"+addr, tlsConf, oursConfig(o))
		if err != nil {
			return nil, err
		}
		return &oursClient{sess}, nil
	}
}

func (c *oursClient) Open(ctx context.Context) (io.ReadWriteCloser, error) { return c.sess.Open(ctx) }
func (c *oursClient) Close() error                                         { return c.sess.Close() }

// ---- plain quic-go: one QUIC stream per stream ----

func quicConfig(large bool, o opts) *quic.Config {
	c := &quic.Config{}
	if large {
		c.InitialStreamReceiveWindow = 64 << 20
		c.MaxStreamReceiveWindow = 64 << 20
		c.InitialConnectionReceiveWindow = 256 << 20
		c.MaxConnectionReceiveWindow = 256 << 20
	}
	if o.manyStreams {
		c.MaxIncomingStreams = 10001
	}
	return c
}

type quicServer struct {
	ln     *quic.Listener
	cancel context.CancelFunc
}

func listenQUIC(large bool) func(tls.Certificate, string, opts, func(io.ReadWriteCloser)) (server, error) {
	return func(cert tls.Certificate, host string, o opts, handle func(io.ReadWriteCloser)) (server, error) {
		tc := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, NextProtos: []string{benchALPN}}
		ln, err := quic.ListenAddr(net.JoinHostPort(host, "0"), tc, quicConfig(large, o))
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		go acceptEach(func() (*quic.Conn, error) { return ln.Accept(ctx) }, func(conn *quic.Conn) {
			acceptEach(func() (io.ReadWriteCloser, error) { return conn.AcceptStream(ctx) }, handle)
		})
		return &quicServer{ln: ln, cancel: cancel}, nil
	}
}

func (s *quicServer) Addr() string { return s.ln.Addr().String() }
func (s *quicServer) Close() error { s.cancel(); return s.ln.Close() }

type quicClient struct{ conn *quic.Conn }

func dialQUIC(large bool) func(context.Context, string, *tls.Config, opts) (client, error) {
	return func(ctx context.Context, addr string, tlsConf *tls.Config, o opts) (client, error) {
		tc := tlsConf.Clone()
		tc.NextProtos = []string{benchALPN}
		conn, err := quic.DialAddr(ctx, addr, tc, quicConfig(large, o))
		if err != nil {
			return nil, err
		}
		return &quicClient{conn}, nil
	}
}

func (c *quicClient) Open(ctx context.Context) (io.ReadWriteCloser, error) {
	return c.conn.OpenStreamSync(ctx)
}
func (c *quicClient) Close() error { return c.conn.CloseWithError(0, "") }

// ---- TLS 1.3 over TCP, for the TCP-based peers ----

type tcpServer struct {
	ln net.Listener
}

func (s *tcpServer) Addr() string { return s.ln.Addr().String() }
func (s *tcpServer) Close() error { return s.ln.Close() }

// acceptEach hands everything accept returns to serve, each in a goroutine
// of its own, until accept fails (its listener or session closed).
func acceptEach[T any](accept func() (T, error), serve func(T)) {
	for {
		x, err := accept()
		if err != nil {
			return
		}
		go serve(x)
	}
}

// listenTLS accepts TLS connections and runs serve on each after the
// handshake.
func listenTLS(cert tls.Certificate, host, alpn string, serve func(*tls.Conn)) (server, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn}}
	ln, err := tls.Listen("tcp", net.JoinHostPort(host, "0"), tc)
	if err != nil {
		return nil, err
	}
	go acceptEach(ln.Accept, func(c net.Conn) {
		tlsConn := c.(*tls.Conn)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			c.Close()
			return
		}
		serve(tlsConn)
	})
	return &tcpServer{ln: ln}, nil
}

func dialTLS(ctx context.Context, addr string, tlsConf *tls.Config, alpn string) (*tls.Conn, error) {
	tc := tlsConf.Clone()
	tc.NextProtos = []string{alpn}
	d := tls.Dialer{Config: tc}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// ---- hashicorp/yamux, default configuration ----

func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard // only its logging differs from the default
	return c
}

func listenYamux(cert tls.Certificate, host string, o opts, handle func(io.ReadWriteCloser)) (server, error) {
	return listenTLS(cert, host, benchALPN, func(c *tls.Conn) {
		sess, err := yamux.Server(c, yamuxConfig())
		if err != nil {
			c.Close()
			return
		}
		acceptEach(func() (io.ReadWriteCloser, error) { return sess.AcceptStream() }, handle)
	})
}

type yamuxClient struct{ sess *yamux.Session }

func dialYamux(ctx context.Context, addr string, tlsConf *tls.Config, o opts) (client, error) {
	c, err := dialTLS(ctx, addr, tlsConf, benchALPN)
	if err != nil {
		return nil, err
	}
	sess, err := yamux.Client(c, yamuxConfig())
	if err != nil {
		c.Close()
		return nil, err
	}
	return &yamuxClient{sess}, nil
}

func (c *yamuxClient) Open(context.Context) (io.ReadWriteCloser, error) { return c.sess.OpenStream() }
func (c *yamuxClient) Close() error                                     { return c.sess.Close() }

// ---- xtaci/smux, default configuration ----
//
// smux v1.5.56 discards unread data when a FIN arrives after CloseWrite, so
// streams here are never half-closed: the cases close a stream only when
// neither side needs its data any more.

func listenSmux(cert tls.Certificate, host string, o opts, handle func(io.ReadWriteCloser)) (server, error) {
	return listenTLS(cert, host, benchALPN, func(c *tls.Conn) {
		sess, err := smux.Server(c, nil)
		if err != nil {
			c.Close()
			return
		}
		acceptEach(func() (io.ReadWriteCloser, error) { return sess.AcceptStream() }, handle)
	})
}

type smuxClient struct{ sess *smux.Session }

func dialSmux(ctx context.Context, addr string, tlsConf *tls.Config, o opts) (client, error) {
	c, err := dialTLS(ctx, addr, tlsConf, benchALPN)
	if err != nil {
		return nil, err
	}
	sess, err := smux.Client(c, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &smuxClient{sess}, nil
}

func (c *smuxClient) Open(context.Context) (io.ReadWriteCloser, error) { return c.sess.OpenStream() }
func (c *smuxClient) Close() error                                     { return c.sess.Close() }

// ---- golang.org/x/net/http2: a streaming request body ----
//
// A stream is one POST whose request body carries client-to-server bytes
// and whose response body carries server-to-client bytes; the handler
// flushes the response headers at once and reads the body as it arrives.

type h2ServerStream struct {
	body io.ReadCloser
	w    http.ResponseWriter
	f    http.Flusher
	once sync.Once
	done chan struct{}
}

func (s *h2ServerStream) Read(p []byte) (int, error) { return s.body.Read(p) }
func (s *h2ServerStream) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err == nil {
		s.f.Flush()
	}
	return n, err
}
func (s *h2ServerStream) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

func listenH2(cert tls.Certificate, host string, o opts, handle func(io.ReadWriteCloser)) (server, error) {
	h2s := &http2.Server{} // defaults: 1 MiB connection and stream windows
	if o.manyStreams {
		h2s.MaxConcurrentStreams = 10001
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		f := w.(http.Flusher)
		f.Flush()
		s := &h2ServerStream{body: r.Body, w: w, f: f, done: make(chan struct{})}
		handle(s) // the handler goroutine is the stream's: it lives until Close
		select {
		case <-s.done:
		case <-r.Context().Done():
		}
	})
	return listenTLS(cert, host, http2.NextProtoTLS, func(c *tls.Conn) {
		h2s.ServeConn(c, &http2.ServeConnOpts{Handler: h})
	})
}

type h2Client struct {
	cc *http2.ClientConn

	mu    sync.Mutex
	pipes []*io.PipeWriter
}

func dialH2(ctx context.Context, addr string, tlsConf *tls.Config, o opts) (client, error) {
	c, err := dialTLS(ctx, addr, tlsConf, http2.NextProtoTLS)
	if err != nil {
		return nil, err
	}
	tr := &http2.Transport{}
	cc, err := tr.NewClientConn(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &h2Client{cc: cc}, nil
}

type h2ClientStream struct {
	pw    *io.PipeWriter
	ready chan struct{} // closed when resp or err is set
	resp  *http.Response
	err   error
}

func (c *h2Client) Open(ctx context.Context) (io.ReadWriteCloser, error) {
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, "https://bench/", pr)
	if err != nil {
		return nil, err
	}
	req.ContentLength = -1
	c.mu.Lock()
	c.pipes = append(c.pipes, pw)
	c.mu.Unlock()
	s := &h2ClientStream{pw: pw, ready: make(chan struct{})}
	go func() {
		s.resp, s.err = c.cc.RoundTrip(req)
		if s.err == nil && s.resp.StatusCode != http.StatusOK {
			s.resp.Body.Close()
			s.err = fmt.Errorf("http2: status %s", s.resp.Status)
		}
		if s.err != nil {
			pr.CloseWithError(s.err)
		}
		close(s.ready)
	}()
	return s, nil
}

func (s *h2ClientStream) Write(p []byte) (int, error) { return s.pw.Write(p) }
func (s *h2ClientStream) Read(p []byte) (int, error) {
	<-s.ready
	if s.err != nil {
		return 0, s.err
	}
	return s.resp.Body.Read(p)
}
func (s *h2ClientStream) Close() error {
	s.pw.Close()
	select {
	case <-s.ready:
		if s.err == nil {
			s.resp.Body.Close()
		}
	default:
	}
	return nil
}

func (c *h2Client) Close() error {
	err := c.cc.Close()
	c.mu.Lock()
	for _, pw := range c.pipes {
		pw.CloseWithError(errors.New("http2: client closed"))
	}
	c.mu.Unlock()
	return err
}
