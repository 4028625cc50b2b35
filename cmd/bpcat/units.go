package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// units maps size suffixes (lower case) to multipliers. Binary suffixes
// (KiB) and their one-letter short forms (K) are powers of 1024; decimal
// ones (KB) powers of 1000.
var units = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// parseSize parses a byte count such as "8MiB", "64KB", "1.5GiB" or
// "4096". Fractions are rounded down to whole bytes.
func parseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, suffix := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("size %q: want a number with an optional unit, like 8MiB or 64KB", s)
	}
	mult, ok := units[suffix]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KiB, MiB, GiB, KB, MB or GB)", s, t[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: bad number %q", s, num)
	}
	b := math.Floor(v * mult)
	if b >= 1<<63 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return uint64(b), nil
}

// parseRate parses bytes per second: a size, optionally followed by "/s"
// or "ps" ("8MiB", "8MiB/s", "10MBps"). "0" means unlimited.
func parseRate(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	lt := strings.ToLower(t)
	for _, per := range []string{"/s", "/sec", "ps"} {
		if strings.HasSuffix(lt, per) && len(lt) > len(per) {
			t = t[:len(t)-len(per)]
			break
		}
	}
	v, err := parseSize(t)
	if err != nil {
		return 0, fmt.Errorf("rate %q: want bytes per second, like 8MiB or 8MiB/s", s)
	}
	return v, nil
}

// parseDuration parses a Go duration ("1.5s", "2m") or a plain number of
// seconds ("10").
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(t, 64); err == nil {
		if f < 0 || f > math.MaxInt64/float64(time.Second) {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a number of seconds or a duration like 1.5s or 2m", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return d, nil
}

// formatSize writes n bytes in binary units, e.g. "1.50 MiB".
func formatSize(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// formatRate writes a rate in bytes per second, e.g. "12.3 MiB/s".
func formatRate(bps float64) string {
	switch {
	case bps >= 1<<30:
		return fmt.Sprintf("%.2f GiB/s", bps/(1<<30))
	case bps >= 1<<20:
		return fmt.Sprintf("%.1f MiB/s", bps/(1<<20))
	case bps >= 1<<10:
		return fmt.Sprintf("%.1f KiB/s", bps/(1<<10))
	}
	return fmt.Sprintf("%.0f B/s", bps)
}

// sizeFlag is a flag.Value for a size.
type sizeFlag struct{ v *uint64 }

func (f sizeFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return formatSize(*f.v)
}

func (f sizeFlag) Set(s string) error {
	v, err := parseSize(s)
	if err != nil {
		return err
	}
	*f.v = v
	return nil
}

// rateFlag is a flag.Value for a rate in bytes per second.
type rateFlag struct{ v *uint64 }

func (f rateFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return formatRate(float64(*f.v))
}

func (f rateFlag) Set(s string) error {
	v, err := parseRate(s)
	if err != nil {
		return err
	}
	*f.v = v
	return nil
}

// durationFlag is a flag.Value for a duration.
type durationFlag struct{ v *time.Duration }

func (f durationFlag) String() string {
	if f.v == nil {
		return ""
	}
	return f.v.String()
}

func (f durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*f.v = d
	return nil
}
