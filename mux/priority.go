package mux

import (
	"github.com/bpmux/bp/transport"
	"github.com/bpmux/bp/window"
)

// Priority is a stream's priority, in RFC 9218's terms: Urgency from 0
// (most urgent) to 7 (least), and whether the stream's data may be
// interleaved with that of other streams of the same urgency
// (Incremental).
//
// Each side sets the priorities of its own streams, and they govern
// what that side does: the order in which it sends (the quic-go binding
// passes them to QUIC's scheduler) and, under session-budget pressure,
// how it grows the stream's receive window. Streams of urgency 0 to 3
// may grow into the whole budget; less urgent ones only into a part of
// it (4: 3/4, 5: 1/2, 6: 1/4, 7: 1/8), so that they stop growing first and
// the urgent streams keep their floor and their growth. A stream's floor,
// its initial window, never depends on its priority.
type Priority struct {
	Urgency     uint8
	Incremental bool
}

// DefaultPriority is every stream's priority until SetPriority: RFC
// 9218's default urgency 3, incremental as quic-go's default.
var DefaultPriority = Priority{Urgency: 3, Incremental: true}

// windowUrgency maps a stream's urgency to the window package's, whose
// urgency u grows into (8-u)/8 of the budget.
func windowUrgency(u uint8) uint8 {
	switch {
	case u <= 3:
		return window.MostUrgent
	case u == 4:
		return 2 // 3/4
	case u == 5:
		return 4 // 1/2
	case u == 6:
		return 6 // 1/4
	}
	return window.LeastUrgent // 1/8
}

// SetPriority sets the stream's priority; an Urgency above 7 counts as 7.
// It applies at once to the window's next growth and to what the
// transport sends next; credit already granted is never taken back.
func (s *Stream) SetPriority(p Priority) {
	p.Urgency = min(p.Urgency, 7)
	s.mu.Lock()
	s.prio = p
	if s.recv != nil {
		s.recv.SetUrgency(windowUrgency(p.Urgency))
	}
	s.mu.Unlock()
	if l, ok := s.lane.(transport.Prioritizer); ok {
		l.SetPriority(p.Urgency, p.Incremental)
	}
}

// Priority returns the stream's priority.
func (s *Stream) Priority() Priority {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prio
}
