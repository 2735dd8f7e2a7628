package usock

// Listening sockets handed on. A listener's fd, like any NUSE socket's, is
// the program's end of a socketpair, and programs hand listeners on: a
// server that re-execs itself or a new binary (nginx's and unicorn's
// upgrades), a supervisor that spawns workers with the fd (subprocess
// pass_fds), a process that sends it over SCM_RIGHTS (haproxy -x). The
// daemon cannot relay a listener as it relays a connection, so it lets
// every process that holds the fd share the one engine listener:
//
//   - At listen, the daemon's end of the pair is bound to an abstract name
//     ("@nuse-lsn/PID/N"): a process that holds the program's end proves it
//     by the fd itself (its peer is that name, in our network namespace).
//   - A shim that hands the listener on (exec with the fd kept, SCM_RIGHTS)
//     sends MsgKeep: when its session lets go of the socket (the process
//     exec'd, exited or closed it), the listener is parked rather than
//     closed, for as long as someone holds the fd.
//   - A shim that finds such an fd at start-up (or receives one) sends
//     MsgAdopt: its session gets a slot on the same engine listener, with a
//     dup of the daemon's end. Every holder's slot signals the one fd, each
//     counting its own readiness bytes, so each shim takes back only its
//     own; any holder's accept takes the next connection, as in Linux.
//   - The engine listener closes when the last slot closes and nothing is
//     parked (a parked one ends when every copy of the fd is gone).

import (
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
)

var lsnSeq atomic.Uint64

// lsnShare is one engine listener and everyone who holds it.
type lsnShare struct {
	srv    *Server
	name   string
	es     stack.Socket
	pair   int // a dup of the daemon's end, bound to name; dup'd for each holder
	family int
	engine string
	engFDs int // the engine's fds for es (counted in srv.clientFDs)
	local  netip.AddrPort

	mu      sync.Mutex
	holders map[*sharedSock]func(stack.Events)
	parked  int // holds kept for a process that has the fd but no slot yet
	closed  bool
}

// sharedSock is one slot's hold on a shared listener: the engine socket's
// calls, but Notify, Close and Abort are this holder's own.
type sharedSock struct {
	stack.Socket
	ls   *lsnShare
	done bool
}

func (ss *sharedSock) Notify(fn func(stack.Events)) {
	ls := ss.ls
	ls.mu.Lock()
	if !ss.done {
		ls.holders[ss] = fn
	}
	ls.mu.Unlock()
}

func (ss *sharedSock) Close() { ss.ls.drop(ss, false) }
func (ss *sharedSock) Abort() { ss.ls.drop(ss, true) }

// drop ends one hold (ss, or a parked one if ss is nil); the last closes
// the engine listener.
func (ls *lsnShare) drop(ss *sharedSock, abort bool) {
	ls.mu.Lock()
	switch {
	case ss == nil:
		if ls.parked > 0 {
			ls.parked--
		}
	case ss.done:
		ls.mu.Unlock()
		return
	default:
		ss.done = true
		delete(ls.holders, ss)
	}
	last := !ls.closed && len(ls.holders) == 0 && ls.parked == 0
	if last {
		ls.closed = true
	}
	ls.mu.Unlock()
	if !last {
		return
	}
	if abort {
		ls.es.Abort()
	} else {
		ls.es.Close()
	}
	ls.unname()
	ls.srv.clientFDs.Add(-int64(ls.engFDs))
	ls.srv.logf("listener %v (%s) closed: its last holder let go", ls.local, ls.name)
}

// unname lets go of the named end: the listener can be adopted no more
// (it closed, or it was shut down: the shut listener's pair is cut, and
// our dup must not keep it from hanging up).
func (ls *lsnShare) unname() {
	srv := ls.srv
	srv.mu.Lock()
	delete(srv.lsns, ls.name)
	srv.mu.Unlock()
	ls.mu.Lock()
	pair := ls.pair
	ls.pair = -1
	ls.mu.Unlock()
	if pair >= 0 {
		unix.Close(pair)
		srv.clientFDs.Add(-1)
	}
}

