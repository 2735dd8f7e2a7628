package usock

// Relayed sockets. A NUSE socket's fd is a socketpair end that carries
// readiness, not data, so it works only where the shim sees every call on
// it. When the program hands the socket to code the shim cannot see -- an
// exec'd image (inetd handlers, a process that execs itself), another
// process over SCM_RIGHTS (node's cluster), libc's stdio -- the shim asks
// for a relay (abi.MsgRelay): it sends a fresh socketpair end, the daemon
// takes the connection out of the session's arena and from then on copies
// bytes between the engine socket and that pair. The program's fd becomes
// the pair's other end: a plain stream socket that every path works on
// (raw syscalls, stdio, splice, a program without the shim), at the price
// of a copy through the kernel in each direction.
//
// A relay waits, attached to its socket, while a process of the session
// still uses the socket's rings; at the last one's close (or exit) it
// takes the connection, and from then on belongs to no session: it lives
// until the program's end is closed everywhere (or the connection ends),
// whichever process holds it. It still counts against its user's socket
// limit.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/daemon/arena"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
)

// relay is one relayed connection.
type relay struct {
	srv    *Server
	uid    uint32
	use    *uidUse
	es     stack.Socket
	engine string
	family int
	ino    uint64 // the pair end's inode (srv.pairs)
	engFDs int    // the daemon's fds es holds (counted in srv.clientFDs)
	f      *os.File
	rc     syscall.RawConn
	nd     *nudgee // the nudger's entry for f (nudge.go)
	name   string  // the abstract address bound to our end

	emu sync.Mutex // serializes engine calls (Notify's callback aside)

	toApp, toEng []byte // what the rings held when the socket moved
	rdEOF        bool   // the engine had delivered EOF (the rest was in the rx ring)
	reset        bool   // the connection was reset before it moved

	wakeIn, wakeOut chan struct{} // the engine's readiness changed
	done            chan struct{} // closed to stop both directions
	stopOnce        sync.Once
	started         atomic.Bool  // handed over: its directions run
	left            atomic.Int32 // directions still running
	abort           atomic.Bool  // end with a reset, not a FIN

	local, remote    netip.AddrPort
	created          time.Time
	txBytes, rxBytes atomic.Uint64
}

// RelayStats describe one relayed socket.
type RelayStats struct {
	Uid     uint32    `json:"uid"`
	Engine  string    `json:"engine"`
	Family  string    `json:"family"`
	Local   string    `json:"local"`
	Remote  string    `json:"remote"`
	Name    string    `json:"name"`     // the relay pair's abstract address
	TxBytes uint64    `json:"tx_bytes"` // since it was relayed
	RxBytes uint64    `json:"rx_bytes"`
	Since   time.Time `json:"since"`
}

// relay answers abi.MsgRelay: socket req.Sock of this session is handed
// to code the shim does not see, through pair. The relay waits, attached to
// the socket, while a process of the session still uses the socket's
// rings (the one that handed it on may keep it, a forked parent may still
// hold it): the session serves them as before. When the last of them lets
// go (its CLOSE, its exit, the pair hanging up), handover gives the
// connection to the relay.
func (s *Session) relay(req *abi.CtlReq, pair int, rep *abi.CtlReply) {
	s.withChannel(req, pair, rep, "relay", func(so *sock) syscall.Errno {
		switch {
		case so.listening:
			return syscall.EOPNOTSUPP // a listener cannot be a byte stream
		case so.connecting || so.state&abi.SSConnected == 0:
			return syscall.ENOTCONN
		case so.relay != nil:
			return syscall.EBUSY // handed on once already, not let go of yet
		}
		return 0
	}, func(so *sock, ino uint64) { s.relayVia(so, pair, ino, rep) })
}

// relayVia attaches a relay to so through pair (relay). Called with mu held.
func (s *Session) relayVia(so *sock, pair int, ino uint64, rep *abi.CtlReply) {
	srv := s.srv
	r := &relay{
		srv: srv, uid: s.Uid, use: s.use, es: so.es, engine: so.engine, family: so.family, ino: ino,
		local: so.local, remote: so.remote, created: so.created,
		wakeIn: make(chan struct{}, 1), wakeOut: make(chan struct{}, 1), done: make(chan struct{}),
	}
	if err := srv.prepareRelay(r, pair); err != nil {
		s.logf("socket %d: no relay: %v", so.slot, err)
		srv.forgetPair(ino) // prepareRelay closed pair
		srv.clientFDs.Add(-1)
		rep.Result = -int32(syscall.ECONNRESET)
		return
	}
	so.relay = r
	s.logf("socket %d (%v -> %v) is handed on through %s: relayed once this session lets go of it",
		so.slot, r.local, r.remote, r.name)
}

