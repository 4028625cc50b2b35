package impair_test

import (
	"fmt"
	"log"
	"net"
	"time"

	"github.com/bpmux/bp/interop/impair"
)

// A UDP echo server reached through a proxy that adds 10 ms each way, then
// through a blackhole.
func ExampleNewUDP() {
	// The target: a UDP echo server.
	server, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := server.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = server.WriteToUDPAddrPort(buf[:n], addr)
		}
	}()

	p, err := impair.NewUDP("127.0.0.1:0", server.LocalAddr().String(), impair.Config{
		Up:   impair.Direction{Delay: 10 * time.Millisecond},
		Down: impair.Direction{Delay: 10 * time.Millisecond},
		Seed: 1,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	// Clients talk to the proxy instead of the server.
	c, err := net.DialUDP("udp", nil, p.Addr())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	ping := func(msg string) {
		start := time.Now()
		if _, err := c.Write([]byte(msg)); err != nil {
			log.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err != nil {
			fmt.Printf("%s: no answer\n", msg)
			return
		}
		fmt.Printf("%s: answer %q, round trip of at least 20ms: %v\n", msg, buf[:n], time.Since(start) >= 20*time.Millisecond)
	}
	ping("hello")

	p.Blackhole(2 * time.Second)
	ping("into the hole")
	p.Blackhole(0) // over early

	st := p.Stats()
	fmt.Printf("up: %d forwarded, %d dropped by the blackhole\n", st.Up.Packets, st.Up.DroppedBlackhole)
	// Output:
	// hello: answer "hello", round trip of at least 20ms: true
	// into the hole: no answer
	// up: 1 forwarded, 1 dropped by the blackhole
}
