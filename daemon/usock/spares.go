package usock

import (
	"encoding/binary"
	"syscall"
	"unsafe"

	"github.com/nuse-project/nuse/shim/abi"
	"golang.org/x/sys/unix"
)

// Spare pairs. A socket's channel is a socketpair whose one end the
// program holds and the daemon the other; passing the daemon's end takes
// a control message, which the session loop serves only when the Go
// scheduler gets to it (nudge.go). A process therefore hands the daemon
// pairs ahead of need (NUSE_CTL_SPARES, several in one message), and a
// socket's birth or an accept is then a command on the ring (OpSocket,
// OpAccept) naming a spare by its id, served by the worker within its
// pass. A spare a command does not use (it failed) stays spare.

// A spare is the daemon's end of a spare pair, taken (takePair).
type spare struct {
	fd  int
	ino uint64
}

// addSpares keeps up to abi.SparesHeld spare pairs for the session
// (NUSE_CTL_SPARES): rep.Result is how many of fds it kept (the first
// ones, each taken and counted as takePair does; the rest are closed),
// their ids in rep.Addr, or -errno when it kept none.
func (s *Session) addSpares(fds []int, rep *abi.CtlReply) {
	s.mu.Lock()
	s.pruneSpares()
	room := abi.SparesHeld - len(s.spares)
	s.mu.Unlock()
	var got []spare
	var e syscall.Errno
	for _, fd := range fds {
		if len(got) >= room || e != 0 {
			unix.Close(fd)
			continue
		}
		var ino uint64
		if ino, e = s.takePair(fd); e != 0 {
			unix.Close(fd)
			continue
		}
		got = append(got, spare{fd, ino})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		for _, t := range got {
			s.dropPair(t.fd, t.ino)
		}
		rep.Result = -int32(syscall.ECONNRESET)
		return
	}
	if s.spares == nil {
		s.spares = make(map[uint32]spare)
	}
	for i, t := range got {
		s.spareSeq++
		if s.spareSeq == 0 {
			s.spareSeq = 1
		}
		s.spares[s.spareSeq] = t
		binary.LittleEndian.PutUint32(rep.Addr[4*i:], s.spareSeq)
	}
	rep.Result = int32(len(got))
	rep.AddrLen = uint32(4 * len(got))
	if len(got) == 0 {
		switch {
		case e != 0:
			rep.Result = -int32(e)
		case len(fds) > 0:
			rep.Result = -int32(syscall.EMFILE) // the session holds its fill
		}
	}
}

// pruneSpares lets go of spares whose program end is gone (a process
// that held them exited, exec'd or forgot them). Called with mu held.
func (s *Session) pruneSpares() {
	if len(s.spares) == 0 {
		return
	}
	ids := make([]uint32, 0, len(s.spares))
	pfds := make([]unix.PollFd, 0, len(s.spares))
	for id, sp := range s.spares {
		ids = append(ids, id)
		pfds = append(pfds, unix.PollFd{Fd: int32(sp.fd)})
	}
	if n, err := unix.Poll(pfds, 0); err != nil || n == 0 {
		return
	}
	for i, p := range pfds {
		if p.Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			sp := s.spares[ids[i]]
			delete(s.spares, ids[i])
			s.dropPair(sp.fd, sp.ino)
		}
	}
}

// dropSpares lets go of every spare (the session ends). Called with mu
// held.
func (s *Session) dropSpares() {
	for id, sp := range s.spares {
		delete(s.spares, id)
		s.dropPair(sp.fd, sp.ino)
	}
}

// spareSocket is OpSocket: a new socket whose channel is spare r.arg0.
// Called with mu held.
func (s *Session) spareSocket(r request, out *cmdOut) int32 {
	var q abi.OpSocketReq
	if len(r.opt) != int(unsafe.Sizeof(q)) {
		return -int32(syscall.EINVAL)
	}
	q.Family = int32(binary.LittleEndian.Uint32(r.opt[0:]))
	q.Type = int32(binary.LittleEndian.Uint32(r.opt[4:]))
	q.Protocol = int32(binary.LittleEndian.Uint32(r.opt[8:]))
	copy(q.Engine[:], r.opt[12:])
	if e := checkSocketReq(q.Family, q.Type, q.Protocol); e != 0 {
		return -int32(e)
	}
	so, res := s.onSpare(r.arg0, func(sp spare) (*sock, syscall.Errno) {
		return s.openLocked(int(q.Family), q.Engine, sp.fd, sp.ino)
	})
	if so != nil {
		// In addr: opt carried the request, and its length field is shared.
		born(out.addr[:], &out.addrLen, so)
	}
	return res
}

// spareAccept is OpAccept: listener (r.sock, r.gen)'s next connection,
// whose channel is spare r.arg0. Called with mu held.
func (s *Session) spareAccept(r request, out *cmdOut) int32 {
	so, res := s.onSpare(r.arg0, func(sp spare) (*sock, syscall.Errno) {
		return s.acceptLocked(r.sock, r.gen, sp.fd, sp.ino)
	})
	if so != nil {
		born(out.opt[:], &out.optLen, so)
		out.addrLen = putSockaddr(out.addr[:], so.family, so.remote)
	}
	return res
}

// onSpare makes a socket on spare id with mk; the spare is used up only
// if mk succeeds. Called with mu held.
func (s *Session) onSpare(id uint32, mk func(spare) (*sock, syscall.Errno)) (*sock, int32) {
	sp, ok := s.spares[id]
	if !ok {
		return nil, -int32(syscall.ENOENT) // no socket op answers it otherwise
	}
	so, e := mk(sp)
	if e != 0 {
		return nil, -int32(e)
	}
	delete(s.spares, id)
	return so, 0
}

// born puts a new socket's slot (abi.OpBorn) in a command's answer.
func born(b []byte, n *uint32, so *sock) {
	binary.LittleEndian.PutUint32(b[0:], so.slot)
	binary.LittleEndian.PutUint32(b[4:], so.gen)
	*n = uint32(unsafe.Sizeof(abi.OpBorn{}))
}
