package impair

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bpmux/bp/transport"
)

// TestQUICThroughProxy: a real quic-go connection through the UDP proxy at
// 25 ms each way completes a handshake and a 4 MiB transfer, and measures
// an RTT of about 50 ms.
func TestQUICThroughProxy(t *testing.T) {
	const (
		oneWay = 25 * time.Millisecond
		size   = 4 << 20
	)
	cert, err := transport.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", transport.ServerConfig(cert), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The server reads a stream to its end and answers with its digest.
	served := make(chan error, 1)
	go func() {
		served <- func() error {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return err
			}
			defer conn.CloseWithError(0, "")
			s, err := conn.AcceptStream(ctx)
			if err != nil {
				return err
			}
			h := sha256.New()
			if _, err := io.Copy(h, s); err != nil {
				return err
			}
			if _, err := s.Write(h.Sum(nil)); err != nil {
				return err
			}
			if err := s.Close(); err != nil {
				return err
			}
			<-conn.Context().Done() // the client closes
			return nil
		}()
	}()

	p := newUDP(t, ln.Addr().String(), both(Direction{Delay: oneWay}))
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn, err := quic.DialAddr(ctx, p.Addr().String(), tlsConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	handshake := time.Since(start)
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	start = time.Now()
	if _, err := s.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	digest, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	want := sha256.Sum256(data)
	if !bytes.Equal(digest, want[:]) {
		t.Fatalf("server digest %x, want %x", digest, want)
	}
	stats := conn.ConnectionStats()
	conn.CloseWithError(0, "")
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	t.Logf("handshake %v; 4 MiB in %v (%.1f MB/s); RTT min %v smoothed %v; proxy:\n%v",
		handshake, took, size/took.Seconds()/1e6, stats.MinRTT, stats.SmoothedRTT, p.Stats())
	if stats.MinRTT < 2*oneWay || stats.MinRTT > 2*oneWay+15*time.Millisecond {
		t.Errorf("min RTT %v, want within [%v, %v]", stats.MinRTT, 2*oneWay, 2*oneWay+15*time.Millisecond)
	}
	if stats.SmoothedRTT < 2*oneWay || stats.SmoothedRTT > 2*oneWay+30*time.Millisecond {
		t.Errorf("smoothed RTT %v, want within [%v, %v]", stats.SmoothedRTT, 2*oneWay, 2*oneWay+30*time.Millisecond)
	}
	if handshake < 2*oneWay {
		t.Errorf("handshake took %v, less than one %v round trip", handshake, 2*oneWay)
	}
}
