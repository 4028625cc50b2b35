// Package mux runs bp/1 sessions: many logical streams over one transport
// connection, each with an application-level receive window in each
// direction, so that a slow reader stalls its writer end to end and every
// buffer on the way is bounded.
//
// A Session is made from a transport.Conn with New. Streams are opened
// with Open and accepted with Accept; each is a net.Conn whose Read returns
// credit to the peer as the application consumes data. SPEC.md describes
// the wire protocol.
//
// # Seeing backpressure
//
// Every change of a stream's flow control is an Event (Config.OnEvent),
// and, when the connection keeps a qlog trace (Config.QlogDir, $QLOGDIR),
// a qlog event beside the QUIC stack's own (docs/qlog.md, QlogSchema).
// StreamStats and SessionStats count what the events tell.
//
// A stall is time a stream could not move data, for one BlockReason:
//
//   - ReasonPeerWindow: the writer has used up the credit the peer
//     granted. It begins when Write finds no credit and ends when the
//     writer resumes with new credit, or gives up.
//   - ReasonSessionBudget: the same, when the WINDOW_UPDATE that ends the
//     stall carries BUDGET_LIMITED: the peer's reader kept up, but its
//     session budget refused to grow the window, so the stall is the
//     receiver's memory limit at work. The receiver sets the flag only
//     while its reader keeps up (at most a quarter of the window unread
//     when the update goes out; window.Receiver.BudgetLimited), so a
//     slow or stopped reader is never blamed on the budget. The reason of a stall's EventBlocked is what the writer
//     knew when it stalled (the flag of the latest update); its
//     EventUnblocked carries the settled one.
//   - ReasonTransport: one write of a DATA frame to the lane took at least
//     TransportStallThreshold (1 ms), because QUIC's flow or congestion
//     control would not take more.
//   - ReasonUnread (receiving side): the peer told this side it is blocked
//     at the limit this side granted, and the data it sent waits unread.
//     It ends when this side grants more (its application read enough).
//
// StreamStats.Blocked counts stalls and their time by reason, including a
// stall under way; SessionStats.Blocked adds up the stalls that ended.
//
// # Signal latency
//
// The signal latency of a stall for credit is the time from the read, at
// the receiver, that freed the credit to the writer resuming: how long the
// backpressure signal took to travel back. It has three parts: the
// receiver's delay from that read to writing the WINDOW_UPDATE, the
// update's transit, and the sender's delay from its arrival to the writer
// running again. The sender measures the last part itself, and estimates
// the transit as half the smoothed RTT; the receiver measures the first
// part as its StreamStats.UpdateDelay. So StreamStats.SignalLatency, on the
// writer's side, is
//
//	SignalLatency = RTT/2 + (writer resumed − update arrived)
//
// on the sender's clock alone, which needs no synchronized clocks between
// hosts; add the receiver's UpdateDelay (typically microseconds, unless
// its lane is held) for the full path. Both are Histograms (count, sum,
// max, and exponential buckets from 100 µs). A stall that ends without a
// WINDOW_UPDATE (the peer's SETTINGS raising the initial window, or a
// Write giving up) has no signal latency.
//
// # Thresholds
//
// Config.Thresholds sets warning and critical levels of consumer lag
// (bytes sent and not yet consumed), unread bytes and stall duration; each
// crossing, up or down, is an EventThreshold, and StreamStats.Level says
// where a stream stands now.
//
// # Answers to overload
//
// Besides blocking (the default), a stream's Overload can fail fast, drop
// the newest write, or let the latest win; its Priority decides its send
// order and, under budget pressure, how far its window may grow. A session
// admits the peer's new streams at Config.StreamRate and refuses the rest
// with a retry-after hint (StreamError.RetryAfter); Config.Breaker makes
// Open fail fast with ErrOverloaded while the peer refuses or stalls this
// side's streams.
//
// # Compression
//
// OpenStream with StreamOptions.Compression (or Config.Compression)
// compresses a stream with zstd or s2 if the peer accepts the codec
// (SPEC.md 5.9). Each DATA frame is one block that declares its decoded
// length, so credit counts the application's bytes and a decoder never
// produces more than was granted; a session's encoders and decoders are
// shared by its streams and charged to its budget. StreamStats.Compression
// has the bytes on the wire.
package mux