// handover gives so's connection to its relay: the last process of the
// session that used its rings let go. What the tx ring holds goes to the
// engine first, what the rx ring holds to the relay's pair first, and the
// slot is freed (the user's count of sockets moves with the connection).
// Called with mu held.
func (s *Session) handover(so *sock) {
	srv, r := s.srv, so.relay
	so.relay = nil
	if n := s.rawQueued(so); n > 0 && so.state&abi.SSRaw == 0 {
		s.rawReset(so, n) // written past the shim before it was handed on
	}
	if so.state&abi.SSRaw != 0 {
		r.discard()
		s.release(so)
		return
	}
	if so.direct {
		// The region's unread bytes stay where they are: the engine's
		// Read gives them to the relay first, in order; what the
		// program wrote is in the peer's ring already.
		so.ds.Detach()
		so.direct = false
	}
	toEng, toApp, err := s.ringContents(so)
	if err != nil {
		s.logf("socket %d: %v; the relay %s ends", so.slot, err, r.name)
		r.discard()
		so.es.Abort()
		s.release(so)
		return
	}
	r.toEng, r.toApp = toEng, toApp
	r.rdEOF, r.reset = so.state&abi.SSRdEOF != 0, so.state&abi.SSReset != 0
	if so.local.IsValid() {
		r.local, r.remote = so.local, so.remote
	}
	r.engFDs, so.engFDs = so.engFDs, 0
	// Its bytes so far are history, like a closed socket's; the relay
	// counts from here on.
	s.closed = append(s.closed, s.sockStats(so, "relayed"))
	if len(s.closed) > maxClosedSocks {
		s.closed = s.closed[len(s.closed)-maxClosedSocks:]
	}
	srv.totals.add(so.txBytes.Load(), so.rxBytes.Load())
	if t := srv.engTotals[so.engine]; t != nil {
		t.add(so.txBytes.Load(), so.rxBytes.Load())
	}
	so.es.Notify(nil)
	srv.unbind(so)
	unix.Close(so.pair)
	srv.forgetPair(so.pairIno)
	srv.clientFDs.Add(-1)
	atomic.StoreUint32(&s.a.Sock(so.slot).State, abi.SSWrDead|abi.SSReset)
	s.socks[so.slot] = nil
	s.free = append(s.free, so.slot)
	s.freed[so.slot] = time.Now()
	s.logf("socket %d (%v -> %v) is relayed through %s", so.slot, r.local, r.remote, r.name)
	r.start()
}

// ringContents copies what the socket's rings hold: the tx bytes the
// engine has not taken and the rx bytes the program has not read. It
// takes them out of the rings (the daemon's counters move past them).
func (s *Session) ringContents(so *sock) (toEng, toApp []byte, err error) {
	sh := s.a.Sock(so.slot)
	n, err := s.a.TxPending(so.slot, so.txTail)
	if err != nil {
		return nil, nil, fmt.Errorf("tx ring: %w", err)
	}
	from := arena.SkipTo(so.txTail+n, so.txTail, atomic.LoadUint64(&sh.Tx.Skip))
	toEng = ringCopy(s.a.Tx(so.slot), from, so.txTail+n-from)
	so.txTail += n
	tail := atomic.LoadUint64(&sh.Rx.Tail)
	if _, err := checkedUsed(so.rxHead, tail, s.a.L.RingSize); err != nil {
		return nil, nil, fmt.Errorf("rx ring: %w", err)
	}
	tail = arena.SkipTo(so.rxHead, tail, atomic.LoadUint64(&sh.Rx.Skip))
	toApp = ringCopy(s.a.Rx(so.slot), tail, so.rxHead-tail)
	return toEng, toApp, nil
}

func ringCopy(data []byte, from, n uint64) []byte {
	a, b := arena.Span(data, from, n)
	return append(append([]byte(nil), a...), b...)
}

var relaySeq atomic.Uint64

