package main

import "time"

// cpuPercent is the CPU this process used over a measurement, as a
// percentage of one CPU's time (as iperf3 reports it: 150 means one and a
// half CPUs busy), split into user and system time.
type cpuPercent struct {
	Total  float64 `json:"total"`
	User   float64 `json:"user"`
	System float64 `json:"system"`
	// Measured is false where the system does not report process CPU.
	Measured bool `json:"measured"`
}

// cpuMeter measures the process's CPU from its start.
type cpuMeter struct {
	start        time.Time
	user, system time.Duration
	ok           bool
}

func startCPU() cpuMeter {
	u, s, ok := cpuTimes()
	return cpuMeter{start: time.Now(), user: u, system: s, ok: ok}
}

// percent returns the CPU used since the meter started.
func (m cpuMeter) percent() cpuPercent {
	u, s, ok := cpuTimes()
	wall := time.Since(m.start).Seconds()
	if !ok || !m.ok || wall <= 0 {
		return cpuPercent{}
	}
	user := (u - m.user).Seconds() / wall * 100
	system := (s - m.system).Seconds() / wall * 100
	return cpuPercent{Total: user + system, User: user, System: system, Measured: true}
}
