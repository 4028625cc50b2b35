//go:build !unix

package main

import "time"

// cpuTimes is not measured on this system.
func cpuTimes() (user, system time.Duration, ok bool) { return 0, 0, false }
