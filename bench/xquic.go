package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"time"

	"github.com/bpmux/bp/transport"
	xquic "golang.org/x/net/quic"
)

// ---- plain golang.org/x/net/quic: one QUIC stream per stream ----
//
// The configuration is the one the x/net/quic binding of bp/1 uses
// (transport.QUICConfig.XQUICConfig), so that "ours-xquic" against "xquic"
// is the binding's cost alone.

func xquicConfig(tlsConf *tls.Config, o opts) *xquic.Config {
	var qc transport.QUICConfig
	if o.manyStreams {
		qc.MaxStreams = 10001
	}
	c := qc.XQUICConfig(tlsConf)
	c.TLSConfig.NextProtos = []string{benchALPN}
	return c
}

type xquicServer struct {
	ep     *xquic.Endpoint
	cancel context.CancelFunc
}

func listenXQUIC(cert tls.Certificate, host string, o opts, handle func(io.ReadWriteCloser)) (server, error) {
	ep, err := xquic.Listen("udp", net.JoinHostPort(host, "0"), xquicConfig(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, o))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go acceptEach(func() (*xquic.Conn, error) { return ep.Accept(ctx) }, func(c *xquic.Conn) {
		acceptEach(func() (io.ReadWriteCloser, error) {
			s, err := c.AcceptStream(ctx)
			if err != nil {
				return nil, err
			}
			return s, nil
		}, handle)
	})
	return &xquicServer{ep: ep, cancel: cancel}, nil
}

func (s *xquicServer) Addr() string { return s.ep.LocalAddr().String() }
func (s *xquicServer) Close() error {
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.ep.Close(ctx)
}

type xquicClient struct {
	ep   *xquic.Endpoint
	conn *xquic.Conn
}

func dialXQUIC(ctx context.Context, addr string, tlsConf *tls.Config, o opts) (client, error) {
	ep, err := xquic.Listen("udp4", "0.0.0.0:0", nil)
	if err != nil {
		return nil, err
	}
	conf := tlsConf.Clone()
	conf.MinVersion = tls.VersionTLS13
	c, err := ep.Dial(ctx, "udp", addr, xquicConfig(conf, o))
	if err != nil {
		ep.Close(ctx)
		return nil, err
	}
	return &xquicClient{ep: ep, conn: c}, nil
}

// flushingStream sends what each Write wrote (x/net/quic holds writes
// until Flush), as a user of it must.
type flushingStream struct{ *xquic.Stream }

func (s flushingStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	if err == nil {
		err = s.Flush()
	}
	return n, err
}

func (c *xquicClient) Open(ctx context.Context) (io.ReadWriteCloser, error) {
	s, err := c.conn.NewStream(ctx)
	if err != nil {
		return nil, err
	}
	return flushingStream{s}, nil
}

func (c *xquicClient) Close() error {
	c.conn.Abort(nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.ep.Close(ctx)
}
