package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/bpmux/bp/internal/units"
)

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
	v, err := units.ParseSize(s)
	if err != nil {
		return err
	}
	*f.v = v
	return nil
}

// maxWindowSize bounds --window and --max-window: a window is memory this
// side promises to hold for the peer.
const maxWindowSize = 1 << 30

// windowFlag is a flag.Value for a window size: above 0, at most
// maxWindowSize.
type windowFlag struct{ v *uint64 }

func (f windowFlag) String() string { return sizeFlag(f).String() }

func (f windowFlag) Set(s string) error {
	v, err := units.ParseSize(s)
	switch {
	case err != nil:
		return err
	case v == 0:
		return fmt.Errorf("a window of 0 bytes would let nothing through")
	case v > maxWindowSize:
		return fmt.Errorf("%s is more than the %s a window may be (it is memory this side promises to hold)", formatSize(v), formatSize(maxWindowSize))
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
	v, err := units.ParseRate(s)
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
