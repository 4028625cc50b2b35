package bp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

// A server and a client on this machine: the client writes, the server
// reads, and every byte the server reads returns credit to the client.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cert, err := transport.SelfSigned("127.0.0.1")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	go func() {
		sess, err := ln.Accept(ctx)
		if err != nil {
			log.Fatal(err)
		}
		defer sess.Close()
		s, err := sess.Accept(ctx)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(s, s) // echo until the client closes its side
		s.CloseWrite()
		<-sess.Done() // the client closes the session
	}()

	// The client pins the server's certificate by its fingerprint.
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		log.Fatal(err)
	}
	sess, err := bp.Dial(ctx, ln.Addr().String(), tlsConf, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	s, err := sess.Open(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprint(s, "hello, backpressure")
	s.CloseWrite()
	reply, err := io.ReadAll(s)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(reply))
	fmt.Println("peer consumed:", s.Stats().PeerConsumed, "bytes")
	// Output:
	// hello, backpressure
	// peer consumed: 19 bytes
}

// A listener with listener-wide limits: at most 100 sessions at once (a
// client over the cap is refused before its handshake, with an error
// matching transport.ErrConnRefused), sessions that stay without a stream
// for a minute are ended gracefully, and a client that sends no SETTINGS
// within 5 s is closed.
func ExampleListenConfig() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cert, err := transport.SelfSigned("127.0.0.1")
	if err != nil {
		log.Fatal(err)
	}
	lc := bp.ListenConfig{
		Session:            &mux.Config{SettingsTimeout: 5 * time.Second},
		MaxSessions:        100,
		IdleSessionTimeout: time.Minute,
	}
	ln, err := lc.Listen("127.0.0.1:0", transport.ServerConfig(cert))
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	accepted := make(chan *mux.Session, 1)
	go func() {
		sess, err := ln.Accept(ctx)
		if err != nil {
			log.Fatal(err)
		}
		accepted <- sess
	}()

	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		log.Fatal(err)
	}
	sess, err := bp.Dial(ctx, ln.Addr().String(), tlsConf, nil)
	if err != nil {
		log.Fatal(err)
	}
	srv := <-accepted
	fmt.Println("sessions:", ln.Sessions())

	sess.Close()
	<-srv.Done()
	for ln.Sessions() > 0 && ctx.Err() == nil { // the count drops as the connection closes
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("sessions:", ln.Sessions())
	// Output:
	// sessions: 1
	// sessions: 0
}

// Why a writer waited: the server stops reading until the client's writer
// has run out of credit, then drains the stream. The client's stats say
// the stall was the peer's window (its application did not read), not
// the peer's memory budget, and how long the backpressure signal took
// to come back (see the mux package documentation). The server's side of
// the same stall is time its data sat unread.
func Example_stalls() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cert, err := transport.SelfSigned("127.0.0.1")
	if err != nil {
		log.Fatal(err)
	}
	cfg := &mux.Config{InitialWindow: 64 << 10, MaxWindow: 64 << 10}
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		log.Fatal(err)
	}
	sess, err := bp.Dial(ctx, ln.Addr().String(), tlsConf, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	s, err := sess.Open(ctx)
	if err != nil {
		log.Fatal(err)
	}
	unread := make(chan mux.Stall)
	go func() {
		srv, err := ln.Accept(ctx)
		if err != nil {
			log.Fatal(err)
		}
		defer srv.Close()
		r, err := srv.Accept(ctx)
		if err != nil {
			log.Fatal(err)
		}
		for s.Stats().Stalls == 0 { // not reading until the writer is held
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		io.Copy(io.Discard, r)
		unread <- r.Stats().Blocked.Of(mux.ReasonUnread)
		r.Close()
	}()
	s.Write(make([]byte, 256<<10)) // four windows: held until the server reads
	s.CloseWrite()
	fmt.Println("server: data sat unread:", (<-unread).Time > 0)
	st := s.Stats()
	for _, r := range []mux.BlockReason{mux.ReasonPeerWindow, mux.ReasonSessionBudget} {
		fmt.Printf("client: blocked for %v: %v\n", r, st.Blocked.Of(r).Time > 0)
	}
	fmt.Println("client: signal latency measured:", st.SignalLatency.Count > 0)
	// Output:
	// server: data sat unread: true
	// client: blocked for peer_window: true
	// client: blocked for session_budget: false
	// client: signal latency measured: true
}

// A stream of log lines compressed with zstd: the opener chooses the
// codec, the acceptor answers with the same one, and credit counts the
// application's bytes while fewer go on the wire.
func Example_compression() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cert, err := transport.SelfSigned("127.0.0.1")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		srv, err := ln.Accept(ctx)
		if err != nil {
			log.Fatal(err)
		}
		defer srv.Close()
		r, err := srv.Accept(ctx)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(r, r) // echo: compressed back with the opener's codec
		r.CloseWrite()
		<-srv.Done()
	}()
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		log.Fatal(err)
	}
	sess, err := bp.Dial(ctx, ln.Addr().String(), tlsConf, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	s, err := sess.OpenStream(ctx, mux.StreamOptions{Compression: codec.Zstd})
	if err != nil {
		log.Fatal(err)
	}
	line := []byte(`{"level":"info","msg":"request handled","path":"/api/v1/users","status":200}` + "\n")
	go func() {
		// Each Write goes out at once, as one frame that is compressed on
		// its own: batch small records so that frames carry many.
		w := bufio.NewWriterSize(s, 64<<10)
		for range 2000 {
			w.Write(line)
		}
		w.Flush()
		s.CloseWrite()
	}()
	back, err := io.ReadAll(s)
	if err != nil {
		log.Fatal(err)
	}
	st := s.Stats()
	fmt.Println("echoed intact:", len(back) == 2000*len(line))
	fmt.Println("codec:", st.Compression.Codec)
	fmt.Println("credit counts application bytes:", st.BytesSent == uint64(2000*len(line)))
	fmt.Println("fewer bytes on the wire:", st.Compression.WireBytesSent < st.BytesSent)
	// Output:
	// echoed intact: true
	// codec: zstd
	// credit counts application bytes: true
	// fewer bytes on the wire: true
}
