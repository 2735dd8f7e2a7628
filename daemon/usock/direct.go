package usock

import (
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
)

// The direct path (PROTOCOL.md "Direct connections"): a connection of an
// engine that offers stack.DirectSocket (shm) is carried by a region the
// two ends' programs map; the daemon hands the region to the socket's own
// session only (NUSE_CTL_DIRECT), never moves its bytes, and keeps doing
// what needs it: state, EOF and resets, readiness on the app fd, and
// waking the side that sleeps.

// goDirect puts a socket that just connected on the direct path, if its
// engine has one. Called with mu held.
func (s *Session) goDirect(so *sock) {
	ds, ok := so.es.(stack.DirectSocket)
	if !ok || so.direct {
		return
	}
	fd, side, ok := ds.Attach()
	if !ok {
		return
	}
	so.direct, so.ds, so.dfd, so.dside, so.dsize = true, ds, fd, side, ds.RingSize()
	so.state |= abi.SSDirect
	// From zero: what the peer's program wrote before this end was
	// accepted (in the region, counted nowhere yet) counts as received.
	so.dc = stack.DirectCounts{}
	dc, _ := ds.Moved()
	so.takeCounts(dc)
	// The peer's program may wake this end's reader itself (MsgWake):
	// through our end of the pair, which the program polls.
	ds.SetWaker(so.pair)
}

// pumpDirect is pumpTx and pumpRx of a direct socket: it tells the engine
// what the program moved (the engine wakes the peer) and takes the
// connection's EOF and errors into the state. Called with mu held.
func (s *Session) pumpDirect(so *sock) {
	err := s.countDirect(so)
	if err != nil && so.state&abi.SSReset == 0 {
		s.logf("socket %d: direct ring counters out of range; the connection is reset", so.slot)
	}
	if so.state&abi.SSReset != 0 {
		return
	}
	// The engine's Read moves no bytes for an attached end: it says EOF
	// (after the program's own reads, which see the ring first) or an
	// error -- also after EOF: a write to a peer that closed is reset
	// (there is no engine Write here to say so).
	_, eof, rerr := so.es.Read(nil)
	switch {
	case eof:
		so.state |= abi.SSRdEOF
	case rerr == nil, rerr == stack.ErrWouldBlock:
	default:
		so.state |= abi.SSReset | abi.SSWrDead | abi.SSError
		if so.soErr == 0 {
			so.soErr = -errno(rerr)
		}
	}
}

// countDirect brings so's byte counts up to what the programs moved (at
// each service, and before stats or a release read them: the last bytes
// may have moved since). Called with mu held.
func (s *Session) countDirect(so *sock) error {
	if !so.direct {
		return nil
	}
	dc, err := so.ds.Moved()
	so.takeCounts(dc)
	return err
}

// takeCounts makes dc so's counters, counting what the heads moved on in
// its stats (a program moving its head back takes back only what nobody
// read: no count for it). Every new dc goes through here: one set
// without counting loses bytes from the stats (the writer's program
// moves them without telling the daemon).
func (so *sock) takeCounts(dc stack.DirectCounts) {
	if dc.TxHead > so.dc.TxHead {
		so.txBytes.Add(dc.TxHead - so.dc.TxHead)
	}
	if dc.RxHead > so.dc.RxHead {
		so.rxBytes.Add(dc.RxHead - so.dc.RxHead)
	}
	so.dc = dc
}

// rxMark counts what arrived for the socket's reader: a change is news
// (a readiness edge, see signal).
func (so *sock) rxMark() uint64 {
	if so.direct {
		return so.dc.RxHead
	}
	return so.rxHead
}

// writableOrWait is writable; a direct socket that is not asks the
// reader's program to flag its socket when it frees room, and looks again.
// Called with mu held.
func (s *Session) writableOrWait(so *sock) bool {
	if s.writable(so) {
		return true
	}
	if !so.direct || so.connecting || so.listening || so.state&(abi.SSWrDead|abi.SSReset|abi.SSError) != 0 {
		return false
	}
	so.takeCounts(so.ds.WaitSpace())
	return s.writable(so)
}

// directFD answers NUSE_CTL_DIRECT: a copy of the connection's memfd (the
// caller sends and closes it) for a direct socket of this session, and
// the socket's side as the result.
func (s *Session) directFD(req *abi.CtlReq, rep *abi.CtlReply) int {
	return s.directReply(req, rep, func(so *sock) (int, error) {
		fd, err := unix.FcntlInt(uintptr(so.dfd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return -1, syscall.EMFILE
		}
		rep.Result = int32(so.dside)
		return fd, nil
	})
}

// wakeFD answers NUSE_CTL_WAKE: a copy of the peer end's waker (the
// daemon's end of the peer's app pair; the caller sends and closes it),
// for a direct socket of this session, so that its program's writes wake
// the peer's reader without the daemon (PROTOCOL.md "Direct
// connections"). The copy reaches only that one peer's readiness.
func (s *Session) wakeFD(req *abi.CtlReq, rep *abi.CtlReply) int {
	return s.directReply(req, rep, func(so *sock) (int, error) { return so.ds.PeerWaker() })
}

// directReply answers a request for an fd of a direct socket of this
// session: get's fd, or the refusal in rep.Result and -1.
func (s *Session) directReply(req *abi.CtlReq, rep *abi.CtlReply, get func(*sock) (int, error)) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	so := s.lookup(req.Sock, req.Gen)
	var err error
	fd := -1
	switch {
	case s.dead:
		err = syscall.ECONNABORTED
	case so == nil:
		err = syscall.EBADF
	case !so.direct:
		err = syscall.EINVAL
	default:
		fd, err = get(so)
	}
	if err != nil {
		rep.Result = errno(err)
		return -1
	}
	rep.Sock, rep.Gen = so.slot, so.gen
	return fd
}

// recheckDirect services the direct sockets that wait for something the
// daemon does (an fd to unfill, bytes not yet mirrored on the fd): a
// safety net, on the worker's idle sweep, that bounds a wake-up lost
// between two programs and the daemon to one sweep instead of a hang.
// Called with mu held.
func (s *Session) recheckDirect() {
	for _, so := range s.socks {
		if so == nil || !so.direct || so.closing {
			continue
		}
		sh := s.a.Sock(so.slot)
		if atomic.LoadUint32(&sh.Fill) == abi.FillDone || atomic.LoadUint32(&sh.Sig) == abi.SigNone {
			s.service(so)
		}
	}
}