// unshare is called before so's pair is cut (a listener shut down).
func unshare(so *sock) {
	if ss, ok := so.es.(*sharedSock); ok {
		ss.ls.unname()
	}
}

// hold adds a holder; false if the listener is gone.
func (ls *lsnShare) hold() *sharedSock {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return nil
	}
	ss := &sharedSock{Socket: ls.es, ls: ls}
	ls.holders[ss] = nil
	return ss
}

// share makes so's listener shareable (after its first successful
// listen): names the daemon's end and puts so's engine socket behind a
// hold. Called with mu held.
func (s *Session) share(so *sock) {
	if _, ok := so.es.(*sharedSock); ok {
		return // a second listen(): already shared
	}
	srv := s.srv
	if !srv.takeFDs(1) {
		s.logf("socket %d: no fd to spare for naming the listener; it cannot be handed on", so.slot)
		return
	}
	dup, err := unix.FcntlInt(uintptr(so.pair), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		srv.clientFDs.Add(-1)
		return
	}
	name := fmt.Sprintf("@nuse-lsn/%d/%d", os.Getpid(), lsnSeq.Add(1))
	if err := unix.Bind(dup, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(dup)
		srv.clientFDs.Add(-1)
		s.logf("socket %d: naming the listener: %v; it cannot be handed on", so.slot, err)
		return
	}
	ls := &lsnShare{srv: srv, name: name, es: so.es, pair: dup, family: so.family, engine: so.engine,
		engFDs: so.engFDs, holders: map[*sharedSock]func(stack.Events){}}
	ls.local, _ = so.es.LocalAddr()
	so.engFDs = 0 // the listener's own now: given back with it
	ss := ls.hold()
	so.es.Notify(func(ev stack.Events) {
		ls.mu.Lock()
		fns := make([]func(stack.Events), 0, len(ls.holders))
		for _, fn := range ls.holders {
			if fn != nil {
				fns = append(fns, fn)
			}
		}
		ls.mu.Unlock()
		for _, fn := range fns {
			fn(ev)
		}
	})
	so.es = ss
	s.watch(so)
	srv.mu.Lock()
	srv.lsns[name] = ls
	srv.mu.Unlock()
}

// keep answers abi.MsgKeep: the shim hands the listener on, so when this
// session lets go of it, it is parked for the fd's next holder.
func (s *Session) keep(req *abi.CtlReq, rep *abi.CtlReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	so := s.lookup(req.Sock, req.Gen)
	switch {
	case so == nil:
		rep.Result = -int32(syscall.EBADF)
	case !so.listening:
		rep.Result = -int32(syscall.EINVAL)
	default:
		if _, ok := so.es.(*sharedSock); !ok {
			rep.Result = -int32(syscall.EOPNOTSUPP) // could not be named at listen
			return
		}
		so.keep = true
		so.state |= abi.SSShared
		s.service(so)
	}
}

// park keeps so's listener for the process that holds its fd now, and
// frees so's slot. Called with mu held.
func (s *Session) park(so *sock) {
	ss := so.es.(*sharedSock)
	ls := ss.ls
	ls.mu.Lock()
	ls.parked++
	ls.mu.Unlock()
	s.logf("socket %d: listener %v is kept for the program it was handed to (%s)", so.slot, ls.local, ls.name)
	ss.Close() // this hold; the parked one keeps the listener
	s.release(so)
	s.srv.watchParked()
}