// prepareRelay names r's end of the pair (so the shim of a process that
// receives the other end can tell it is a relayed NUSE socket) and
// registers r; it moves no bytes until start. On failure it has closed
// pair.
func (srv *Server) prepareRelay(r *relay, pair int) error {
	r.name = fmt.Sprintf("@nuse-relay/%d/%d", os.Getpid(), relaySeq.Add(1))
	if err := unix.Bind(pair, &unix.SockaddrUnix{Name: r.name}); err != nil {
		unix.Close(pair)
		return fmt.Errorf("naming the relay pair: %w", err)
	}
	f := os.NewFile(uintptr(pair), "nuse-relay")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.rc = f, rc
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		f.Close()
		return errors.New("daemon closing")
	}
	srv.relays[r.name] = r
	srv.mu.Unlock()
	return nil
}

// start runs r's two directions: the connection is r's now.
func (r *relay) start() {
	r.started.Store(true)
	r.left.Store(2)
	r.es.Notify(func(stack.Events) {
		poke(r.wakeIn)
		poke(r.wakeOut)
	})
	r.nd = r.srv.nudge.add(r.f, r.f.SetReadDeadline)
	r.srv.wg.Add(2)
	go r.up()
	go r.down()
}

// discard drops a relay that never started (its socket was reset, or the
// daemon closes): its pair closes, so the holder reads EOF.
func (r *relay) discard() {
	r.f.Close()
	srv := r.srv
	srv.forgetPair(r.ino)
	srv.clientFDs.Add(-1)
	srv.mu.Lock()
	delete(srv.relays, r.name)
	srv.mu.Unlock()
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// stop ends both directions now (the program is gone, or the daemon
// closes); abort says whether the connection is reset.
func (r *relay) stop(abort bool) {
	if abort {
		r.abort.Store(true)
	}
	r.stopOnce.Do(func() {
		close(r.done)
		_ = r.f.SetDeadline(time.Now()) // wakes a wait in the poller
	})
}

func (r *relay) stopped() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// wait blocks until the engine's readiness changes or the relay stops.
func (r *relay) wait(c chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-r.done:
		return false
	}
}

// relayBufs are the relays' copy buffers. A relay holds one only while it
// moves bytes, not while it waits: idle relays (a user may hold thousands)
// cost their goroutines, not buffers.
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// up copies the program's bytes to the engine: first what its tx ring
// held, then what it writes into the pair. The program's EOF (shutdown or
// its last close) is the engine's SHUT_WR.
func (r *relay) up() {
	defer r.finish()
	var buf *[]byte
	defer func() { putBuf(buf) }()
	pending := r.toEng
	r.toEng = nil
	for {
		for len(pending) > 0 {
			r.emu.Lock()
			n, err := r.es.Write(pending)
			r.emu.Unlock()
			pending = pending[n:]
			r.txBytes.Add(uint64(n))
			switch {
			case err == nil:
			case errors.Is(err, stack.ErrWouldBlock):
				if !r.wait(r.wakeOut) {
					return
				}
			default: // the connection is gone: nothing more can be sent
				r.shutPair(unix.SHUT_RD)
				return
			}
		}
		putBuf(buf)
		var n int
		var err error
		buf, n, err = r.read()
		switch {
		case err != nil:
			// ECONNRESET: the program closed with bytes unread; or the
			// relay was stopped.
			if !r.stopped() {
				r.stop(true)
			}
			return
		case n == 0:
			r.emu.Lock()
			_ = r.es.Shutdown(unix.SHUT_WR)
			r.emu.Unlock()
			r.awaitHangup()
			return
		}
		pending = (*buf)[:n]
	}
}

func putBuf(b *[]byte) {
	if b != nil {
		relayBufs.Put(b)
	}
}

// awaitHangup follows a program that shut its side for writing until it
// lets go of the socket altogether (its last close), when the relay ends;
// until then the other direction goes on.
func (r *relay) awaitHangup() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if r.hungUp() {
			// Linux resets a connection closed with data unread.
			r.stop(r.es.Readiness()&stack.EventIn != 0)
			return
		}
		select {
		case <-t.C:
		case <-r.done:
			return
		}
	}
}

// hungUp reports whether every copy of the program's end is closed.
func (r *relay) hungUp() bool {
	hup := false
	_ = r.rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if n, err := unix.Poll(p, 0); n > 0 && err == nil {
			hup = p[0].Revents&unix.POLLHUP != 0
		}
	})
	return hup
}

