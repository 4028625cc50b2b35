package mux_test

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

// A ticker on a LatestWins stream whose reader pauses: the first tick
// fits the 64 KiB window and goes at once; each later one replaces the
// one waiting for credit. When the reader reads again, it gets the first
// tick and then the newest, sent as soon as the window opened, without
// another Write.
func ExampleLatestWins() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const window = 64 << 10
	cfg := &mux.Config{InitialWindow: window, MaxWindow: window}

	cert, err := transport.SelfSigned("127.0.0.1")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		log.Fatal(err)
	}
	client, err := bp.Dial(ctx, ln.Addr().String(), pin, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()

	ticker, err := client.Open(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for ticker.Stats().SendCredit < window { // the peer's SETTINGS grant the whole window
		time.Sleep(time.Millisecond)
	}
	ticker.SetOverload(mux.LatestWins)
	tick := func(n int) []byte { // a 40 KiB message: two do not fit the window
		m := make([]byte, 40<<10)
		copy(m, fmt.Sprintf("tick %d", n))
		return m
	}
	for n := 1; n <= 5; n++ {
		if _, err := ticker.Write(tick(n)); err != nil { // never waits for credit
			log.Fatal(err)
		}
	}
	st := ticker.Stats()
	fmt.Println("replaced:", st.Replaced, "bytes:", st.BytesReplaced)

	reader, err := server.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	msg := make([]byte, 40<<10)
	for range 2 {
		if _, err := io.ReadFull(reader, msg); err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(msg[:6]))
	}
	ticker.CloseWrite()
	rest, err := io.ReadAll(reader)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("then EOF, after", len(rest), "more bytes")
	// Output:
	// replaced: 3 bytes: 122880
	// tick 1
	// tick 5
	// then EOF, after 0 more bytes
}
