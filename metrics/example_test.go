package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/metrics"
	"github.com/bpmux/bp/transport"
)

// ExampleCollector serves the metrics of a listener and its sessions on
// /metrics, from a registry of its own.
func ExampleCollector() {
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

	// The collector, on a registry of its own, served over HTTP.
	reg := prometheus.NewRegistry()
	col := metrics.NewCollector(nil)
	reg.MustRegister(col)
	col.TrackListener(ln)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	// A client sends a message; the server tracks the session it accepts.
	pin, err := transport.PinnedClientConfig(transport.Fingerprint(cert.Certificate[0]))
	if err != nil {
		log.Fatal(err)
	}
	client, err := bp.Dial(ctx, ln.Addr().String(), pin, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	sess, err := ln.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	col.Track(sess)
	w, err := client.Open(ctx)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		io.WriteString(w, "hello, backpressure")
		w.CloseWrite()
	}()
	r, err := sess.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		log.Fatal(err)
	}

	// Scrape.
	resp, err := http.Get(srv.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		for _, name := range []string{"bp_sessions_open ", "bp_received_bytes_total ", "bp_streams_accepted_total "} {
			if strings.HasPrefix(sc.Text(), name) {
				fmt.Println(sc.Text())
			}
		}
	}
	// Output:
	// bp_received_bytes_total 19
	// bp_sessions_open 1
	// bp_streams_accepted_total 1
}