// read takes what the program wrote into a buffer of relayBufs (nil when
// it fails), waiting for it in Go's poller without one; every call is
// non-blocking whatever the program did to the descriptor (it could share
// our end's file description).
func (r *relay) read() (*[]byte, int, error) {
	var n int
	var rerr error
	var buf *[]byte
	var err error
	for {
		err = r.rc.Read(func(fd uintptr) bool {
			buf = relayBufs.Get().(*[]byte)
			n, _, rerr = unix.Recvfrom(int(fd), *buf, unix.MSG_DONTWAIT)
			if rerr == unix.EAGAIN || rerr == unix.EINTR {
				relayBufs.Put(buf)
				buf = nil
				return false
			}
			return true
		})
		// A nudge, not a stop: read again. stop closes done before its
		// deadline, so a deadline cleared here after stop set it still
		// finds done closed.
		if err == nil || r.stopped() || !nudged(err, r.f.SetReadDeadline) || r.stopped() {
			break
		}
	}
	if err == nil {
		err = rerr
	}
	if err != nil {
		putBuf(buf)
		return nil, 0, err
	}
	return buf, n, nil
}

// down copies the engine's bytes to the program: first what its rx ring
// held, then what the engine receives. The engine's EOF is the pair's.
func (r *relay) down() {
	defer r.finish()
	var buf *[]byte
	defer func() { putBuf(buf) }()
	pending := r.toApp
	r.toApp = nil
	eof, reset := r.rdEOF, r.reset
	for {
		if len(pending) > 0 {
			n, err := r.write(pending)
			if err != nil {
				// EPIPE: the program shut its side for reading or is
				// gone; nothing more can reach it.
				if !r.stopped() && r.hungUp() {
					r.stop(true)
				}
				return
			}
			pending = pending[n:]
			r.rxBytes.Add(uint64(n))
			continue
		}
		if eof || reset {
			// A reset reads as EOF here too: a stream socketpair has no
			// way to say ECONNRESET.
			r.shutPair(unix.SHUT_WR)
			return
		}
		if buf == nil {
			buf = relayBufs.Get().(*[]byte)
		}
		r.emu.Lock()
		n, e, err := r.es.Read(*buf)
		r.emu.Unlock()
		switch {
		case n > 0:
			pending = (*buf)[:n]
		case e:
			eof = true
		case err == nil || errors.Is(err, stack.ErrWouldBlock):
			putBuf(buf)
			buf = nil
			if !r.wait(r.wakeIn) {
				return
			}
		default:
			reset = true
		}
	}
}

func (r *relay) write(p []byte) (int, error) {
	var n int
	var werr error
	err := r.rc.Write(func(fd uintptr) bool {
		n, werr = unix.SendmsgN(int(fd), p, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return werr != unix.EAGAIN && werr != unix.EINTR
	})
	if err != nil {
		return 0, err
	}
	return n, werr
}

func (r *relay) shutPair(how int) {
	_ = r.rc.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), how) })
}

// finish ends the relay when both directions are done: the engine socket
// closes (or resets) and the pair and the user's count are given back.
func (r *relay) finish() {
	defer r.srv.wg.Done()
	if r.left.Add(-1) > 0 {
		return
	}
	r.emu.Lock()
	r.es.Notify(nil)
	if r.abort.Load() {
		r.es.Abort()
	} else {
		r.es.Close()
	}
	r.emu.Unlock()
	r.srv.nudge.drop(r.nd)
	r.f.Close()
	srv := r.srv
	srv.forgetPair(r.ino)
	srv.totals.add(r.txBytes.Load(), r.rxBytes.Load())
	if t := srv.engTotals[r.engine]; t != nil {
		t.add(r.txBytes.Load(), r.rxBytes.Load())
	}
	r.use.socks.Add(-1)
	srv.clientFDs.Add(-int64(1 + r.engFDs)) // its pair end and the engine's

	srv.mu.Lock()
	delete(srv.relays, r.name)
	srv.unuse(r.uid, func(*uidUse) {})
	srv.mu.Unlock()
}

// relayStats lists the live relays uid may see (all for root).
func (srv *Server) relayStats(uid uint32, all bool) []RelayStats {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var out []RelayStats
	for _, r := range srv.relays {
		if !all && r.uid != uid {
			continue
		}
		out = append(out, RelayStats{
			Uid: r.uid, Engine: r.engine, Family: familyName(r.family),
			Local: addrString(r.local), Remote: addrString(r.remote), Name: r.name,
			TxBytes: r.txBytes.Load(), RxBytes: r.rxBytes.Load(), Since: r.created,
		})
	}
	return out
}

// stopRelays ends every relay (the daemon is closing).
func (srv *Server) stopRelays() {
	srv.mu.Lock()
	var rs []*relay
	for _, r := range srv.relays {
		rs = append(rs, r)
	}
	srv.mu.Unlock()
	for _, r := range rs {
		if r.started.Load() {
			r.stop(true)
		} else {
			r.discard()
		}
	}
}

