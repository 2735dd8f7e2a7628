// Package futex wraps the futex calls NUSE needs on words in shared memory
// (never FUTEX_PRIVATE: the other side is usually another process): wait,
// wake, and futex_waitv to sleep on many words at once.
package futex

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Futex operations on words in shared memory (not FUTEX_PRIVATE: the other
// side is another process).
const (
	futexWait = 0
	futexWake = 1
)

// Wait sleeps while *addr == val, for at most d.
func Wait(addr *uint32, val uint32, d time.Duration) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWait, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// Wake wakes up to n waiters on addr.
func Wake(addr *uint32, n int) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWake, uintptr(n), 0, 0, 0)
}

// futexWaiter is struct futex_waitv.
type futexWaiter struct {
	val   uint64
	uaddr uint64
	flags uint32
	_     uint32
}

const futex2SizeU32 = 0x02

// WaitvMax is the most words one FutexWaitv call can watch.
const WaitvMax = 128

// Waitv sleeps until one of several futex words is woken or differs from
// its expected value, or d passes (futex_waitv, Linux 5.16+). The words may
// be in shared memory: they are waited on as shared futexes. A Waitv is
// reused across calls to spare allocations.
type Waitv struct {
	ws []futexWaiter
}

// Reset empties the list.
func (w *Waitv) Reset() { w.ws = w.ws[:0] }

// Add watches addr while it holds val.
func (w *Waitv) Add(addr *uint32, val uint32) {
	w.ws = append(w.ws, futexWaiter{val: uint64(val), uaddr: uint64(uintptr(unsafe.Pointer(addr))), flags: futex2SizeU32})
}

// Len is the number of words watched.
func (w *Waitv) Len() int { return len(w.ws) }

// Wait sleeps as described; it returns nil when woken, or the error
// (EAGAIN: a word had changed already, ETIMEDOUT, EINTR, ENOSYS).
func (w *Waitv) Wait(d time.Duration) error {
	if len(w.ws) == 0 || len(w.ws) > WaitvMax {
		return unix.EINVAL
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		return err
	}
	deadline := unix.NsecToTimespec(now.Nano() + d.Nanoseconds())
	_, _, e := unix.Syscall6(unix.SYS_FUTEX_WAITV, uintptr(unsafe.Pointer(&w.ws[0])), uintptr(len(w.ws)), 0,
		uintptr(unsafe.Pointer(&deadline)), uintptr(unix.CLOCK_MONOTONIC), 0)
	if e != 0 {
		return e
	}
	return nil
}

// HaveWaitv reports whether the kernel has futex_waitv.
func HaveWaitv() bool {
	var word uint32 = 1
	var w Waitv
	w.Add(&word, 0) // differs at once: EAGAIN if the call exists
	return w.Wait(time.Millisecond) == unix.EAGAIN
}

// Kick is a word every worker of the daemon also sleeps on: a device's
// reader that wakes for a packet bumps it and wakes them, from a thread
// that needs nothing of the Go scheduler (stack/link/tap), so that a
// worker takes the packet in its pass at once.
var Kick uint32
