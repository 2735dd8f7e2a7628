package usock

import "time"

// spinWindow is how long a worker spins for work before it sleeps, adapted
// as KVM adapts its halt polling: a sleep costs a thread wake-up or two
// (tens of microseconds on these VMs, more when a device's reader thread
// must wake first), which a spin that lasts until the next work avoids.
// When the next work came later than the window but within max, the
// window grows to catch it next time; when it came later than max (the
// programs went quiet), spinning would have been wasted and the window
// falls back to base.
//
// Beyond base the worker yields the CPU on each turn (sched_yield), so a
// program that is runnable on the worker's CPU runs first: the spin then
// takes only CPU that nobody wanted. A NUSE redis-benchmark against a
// kernel redis through the TAP leaves the daemon 64-512 µs of quiet
// between the kernel redis's bursts of answers, longer than the base spin:
// 18.6 k requests/s with a fixed 50 µs spin, 26.0 k with the window
// (README, Benchmarks).
type spinWindow struct {
	base, max, cur time.Duration
}

func newSpinWindow(base, max time.Duration) spinWindow {
	if max < base {
		max = base
	}
	return spinWindow{base: base, max: max, cur: base}
}

// next is how long to spin now.
func (w *spinWindow) next() time.Duration { return w.cur }

// yield: past base, spinning yields the CPU each turn.
func (w *spinWindow) yield(spun time.Duration) bool { return spun > w.base && w.max > w.base }

// gap notes the time from the last work before a sleep to the first work
// after it (or, without work yet, how long it has been so far).
func (w *spinWindow) gap(g time.Duration) {
	switch {
	case g > w.max:
		w.cur = w.base
	case g > w.cur:
		w.cur = min(w.max, max(2*w.cur, g))
	}
}
