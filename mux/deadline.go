package mux

import (
	"sync"
	"time"
)

// deadline is a settable deadline whose wait channel is closed when it
// passes, as in net.Pipe. A nil channel means no deadline: waiting on it
// blocks forever. It allocates nothing until a deadline is set.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = nil
		}
		return
	}
	if d.cancel == nil || closed {
		d.cancel = make(chan struct{})
	}
	if dur := time.Until(t); dur > 0 {
		c := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(c) })
		return
	}
	close(d.cancel)
}

// wait returns a channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

// expired reports whether the deadline has passed.
func (d *deadline) expired() bool { return isClosed(d.wait()) }

func isClosed[T any](c <-chan T) bool {
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// signal wakes one waiter on a one-slot channel without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
