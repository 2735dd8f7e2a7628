package gvisor

import (
	"time"
	"unsafe"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// clock is netstack's standard clock with a cheaper NowMonotonic: the
// same reading (the monotonic time since the clock was made), built
// without tcpip.MonotonicTime.Add. Add saturates through two time.Time
// conversions, and netstack reads the clock about 30 times per
// request/response exchange: under callgrind that conversion was 6% of
// the daemon's instructions per redis GET. Still the real clock at every
// call -- a clock cached per worker pass made RTT samples near zero
// (see engine.go).
type clock struct {
	tcpip.Clock // Now and AfterFunc: the standard clock's
	base        time.Time
}

func newClock() *clock {
	return &clock{Clock: tcpip.NewStdClock(), base: time.Now()}
}

// monotonic is tcpip.MonotonicTime's layout, a count of nanoseconds (the
// type does not export it). The build fails if the size changes, and
// TestClockLayout checks that the count is read the same way.
type monotonic struct{ nanoseconds int64 }

var _ [unsafe.Sizeof(tcpip.MonotonicTime{}) - unsafe.Sizeof(monotonic{})]byte
var _ [unsafe.Sizeof(monotonic{}) - unsafe.Sizeof(tcpip.MonotonicTime{})]byte

// fromNanos is tcpip.MonotonicTime{}.Add(time.Duration(ns)) for the ns a
// clock gives (from 0 up, far from saturating).
func fromNanos(ns int64) tcpip.MonotonicTime {
	m := monotonic{nanoseconds: ns}
	return *(*tcpip.MonotonicTime)(unsafe.Pointer(&m))
}

// NowMonotonic implements tcpip.Clock.
func (c *clock) NowMonotonic() tcpip.MonotonicTime {
	// time.Since uses the monotonic reading of both times; it never goes
	// back, so no check for a negative duration as in stdClock.
	return fromNanos(int64(time.Since(c.base)))
}
