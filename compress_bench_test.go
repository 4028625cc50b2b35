//go:build unix

package bp_test

import (
	"context"
	"crypto/rand"
	"io"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/bpmux/bp"
	"github.com/bpmux/bp/codec"
	"github.com/bpmux/bp/internal/logtext"
	"github.com/bpmux/bp/interop/impair"
	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/transport"
)

// The benchmarks of per-stream compression (BENCHMARKS.md, "Compression").
// Each iteration runs every codec once, in turn, so the ratios are of
// adjacent runs; the metrics are the medians over the iterations.
//
//	go test -run '^$' -bench Compression -benchtime 5x .

// benchEnd is a listener whose sessions do one thing with every stream:
// read it to its end (discard), accept it and leave it idle (hold), or
// send back what it reads (echo).
type benchEnd struct {
	ln   *bp.Listener
	cert []byte
}

type endMode int

const (
	discard endMode = iota
	hold
	echoBack
)

func newBenchEnd(b *testing.B, cfg *mux.Config) *benchEnd { return newBenchEndMode(b, cfg, discard) }

func newBenchEndMode(b *testing.B, cfg *mux.Config, mode endMode) *benchEnd {
	cert, err := transport.SelfSigned("127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	ln, err := bp.Listen("127.0.0.1:0", transport.ServerConfig(cert), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			sess, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				defer sess.Close()
				for {
					s, err := sess.Accept(context.Background())
					if err != nil {
						return
					}
					switch mode {
					case hold:
						defer s.Close()
					case echoBack:
						go func() {
							io.Copy(s, s)
							s.Close()
						}()
					default:
						go func() {
							io.Copy(io.Discard, s)
							s.Close()
						}()
					}
				}
			}()
		}
	}()
	return &benchEnd{ln: ln, cert: cert.Certificate[0]}
}

func (e *benchEnd) dial(b *testing.B, addr string, cfg *mux.Config) *mux.Session {
	tlsConf, err := transport.PinnedClientConfig(transport.Fingerprint(e.cert))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := bp.Dial(ctx, addr, tlsConf, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sess.Close() })
	return sess
}

