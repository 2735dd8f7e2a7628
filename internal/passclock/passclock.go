// Package passclock is the gVisor stack's clock in nused: while a worker
// runs, the stack reads the time the worker took at the start of its
// latest pass instead of asking the kernel.
//
// Why: a TCP segment reads the monotonic clock a dozen times in netstack
// (timestamps, RTT samples, RACK, timers). On these VMs a clock read costs
// about 50 ns, and the profile of redis-benchmark through the daemon put
// about a tenth of the daemon's CPU in them. A pass is a few microseconds,
// so a reading from its start is as good as a fresh one for TCP, whose
// finest unit on the wire is the millisecond and whose shortest timer is
// the 200 ms minimum RTO.
//
// While no worker runs (all asleep, or none, as in the engine's own tests)
// every reading is a real one. Readings never go backwards: every value
// handed out is also the floor of the next.
package passclock

import (
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Clock implements tcpip.Clock.
type Clock struct {
	base time.Time
	// now is the latest reading, in nanoseconds since base: a worker's
	// pass start, or a real reading handed out.
	now atomic.Int64
	// running counts the workers between Run and Stop: while it is
	// above zero, now is fresh to within a pass.
	running atomic.Int32
	// real counts the readings that asked the kernel (for tests).
	real atomic.Uint64
}

var _ tcpip.Clock = (*Clock)(nil)

// New makes a clock.
func New() *Clock { return &Clock{base: time.Now()} }

// Default is the clock of the daemon's gVisor stacks and workers.
var Default = New()

// Now implements tcpip.Clock.Now: wall-clock time, always real (netstack
// uses it for little more than logs and ICMP timestamps).
func (*Clock) Now() time.Time { return time.Now() }

// NowMonotonic implements tcpip.Clock.NowMonotonic.
func (c *Clock) NowMonotonic() tcpip.MonotonicTime {
	if c.running.Load() > 0 {
		return tcpip.MonotonicTime{}.Add(time.Duration(c.now.Load()))
	}
	c.real.Add(1)
	return tcpip.MonotonicTime{}.Add(time.Duration(c.advance(int64(time.Since(c.base)))))
}

// AfterFunc implements tcpip.Clock.AfterFunc with the runtime's timers.
func (*Clock) AfterFunc(d time.Duration, f func()) tcpip.Timer {
	return tcpip.NewStdTimer(time.AfterFunc(d, f))
}

// advance makes t the latest reading unless a later one was handed out,
// and returns the latest.
func (c *Clock) advance(t int64) int64 {
	for {
		old := c.now.Load()
		if t <= old {
			return old
		}
		if c.now.CompareAndSwap(old, t) {
			return t
		}
	}
}

// Run says a worker runs passes from now on; it must call Tick at the start
// of each and Stop before it sleeps or ends.
func (c *Clock) Run(now time.Time) {
	c.advance(int64(now.Sub(c.base)))
	c.running.Add(1)
}

// Tick is a worker's pass start: now is a time it read anyway.
func (c *Clock) Tick(now time.Time) { c.advance(int64(now.Sub(c.base))) }

// Stop undoes one Run.
func (c *Clock) Stop() { c.running.Add(-1) }

// RealReadings counts the readings that went to the kernel.
func (c *Clock) RealReadings() uint64 { return c.real.Load() }

// Running says how many workers are between Run and Stop.
func (c *Clock) Running() int { return int(c.running.Load()) }
