package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bpmux/bp/internal/units"
)

// bitrateFlag is -b: a rate per stream as iperf3 takes it, in bits per
// second with decimal K, M, G or T (100M is 100 Mbit/s, 1.5G, 800Mbps,
// 800Mbit/s), or in bytes per second as the rest of bpcat takes rates, with
// a B (12MiB/s, 10MB/s). It stores bytes per second.
type bitrateFlag struct{ v *uint64 }

func (f bitrateFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return formatBits(8 * float64(*f.v))
}

func (f bitrateFlag) Set(s string) error {
	v, err := parseBitrate(s)
	if err != nil {
		return err
	}
	*f.v = v
	return nil
}

// parseBitrate parses -b's value into bytes per second.
func parseBitrate(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	lt := strings.ToLower(t)
	if strings.Contains(t, "B") || strings.Contains(lt, "ib") {
		return units.ParseRate(t)
	}
	for _, suffix := range []string{"bit/s", "bits/s", "bits", "bit", "bps", "b/s", "/s"} {
		if strings.HasSuffix(lt, suffix) {
			lt = strings.TrimSpace(lt[:len(lt)-len(suffix)])
			break
		}
	}
	mult := 1.0
	if n := len(lt); n > 0 {
		switch lt[n-1] {
		case 'k':
			mult = 1e3
		case 'm':
			mult = 1e6
		case 'g':
			mult = 1e9
		case 't':
			mult = 1e12
		}
		if mult != 1 {
			lt = lt[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(lt), 64)
	if err != nil || v < 0 || v*mult/8 >= 1<<62 {
		return 0, fmt.Errorf("rate %q: want bits per second like 100M or 1.5G (iperf3's form), or bytes like 12MiB/s", s)
	}
	return uint64(v * mult / 8), nil
}

// formatBits writes a rate in bits per second as iperf3 does, with
// decimal units: "941 Mbits/sec".
func formatBits(bps float64) string {
	return iperfNumber(bps, 1000, [...]string{"bits", "Kbits", "Mbits", "Gbits", "Tbits"}) + "/sec"
}

// formatBytesIperf writes a byte count as iperf3 does, with binary units:
// "1.10 GBytes".
func formatBytesIperf(n uint64) string {
	return iperfNumber(float64(n), 1024, [...]string{"Bytes", "KBytes", "MBytes", "GBytes", "TBytes"})
}

// iperfNumber scales v by base into one of units and prints it with three
// significant digits, as iperf3's unit_snprintf.
func iperfNumber(v, base float64, units [5]string) string {
	i := 0
	for i < len(units)-1 && v >= base {
		v /= base
		i++
	}
	switch {
	case v < 9.995:
		return fmt.Sprintf("%4.2f %s", v, units[i])
	case v < 99.95:
		return fmt.Sprintf("%4.1f %s", v, units[i])
	}
	return fmt.Sprintf("%4.0f %s", v, units[i])
}
