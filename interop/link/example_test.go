package link_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"time"

	"github.com/bpmux/bp/interop/link"
)

// A test of another package sets up a link (the QUIC interop runner's
// defaults each way), listens in B and dials from A, all in-process. It
// needs root; without, Setup fails and a test should skip.
func Example() {
	l, err := link.Setup(context.Background(), link.Config{
		A: "bpA", B: "bpB", AddrA: "10.99.0.1/24", AddrB: "10.99.0.2/24",
		AtoB: link.DefaultDirection(), BtoA: link.DefaultDirection(), Seed: 1,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	// The listener is made inside B; it stays there when used from any
	// goroutine.
	var ln net.Listener
	if err := l.RunInB(func() (err error) {
		ln, err = net.Listen("tcp", "10.99.0.2:4242")
		return err
	}); err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()

	var c net.Conn
	start := time.Now()
	if err := l.RunInA(func() (err error) {
		c, err = net.Dial("tcp", "10.99.0.2:4242")
		return err
	}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("connected after about one RTT:", time.Since(start).Round(10*time.Millisecond))
	c.Close()

	// Conditions change live: a blackhole of 2 s from now, A to B.
	cfg := l.Config()
	cfg.AtoB.Blackhole = link.Blackhole{Drop: 2 * time.Second, Once: true}
	if err := l.SetConfig(cfg); err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Stats().AtoB.DroppedBlackhole)
}
