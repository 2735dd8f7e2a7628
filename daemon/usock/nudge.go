package usock

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A nudger keeps the control socket served while the workers hold every
// thread that runs the daemon's Go code (--procs no more than --workers,
// the default on small machines). Go's scheduler looks at its network
// poller only when it has nothing else to run, or every 10 ms (sysmon);
// a busy worker always has itself to run, so a program's socket() or
// accept(), which wait for a control message, would wait up to 10 ms
// under load. Every nudgeEvery of busy time a worker calls nudge: one
// epoll_wait(0) over the control connections, and each readable one gets a
// read deadline of now. Deadlines are timers, which the scheduler runs at
// every yield, so the reader wakes with a timeout, clears it and reads.
type nudger struct {
	epfd int // -1: nudging is off (epoll_create failed)
	mu   sync.Mutex
	// by fd: what to nudge (a session's connection, or the listener)
	conns map[int32]*nudgee
	last  atomic.Int64 // unix ns of the last nudge
	evs   [32]unix.EpollEvent
}

const nudgeEvery = 100 * time.Microsecond

func newNudger() *nudger {
	n := &nudger{epfd: -1, conns: make(map[int32]*nudgee)}
	if fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC); err == nil {
		n.epfd = fd
	}
	return n
}

// A nudgee is one watched connection.
type nudgee struct {
	fd  int32
	set func(time.Time) error // sets its read deadline
}

// add has nudge watch c's fd; set is how a deadline reaches its reader.
// It returns what to drop, nil if c is not watched.
func (n *nudger) add(c syscall.Conn, set func(time.Time) error) *nudgee {
	if n.epfd < 0 {
		return nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	fd := int32(-1)
	if raw.Control(func(f uintptr) { fd = int32(f) }) != nil || fd < 0 {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	// A closed file leaves the epoll set by itself: the number may come
	// back with a new connection, which replaces the old entry.
	op := unix.EPOLL_CTL_ADD
	if n.conns[fd] != nil {
		op = unix.EPOLL_CTL_MOD
	}
	if err := unix.EpollCtl(n.epfd, op, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: fd}); err != nil {
		if err != unix.EEXIST && err != unix.ENOENT {
			return nil
		}
		op ^= unix.EPOLL_CTL_ADD ^ unix.EPOLL_CTL_MOD // the other one
		if unix.EpollCtl(n.epfd, op, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: fd}) != nil {
			return nil
		}
	}
	e := &nudgee{fd: fd, set: set}
	n.conns[fd] = e
	return e
}

// drop stops watching e (from add; nil is fine). Call it before closing
// the connection where possible; if the number went to a new connection
// meanwhile, that one stays watched.
func (n *nudger) drop(e *nudgee) {
	if e == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conns[e.fd] != e {
		return
	}
	_ = unix.EpollCtl(n.epfd, unix.EPOLL_CTL_DEL, int(e.fd), nil)
	delete(n.conns, e.fd)
}

// nudge wakes the readers of readable control connections, at most once
// per nudgeEvery across all workers.
func (n *nudger) nudge(now time.Time) {
	t := now.UnixNano()
	l := n.last.Load()
	if n.epfd < 0 || t-l < int64(nudgeEvery) || !n.last.CompareAndSwap(l, t) {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	k, err := unix.EpollWait(n.epfd, n.evs[:], 0)
	if err != nil {
		return
	}
	for _, ev := range n.evs[:k] {
		if e := n.conns[ev.Fd]; e != nil {
			_ = e.set(now)
		}
	}
}

func (n *nudger) close() {
	if n.epfd >= 0 {
		unix.Close(n.epfd)
	}
}

// nudged reports whether err is a nudge (a read deadline that passed) and
// clears the deadline if so.
func nudged(err error, clear func(time.Time) error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	_ = clear(time.Time{})
	return true
}