// watchParked runs, while listeners are parked, a loop that ends those
// whose fd nobody holds any more (the daemon's end then hangs up).
func (srv *Server) watchParked() {
	if !srv.parkWatch.CompareAndSwap(false, true) {
		return
	}
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		for {
			time.Sleep(250 * time.Millisecond)
			srv.mu.Lock()
			var parked []*lsnShare
			for _, ls := range srv.lsns {
				ls.mu.Lock()
				if ls.parked > 0 {
					parked = append(parked, ls)
				}
				ls.mu.Unlock()
			}
			closed := srv.closed
			if len(parked) == 0 || closed {
				srv.parkWatch.Store(false)
			}
			srv.mu.Unlock()
			for _, ls := range parked {
				ls.mu.Lock()
				p := []unix.PollFd{{Fd: int32(ls.pair), Events: unix.POLLRDHUP}}
				n := 0
				if ls.pair >= 0 {
					n, _ = unix.Poll(p, 0)
				}
				ls.mu.Unlock()
				if closed || ls.pair < 0 || (n > 0 && p[0].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0) {
					ls.mu.Lock()
					n := ls.parked
					ls.mu.Unlock()
					for ; n > 0; n-- {
						ls.drop(nil, false)
					}
				}
			}
			if len(parked) == 0 || closed {
				return
			}
		}
	}()
}

// adopt answers abi.MsgAdopt: fd is a listener's fd this process holds
// (inherited over exec, received over SCM_RIGHTS); the session gets a slot
// on that listener. The reply carries the slot and the listener's local
// address.
func (s *Session) adopt(fd int, rep *abi.CtlReply) {
	srv := s.srv
	ls := srv.lsnOf(fd)
	if ls == nil {
		rep.Result = -int32(syscall.ENOTSOCK)
		return
	}
	ls.mu.Lock()
	pair, err := -1, error(syscall.ENOTSOCK)
	if ls.pair >= 0 {
		pair, err = unix.FcntlInt(uintptr(ls.pair), unix.F_DUPFD_CLOEXEC, 0)
	}
	ls.mu.Unlock()
	if err != nil {
		rep.Result = -int32(syscall.ENFILE)
		return
	}
	if s.Uid != 0 && s.use.socks.Load() >= int64(srv.cfg.Limits.MaxSocketsPerUID) {
		unix.Close(pair)
		rep.Result = -int32(syscall.EMFILE)
		return
	}
	if !srv.takeFDs(1) {
		unix.Close(pair)
		rep.Result = -int32(syscall.ENFILE)
		return
	}
	s.use.socks.Add(1)
	fail := func(e syscall.Errno) { s.dropPair(pair, 0); rep.Result = -int32(e) }
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		fail(syscall.ECONNRESET)
		return
	}
	slot, ok := s.alloc()
	if !ok {
		fail(syscall.EMFILE)
		return
	}
	ss := ls.hold()
	if ss == nil {
		s.free = append(s.free, slot)
		fail(syscall.ECONNREFUSED)
		return
	}
	// A parked hold becomes this one: the program it was kept for is here.
	ls.mu.Lock()
	unpark := ls.parked > 0
	ls.mu.Unlock()
	if unpark {
		ls.drop(nil, false)
	}
	so := s.attach(slot, ss, ls.engine, ls.family, pair, 0)
	so.listening = true
	so.state |= abi.SSListening | abi.SSShared
	so.local = ls.local
	rep.Sock, rep.Gen = so.slot, so.gen
	rep.AddrLen = putSockaddr(rep.Addr[:], ls.family, ls.local)
	s.logf("socket %d: holds listener %v (%s), handed to this process", so.slot, ls.local, ls.name)
	s.service(so)
}

// lsnOf finds the shared listener whose program end fd is: its peer is our
// named end, in our network namespace (a name means nothing in another).
func (srv *Server) lsnOf(fd int) *lsnShare {
	name := peerNamed(fd, "@nuse-lsn/")
	if name == "" {
		return nil
	}
	srv.mu.Lock()
	ls := srv.lsns[name]
	srv.mu.Unlock()
	if ls == nil {
		return nil
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.pair < 0 || !sameNetns(fd, ls.pair) {
		return nil
	}
	return ls
}
