package main

// The JSON document of `bpcat bench --json`, in iperf3's shape (iperf3 -J):
// "start", "intervals" and "end" with iperf3's key names, so that tools
// written for iperf3 (jq '.end.sum_received.bits_per_second') read it.
// What iperf3 has no key for (flow-control windows, stalls, bytes in
// flight, fairness) is under "bp" objects beside iperf3's keys; iperf3's
// TCP-only keys (retransmits, snd_cwnd, rtt in microseconds per stream)
// are left out rather than faked.

// iperfDoc is the whole document.
type iperfDoc struct {
	Start     iperfStart      `json:"start"`
	Intervals []iperfInterval `json:"intervals"`
	End       iperfEnd        `json:"end"`
	// Error is set when the test did not complete (interrupted, or a
	// stream failed): the rest is what was measured until then.
	Error string `json:"error,omitempty"`
}

type iperfStart struct {
	Connected    []iperfConnected `json:"connected"`
	Version      string           `json:"version"`
	SystemInfo   string           `json:"system_info"`
	Timestamp    iperfTimestamp   `json:"timestamp"`
	ConnectingTo iperfHostPort    `json:"connecting_to"`
	Cookie       string           `json:"cookie"`
	TestStart    iperfTestStart   `json:"test_start"`
	BP           bpStart          `json:"bp"`
}

type iperfConnected struct {
	Socket     uint64 `json:"socket"` // the bp/1 stream ID
	LocalHost  string `json:"local_host"`
	LocalPort  int    `json:"local_port"`
	RemoteHost string `json:"remote_host"`
	RemotePort int    `json:"remote_port"`
}

type iperfTimestamp struct {
	Time     string `json:"time"`
	Timesecs int64  `json:"timesecs"`
}

type iperfHostPort struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

type iperfTestStart struct {
	Protocol      string  `json:"protocol"` // "bp/1"
	NumStreams    int     `json:"num_streams"`
	Blksize       int     `json:"blksize"`
	Omit          int     `json:"omit"`
	Duration      float64 `json:"duration"`
	Bytes         uint64  `json:"bytes"`
	Blocks        uint64  `json:"blocks"`
	Reverse       int     `json:"reverse"`
	Tos           int     `json:"tos"`
	TargetBitrate uint64  `json:"target_bitrate"`
	Bidir         int     `json:"bidir"`
	Fqrate        uint64  `json:"fqrate"`
	Interval      float64 `json:"interval"`
}

// bpStart is the session's flow-control configuration.
type bpStart struct {
	Protocol       string  `json:"protocol"`
	InitialWindow  uint64  `json:"initial_window"`
	MaxWindow      uint64  `json:"max_window"`
	SessionBudget  uint64  `json:"session_budget"`
	DeadPeerSecond float64 `json:"dead_peer_seconds"`
	// Measured says what "bytes" count: bytes written by the sender and
	// bytes read by the receiving application.
	Measured string `json:"measured"`
}

type iperfInterval struct {
	Streams         []iperfIntervalStream `json:"streams"`
	Sum             *iperfIntervalSum     `json:"sum"`
	SumBidirReverse *iperfIntervalSum     `json:"sum_bidir_reverse,omitempty"`
}

type iperfIntervalStream struct {
	Socket        uint64     `json:"socket"`
	Start         float64    `json:"start"`
	End           float64    `json:"end"`
	Seconds       float64    `json:"seconds"`
	Bytes         uint64     `json:"bytes"`
	BitsPerSecond float64    `json:"bits_per_second"`
	Omitted       bool       `json:"omitted"`
	Sender        bool       `json:"sender"`
	BP            bpInterval `json:"bp"`
}

