//go:build race

package mux

// raceEnabled reports whether the race detector is on: it slows
// goroutine-heavy work many times over and unevenly, so throughput ratios
// measured under it are logged rather than asserted.
const raceEnabled = true