// ident answers abi.MsgIdent: fd is what a process holds as a socket; if it
// is the program's end of a relay's pair, the reply carries the relayed
// connection's local (req.Sock 0) or remote (1) address. The proof is the
// fd itself: its peer must be our end, found by the abstract name bound to
// it, in the same network namespace (a name means nothing in another).
func (srv *Server) ident(req *abi.CtlReq, fd int, rep *abi.CtlReply) {
	r := srv.relayOf(fd)
	if r == nil {
		rep.Result = -int32(syscall.ENOTSOCK)
		return
	}
	ap := r.local
	if req.Sock == 1 {
		ap = r.remote
	}
	if !ap.IsValid() {
		rep.Result = -int32(syscall.ENOTCONN)
		return
	}
	rep.AddrLen = putSockaddr(rep.Addr[:], r.family, ap)
}

// peerNamed returns the abstract name fd's peer is bound to, if it starts
// with prefix (one of our named ends: a relay's, a listener's), else "".
func peerNamed(fd int, prefix string) string {
	sa, err := unix.Getpeername(fd)
	su, ok := sa.(*unix.SockaddrUnix)
	if err != nil || !ok || !strings.HasPrefix(su.Name, prefix) {
		return ""
	}
	return su.Name
}

func (srv *Server) relayOf(fd int) *relay {
	name := peerNamed(fd, "@nuse-relay/")
	if name == "" {
		return nil
	}
	srv.mu.Lock()
	found := srv.relays[name]
	srv.mu.Unlock()
	if found == nil {
		return nil
	}
	var same bool
	_ = found.rc.Control(func(our uintptr) { same = sameNetns(fd, int(our)) })
	if !same {
		return nil
	}
	return found
}

// sameNetns reports whether two sockets belong to one network namespace.
func sameNetns(a, b int) bool {
	ino := func(fd int) uint64 {
		ns, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
		if err != nil {
			return 0
		}
		defer unix.Close(ns)
		var st unix.Stat_t
		if unix.Fstat(ns, &st) != nil {
			return 0
		}
		return st.Ino
	}
	x := ino(a)
	return x != 0 && x == ino(b)
}

// withChannel takes pair as the new channel (takeChannel; what names it in
// the log) of socket req.Sock, for a control request: with mu held, refuse
// says why the socket cannot have it (0: it can), and use gets it. A dead
// session, a stale slot or a refusal drop the channel and answer the errno.
func (s *Session) withChannel(req *abi.CtlReq, pair int, rep *abi.CtlReply, what string,
	refuse func(so *sock) syscall.Errno, use func(so *sock, ino uint64)) {
	ino, e := s.takeChannel(pair, what)
	if e != 0 {
		rep.Result = -int32(e)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var so *sock
	e = syscall.ECONNRESET
	if !s.dead {
		e = syscall.EBADF
		if so = s.lookup(req.Sock, req.Gen); so != nil {
			e = refuse(so)
		}
	}
	if e != 0 {
		s.srv.dropChannel(pair, ino)
		rep.Result = -int32(e)
		return
	}
	use(so, ino)
}

// dropChannel undoes takeChannel: closes pair and forgets it.
func (srv *Server) dropChannel(pair int, ino uint64) {
	unix.Close(pair)
	srv.forgetPair(ino)
	srv.clientFDs.Add(-1)
}

// takeChannel checks and counts a socketpair end a client passes to replace
// or carry an existing socket's channel (what: a relay, a new pair): the
// daemon's fd budget, its kind, and that it is not one the daemon holds.
// It closes pair if it fails; on success the caller owns it (one fd
// counted in clientFDs, ino in srv.pairs) and it is non-blocking.
func (s *Session) takeChannel(pair int, what string) (uint64, syscall.Errno) {
	srv := s.srv
	if !srv.takeFDs(1) {
		s.logf("the daemon is short of file descriptors; %s refused", what)
		unix.Close(pair)
		return 0, syscall.ENFILE
	}
	ino, e := srv.checkPair(pair)
	if e != 0 {
		s.logf("%s refused: the fd passed as its channel is unusable (%v)", what, e)
		unix.Close(pair)
		srv.clientFDs.Add(-1)
		return 0, e
	}
	if err := unix.SetNonblock(pair, true); err != nil {
		srv.dropChannel(pair, ino)
		return 0, syscall.EINVAL
	}
	return ino, 0
}
