// Package units parses the byte counts and rates that the project's
// commands take on their command lines, so that every tool reads "8MiB",
// "64KB" or "10MB/s" the same way.
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// multipliers maps size suffixes (lower case) to multipliers. Binary
// suffixes (KiB) and their one-letter short forms (K) are powers of 1024;
// decimal ones (KB) powers of 1000.
var multipliers = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// ParseSize parses a byte count such as "8MiB", "64KB", "1.5GiB" or
// "4096". Fractions are rounded down to whole bytes.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "-") {
		return 0, fmt.Errorf("size %q is negative", s)
	}
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, suffix := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("size %q: want a number with an optional unit, like 8MiB or 64KB", s)
	}
	mult, ok := multipliers[suffix]
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

// ParseRate parses bytes per second: a size, optionally followed by "/s",
// "/sec" or "ps" ("8MiB", "8MiB/s", "10MBps").
func ParseRate(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	lt := strings.ToLower(t)
	for _, per := range []string{"/s", "/sec", "ps"} {
		if strings.HasSuffix(lt, per) && len(lt) > len(per) {
			t = t[:len(t)-len(per)]
			break
		}
	}
	v, err := ParseSize(t)
	if err != nil {
		return 0, fmt.Errorf("rate %q: want bytes per second, like 8MiB or 8MiB/s: %w", s, err)
	}
	return v, nil
}
