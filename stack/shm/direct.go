package shm

import (
	"sync/atomic"
	"syscall"

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
	if !c.sync() && !c.broken {
		ns = c.breakLocked()
	}
	c.end[s.side].attached = false
	c.mu.Unlock()
	fire(ns...)
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
