package mux

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadline is a settable deadline whose wait channel is closed when it
// passes, as in net.Pipe. Waiters that took the channel before a change
// are woken too: a deadline moved into the past closes the channel they
// hold, and one moved into the future replaces only a closed channel. The
// channel is made on first use, so an idle stream's deadlines cost no
// allocation.
type deadline struct {
	mu     sync.Mutex
	t      time.Time
	timer  *time.Timer
	cancel chan struct{} // nil until someone waits or a deadline is set
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil
	d.t = t
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = nil
		}
		return
	}
	if closed {
		d.cancel = nil
	}
	if d.cancel == nil {
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
	if d.cancel == nil {
		d.cancel = make(chan struct{})
	}
	return d.cancel
}

// when returns the deadline, zero for none.
func (d *deadline) when() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.t
}

// expired reports whether the deadline has passed.
func (d *deadline) expired() bool {
	d.mu.Lock()
	c := d.cancel
	d.mu.Unlock()
	return isClosed(c)
}

// lazyDeadline is a deadline made on first use: a stream that never sets
// or waits for a deadline carries only a pointer for it.
type lazyDeadline struct {
	p atomic.Pointer[deadline]
}

// get returns the deadline, making it if it is not made yet.
func (l *lazyDeadline) get() *deadline {
	if d := l.p.Load(); d != nil {
		return d
	}
	l.p.CompareAndSwap(nil, new(deadline))
	return l.p.Load()
}

func (l *lazyDeadline) set(t time.Time) {
	if t.IsZero() && l.p.Load() == nil {
		return // none set, none to clear
	}
	l.get().set(t)
}

func (l *lazyDeadline) wait() <-chan struct{} { return l.get().wait() }

func (l *lazyDeadline) when() time.Time {
	if d := l.p.Load(); d != nil {
		return d.when()
	}
	return time.Time{}
}

func (l *lazyDeadline) expired() bool {
	d := l.p.Load()
	return d != nil && d.expired()
}

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

// readyChan returns the channel in p, making it on first use: a
// one-slot channel that signal wakes a waiter on. The caller holds s.mu.
// Whoever changes what a waiter waits for does so under s.mu and then
// signals, so a change made before the channel existed is one the
// waiter's own check, under s.mu, has seen.
func readyChan(p *atomic.Pointer[chan struct{}]) chan struct{} {
	if c := p.Load(); c != nil {
		return *c
	}
	c := make(chan struct{}, 1)
	p.Store(&c)
	return c
}

// signalReady signals the channel in p, if one was made. It never blocks.
func signalReady(p *atomic.Pointer[chan struct{}]) {
	if c := p.Load(); c != nil {
		signal(*c)
	}
}
