package bp_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/bpmux/bp"
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