// transfer sends data on a new stream opened with c and returns the time
// until the peer's application has read all of it.
func transfer(b *testing.B, sess *mux.Session, c codec.Codec, data []byte) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := sess.OpenStream(ctx, mux.StreamOptions{Compression: c})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	if err := s.WaitConsumed(ctx); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	if c != codec.None && s.Stats().Compression.Codec != c {
		b.Fatalf("the stream was not compressed with %v", c)
	}
	s.Close()
	return took
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// cpuTime is the process's CPU time so far, user and system: both ends
// of the benchmark run in this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runCodecs runs each codec once per iteration on data and reports each
// one's rate (metric unit) and its ratio to none (codec + ratioUnit),
// and the CPU seconds per GB of both ends with its ratio to none: medians
// over the iterations, with the smallest ratio.
func runCodecs(b *testing.B, sess *mux.Session, data []byte, rate func(time.Duration) float64, unit, ratioUnit string) {
	codecs := []codec.Codec{codec.None, codec.Zstd, codec.S2}
	rates := make(map[codec.Codec][]float64)
	ratios := make(map[codec.Codec][]float64)
	cpu := make(map[codec.Codec][]float64)
	cpuRatios := make(map[codec.Codec][]float64)
	transfer(b, sess, codec.Zstd, data[:1<<20]) // warm up: windows, codecs
	b.ResetTimer()
	for range b.N {
		var none, noneCPU float64
		for _, c := range codecs {
			c0 := cpuTime()
			r := rate(transfer(b, sess, c, data))
			perGB := (cpuTime() - c0).Seconds() / (float64(len(data)) / 1e9)
			rates[c] = append(rates[c], r)
			cpu[c] = append(cpu[c], perGB)
			if c == codec.None {
				none, noneCPU = r, perGB
			} else {
				ratios[c] = append(ratios[c], r/none)
				cpuRatios[c] = append(cpuRatios[c], perGB/noneCPU)
			}
		}
	}
	for _, c := range codecs {
		b.ReportMetric(median(rates[c]), c.String()+"_"+unit)
		b.ReportMetric(median(cpu[c]), c.String()+"_cpu_s/GB")
		if c != codec.None {
			b.ReportMetric(median(ratios[c]), c.String()+"_"+ratioUnit)
			b.ReportMetric(slices.Min(ratios[c]), c.String()+"_"+ratioUnit+"_min")
			b.ReportMetric(median(cpuRatios[c]), c.String()+"_cpu_x")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCompressionLink: JSON logs through a 10 Mbit/s path with a
// 20 ms RTT (the UDP impairment proxy, 100 ms of queue): goodput with
// each codec, and as a multiple of none (goal: at least 3).
func BenchmarkCompressionLink(b *testing.B) {
	const size = 2 << 20
	end := newBenchEnd(b, nil)
	dir := impair.Direction{Delay: 10 * time.Millisecond, Rate: 10e6 / 8}
	proxy, err := impair.NewUDP("127.0.0.1:0", end.ln.Addr().String(), impair.Config{Up: dir, Down: dir, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { proxy.Close() })
	sess := end.dial(b, proxy.Addr().String(), nil)
	runCodecs(b, sess, logtext.JSON(1, size), func(d time.Duration) float64 { return size * 8 / d.Seconds() / 1e6 }, "Mbit/s", "x")
}

// BenchmarkCompressionRandom: random (incompressible) data on loopback:
// throughput with each codec, and as a fraction of none (goal: at least
// 0.9).
func BenchmarkCompressionRandom(b *testing.B) {
	const size = 128 << 20
	end := newBenchEnd(b, nil)
	sess := end.dial(b, end.ln.Addr().String(), nil)
	data := make([]byte, size)
	rand.Read(data)
	runCodecs(b, sess, data, func(d time.Duration) float64 { return size / d.Seconds() / 1e6 }, "MB/s", "frac")
}

// BenchmarkCompressionIdleStreams: the memory of an idle stream, both
// ends in this process, opened with each codec (its opening frame
// announces it; nothing else is sent).
func BenchmarkCompressionIdleStreams(b *testing.B) {
	const n = 2000
	for _, c := range []codec.Codec{codec.None, codec.Zstd} {
		b.Run(c.String(), func(b *testing.B) {
			cfg := &mux.Config{InitialWindow: mux.DefaultInitialWindow, MaxStreams: 2 * n}
			end := newBenchEndMode(b, cfg, hold)
			var perStream []float64
			for range b.N {
				sess := end.dial(b, end.ln.Addr().String(), cfg)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				if _, err := sess.OpenStream(ctx, mux.StreamOptions{Compression: c}); err != nil { // settle the session first
					b.Fatal(err)
				}
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for range n {
					if _, err := sess.OpenStream(ctx, mux.StreamOptions{Compression: c}); err != nil {
						b.Fatal(err)
					}
				}
				time.Sleep(500 * time.Millisecond) // the server accepts and reads every opening frame
				runtime.GC()
				runtime.ReadMemStats(&after)
				cancel()
				perStream = append(perStream, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)+int64(after.StackInuse)-int64(before.StackInuse))/n)
				sess.Close()
			}
			b.ReportMetric(median(perStream), "bytes/stream")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkCompressionRequestResponse: 1 KiB of JSON logs each way, back
// to back, on one stream per codec through the 10 Mbit/s, 20 ms RTT path:
// the median and the 99th percentile of the round trips. Compression must
// add nothing near an RTT: each Write goes out at once.
func BenchmarkCompressionRequestResponse(b *testing.B) {
	const rounds = 100
	end := newBenchEndMode(b, nil, echoBack)
	dir := impair.Direction{Delay: 10 * time.Millisecond, Rate: 10e6 / 8}
	proxy, err := impair.NewUDP("127.0.0.1:0", end.ln.Addr().String(), impair.Config{Up: dir, Down: dir, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { proxy.Close() })
	sess := end.dial(b, proxy.Addr().String(), nil)
	logs := logtext.JSON(1, rounds<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	codecs := []codec.Codec{codec.None, codec.Zstd, codec.S2}
	streams := make(map[codec.Codec]*mux.Stream)
	for _, c := range codecs {
		s, err := sess.OpenStream(ctx, mux.StreamOptions{Compression: c})
		if err != nil {
			b.Fatal(err)
		}
		streams[c] = s
	}
	took := make(map[codec.Codec][]float64)
	resp := make([]byte, 1024)
	b.ResetTimer()
	for range b.N {
		for _, c := range codecs {
			s := streams[c]
			for i := range rounds {
				start := time.Now()
				if _, err := s.Write(logs[i<<10 : (i+1)<<10]); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(s, resp); err != nil {
					b.Fatal(err)
				}
				took[c] = append(took[c], float64(time.Since(start).Microseconds())/1000)
			}
		}
	}
	for _, c := range codecs {
		v := slices.Clone(took[c])
		slices.Sort(v)
		b.ReportMetric(v[len(v)/2], c.String()+"_p50_ms")
		b.ReportMetric(v[len(v)*99/100], c.String()+"_p99_ms")
	}
	if st := streams[codec.Zstd].Stats().Compression; st.FramesCompressed == 0 {
		b.Fatal("the zstd stream sent nothing compressed")
	}
	b.ReportMetric(0, "ns/op")
}
