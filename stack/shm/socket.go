package shm

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nuse-project/nuse/stack"
)

// Socket states. Transitions happen with e.mu held (the state itself is
// atomic so that Readiness, from any goroutine, can read it).
const (
	stIdle        int32 = iota // fresh or bound
	stListen                   // listening
	stConnecting               // waiting for room in a listener's accept queue
	stEstablished              // has a conn (possibly shut down or reset since)
	stFailed                   // the connect was refused
	stClosed                   // Close or Abort
)

// socket is one shm socket. Fields without a note are the caller's (calls
// on one socket are serialized).
type socket struct {
	e      *Engine
	family int
	state  atomic.Int32
	fn     atomic.Pointer[func(stack.Events)]

	// Guarded by e.mu (written by the caller with e.mu held, read by
	// other sockets' calls with it held).
	local     netip.AddrPort
	inTable   bool
	autobound bool // the port came from connect, not bind
	backlog   int
	queue     []*socket // listener: established, not accepted
	waiting   []*socket // listener: clients beyond the backlog
	lst       *socket   // a waiting client's listener
	connErr   syscall.Errno
	errTaken  bool

	// Set before the state becomes stEstablished (then fixed).
	c      *conn
	side   int
	remote netip.AddrPort

	connectTold bool // Connect's answer "connected" was given

	// Read by the peer or the table: atomic.
	reuseAddr, reusePort, v6only atomic.Bool
	sndBuf, rcvBuf               atomic.Int64
	segsIn, segsOut              atomic.Uint64

	keepAlive, noDelay, cork, quickAck bool
	keepIdle, keepIntvl, keepCnt       int
	linger                             int
	maxSeg                             int
	cc                                 string
}

func (s *socket) st() int32 { return s.state.Load() }

// conn is one connection: two ends, one lock, and the region that holds
// its bytes (region.go).
type conn struct {
	mu   sync.Mutex
	end  [2]end
	sock [2]*socket
	reg  *region // nil once both ends are closed

	// The engine's copy of each counter of ring d (what side d writes):
	// written by the engine itself, or read from the region, checked,
	// while an attached end's program owns it.
	head, tail [2]uint64
	// What Moved last told of: ring d's head to its reader, its tail to
	// its writer.
	toldHead, toldTail [2]uint64
	broken             bool // a program wrote counters out of range: reset
}

// end is one end's receiving side and state. Guarded by conn.mu.
type end struct {
	fin      bool // the peer shut down its writing: EOF after rx
	shutWr   bool
	shutRd   bool
	closed   bool // closed or aborted: reads nothing more
	rst      bool // reset: writes fail, reads EOF once rx and err are taken
	err      syscall.Errno
	wantOut  bool // the writer was told "full": tell it when there is room
	attached bool // its program reads and writes the region itself
	// waker is the fd the daemon mirrors this end's readiness on (the
	// daemon's end of its program's pair), if hasWaker: the peer's
	// program may get a copy (PeerWaker). Not ours to close.
	waker    int
	hasWaker bool
}

// writable is Linux's sk_stream_is_writeable: free space at least half
// of what is queued.
func writable(queued, capa uint64) bool { return 2*(capa-queued) >= queued && queued < capa }

// sync brings the engine's copy of the counters up to date with what the
// attached ends' programs wrote, and reports whether they are in range. A
// closed end reads nothing more: what is sent to it is dropped at once.
// Called with c.mu held.
func (c *conn) sync() bool {
	if c.broken {
		return false
	}
	if c.reg == nil {
		return true
	}
	for d := range 2 {
		h, t, ok := c.snapshot(d)
		if !ok {
			continue // both programs busy on it: the next look sees it
		}
		if h-t > c.reg.size {
			return false
		}
		if c.end[1-d].closed && t != h {
			t = h
			c.reg.storeTail(d, t)
		}
		c.head[d], c.tail[d] = h, t
	}
	return true
}

