package mux

// streamCounters are the counters a stream keeps, the part of its
// StreamStats that Stats does not compute from the stream's state. They
// are a struct of their own, not a StreamStats, so that an idle stream
// does not carry a StreamStats' room for the histograms and the state it
// describes: the histograms are made at a stream's first observation.
type streamCounters struct {
	BytesSent, BytesReceived, BytesConsumed uint64
	PeakConsumerLag                         uint64
	Drops, BytesDropped                     uint64
	Replaced, BytesReplaced                 uint64
	UpdatesSent, UpdatesReceived            uint64
	BlockedSent, BlockedReceived            uint64
	Blocked                                 Blocked
	Compression                             CompressionStats
	hist                                    *streamHistograms
}

// streamHistograms are a stream's distributions (StreamStats'
// SignalLatency and UpdateDelay).
type streamHistograms struct {
	signal, updateDelay Histogram
}

// histograms returns the stream's histograms, making them at first use.
func (c *streamCounters) histograms() *streamHistograms {
	if c.hist == nil {
		c.hist = new(streamHistograms)
	}
	return c.hist
}

// snapshot returns the counters as a StreamStats; Stats fills in the rest.
func (c *streamCounters) snapshot() StreamStats {
	st := StreamStats{
		BytesSent:       c.BytesSent,
		BytesReceived:   c.BytesReceived,
		BytesConsumed:   c.BytesConsumed,
		PeakConsumerLag: c.PeakConsumerLag,
		Drops:           c.Drops,
		BytesDropped:    c.BytesDropped,
		Replaced:        c.Replaced,
		BytesReplaced:   c.BytesReplaced,
		UpdatesSent:     c.UpdatesSent,
		UpdatesReceived: c.UpdatesReceived,
		BlockedSent:     c.BlockedSent,
		BlockedReceived: c.BlockedReceived,
		Blocked:         c.Blocked,
		Compression:     c.Compression,
	}
	if c.hist != nil {
		st.SignalLatency, st.UpdateDelay = c.hist.signal, c.hist.updateDelay
	}
	return st
}
