package shm

import (
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/stack"
)

// The direct path (stack.DirectSocket): the daemon hands a connection's
// region to its ends' programs, which then move the bytes themselves; the
// engine keeps the TCP state and, through Moved, tells each end of what
// the other's program did.

var _ stack.DirectSocket = (*socket)(nil)

// Attach implements stack.DirectSocket.
func (s *socket) Attach() (fd, side int, ok bool) {
	if s.st() != stEstablished {
		return -1, 0, false
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	me := &c.end[s.side]
	if c.reg == nil || me.closed {
		return -1, 0, false
	}
	// The region's counters are current (the engine stores each move it
	// makes), so the program takes over where the engine left off.
	me.attached = true
	return c.reg.fd, s.side, true
}

// Detach implements stack.DirectSocket.
func (s *socket) Detach() {
	if s.st() != stEstablished {
		return
	}
	c := s.c
	c.mu.Lock()
	var ns []notice
	// Before the sync: the peer's program then tells the daemon of every
	// byte the sync does not see (it looks at wake_ok after each write).
	c.dropWaker(s.side)
	if !c.sync() && !c.broken {
		ns = c.breakLocked()
	}
	c.end[s.side].attached = false
	c.mu.Unlock()
	fire(ns...)
}

// SetWaker implements stack.DirectSocket.
func (s *socket) SetWaker(fd int) {
	if s.st() != stEstablished {
		return
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	me := &c.end[s.side]
	if fd < 0 || s.e.cfg.DaemonWakes || c.reg == nil || c.broken || me.closed || !me.attached {
		c.dropWaker(s.side)
		return
	}
	me.waker, me.hasWaker = fd, true
	atomic.StoreUint32(&c.reg.hdr.WakeOK[s.side], 1)
}

// PeerWaker implements stack.DirectSocket.
func (s *socket) PeerWaker() (int, error) {
	if s.st() != stEstablished {
		return -1, syscall.ENOTCONN
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	peer := &c.end[1-s.side]
	if c.reg == nil || c.broken || c.end[s.side].closed || !peer.hasWaker {
		return -1, syscall.EAGAIN
	}
	// Copied while we hold it: the daemon drops the waker (SetWaker -1,
	// Close, Detach) before it closes the fd.
	return unix.FcntlInt(uintptr(peer.waker), unix.F_DUPFD_CLOEXEC, 0)
}

// Unread implements stack.DirectSocket.
func (s *socket) Unread() uint64 {
	if s.st() != stEstablished {
		return 0
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	in := 1 - s.side
	h, t := c.head[in], c.tail[in]
	if c.reg != nil {
		h, t, _ = c.snapshot(in)
	}
	if h < t {
		return 0
	}
	return h - t
}

// dropWaker forgets end i's waker and clears wake_ok[i] (the peer's
// program then wakes nobody itself). Called with c.mu held.
func (c *conn) dropWaker(i int) {
	c.end[i].hasWaker, c.end[i].waker = false, -1
	if c.reg != nil {
		atomic.StoreUint32(&c.reg.hdr.WakeOK[i], 0)
	}
}

func (c *conn) counts(side int) stack.DirectCounts {
	in := 1 - side
	return stack.DirectCounts{RxHead: c.head[in], RxTail: c.tail[in], TxHead: c.head[side], TxTail: c.tail[side]}
}

// Moved implements stack.DirectSocket.
func (s *socket) Moved() (stack.DirectCounts, error) {
	if s.st() != stEstablished {
		return stack.DirectCounts{}, syscall.ENOTCONN
	}
	c := s.c
	c.mu.Lock()
	me := &c.end[s.side]
	if c.broken || !c.sync() {
		var ns []notice
		if !c.broken {
			ns = c.breakLocked()
		}
		cnt := c.counts(s.side)
		c.mu.Unlock()
		fire(ns...)
		return cnt, syscall.ECONNRESET
	}
	out, in := s.side, 1-s.side
	peer, ps := &c.end[in], c.sock[in]
	var ns [2]notice
	if c.head[out] != c.toldHead[out] {
		c.toldHead[out] = c.head[out]
		switch {
		case me.closed:
		case peer.closed:
			// Nobody reads: TCP's peer answers with a reset.
			if !me.rst {
				me.err, me.rst = syscall.ECONNRESET, true
			}
			ns[0] = s.noticeLocked()
		default:
			s.segsOut.Add(1)
			ps.segsIn.Add(1)
			ns[1] = ps.noticeLocked()
		}
	}
	if c.tail[in] != c.toldTail[in] {
		// Room for the peer's writer.
		c.toldTail[in] = c.tail[in]
		if !peer.closed && ns[1].s == nil {
			peer.wantOut = false
			ns[1] = ps.noticeLocked()
		}
	}
	cnt := c.counts(s.side)
	c.mu.Unlock()
	fire(ns[:]...)
	return cnt, nil
}

// WaitSpace implements stack.DirectSocket.
func (s *socket) WaitSpace() stack.DirectCounts {
	if s.st() != stEstablished {
		return stack.DirectCounts{}
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reg == nil {
		return c.counts(s.side)
	}
	// Flag first, then look (the reader's program frees room, then looks
	// at the flag): one of the two sees the other.
	atomic.StoreUint32(&c.reg.hdr.WWait[s.side], 1)
	if !c.sync() {
		c.broken = true
	}
	return c.counts(s.side)
}

// RingSize implements stack.DirectSocket.
func (s *socket) RingSize() uint64 {
	if s.st() != stEstablished {
		return 0
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.c.size()
}

// FDsPerSocket implements stack.FDCost: each connection holds its
// region's memfd while it lives (counted per socket, so twice).
func (e *Engine) FDsPerSocket() int { return 1 }