// snapshot reads ring d's counters as its programs left them. With both
// ends attached each program moves one of them while we look: read
// separately, a tail read after the head may have passed it, and a head
// read after the tail may be a ring ahead of it, and either would look
// like corruption. So the tail is read around the head, and the pair
// counts only if the tail stood still meanwhile (ok false after a few
// tries: the caller keeps its old copy). Called with c.mu held.
func (c *conn) snapshot(d int) (h, t uint64, ok bool) {
	h, t = c.head[d], c.tail[d]
	wa, ra := c.end[d].attached, c.end[1-d].attached
	for range 8 {
		if ra {
			t = c.reg.loadTail(d)
		}
		if wa {
			h = c.reg.loadHead(d)
		}
		if !ra || !wa || c.reg.loadTail(d) == t {
			return h, t, true
		}
	}
	return c.head[d], c.tail[d], false
}

// queued is what ring d holds (after sync).
func (c *conn) queued(d int) uint64 { return c.head[d] - c.tail[d] }

func (c *conn) size() uint64 {
	if c.reg == nil {
		return 1
	}
	return c.reg.size
}

// breakLocked resets both ends of a connection whose counters a program
// corrupted; it returns who to notify. Called with c.mu held.
func (c *conn) breakLocked() []notice {
	c.broken = true
	c.dropWaker(0)
	c.dropWaker(1)
	var ns []notice
	for i := range 2 {
		e := &c.end[i]
		if e.closed {
			continue
		}
		if !e.rst {
			e.err, e.rst = syscall.ECONNRESET, true
		}
		ns = append(ns, c.sock[i].noticeLocked())
	}
	return ns
}

// readiness of end i of c. Called with c.mu held.
func (c *conn) readiness(i int) stack.Events {
	if !c.sync() {
		c.broken = true
		return stack.EventIn | stack.EventOut | stack.EventErr | stack.EventHup
	}
	me, peer := &c.end[i], &c.end[1-i]
	var ev stack.Events
	rcvShut := me.fin || me.shutRd || me.rst
	sndShut := me.shutWr || me.rst
	if c.queued(1-i) > 0 || rcvShut || me.err != 0 {
		ev |= stack.EventIn
	}
	if sndShut || peer.closed || writable(c.queued(i), c.size()) {
		ev |= stack.EventOut
	}
	if me.err != 0 {
		ev |= stack.EventErr
	}
	if rcvShut && sndShut {
		ev |= stack.EventHup
	}
	return ev
}

// notice is a Notify call to make once the locks are released.
type notice struct {
	s  *socket
	ev stack.Events
}

func (s *socket) noticeLocked() notice {
	ev := stack.EventIn | stack.EventOut | stack.EventErr | stack.EventHup
	if !s.c.broken {
		ev = s.c.readiness(s.side)
	}
	return notice{s, ev}
}

func fire(ns ...notice) {
	for _, n := range ns {
		if n.s == nil {
			continue
		}
		if f := n.s.fn.Load(); f != nil {
			(*f)(n.ev)
		}
	}
}

// ---- stack.Socket ----

func (s *socket) Bind(ap netip.AddrPort) error {
	a, err := s.ownAddr(ap.Addr())
	if err != nil {
		return err
	}
	if s.family == syscall.AF_INET6 && a.Is4In6() && s.v6only.Load() {
		return syscall.EINVAL
	}
	if !s.e.isLocal(a.Unmap()) {
		return syscall.EADDRNOTAVAIL
	}
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.inTable || s.st() != stIdle {
		return syscall.EINVAL
	}
	if err := e.take(s, a, ap.Port(), false); err != nil {
		return err
	}
	s.inTable = true
	return nil
}

// ownAddr gives a in the socket's family (IPv4 as v4-mapped on IPv6).
func (s *socket) ownAddr(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, syscall.EINVAL
	}
	if s.family == syscall.AF_INET {
		a = a.Unmap()
		if !a.Is4() {
			return a, syscall.EAFNOSUPPORT
		}
		return a, nil
	}
	if a.Is4() {
		a = netip.AddrFrom16(a.As16())
	}
	return a.WithZone(""), nil
}

