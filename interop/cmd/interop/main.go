// Command interop runs bp/1's interoperability matrix: every
// implementation pair against every case, over an impaired path, and
// prints the matrix as a table (or, with -json, as JSON lines: one object
// per pair and case).
//
//	go run ./interop/cmd/interop              # the whole matrix
//	go run ./interop/cmd/interop -quick       # a fast slice
//	go run ./interop/cmd/interop -case stall -pair tcp+tls
//
// The path is the packet-level link between two network namespaces when
// the process may make one (root, TUN), else the loopback proxies; -path
// chooses. A case that fails keeps its logs and traces (both ends' event
// traces, and QUIC's qlog) in a directory named in its result.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/bpmux/bp/interop"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(1)
	}
}

func run() error {
	jsonOut := flag.Bool("json", false, "print the matrix as JSON lines, one object per pair and case")
	quick := flag.Bool("quick", false, "run a fast slice: fewer cases, smaller transfers")
	cases := flag.String("case", "", "run only these cases (comma-separated names)")
	pairs := flag.String("pair", "", "run only pairs whose client or server is one of these (comma-separated: quic-go, x/net/quic, tcp+tls)")
	path := flag.String("path", "auto", "the path: link (network namespaces and TUN: needs root), proxy (loopback proxies), or auto")
	logs := flag.String("logs", "", "keep every case's logs and traces below `DIR` (default: only failed cases', in a temporary directory)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	opts := interop.Options{Quick: *quick, LogDir: *logs, Log: os.Stderr}
	if *quick {
		opts.Cases = interop.QuickCases()
	}
	if *cases != "" {
		opts.Cases = nil
		for _, name := range strings.Split(*cases, ",") {
			c, ok := interop.CaseNamed(strings.TrimSpace(name))
			if !ok {
				return fmt.Errorf("-case: no case %q", name)
			}
			opts.Cases = append(opts.Cases, c)
		}
	}
	if *pairs != "" {
		want := strings.Split(*pairs, ",")
		for _, p := range interop.Pairs() {
			for _, w := range want {
				if w = strings.TrimSpace(w); w == p.Client.Name || w == p.Server.Name {
					opts.Pairs = append(opts.Pairs, p)
					break
				}
			}
		}
		if opts.Pairs == nil {
			return fmt.Errorf("-pair: no pair has %q", *pairs)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nw, err := interop.NewNetwork(ctx, *path)
	if err != nil {
		return err
	}
	defer nw.Close()
	fmt.Fprintf(os.Stderr, "interop: path: %s\n", nw.Name())
	results := interop.Run(ctx, nw, opts)
	if *jsonOut {
		err = interop.WriteJSON(os.Stdout, results)
	} else {
		err = interop.WriteTable(os.Stdout, results)
	}
	if err != nil {
		return err
	}
	for _, r := range results {
		if r.Result == interop.Fail {
			return errors.New("some cases failed")
		}
	}
	return ctx.Err()
}