// bpInterval is a stream's flow control at the end of an interval.
type bpInterval struct {
	// Window is the stream's receive window: granted by the peer to this
	// side's sender, or granted by this side as the receiver.
	Window uint64 `json:"window"`
	// Credit is what the sender may still send (senders only).
	Credit uint64 `json:"credit"`
	// InFlight is sent and not yet read by the receiving application.
	InFlight uint64 `json:"in_flight"`
	// Stalls in the interval: times the sender ran out of credit (on the
	// receiving side, BLOCKED signals received from the sender).
	Stalls             uint64  `json:"stalls"`
	TimeStalledSeconds float64 `json:"time_stalled_seconds"`
}

type iperfIntervalSum struct {
	Start         float64 `json:"start"`
	End           float64 `json:"end"`
	Seconds       float64 `json:"seconds"`
	Bytes         uint64  `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Omitted       bool    `json:"omitted"`
	Sender        bool    `json:"sender"`
	BP            bpSum   `json:"bp"`
}

// bpSum sums the streams' flow control.
type bpSum struct {
	Stalls             uint64  `json:"stalls"`
	TimeStalledSeconds float64 `json:"time_stalled_seconds"`
	InFlight           uint64  `json:"in_flight,omitempty"`
	PeakInFlight       uint64  `json:"peak_in_flight,omitempty"`
}

type iperfEnd struct {
	Streams                 []iperfEndStream `json:"streams"`
	SumSent                 *iperfSum        `json:"sum_sent"`
	SumReceived             *iperfSum        `json:"sum_received"`
	SumSentBidirReverse     *iperfSum        `json:"sum_sent_bidir_reverse,omitempty"`
	SumReceivedBidirReverse *iperfSum        `json:"sum_received_bidir_reverse,omitempty"`
	CPU                     iperfCPU         `json:"cpu_utilization_percent"`
	BP                      bpEnd            `json:"bp"`
}

type iperfEndStream struct {
	Sender   iperfStreamEnd `json:"sender"`
	Receiver iperfStreamEnd `json:"receiver"`
}

type iperfStreamEnd struct {
	Socket        uint64       `json:"socket"`
	Start         float64      `json:"start"`
	End           float64      `json:"end"`
	Seconds       float64      `json:"seconds"`
	Bytes         uint64       `json:"bytes"`
	BitsPerSecond float64      `json:"bits_per_second"`
	Sender        bool         `json:"sender"`
	BP            *bpStreamEnd `json:"bp,omitempty"`
}

// bpStreamEnd is a stream's flow control over the whole test, from its
// sender (on the sender's object).
type bpStreamEnd struct {
	Stalls             uint64  `json:"stalls"`
	TimeStalledSeconds float64 `json:"time_stalled_seconds"`
	PeakInFlight       uint64  `json:"peak_in_flight"`
	Window             uint64  `json:"window"`
}

type iperfSum struct {
	Start         float64 `json:"start"`
	End           float64 `json:"end"`
	Seconds       float64 `json:"seconds"`
	Bytes         uint64  `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Sender        bool    `json:"sender"`
	BP            *bpSum  `json:"bp,omitempty"`
}

type iperfCPU struct {
	HostTotal    float64 `json:"host_total"`
	HostUser     float64 `json:"host_user"`
	HostSystem   float64 `json:"host_system"`
	RemoteTotal  float64 `json:"remote_total"`
	RemoteUser   float64 `json:"remote_user"`
	RemoteSystem float64 `json:"remote_system"`
}

// bpEnd is what iperf3 has no key for, over the whole test.
type bpEnd struct {
	// JainFairness is Jain's index of the bytes the streams of the main
	// direction delivered (1: perfectly even).
	JainFairness             float64  `json:"jain_fairness"`
	JainFairnessBidirReverse *float64 `json:"jain_fairness_bidir_reverse,omitempty"`
	RTTSeconds               float64  `json:"rtt_seconds"`
	// RemoteCPUMeasured is false when the server sent no CPU figures
	// (an interrupted test); the remote_* figures are then 0.
	RemoteCPUMeasured bool `json:"remote_cpu_measured"`
	// ServerResults is false when the server's own figures did not arrive
	// (an interrupted test): the server's sends are then what arrived here.
	ServerResults bool `json:"server_results"`
}