func (s *socket) unspecified() netip.Addr {
	if s.family == syscall.AF_INET {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func (s *socket) Listen(backlog int) error {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if backlog < 0 || backlog > e.somaxconn {
		backlog = e.somaxconn
	}
	switch s.st() {
	case stListen:
		s.backlog = backlog
		return nil
	case stIdle:
	default:
		return syscall.EINVAL
	}
	if !s.inTable {
		if err := e.take(s, s.unspecified(), 0, false); err != nil {
			return err
		}
		s.inTable = true
	}
	for _, x := range e.ports[s.local.Port()] {
		if x != s && x.st() == stListen && overlap(x, s) && !(x.reusePort.Load() && s.reusePort.Load()) {
			return syscall.EADDRINUSE
		}
	}
	s.backlog = backlog
	s.state.Store(stListen)
	return nil
}

func (s *socket) Connect(ap netip.AddrPort) error {
	switch s.st() {
	case stListen:
		return syscall.EISCONN
	case stConnecting:
		return syscall.EALREADY
	case stEstablished:
		if !s.connectTold {
			s.connectTold = true
			return nil
		}
		return syscall.EISCONN
	case stClosed:
		return syscall.EBADF
	}
	d, err := s.ownAddr(ap.Addr())
	if err != nil {
		return err
	}
	if s.family == syscall.AF_INET6 && d.Is4In6() && s.v6only.Load() {
		return syscall.ENETUNREACH
	}
	t := d.Unmap() // the address in the world it names
	if t.IsUnspecified() {
		if t.Is4() {
			t = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		} else {
			t = netip.IPv6Loopback()
		}
		d, _ = s.ownAddr(t)
	}
	e := s.e
	e.mu.Lock()
	if s.st() == stFailed {
		s.state.Store(stIdle)
		s.connErr, s.errTaken = 0, false
	}
	if e.closed {
		e.mu.Unlock()
		return syscall.ENETDOWN
	}
	if !s.inTable {
		if err := e.take(s, d, 0, true); err != nil {
			e.mu.Unlock()
			return syscall.EADDRNOTAVAIL
		}
		s.inTable, s.autobound = true, true
	} else if s.local.Addr().IsUnspecified() {
		s.local = netip.AddrPortFrom(d, s.local.Port())
	}
	var l *socket
	if ap.Port() != 0 {
		l = e.listener(t, ap.Port())
	}
	if l == nil {
		s.fail(syscall.ECONNREFUSED)
		s.errTaken = true // told now, as the call's own error
		e.mu.Unlock()
		return syscall.ECONNREFUSED
	}
	s.remote = netip.AddrPortFrom(d, ap.Port())
	if len(l.queue) <= l.backlog {
		// Established now, but answered as Linux answers a non-blocking
		// connect over loopback: EINPROGRESS, then EventOut (already
		// there), and the next Connect is 0.
		if _, err := e.establish(l, s, t); err != nil {
			s.fail(err.(syscall.Errno))
			s.errTaken = true
			e.mu.Unlock()
			return err
		}
		e.mu.Unlock()
		fire(notice{l, stack.EventIn}, notice{s, stack.EventOut})
		return stack.ErrInProgress
	}
	s.lst = l
	l.waiting = append(l.waiting, s)
	s.state.Store(stConnecting)
	e.mu.Unlock()
	fire(notice{l, stack.EventIn})
	return stack.ErrInProgress
}

// fail ends a connect attempt with err. Called with e.mu held.
func (s *socket) fail(err syscall.Errno) {
	s.connErr, s.errTaken = err, false
	s.state.Store(stFailed)
	if s.autobound && s.inTable {
		s.e.drop(s)
		s.inTable, s.autobound = false, false
		s.local = netip.AddrPort{}
	}
}

// establish connects client cl to listener l (the connection is for the
// world address t) and queues the server's end. Called with e.mu held.
func (e *Engine) establish(l, cl *socket, t netip.Addr) (*socket, error) {
	reg, err := newRegion(regionSize(max(int(cl.sndBuf.Load()+l.rcvBuf.Load()), e.cfg.Ring)))
	if err != nil {
		return nil, syscall.ENOBUFS
	}
	srv := e.newSocket(l.family)
	srv.sndBuf.Store(l.sndBuf.Load())
	srv.rcvBuf.Store(l.rcvBuf.Load())
	srv.reuseAddr.Store(l.reuseAddr.Load())
	srv.reusePort.Store(l.reusePort.Load())
	srv.v6only.Store(l.v6only.Load())
	srv.keepAlive, srv.noDelay, srv.cork = l.keepAlive, l.noDelay, l.cork
	srv.keepIdle, srv.keepIntvl, srv.keepCnt, srv.linger = l.keepIdle, l.keepIntvl, l.keepCnt, l.linger
	srv.maxSeg, srv.cc = l.maxSeg, l.cc
	sa, _ := srv.ownAddr(t)
	srv.local = netip.AddrPortFrom(sa, l.local.Port())
	ca, _ := srv.ownAddr(cl.local.Addr().Unmap())
	srv.remote = netip.AddrPortFrom(ca, cl.local.Port())
	srv.connectTold = true
	e.ports[srv.local.Port()] = append(e.ports[srv.local.Port()], srv)
	srv.inTable = true
	c := &conn{sock: [2]*socket{cl, srv}, reg: reg}
	cl.c, cl.side = c, 0
	srv.c, srv.side = c, 1
	// SYN, SYN-ACK, ACK.
	cl.segsOut.Add(2)
	cl.segsIn.Add(1)
	srv.segsIn.Add(2)
	srv.segsOut.Add(1)
	srv.state.Store(stEstablished)
	cl.lst = nil
	cl.state.Store(stEstablished)
	l.queue = append(l.queue, srv)
	return srv, nil
}

func (s *socket) ConnectResult() error {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.st() == stFailed {
		s.errTaken = true
		return s.connErr
	}
	return nil
}

func (s *socket) Accept() (stack.Socket, netip.AddrPort, error) {
	e := s.e
	e.mu.Lock()
	if s.st() != stListen {
		e.mu.Unlock()
		return nil, netip.AddrPort{}, syscall.EINVAL
	}
	if len(s.queue) == 0 {
		// Clients beyond the backlog get in now (Linux: their SYN
		// retry), for the next Accept.
		var ns []notice
		for len(s.waiting) > 0 && len(s.queue) <= s.backlog {
			w := s.waiting[0]
			s.waiting = s.waiting[1:]
			if _, err := e.establish(s, w, w.remote.Addr().Unmap()); err != nil {
				w.fail(err.(syscall.Errno))
				ns = append(ns, notice{w, stack.EventIn | stack.EventOut | stack.EventErr | stack.EventHup})
				continue
			}
			ns = append(ns, notice{w, stack.EventOut})
		}
		e.mu.Unlock()
		if len(ns) > 0 {
			fire(append(ns, notice{s, stack.EventIn})...)
		}
		return nil, netip.AddrPort{}, stack.ErrWouldBlock
	}
	srv := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	e.mu.Unlock()
	return srv, srv.remote, nil
}

func (s *socket) Read(p []byte) (int, bool, error) {
	switch s.st() {
	case stEstablished:
	case stConnecting:
		return 0, false, stack.ErrWouldBlock
	default:
		return 0, false, syscall.ENOTCONN
	}
	c := s.c
	c.mu.Lock()
	me := &c.end[s.side]
	if me.closed {
		c.mu.Unlock()
		return 0, false, syscall.EBADF
	}
	if !c.sync() && !c.broken {
		ns := c.breakLocked()
		c.mu.Unlock()
		fire(ns...)
		return 0, false, syscall.ECONNRESET
	}
	in := 1 - s.side
	// An attached end's program reads the ring itself: only EOF and
	// errors are the engine's to say.
	if !me.attached && !c.broken && c.queued(in) > 0 {
		if len(p) == 0 {
			c.mu.Unlock()
			return 0, false, nil
		}
		n := min(uint64(len(p)), c.queued(in))
		wasFull := !writable(c.queued(in), c.size())
		c.reg.copyOut(in, c.tail[in], p[:n])
		c.tail[in] += n
		c.toldTail[in] = c.tail[in]
		c.reg.storeTail(in, c.tail[in])
		var ns notice
		peer := &c.end[in]
		if (peer.wantOut || (peer.attached && wasFull)) && writable(c.queued(in), c.size()) {
			peer.wantOut = false
			ns = c.sock[in].noticeLocked()
		}
		c.mu.Unlock()
		fire(ns)
		return int(n), false, nil
	}
	if me.err != 0 {
		err := me.err
		me.err = 0
		c.mu.Unlock()
		return 0, false, err
	}
	if me.fin || me.shutRd || me.rst {
		c.mu.Unlock()
		return 0, true, nil
	}
	c.mu.Unlock()
	return 0, false, stack.ErrWouldBlock
}

// RxQueued implements stack.RxQueuer: what the peer wrote that this end
// has not read through the engine (an attached end's program reads the
// ring itself: 0).
func (s *socket) RxQueued() int {
	if s.st() != stEstablished {
		return 0
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.end[s.side].attached || c.broken || !c.sync() {
		return 0
	}
	return int(c.queued(1 - s.side))
}

func (s *socket) Write(p []byte) (int, error) {
	switch s.st() {
	case stEstablished:
	case stConnecting:
		return 0, stack.ErrWouldBlock
	default:
		return 0, syscall.EPIPE
	}
	c := s.c
	c.mu.Lock()
	me, peer := &c.end[s.side], &c.end[1-s.side]
	if me.err != 0 {
		err := me.err
		me.err = 0
		c.mu.Unlock()
		return 0, err
	}
	if me.shutWr || me.rst || me.closed || me.attached {
		c.mu.Unlock()
		return 0, syscall.EPIPE
	}
	if len(p) == 0 {
		c.mu.Unlock()
		return 0, nil
	}
	if !c.sync() {
		ns := c.breakLocked()
		c.mu.Unlock()
		fire(ns...)
		return 0, syscall.ECONNRESET
	}
	if peer.closed {
		// Nobody reads: TCP's peer answers with a reset.
		me.err, me.rst = syscall.ECONNRESET, true
		ns := s.noticeLocked()
		c.mu.Unlock()
		fire(ns)
		return len(p), nil
	}
	out := s.side
	ps := c.sock[1-s.side]
	n := min(uint64(len(p)), c.size()-c.queued(out))
	if n == 0 {
		me.wantOut = true
		c.mu.Unlock()
		return 0, stack.ErrWouldBlock
	}
	wasEmpty := c.queued(out) == 0
	c.reg.copyIn(out, c.head[out], p[:n])
	c.head[out] += n
	c.toldHead[out] = c.head[out]
	c.reg.storeHead(out, c.head[out])
	if !writable(c.queued(out), c.size()) {
		me.wantOut = true
	}
	s.segsOut.Add(1)
	ps.segsIn.Add(1)
	var ns notice
	if wasEmpty || peer.attached {
		// The reader's readiness changes only when the pipe stops being
		// empty; a reader that got EAGAIN found it empty, so every
		// arrival after an EAGAIN is told. An attached reader's daemon
		// counts every arrival (an edge for EPOLLET).
		ns = ps.noticeLocked()
	}
	c.mu.Unlock()
	fire(ns)
	return int(n), nil
}

func (s *socket) Shutdown(how int) error {
	if how < syscall.SHUT_RD || how > syscall.SHUT_RDWR {
		return syscall.EINVAL
	}
	e := s.e
	switch s.st() {
	case stListen:
		if how == syscall.SHUT_WR {
			return nil
		}
		e.mu.Lock()
		ns := s.stopListening()
		s.state.Store(stIdle)
		e.mu.Unlock()
		fire(append(ns, notice{s, stack.EventIn})...)
		return nil
	case stConnecting:
		e.mu.Lock()
		s.unwait()
		s.fail(0)
		s.state.Store(stIdle)
		e.mu.Unlock()
		return nil
	case stEstablished:
	default:
		return syscall.ENOTCONN
	}
	c := s.c
	c.mu.Lock()
	me, peer := &c.end[s.side], &c.end[1-s.side]
	if how != syscall.SHUT_WR {
		me.shutRd = true
	}
	var ns [2]notice
	if how != syscall.SHUT_RD && !me.shutWr {
		me.shutWr = true
		if !me.rst {
			peer.fin = true
			s.segsOut.Add(1)
			c.sock[1-s.side].segsIn.Add(1)
			ns[1] = c.sock[1-s.side].noticeLocked()
		}
	}
	ns[0] = s.noticeLocked()
	c.mu.Unlock()
	fire(ns[:]...)
	return nil
}

// unwait takes a waiting client off its listener's list. Called with e.mu
// held.
func (s *socket) unwait() {
	l := s.lst
	if l == nil {
		return
	}
	for i, w := range l.waiting {
		if w == s {
			l.waiting = append(l.waiting[:i], l.waiting[i+1:]...)
			break
		}
	}
	s.lst = nil
}

// stopListening resets the connections queued on listener s and refuses
// the waiting ones; it returns who to notify. Called with e.mu held.
func (s *socket) stopListening() []notice {
	var ns []notice
	for _, srv := range s.queue {
		if n := srv.closeConn(true); n.s != nil {
			ns = append(ns, n)
		}
		srv.state.Store(stClosed)
		s.e.drop(srv)
		delete(s.e.socks, srv)
	}
	s.queue = nil
	for _, w := range s.waiting {
		w.lst = nil
		w.fail(syscall.ECONNREFUSED)
		ns = append(ns, notice{w, stack.EventIn | stack.EventOut | stack.EventErr | stack.EventHup})
	}
	s.waiting = nil
	return ns
}

// closeConn closes this end of its connection, gracefully or with a
// reset, and returns the peer's notice.
func (s *socket) closeConn(reset bool) notice {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	me, peer := &c.end[s.side], &c.end[1-s.side]
	if me.closed {
		return notice{}
	}
	ps := c.sock[1-s.side]
	// The peer's program wakes us itself only while wake_ok says so; it
	// looks after each head store, so the sync below sees every byte
	// written while it still did (those came before the close).
	c.dropWaker(s.side)
	if !c.sync() {
		c.broken = true
	}
	if c.queued(1-s.side) > 0 {
		reset = true // unread data: RST, as Linux
	}
	// What the peer's program wrote up to now came before the close
	// (Moved may not have heard of it yet): only later bytes are a write
	// to a closed socket, which resets the writer.
	c.toldHead[1-s.side] = c.head[1-s.side]
	me.closed = true
	me.attached = false
	me.wantOut = false
	c.sync() // drops what it had not read
	if peer.closed {
		if c.reg != nil {
			c.reg.free() // both ends gone: the programs' mappings are theirs
			c.reg = nil
		}
		return notice{}
	}
	if reset {
		if !peer.rst {
			peer.err, peer.rst = syscall.ECONNRESET, true
			s.segsOut.Add(1)
			ps.segsIn.Add(1)
		}
	} else if !me.shutWr {
		me.shutWr = true
		peer.fin = true
		s.segsOut.Add(1)
		ps.segsIn.Add(1)
	}
	return ps.noticeLocked()
}

func (s *socket) Close() { s.close(s.linger == 0) }

func (s *socket) Abort() { s.close(true) }

func (s *socket) close(reset bool) {
	e := s.e
	e.mu.Lock()
	prev := s.st()
	if prev == stClosed {
		e.mu.Unlock()
		return
	}
	var ns []notice
	switch prev {
	case stListen:
		ns = s.stopListening()
	case stConnecting:
		s.unwait()
	}
	s.state.Store(stClosed)
	if s.inTable {
		e.drop(s)
		s.inTable = false
	}
	delete(e.socks, s)
	e.mu.Unlock()
	if prev == stEstablished {
		ns = append(ns, s.closeConn(reset))
	}
	fire(ns...)
}

func (s *socket) LocalAddr() (netip.AddrPort, error) {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	if !s.local.IsValid() {
		return netip.AddrPortFrom(s.unspecified(), 0), nil
	}
	return s.local, nil
}

func (s *socket) RemoteAddr() (netip.AddrPort, error) {
	if s.st() != stEstablished {
		return netip.AddrPort{}, syscall.ENOTCONN
	}
	s.c.mu.Lock()
	rst := s.c.end[s.side].rst
	s.c.mu.Unlock()
	if rst {
		return netip.AddrPort{}, syscall.ENOTCONN
	}
	return s.remote, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *socket) SetOption(o stack.Option, v int) error {
	if o == stack.OptV6Only {
		if s.family != syscall.AF_INET6 {
			return syscall.ENOPROTOOPT
		}
		s.e.mu.Lock()
		defer s.e.mu.Unlock()
		if s.inTable {
			return syscall.EINVAL
		}
		s.v6only.Store(v != 0)
		return nil
	}
	if s.st() == stListen {
		// Accepted sockets inherit a listener's options, read by the
		// connecting side's call with e.mu held.
		s.e.mu.Lock()
		defer s.e.mu.Unlock()
	}
	switch o {
	case stack.OptReuseAddr:
		s.reuseAddr.Store(v != 0)
	case stack.OptReusePort:
		s.reusePort.Store(v != 0)
	case stack.OptKeepAlive:
		s.keepAlive = v != 0
	case stack.OptNoDelay:
		s.noDelay = v != 0
	case stack.OptCork:
		s.cork = v != 0
	case stack.OptQuickAck:
		s.quickAck = v != 0
	case stack.OptKeepIdle, stack.OptKeepIntvl:
		if v < 1 || v > 32767 {
			return syscall.EINVAL
		}
		if o == stack.OptKeepIdle {
			s.keepIdle = v
		} else {
			s.keepIntvl = v
		}
	case stack.OptKeepCnt:
		if v < 1 || v > 127 {
			return syscall.EINVAL
		}
		s.keepCnt = v
	case stack.OptLinger:
		s.linger = max(v, -1)
	case stack.OptRcvBuf, stack.OptSndBuf:
		// As Linux: the value asked for, doubled, within bounds.
		b := int64(min(max(v, 0), maxBuf/2)) * 2
		b = max(b, minBuf)
		if o == stack.OptRcvBuf {
			s.rcvBuf.Store(b)
		} else {
			s.sndBuf.Store(b)
		}
		s.bufChanged()
	case stack.OptMaxSeg:
		if v < 88 || v > 65535 {
			return syscall.EINVAL
		}
		s.maxSeg = v
	default:
		return syscall.ENOPROTOOPT
	}
	return nil
}

// bufChanged tells a connection's ends that their room may have changed.
func (s *socket) bufChanged() {
	if s.st() != stEstablished {
		return
	}
	c := s.c
	c.mu.Lock()
	ns := []notice{s.noticeLocked(), c.sock[1-s.side].noticeLocked()}
	c.mu.Unlock()
	fire(ns...)
}

func (s *socket) GetOption(o stack.Option) (int, error) {
	switch o {
	case stack.OptReuseAddr:
		return boolInt(s.reuseAddr.Load()), nil
	case stack.OptReusePort:
		return boolInt(s.reusePort.Load()), nil
	case stack.OptKeepAlive:
		return boolInt(s.keepAlive), nil
	case stack.OptNoDelay:
		return boolInt(s.noDelay), nil
	case stack.OptCork:
		return boolInt(s.cork), nil
	case stack.OptQuickAck:
		return boolInt(s.quickAck), nil
	case stack.OptKeepIdle:
		return s.keepIdle, nil
	case stack.OptKeepIntvl:
		return s.keepIntvl, nil
	case stack.OptKeepCnt:
		return s.keepCnt, nil
	case stack.OptLinger:
		return s.linger, nil
	case stack.OptRcvBuf:
		return int(s.rcvBuf.Load()), nil
	case stack.OptSndBuf:
		return int(s.sndBuf.Load()), nil
	case stack.OptV6Only:
		if s.family != syscall.AF_INET6 {
			return 0, syscall.ENOPROTOOPT
		}
		return boolInt(s.v6only.Load()), nil
	case stack.OptMaxSeg:
		if s.maxSeg != 0 {
			return s.maxSeg, nil
		}
		if s.st() == stEstablished {
			return nominalMSS, nil
		}
		return 536, nil
	}
	return 0, syscall.ENOPROTOOPT
}

func (s *socket) Readiness() stack.Events {
	switch s.st() {
	case stIdle:
		return stack.EventOut | stack.EventHup
	case stListen:
		s.e.mu.Lock()
		defer s.e.mu.Unlock()
		if len(s.queue) > 0 || len(s.waiting) > 0 {
			return stack.EventIn
		}
		return 0
	case stConnecting:
		return 0
	case stEstablished:
		s.c.mu.Lock()
		defer s.c.mu.Unlock()
		return s.c.readiness(s.side)
	case stFailed:
		s.e.mu.Lock()
		defer s.e.mu.Unlock()
		ev := stack.EventIn | stack.EventOut | stack.EventHup
		if !s.errTaken {
			ev |= stack.EventErr
		}
		return ev
	}
	return stack.EventHup
}

func (s *socket) Notify(fn func(stack.Events)) {
	if fn == nil {
		s.fn.Store(nil)
		return
	}
	s.fn.Store(&fn)
	if s.st() == stEstablished {
		// An accepted socket may have had data before anyone watched.
		fn(s.Readiness())
	}
}

func (s *socket) Stats() stack.SockStats {
	return stack.SockStats{SegsIn: s.segsIn.Load(), SegsOut: s.segsOut.Load()}
}

func (s *socket) Info() stack.TCPInfo {
	info := stack.TCPInfo{State: 7, SegsIn: uint32(s.segsIn.Load()), SegsOut: uint32(s.segsOut.Load())}
	switch s.st() {
	case stListen:
		info.State = 10
		return info
	case stConnecting:
		info.State = 2
		return info
	case stEstablished:
	default:
		return info
	}
	c := s.c
	c.mu.Lock()
	me := c.end[s.side]
	c.mu.Unlock()
	switch {
	case me.rst || me.closed || me.shutWr && me.fin:
		info.State = 7
	case me.shutWr:
		info.State = 5 // FIN_WAIT2: the FIN is acknowledged at once
	case me.fin:
		info.State = 8 // CLOSE_WAIT
	default:
		info.State = 1
	}
	info.SndMSS = nominalMSS
	if s.maxSeg != 0 {
		info.SndMSS = uint32(s.maxSeg)
	}
	info.RTO = 200 * time.Millisecond
	info.SndCwnd = 10
	info.SndSsthresh = 0x7fffffff
	return info
}

func (s *socket) Congestion() (string, error) { return s.cc, nil }

func (s *socket) SetCongestion(name string) error {
	switch name {
	case "reno", "cubic":
		s.cc = name
		return nil
	}
	return syscall.ENOENT
}
