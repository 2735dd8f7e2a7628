package usock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/daemon/arena"
	"github.com/nuse-project/nuse/internal/futex"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
)

// Session is one application process attached to the daemon.
type Session struct {
	srv   *Server
	ID    uint32
	Pid   int32
	Uid   uint32
	Comm  string
	Start time.Time

	a *arena.Arena

	// amu keeps the arena mapped while someone rings its doorbell.
	amu     sync.RWMutex
	aclosed bool

	use *uidUse // the uid's counters in the server

	mu    sync.Mutex // guards everything below and all engine calls
	conn  interface{ Close() error }
	socks []*sock
	gens  []uint32 // each slot's last generation: the daemon's, not the arena's
	free  []uint32
	// spare pairs the process handed ahead of need, by id (spares.go)
	spares   map[uint32]spare
	spareSeq uint32
	// freed is when each free slot was freed, zero once its ring pages
	// went back to the kernel (reclaim) or while it is in use.
	freed []time.Time
	dead  bool        // the process is gone (or misbehaved): no new work
	gone  atomic.Bool // dead, for readers without mu (the worker's sleep)
	why   string
	end   time.Time
	// closed keeps the last sockets that went away, for stats.
	closed []SockStats

	// events has a bit per slot whose engine socket reported readiness;
	// written by engine callbacks, taken by the worker.
	events []atomic.Uint64
	// carry has a bit per slot waiting to be serviced: what a pass
	// collected (attention, events) and its budget left for the next.
	carry []atomic.Uint64
	// words is how many bitmap words hold every slot ever attached (a
	// slot is taken lowest first): the worker scans no further, so a
	// session of a few sockets costs a few words per pass, not all of them.
	words atomic.Int32

	// Readiness bytes written into the app fds, and data's bytes left
	// out by lazy readiness (signal), for stats.
	wakes, skipped atomic.Uint64
	late           atomic.Uint64 // bytes owed too long, written by lateBytes
	// asyncOptFailed: an asynchronous SETSOCKOPT failed (logged once).
	asyncOptFailed bool
	// cursor is the slot the next pass starts at: sockets of a session
	// take turns too.
	cursor uint32
	// busiest is the most one pass did for this session (what the budget
	// bounds; tests look).
	busiest passWork
	done    chan struct{}

	// Owned by the worker that serves the session.
	reaped   time.Time // last hang-up sweep
	finished bool      // ended; the worker drops it
}

// sock is the daemon's side of one NUSE socket.
type sock struct {
	slot, gen uint32
	family    int
	es        stack.Socket
	engine    string // the name of es's engine
	pair      int    // the daemon's end of the socketpair
	pairIno   uint64 // its inode, for the server's table of held pairs
	engFDs    int    // the daemon's fds es holds (counted in srv.clientFDs)
	reusePort uint16 // bound with SO_REUSEPORT to this port (srv.ports)
	created   time.Time

	state  uint32 // abi.SS* bits, published to shared memory
	soErr  int32
	txTail uint64 // daemon-owned consumer counter of tx
	rxHead uint64 // daemon-owned producer counter of rx
	// The rings' counters when their pages last went back (or the shim
	// was asked to), and at the last idle sweep (trim).
	rxTrimmed, rxSwept uint64
	txTrimmed, txSwept uint64
	txBytes            atomic.Uint64
	rxBytes            atomic.Uint64
	drained            uint64 // bytes read from pair: the shim's junk (raw.go)
	// A direct socket's raw-read test held since rawSince with sig at
	// rawSig (raw.go).
	rawSince time.Time
	rawSig   uint32

	// What a fresh engine socket must be given again (renew): the
	// options set, in order, and an explicit bind.
	opts       []optSet
	congestion string
	bound      netip.AddrPort

	errTaken bool   // SO_ERROR has reported the engine socket's error
	rcvLowat uint32 // SO_RCVLOWAT (0: 1): readable from this many bytes
	// Readiness edges (signal): what the reader had been told of at the
	// last byte, and whether the engine reported a connection since.
	edgeHead              uint64
	edgeState             uint32
	edgeConn              bool
	owed                  bool      // lazy readiness: data waits without its byte (owe)
	owedSince             time.Time // ... since then
	pairShut              bool      // the pair is shut for writing (FIN or reset mirrored)
	pairHup               bool      // ... and for reading: the app fd polls HUP (reset, shut listener)
	pairCut               bool      // ... by letting go of our end: a failed connect (cutPair)
	appGone               bool      // our end read ECONNRESET: the app end was let go of
	lsnShut               bool      // a listener shut down (SHUT_RD or SHUT_RDWR)
	connecting, listening bool
	shutWr                bool   // SHUT_WR requested: after tx drains
	closing               bool   // the application closed it
	keep                  bool   // a listener handed on: parked at close (inherit.go)
	relay                 *relay // handed on (relay.go): takes over when the session lets go
	closeBy               time.Time
	local, remote         netip.AddrPort

	// The direct path (direct.go): the program moves this socket's bytes
	// in the connection's region; the daemon watches the counters.
	direct bool
	ds     stack.DirectSocket
	dfd    int // the engine's memfd of the region (not ours to close)
	dside  int
	dsize  uint64
	dc     stack.DirectCounts // as last checked
}

func (s *Session) logf(format string, args ...any) {
	s.srv.logf("session %d (pid %d %s): "+format, append([]any{s.ID, s.Pid, s.Comm}, args...)...)
}

// wake makes the worker look at the session now.
func (s *Session) wake() {
	s.amu.RLock()
	if !s.aclosed {
		s.a.Doorbell()
	}
	s.amu.RUnlock()
}

// kill ends a session that broke the protocol: its sockets are reset and
// the process sees its NUSE sockets fail. Called with mu held.
func (s *Session) kill(why string) {
	if !s.dead {
		s.logf("%s; ending the session", why)
		s.die(why)
	}
	if s.conn != nil {
		s.conn.Close() // the shim sees the hang-up at once
	}
	for _, so := range s.socks {
		switch {
		case so == nil:
		case so.relay != nil:
			s.handover(so) // its holder elsewhere is no part of this
		default:
			so.es.Abort()
			s.release(so)
		}
	}
}

// die marks the session dead. Called with mu held.
func (s *Session) die(why string) {
	s.dead = true
	s.gone.Store(true)
	s.why = why
}

// alloc takes a free slot, or returns false.
func (s *Session) alloc() (uint32, bool) {
	if len(s.free) == 0 {
		return 0, false
	}
	i := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	return i, true
}

// attach installs an engine socket in a slot. Called with mu held.
func (s *Session) attach(slot uint32, es stack.Socket, engine string, family, pair int, ino uint64) *sock {
	sh := s.a.Sock(slot)
	gen := s.gens[slot] + 1
	if gen == 0 {
		gen = 1
	}
	s.gens[slot] = gen
	s.a.Reset(slot)
	s.freed[slot] = time.Time{}
	if w := int32(slot/64) + 1; w > s.words.Load() {
		s.words.Store(w)
	}
	atomic.StoreUint32(&sh.Gen, gen)
	so := &sock{slot: slot, gen: gen, family: family, es: es, engine: engine, pair: pair, pairIno: ino, created: time.Now(), state: abi.SSOpen}
	atomic.StoreUint32(&sh.State, so.state)
	s.socks[slot] = so
	s.watch(so)
	return so
}

// watch has the engine report so's readiness to the worker.
func (s *Session) watch(so *sock) {
	slot := so.slot
	so.es.Notify(func(stack.Events) {
		s.events[slot/64].Or(1 << (slot % 64))
		s.wake()
	})
}

type optSet struct {
	o stack.Option
	v int
}

func (so *sock) setOpt(o stack.Option, v int) {
	for i := range so.opts {
		if so.opts[i].o == o {
			so.opts[i].v = v
			return
		}
	}
	so.opts = append(so.opts, optSet{o, v})
}

// renew puts a fresh engine socket in so's place, with so's options and
// explicit bind, after a failed connect or connect(AF_UNSPEC). Called with
// mu held.
func (s *Session) renew(so *sock) error {
	eng, err := s.srv.engine(so.engine)
	if err != nil {
		return err
	}
	es, err := eng.Socket(so.family)
	if err != nil {
		return err
	}
	so.es.Notify(nil)
	so.es.Abort()
	s.srv.unbind(so)
	for _, o := range so.opts {
		_ = es.SetOption(o.o, o.v)
	}
	if so.congestion != "" {
		_ = es.SetCongestion(so.congestion)
	}
	so.es = es
	if so.bound.IsValid() {
		reuse, _ := es.GetOption(stack.OptReusePort)
		if err := s.bindAllowed(so, so.bound, reuse != 0, func() error { return es.Bind(so.bound) }); err != nil {
			s.logf("socket %d: its bind to %v could not be made again on a fresh socket: %v", so.slot, so.bound, err)
			so.bound = netip.AddrPort{}
		}
	}
	so.state = abi.SSOpen
	so.direct, so.ds, so.dc = false, nil, stack.DirectCounts{}
	so.soErr, so.errTaken = 0, false
	so.connecting, so.listening, so.shutWr = false, false, false
	so.edgeHead, so.edgeState, so.edgeConn = so.rxHead, 0, false
	so.local, so.remote = netip.AddrPort{}, netip.AddrPort{}
	s.watch(so)
	return nil
}

// release frees a slot whose engine socket was closed or aborted.
func (s *Session) release(so *sock) {
	_ = s.countDirect(so) // direct.go: the last bytes, before the history
	if so.direct {
		so.ds.SetWaker(-1) // before its pair goes
	}
	so.es.Notify(nil)
	s.srv.unbind(so)
	s.dropPair(so.pair, so.pairIno)
	s.srv.clientFDs.Add(-int64(so.engFDs))
	so.engFDs = 0
	sh := s.a.Sock(so.slot)
	atomic.StoreUint32(&sh.State, abi.SSWrDead|abi.SSReset)
	s.socks[so.slot] = nil
	s.free = append(s.free, so.slot)
	s.freed[so.slot] = time.Now()
	state := "closed"
	if so.state&abi.SSRaw != 0 {
		state = "raw-reset" // raw.go: the reason stays in the history
	}
	s.closed = append(s.closed, s.sockStats(so, state))
	if len(s.closed) > maxClosedSocks {
		s.closed = s.closed[len(s.closed)-maxClosedSocks:]
	}
	s.srv.totals.add(so.txBytes.Load(), so.rxBytes.Load())
	if t := s.srv.engTotals[so.engine]; t != nil {
		t.add(so.txBytes.Load(), so.rxBytes.Load())
	}
}

// lookup finds the live socket a command names.
func (s *Session) lookup(slot, gen uint32) *sock {
	if slot >= uint32(len(s.socks)) {
		return nil
	}
	so := s.socks[slot]
	if so == nil || so.gen != gen || so.closing {
		return nil
	}
	return so
}

// pending reports whether anything waits for the worker.
// Only engine events count for a dead session: what its arena says is no
// longer anyone's request (and a hostile process could keep saying it).
func (s *Session) pending() bool {
	h := s.a.Hdr()
	dead := s.gone.Load()
	if !dead && atomic.LoadUint64(&h.CmdPending) != 0 {
		return true
	}
	for w := 0; w < int(s.words.Load()); w++ {
		if s.events[w].Load() != 0 || s.carry[w].Load() != 0 ||
			(!dead && atomic.LoadUint64(&h.Attention[w]) != 0) {
			return true
		}
	}
	return false
}

// pass does one round of work, within the session's budget (Limits
// PassSockets, PassBytes). Called with mu held.
func (s *Session) pass() bool {
	h := s.a.Hdr()
	did := false
	// Commands are bounded by their slots (64): all are served, the
	// asynchronous ones (CLOSE, keep-alive options) first: a command posted
	// after one, in this batch, must find it done, as it would have had its
	// poster waited.
	if !s.dead && atomic.LoadUint64(&h.CmdPending) != 0 {
		p := atomic.SwapUint64(&h.CmdPending, 0)
		var async uint64
		for q := p; q != 0; q &= q - 1 {
			i := bits.TrailingZeros64(q)
			if c := s.a.Cmd(i); atomic.LoadUint32(&c.State) == abi.CmdSubmitted && c.Flags&abi.CmdAsync != 0 {
				async |= 1 << i
			}
		}
		for _, q := range [2]uint64{async, p &^ async} {
			for ; q != 0; q &= q - 1 {
				s.command(bits.TrailingZeros64(q))
			}
		}
		did = true
	}
	evented := s.collect()
	return s.serve(evented) || did
}

// collect moves what asks for service into carry: the attention bits (a
// live session's) and the slots whose engine socket reported; it tells
// whether any had. Called with mu held.
func (s *Session) collect() (evented bool) {
	h := s.a.Hdr()
	for w := 0; w < int(s.words.Load()); w++ {
		var x uint64
		if !s.dead && atomic.LoadUint64(&h.Attention[w]) != 0 {
			x = atomic.SwapUint64(&h.Attention[w], 0)
		}
		if s.events[w].Load() != 0 {
			ev := s.events[w].Swap(0)
			s.connNews(w, ev)
			x |= ev
			evented = evented || ev != 0
		}
		if x != 0 {
			s.carry[w].Or(x)
		}
	}
	return evented
}

// connNews marks the listeners among the slots of word w that the engine
// reported on: the news is a connection (a readiness edge, see signal).
func (s *Session) connNews(w int, ev uint64) {
	for ; ev != 0; ev &= ev - 1 {
		slot := w*64 + bits.TrailingZeros64(ev)
		if slot < len(s.socks) && s.socks[slot] != nil && s.socks[slot].listening {
			s.socks[slot].edgeConn = true
		}
	}
}

// passWork is what one pass did for a session.
type passWork struct {
	socks int
	bytes uint64
	// acts counts the services that changed something a program or the
	// engine can see: bytes moved, the socket's state, a readiness
	// signal (written or left out), the slot freed.
	acts int
}

// serve services the slots in carry round-robin from the cursor until the
// pass's budget is spent; what is left stays in carry, and the worker does
// not sleep while it is there. evented: the engine reported on some of
// them. Called with mu held.
func (s *Session) serve(evented bool) bool {
	lim := s.srv.cfg.Limits
	var done passWork
	defer s.noteWork(&done)
	nw := int(s.words.Load())
	if nw == 0 {
		return false
	}
	w0, b0 := int(s.cursor/64)%nw, s.cursor%64
	// Word w0 twice: its bits from the cursor on first, those below last.
	for i := 0; i <= nw; i++ {
		w := (w0 + i) % nw
		x := s.carry[w].Load()
		switch i {
		case 0:
			x &= ^uint64(0) << b0
		case nw:
			x &^= ^uint64(0) << b0
		}
		for ; x != 0; x &= x - 1 {
			b := bits.TrailingZeros64(x)
			slot := uint32(w*64 + b)
			if done.socks >= lim.PassSockets || done.bytes >= uint64(lim.PassBytes) {
				s.cursor = slot // its turn comes first next pass
				return true
			}
			s.carry[w].And(^(uint64(1) << b))
			if slot >= uint32(len(s.socks)) || s.socks[slot] == nil {
				continue
			}
			so := s.socks[slot]
			before := so.txBytes.Load() + so.rxBytes.Load()
			state, signals := so.state, s.wakes.Load()+s.skipped.Load()
			s.service(so)
			done.socks++
			moved := so.txBytes.Load() + so.rxBytes.Load() - before
			done.bytes += moved
			if moved != 0 || so.state != state || s.wakes.Load()+s.skipped.Load() != signals || s.socks[slot] != so {
				done.acts++
			}
		}
	}
	// With the engine quiet, a service that changed nothing is not work: a
	// thread blocked in the shim reminds the daemon of its socket once a
	// second (attention), and counted as work each reminder kept the
	// worker in its busy window (1 ms sleeps for 100 ms, the control
	// connections nudged): idle programs kept an idle daemon waking
	// hundreds of times a second. The engine's news (an ACK, say) still
	// counts, moving or not: traffic is under way, and the worker's spin
	// goes on from it.
	return done.acts > 0 || (evented && done.socks > 0)
}

func (s *Session) noteWork(w *passWork) {
	s.busiest.socks = max(s.busiest.socks, w.socks)
	s.busiest.bytes = max(s.busiest.bytes, w.bytes)
}

// again leaves so in carry for the next pass (it has more to do).
func (s *Session) again(so *sock) {
	s.carry[so.slot/64].Or(1 << (so.slot % 64))
}

// reapHangups closes sockets whose every application fd is gone without a
// close() the shim saw (a forked holder that _exit()ed, an fd closed behind
// the shim's back): the daemon's end of the socketpair then reads hang-up.
// Called with mu held, when the worker is idle.
func (s *Session) reapHangups() {
	var fds []unix.PollFd
	var socks []*sock
	for _, so := range s.socks {
		if so != nil && !so.closing && !so.pairCut { // a cut pair tells nothing
			fds = append(fds, unix.PollFd{Fd: int32(so.pair), Events: unix.POLLRDHUP | unix.POLLIN})
			socks = append(socks, so)
		}
	}
	if len(fds) == 0 {
		return
	}
	if _, err := unix.Poll(fds, 0); err != nil {
		return
	}
	for i, so := range socks {
		gone := fds[i].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0
		if so.pairHup {
			// Our own shutdown polls HUP|RDHUP: the app end's close
			// shows as our end's error (hangUp's byte was queued there).
			gone = fds[i].Revents&unix.POLLERR != 0 || so.appGone
		}
		// Bytes past the shim: not on a hung-up pair, where the app's end
		// and its queue are gone (the close path checks what we hold).
		hup := fds[i].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0
		if !hup && s.socks[so.slot] == so && so.state&abi.SSConnected != 0 && so.state&abi.SSRaw == 0 {
			n := uint64(0)
			if fds[i].Revents&unix.POLLIN != 0 {
				n = s.rawQueued(so)
			}
			if n > 0 || s.rawRead(so) {
				s.rawReset(so, n) // raw.go
				s.service(so)
			}
		}
		if gone && s.socks[so.slot] == so {
			so.closing = true
			so.closeBy = time.Now().Add(s.srv.cfg.Linger)
			s.service(so)
		}
	}
}

// reclaimAfter is how long a slot stays free before its ring pages go
// back to the kernel: a server's next connection reuses a slot at once.
const reclaimAfter = time.Second

// reclaim gives back the ring pages of slots free for a while, and those
// of idle rings (trim). Called with mu held, when the worker is idle.
// lateBytes is the backstop of lazy readiness: a byte owed longer than
// lazyLate is written now, whatever the program says. A program that waits
// in a way the shim does not see (a raw epoll_wait system call, io_uring)
// then stalls for a moment instead of for ever. Called with mu held, when
// the worker is idle.
func (s *Session) lateBytes(now time.Time) {
	for _, so := range s.socks {
		if so == nil || !so.owed || now.Sub(so.owedSince) < lazyLate || so.closing {
			continue
		}
		sh := s.a.Sock(so.slot)
		n := atomic.LoadUint32(&sh.Sig)
		if s.readable(so) && !so.pairShut && (n == abi.SigNone || (so.rxMark() != so.edgeHead && n < maxEdges)) {
			atomic.AddUint32(&sh.Sig, 1)
			if !s.writeByte(so, sh) {
				continue
			}
			s.late.Add(1)
			so.edgeHead, so.edgeState = so.rxMark(), so.state&edgeStates
		}
		s.owe(so, sh, false)
	}
}

// lazyLate: see lateBytes. Far beyond an event loop's turn, short
// against a hang.
const lazyLate = 200 * time.Millisecond

func (s *Session) reclaim(now time.Time) {
	for i, t := range s.freed {
		if !t.IsZero() && now.Sub(t) > reclaimAfter && s.socks[i] == nil {
			s.a.Reclaim(uint32(i))
			s.freed[i] = time.Time{}
		}
	}
	for _, so := range s.socks {
		if so != nil && !so.direct {
			s.trim(so)
		}
	}
}

// A ring keeps every page it has cycled through, where a kernel socket's
// buffers give memory back once read: a connection that has moved a lot
// would hold its whole rings for good. So the pages of a ring that has
// been empty since the last sweep (half a second at least), and has moved
// on by a page since its last trim, go back: the daemon gives back the rx
// ring's (it is the producer), and asks the shim to give back the tx
// ring's at its next write. Only idle rings: a busy ring's pages come
// back as faults in both the program and the daemon (nginx + wrk -c 32
// ran at 0.7x its speed with rings trimmed every 50 ms).
//
// trim is reclaim's per-socket part. Called with mu held.
func (s *Session) trim(so *sock) {
	sh := s.a.Sock(so.slot)
	if so.rxHead == so.rxSwept && so.rxHead-so.rxTrimmed >= arena.PageSize &&
		atomic.LoadUint64(&sh.Rx.Tail) == so.rxHead {
		s.a.TrimRx(so.slot, so.rxHead)
		so.rxTrimmed = so.rxHead
	}
	so.rxSwept = so.rxHead
	if so.txTail == so.txSwept && so.txTail-so.txTrimmed >= arena.PageSize && s.txEmpty(so) {
		atomic.OrUint32(&sh.DaemonWait, abi.DWaitTrimTx)
		so.txTrimmed = so.txTail
	}
	so.txSwept = so.txTail
}

// lingering counts closed sockets still sending what the application left
// in their tx rings; the arena stays mapped until they are done.
func (s *Session) lingering() int {
	n := 0
	now := time.Now()
	for _, so := range s.socks {
		if so == nil {
			continue
		}
		if so.closing && now.After(so.closeBy) {
			so.es.Abort()
			s.release(so)
			continue
		}
		n++
	}
	return n
}

// command executes command slot i.
func (s *Session) command(i int) {
	c := s.a.Cmd(i)
	if atomic.LoadUint32(&c.State) != abi.CmdSubmitted {
		return // not posted properly: ignore, the poster waits in vain
	}
	cp := *c // copy first: the application may scribble on the slot
	req, err := decodeCmd(&cp, uint32(len(s.socks)))
	var res int32
	var out cmdOut
	switch async := cp.Flags&abi.CmdAsync != 0; {
	case async && cp.Op != abi.OpClose && cp.Op != abi.OpSetsockopt:
		res = -int32(syscall.EINVAL)
	case async:
		// Nobody waits for the answer (CLOSE's is always 0; the shim
		// checked a keep-alive option's value as Linux does): the slot
		// is free again at once, and no longer ours to write.
		if err == nil {
			if r := s.exec(req, &out); r != 0 && cp.Op == abi.OpSetsockopt && !s.asyncOptFailed {
				s.asyncOptFailed = true // once per session: a program's own doing
				s.logf("an unanswered setsockopt(%d, %d) failed: %v", cp.Arg0, cp.Arg1, syscall.Errno(-r))
			}
		}
		atomic.StoreUint32(&c.State, abi.CmdFree)
		return
	case err != nil:
		res = -int32(syscall.EINVAL)
	default:
		res = s.exec(req, &out)
	}
	if out.addrLen > 0 {
		copy(c.Addr[:], out.addr[:out.addrLen])
		c.AddrLen = out.addrLen
	}
	if out.optLen > 0 {
		copy(c.Opt[:], out.opt[:out.optLen])
		c.OptLen = out.optLen
	}
	c.Result = res
	atomic.StoreUint32(&c.State, abi.CmdDone)
	if atomic.LoadUint32(&c.Waiting) != 0 {
		futex.Wake(&c.State, 1)
	}
}

type cmdOut struct {
	addr    [abi.AddrLen]byte
	addrLen uint32
	opt     [abi.OptLen]byte
	optLen  uint32
}

// exec runs one decoded command and returns its result (>= 0 or -errno).
func (s *Session) exec(r request, out *cmdOut) int32 {
	switch r.op {
	case abi.OpSocket:
		return s.spareSocket(r, out)
	case abi.OpAccept:
		return s.spareAccept(r, out)
	}
	so := s.lookup(r.sock, r.gen)
	if so == nil {
		return -int32(syscall.EBADF)
	}
	defer s.service(so)
	switch r.op {
	case abi.OpBind:
		ap, err := parseSockaddr(r.addr, so.family)
		if err != nil {
			return errno(err)
		}
		reuse, _ := so.es.GetOption(stack.OptReusePort)
		err = s.bindAllowed(so, ap, reuse != 0, func() error { return so.es.Bind(ap) })
		if err == nil {
			so.bound = ap
		}
		return errno(err)
	case abi.OpListen:
		backlog := int(int32(r.arg0))
		if backlog <= 0 || backlog > 4096 {
			backlog = 4096
		}
		if so.connecting || so.state&abi.SSConnected != 0 {
			return -int32(syscall.EINVAL)
		}
		if err := so.es.Listen(backlog); err != nil {
			return errno(err)
		}
		so.listening, so.lsnShut = true, false
		so.state |= abi.SSListening
		so.state &^= abi.SSRdEOF // listening anew after a shutdown
		s.share(so)              // inherit.go: it may be handed on
		return 0
	case abi.OpConnect:
		if len(r.addr) >= 2 && binary.LittleEndian.Uint16(r.addr) == unix.AF_UNSPEC {
			// connect(AF_UNSPEC) dissolves the association: the socket
			// is as new (its options and explicit bind kept), as in Linux.
			return errno(s.renew(so))
		}
		if so.listening {
			return -int32(syscall.EISCONN)
		}
		if so.connecting {
			return -int32(syscall.EALREADY)
		}
		if so.state&abi.SSConnected != 0 {
			return -int32(syscall.EISCONN)
		}
		if so.state&(abi.SSError|abi.SSWrDead|abi.SSReset) != 0 {
			// A connect that failed leaves Linux's socket closed and
			// ready to connect again; an engine socket is spent, so a
			// fresh one takes its place.
			if err := s.renew(so); err != nil {
				return errno(err)
			}
		}
		ap, err := parseSockaddr(r.addr, so.family)
		if err != nil {
			return errno(err)
		}
		switch err := so.es.Connect(ap); {
		case err == nil: // connected at once (shm): as when a connect completes
			so.state |= abi.SSConnected
			so.local, _ = so.es.LocalAddr()
			so.remote, _ = so.es.RemoteAddr()
			s.goDirect(so)
			return 0
		case errors.Is(err, stack.ErrInProgress):
			so.connecting = true
			so.state |= abi.SSConnecting
			return -int32(syscall.EINPROGRESS)
		default:
			return errno(err)
		}
	case abi.OpShutdown:
		how := int(r.arg0)
		if how < unix.SHUT_RD || how > unix.SHUT_RDWR {
			return -int32(syscall.EINVAL)
		}
		if so.listening {
			// As Linux: SHUT_RD stops a listener (pending connections
			// are reset) and accept() fails with EINVAL; the fd turns
			// readable to wake the threads blocked in accept.
			if how != unix.SHUT_WR {
				_ = so.es.Shutdown(unix.SHUT_RD)
				so.listening, so.lsnShut = false, true
				so.state &^= abi.SSListening | abi.SSAcceptQ
				so.state |= abi.SSRdEOF
			}
			return 0
		}
		if so.state&abi.SSConnected == 0 {
			return -int32(syscall.ENOTCONN)
		}
		// SHUT_RD is the shim's business (reads answer 0 once the ring
		// is empty): Linux still takes in what the peer sends, and a
		// read returns it, so the engine's read side stays open.
		if how != unix.SHUT_RD {
			so.shutWr = true // after the tx ring drains (service)
		}
		return 0
	case abi.OpClose:
		so.closing = true
		so.closeBy = time.Now().Add(s.srv.cfg.Linger)
		return 0
	case abi.OpGetsockname:
		ap, err := so.es.LocalAddr()
		if err != nil {
			return errno(err)
		}
		out.addrLen = putSockaddr(out.addr[:], so.family, ap)
		return 0
	case abi.OpGetpeername:
		if so.state&abi.SSConnected == 0 {
			return -int32(syscall.ENOTCONN)
		}
		ap, err := so.es.RemoteAddr()
		if err != nil {
			return errno(err)
		}
		out.addrLen = putSockaddr(out.addr[:], so.family, ap)
		return 0
	case abi.OpSetsockopt:
		if r.arg0 == solSocket && r.arg1 == soRcvLowat {
			// The daemon's own: it decides when the fd polls readable.
			if len(r.opt) < 4 {
				return -int32(syscall.EINVAL)
			}
			v := int32(binary.LittleEndian.Uint32(r.opt))
			so.rcvLowat = uint32(max(v, 1))
			if v < 0 {
				so.rcvLowat = math.MaxInt32
			}
			return 0
		}
		if r.arg0 == ipprotoTCP && r.arg1 == tcpCongestion {
			name := r.opt
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			err := so.es.SetCongestion(string(name))
			if err == nil {
				so.congestion = string(name)
			}
			return errno(err)
		}
		o, ok := sockOption(r.arg0, r.arg1)
		if !ok {
			return -int32(syscall.ENOPROTOOPT)
		}
		v, err := optValue(o, r.opt)
		if err != nil {
			return errno(err)
		}
		err = so.es.SetOption(o, v)
		if err == nil {
			so.setOpt(o, v)
		}
		return errno(err)
	case abi.OpGetsockopt:
		switch {
		case r.arg0 == ipprotoTCP && r.arg1 == tcpInfo:
			// Too big for the slot: the answer goes to the socket's
			// info area, the result is its length.
			txq, _ := s.a.TxPending(so.slot, so.txTail)
			return int32(encodeTCPInfo(s.a.Sock(so.slot).Info[:], so.es.Info(), so.txBytes.Load(), so.rxBytes.Load(), txq))
		case r.arg0 == ipprotoTCP && r.arg1 == tcpCongestion:
			name, err := so.es.Congestion()
			if err != nil {
				return errno(err)
			}
			var buf [16]byte // TCP_CA_NAME_MAX, NUL-padded as Linux gives it
			copy(buf[:15], name)
			n := min(r.optcap, uint32(len(buf)))
			copy(out.opt[:], buf[:n])
			out.optLen = n
			return 0
		}
		if r.optcap < 4 {
			return -int32(syscall.EINVAL)
		}
		if r.arg0 == solSocket && r.arg1 == soRcvLowat {
			out.optLen = putOptValue(out.opt[:], 0, int(max(so.rcvLowat, 1)))
			return 0
		}
		if r.arg0 == solSocket && r.arg1 == soError {
			v := so.soErr
			if v == 0 && so.state&abi.SSConnecting == 0 && !so.errTaken {
				if err := so.es.ConnectResult(); err != nil {
					v = -errno(err)
				}
			}
			// Read once, the error is gone (the engine would say it
			// again: its socket stays failed until renew).
			so.errTaken = so.errTaken || v != 0
			so.soErr = 0
			so.state &^= abi.SSError
			out.optLen = putOptValue(out.opt[:], 0, int(v))
			return 0
		}
		o, ok := sockOption(r.arg0, r.arg1)
		if !ok {
			return -int32(syscall.ENOPROTOOPT)
		}
		if o == stack.OptLinger && r.optcap < 8 {
			return -int32(syscall.EINVAL)
		}
		v, err := so.es.GetOption(o)
		if err != nil {
			return errno(err)
		}
		out.optLen = putOptValue(out.opt[:], o, v)
		return 0
	}
	return -int32(syscall.EINVAL)
}

// errno turns an engine error into -errno (0 for nil).
func errno(err error) int32 {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return -int32(e)
	}
	return -int32(syscall.EIO)
}

// service brings one socket up to date: connect completion, tx drain, rx
// fill, accept queue, deferred shutdown and close, then publishes its
// state and readiness. Called with mu held.
func (s *Session) service(so *sock) {
	if s.socks[so.slot] != so {
		return
	}
	sh := s.a.Sock(so.slot)
	// The engine's readiness tells only a connect's end and a listener's
	// queue; a connected socket's pumps find out by reading and writing.
	// Asked of every socket, it cost the kernel engine a poll(2) per
	// service and gVisor's endpoint two of its locks.
	var ev stack.Events
	if so.connecting || so.listening {
		ev = so.es.Readiness()
	}
	if so.connecting && ev&(stack.EventOut|stack.EventErr|stack.EventHup) != 0 {
		so.connecting = false
		so.state &^= abi.SSConnecting
		if err := so.es.ConnectResult(); err != nil {
			so.soErr = -errno(err)
			so.state |= abi.SSError | abi.SSWrDead
		} else {
			so.state |= abi.SSConnected
			so.local, _ = so.es.LocalAddr()
			so.remote, _ = so.es.RemoteAddr()
			s.goDirect(so)
		}
	}
	if so.state&abi.SSConnected != 0 {
		if so.direct {
			s.pumpDirect(so)
		} else if !s.pumpTx(so) || !s.pumpRx(so) {
			return // the session was killed
		}
	}
	if so.listening {
		if ev&stack.EventIn != 0 {
			so.state |= abi.SSAcceptQ
		} else {
			so.state &^= abi.SSAcceptQ
		}
	}
	if so.shutWr && s.txEmpty(so) {
		so.shutWr = false
		_ = so.es.Shutdown(unix.SHUT_WR)
	}
	if so.closing && so.keep && so.listening {
		s.park(so) // inherit.go: handed on, its new holder may adopt it
		return
	}
	if so.closing && so.relay != nil {
		s.handover(so) // handed on: the relay takes the connection
		return
	}
	if so.closing {
		// Only a connected socket has anywhere to send its tx ring; what
		// an unconnected one holds (or claims to) is dropped at once.
		if s.txEmpty(so) || so.state&(abi.SSWrDead|abi.SSReset) != 0 || so.state&abi.SSConnected == 0 {
			if n := s.rawQueued(so); n > 0 && so.state&abi.SSConnected != 0 {
				// The program's last bytes went past the shim: the peer
				// must not take the FIN for the end of what was sent.
				s.rawReset(so, n)
			}
			_ = s.countDirect(so) // while the region is still there
			if s.rxUnread(so) || so.state&abi.SSRaw != 0 {
				so.es.Abort() // unread data at close: reset, as Linux does
			} else {
				so.es.Close()
			}
			s.release(so)
		}
		return
	}
	atomic.StoreInt32(&sh.SoError, so.soErr)
	atomic.StoreUint32(&sh.State, so.state)
	atomic.StoreUint64(&sh.TxBytes, so.txBytes.Load())
	atomic.StoreUint64(&sh.RxBytes, so.rxBytes.Load())
	s.signal(so, sh)
	// Unfill: NONE first, then read. The shim fills again on every EAGAIN,
	// so whatever it writes after our reads is covered by its next DONE.
	// A failed connect's junk stays until hangUp has cut the pair with it
	// (the shim may store DONE between hangUp's look and this one).
	if atomic.LoadUint32(&sh.Fill) == abi.FillDone && s.writableOrWait(so) && (!failedConnect(so) || so.pairHup) &&
		atomic.CompareAndSwapUint32(&sh.Fill, abi.FillDone, abi.FillNone) {
		n, gone := drain(so.pair)
		so.appGone = gone || so.appGone
		so.drained += n
		if so.drained > atomic.LoadUint64(&sh.FillBytes) {
			s.rawReset(so, so.drained-atomic.LoadUint64(&sh.FillBytes))
		}
	}
}

// maxEdges bounds the readiness bytes queued in one app fd (the shim takes
// all but one back at each read or accept that leaves the socket readable,
// so this is reached only by a program that never reads).
const maxEdges = 64

// signal mirrors readability on the app fd (PROTOCOL.md "Readiness").
// sig counts the bytes queued there: the first makes the fd readable; one
// more whenever something new arrives while it is (data, a connection, EOF,
// a reset) gives an EPOLLET waiter the edge Linux would. The peer's FIN,
// a reset and a listener's shutdown hang the pair up (hangUp). Called with
// mu held.
func (s *Session) signal(so *sock, sh *abi.Sock) {
	// After the byte, and whether or not the socket is readable: a failed
	// connect whose error SO_ERROR has taken is not.
	defer s.hangUp(so)
	if !s.readable(so) {
		so.edgeHead, so.edgeState, so.edgeConn = so.rxMark(), so.state&edgeStates, false
		s.owe(so, sh, false)
		return
	}
	n := atomic.LoadUint32(&sh.Sig)
	if s.lazy(so, sh) {
		// Lazy readiness (PROTOCOL.md): the program's waits for this
		// socket's data look at its ring, and every thread about to sleep
		// on it counts in Watched, then looks again. A queued byte already
		// wakes a sleeper (the program is level-triggered here: no edges
		// to give); none, and nobody sleeps on it: the byte is left out.
		// The ring's head was stored before this load (pumpRx), so a
		// thread that counted itself after it sees the data (Dekker).
		// Edge-triggered (LazyET): while watched, every arrival is an
		// edge, as when loud; unwatched, the edge is owed too (edgeHead
		// stays, so the byte that comes later is one).
		et := atomic.LoadUint32(&sh.Lazy) == abi.LazyET
		switch {
		case n != abi.SigNone && !et:
			so.edgeHead, so.edgeState, so.edgeConn = so.rxMark(), so.state&edgeStates, false
			s.owe(so, sh, false)
			return
		case atomic.LoadUint32(&sh.Watched) == 0:
			// Owed first, then the shim's word again: a shim that made
			// the socket loud meanwhile (it stores lazy, then loads
			// lazy_owed) gets its byte from us or waits for it.
			s.owe(so, sh, true)
			if atomic.LoadUint32(&sh.Lazy) != abi.LazyNone {
				if !et {
					so.edgeHead, so.edgeState, so.edgeConn = so.rxMark(), so.state&edgeStates, false
				}
				s.skipped.Add(1)
				return
			}
		}
	}
	news := so.rxMark() != so.edgeHead || so.state&edgeStates&^so.edgeState != 0 || so.edgeConn
	if !so.pairShut && (n == 0 || (news && n < maxEdges)) {
		// Counted first, written after (MSG_DONTWAIT, never a plain
		// write: the client shares this open file description and may
		// have made it blocking). The shim then never leaves a byte
		// behind: a stray one costs a level-triggered program a wasted
		// wake-up per message (measured: redis GET at 0.6x).
		v := atomic.AddUint32(&sh.Sig, 1)
		// The program may read without waiting for us (a direct
		// socket's reader; lazy readiness's scan, or any reader that is
		// awake): if it took every byte since we looked, a byte now would
		// poll readable with nothing to read (EAGAIN after epoll said
		// readable: wrk counts that as an error). Our count first, then
		// its tail (it stores its tail, then takes counts): if it did not
		// take our count, it will not wait for the byte.
		if so.state&(abi.SSRdEOF|abi.SSReset|abi.SSError|abi.SSAcceptQ) == 0 && s.unread(so) == 0 &&
			atomic.CompareAndSwapUint32(&sh.Sig, v, v-1) {
			so.edgeHead, so.edgeState, so.edgeConn = so.rxMark(), so.state&edgeStates, false
			return
		}
		s.writeByte(so, sh)
	}
	so.edgeHead, so.edgeState, so.edgeConn = so.rxMark(), so.state&edgeStates, false
	s.owe(so, sh, false)
}

// writeByte writes the readiness byte the caller counted in Sig (the count
// goes back if the write fails) and reports whether it went.
func (s *Session) writeByte(so *sock, sh *abi.Sock) bool {
	if err := unix.Sendto(so.pair, []byte{1}, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil); err != nil {
		atomic.AddUint32(&sh.Sig, ^uint32(0))
		return false
	}
	s.wakes.Add(1)
	return true
}

// lazy: may the readiness byte of so's data be left out (PROTOCOL.md
// "Lazy readiness")? Only the daemon writes a daemon-served socket's
// bytes; a direct socket's peer writes them too and knows nothing of
// this. Readable for anything but data (EOF, a reset, an error, a
// connection), the byte always goes. The program's word is trusted only
// for its own sockets' wake-ups.
func (s *Session) lazy(so *sock, sh *abi.Sock) bool {
	return !so.direct && !so.edgeConn && so.state&(abi.SSRdEOF|abi.SSReset|abi.SSError|abi.SSAcceptQ) == 0 &&
		atomic.LoadUint32(&sh.Lazy) != 0
}

// owe records whether so's data waits without its readiness byte: the
// shim that makes the socket loud again waits for LazyOwed to clear (the
// byte is there by then). The daemon keeps its own copy (so.owed): the
// shared word is the program's to scribble on.
func (s *Session) owe(so *sock, sh *abi.Sock, owed bool) {
	if so.owed != owed || (owed && atomic.LoadUint32(&sh.LazyOwed) == 0) {
		if owed && !so.owed {
			so.owedSince = time.Now()
		}
		so.owed = owed
		v := uint32(0)
		if owed {
			v = 1
		}
		atomic.StoreUint32(&sh.LazyOwed, v)
	}
}

// hangUp mirrors the end of a connection on the app fd. Linux polls
// IN|RDHUP from the peer's FIN on: we shut the pair for writing. A reset
// polls HUP as well: we shut it both ways, which sets both shutdown bits
// on the app end. A failed connect and a listener shut down cut it. Before the first shutdown
// one uncounted byte goes into the app end (the shim takes only the bytes
// sig counts), so that the app end never closes empty: its close then
// sets our end's error, which is how reapHangups tells a closed app end
// from our own shutdown. Called with mu held.
func (s *Session) hangUp(so *sock) {
	conn := so.state&abi.SSConnected != 0
	hup := conn && so.state&abi.SSReset != 0
	shut := hup || (conn && so.state&abi.SSRdEOF != 0)
	if so.pairHup || (so.pairShut && !hup) {
		return
	}
	if failedConnect(so) || (so.lsnShut && !so.listening) {
		// A failed connect: Linux's socket polls ERR too, which takes
		// letting go of our end while the junk the shim filled it with
		// at connect is queued there. The shim stores DONE after its
		// junk and rings when it sees the failure, so we wait for that.
		// A listener shut down: the shim puts a closed socket under its
		// fds, and its close of this app end must not read as the
		// program's (reapHangups looks at no cut pair).
		if failedConnect(so) && atomic.LoadUint32(&s.a.Sock(so.slot).Fill) != abi.FillDone {
			return
		}
		unshare(so) // inherit.go: its named dup must not hold the pair up
		if cutPair(so) {
			return
		}
		shut, hup = true, true
	}
	if !shut {
		return
	}
	if !so.pairShut {
		_ = unix.Sendto(so.pair, []byte{0}, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil)
	}
	how := unix.SHUT_WR
	if hup {
		how = unix.SHUT_RDWR
	}
	_ = unix.Shutdown(so.pair, how)
	so.pairShut, so.pairHup = true, hup
}

// failedConnect: a connect failed and the socket has not connected since.
func failedConnect(so *sock) bool {
	return so.state&(abi.SSConnected|abi.SSWrDead) == abi.SSWrDead
}

// cutPair lets go of our end of so's pair with the shim's junk unread in
// it: af_unix then sets ECONNRESET on the app end, which polls
// IN|OUT|ERR|HUP|RDHUP as Linux's socket after a failed connect, until
// SO_ERROR (the shim reads the app end's error too). (A shut listener's
// fds get another socket from the shim; only copies it cannot reach, a
// forked process's, keep this end.) The fd number stays
// ours, on an unconnected socket, so its accounting and every later call
// on it stay as they were; the shim gives the socket a fresh pair
// (repair) when it connects again. Called with mu held.
func cutPair(so *sock) bool {
	ph, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(ph)
	if unix.Dup3(ph, so.pair, unix.O_CLOEXEC) != nil {
		return false
	}
	so.pairShut, so.pairHup, so.pairCut = true, true, true
	return true
}

// edgeStates are the state bits whose arrival is news to a reader.
const edgeStates = abi.SSRdEOF | abi.SSReset | abi.SSError | abi.SSAcceptQ

// drain empties the daemon's end of a socketpair (what the shim wrote to
// make it unwritable), without ever blocking: see service. It returns the
// bytes it read, and whether the read took our end's error: the app end
// was closed with bytes queued (reapHangups).
func drain(fd int) (uint64, bool) {
	var buf [4096]byte
	var got uint64
	for i := 0; i < 64; i++ {
		n, _, err := unix.Recvfrom(fd, buf[:], unix.MSG_DONTWAIT)
		if n <= 0 || err != nil {
			return got, err == unix.ECONNRESET
		}
		got += uint64(n)
	}
	return got, false
}

// unread is how much of what so received its program has not read yet
// (its tail loaded now).
func (s *Session) unread(so *sock) uint64 {
	if so.direct {
		return so.ds.Unread()
	}
	return so.rxHead - atomic.LoadUint64(&s.a.Sock(so.slot).Rx.Tail)
}

func (s *Session) readable(so *sock) bool {
	if so.state&(abi.SSRdEOF|abi.SSReset|abi.SSError|abi.SSAcceptQ) != 0 {
		return true
	}
	if so.direct {
		return so.dc.Unread() >= uint64(max(so.rcvLowat, 1))
	}
	// SO_RCVLOWAT: fewer bytes than it do not make the socket readable.
	tail := atomic.LoadUint64(&s.a.Sock(so.slot).Rx.Tail)
	return tail != so.rxHead && so.rxHead-tail >= uint64(max(so.rcvLowat, 1))
}

func (s *Session) writable(so *sock) bool {
	if so.connecting || so.listening {
		return false // a listener never polls writable (the shim filled it)
	}
	if so.state&(abi.SSWrDead|abi.SSReset|abi.SSError) != 0 {
		return true
	}
	// Writable again once a quarter of the ring is free (like the kernel's
	// and gVisor's half-buffer rule): waking a writer for a few bytes only
	// makes it fill the ring and sleep again.
	if so.direct {
		return so.dc.Unsent() <= so.dsize-so.dsize/4
	}
	n, err := s.a.TxPending(so.slot, so.txTail)
	size := uint64(s.a.L.RingSize)
	return err == nil && n <= size-size/4
}

func (s *Session) txEmpty(so *sock) bool {
	if so.direct {
		return true // its bytes are in the peer's ring already
	}
	n, err := s.a.TxPending(so.slot, so.txTail)
	return err != nil || n == 0
}

func (s *Session) rxUnread(so *sock) bool {
	if so.direct {
		return so.dc.Unread() > 0
	}
	return atomic.LoadUint64(&s.a.Sock(so.slot).Rx.Tail) != so.rxHead
}

// pumpTx hands tx ring data to the engine. It returns false if it killed
// the session.
func (s *Session) pumpTx(so *sock) bool {
	sh := s.a.Sock(so.slot)
	n, err := s.a.TxPending(so.slot, so.txTail)
	if err != nil {
		s.kill(fmt.Sprintf("socket %d tx ring: %v", so.slot, err))
		return false
	}
	if so.state&abi.SSWrDead != 0 {
		so.txTail += n // nowhere to send it: drop, the shim reports EPIPE
		atomic.StoreUint64(&sh.Tx.Tail, so.txTail)
		return true
	}
	if n > 0 {
		// The shim rewound the empty ring (arena.RewindAt): start at its
		// start, and give the skipped room back at once.
		if t := arena.SkipTo(so.txTail+n, so.txTail, atomic.LoadUint64(&sh.Tx.Skip)); t != so.txTail {
			n -= t - so.txTail
			so.txTail = t
			atomic.StoreUint64(&sh.Tx.Tail, t)
		}
	}
	data := s.a.Tx(so.slot)
	for n > 0 {
		p, _ := arena.Span(data, so.txTail, n)
		w, err := so.es.Write(p)
		if w > 0 {
			so.txTail += uint64(w)
			n -= uint64(w)
			so.txBytes.Add(uint64(w))
			atomic.StoreUint64(&sh.Tx.Tail, so.txTail)
		}
		if err != nil {
			if !errors.Is(err, stack.ErrWouldBlock) {
				so.state |= abi.SSWrDead
				if so.soErr == 0 && !errors.Is(err, syscall.EPIPE) {
					so.soErr = -errno(err)
					so.state |= abi.SSError
				}
			}
			so.state |= abi.SSTxStall
			return true
		}
		if w < len(p) {
			break
		}
	}
	so.state &^= abi.SSTxStall
	return true
}

// pumpRx moves data from the engine into the rx ring. It returns false if it
// killed the session.
func (s *Session) pumpRx(so *sock) bool {
	if so.state&(abi.SSRdEOF|abi.SSReset) != 0 {
		return true
	}
	sh := s.a.Sock(so.slot)
	data := s.a.Rx(so.slot)
	// At most a ring's worth per call: a program that reads as fast as
	// the engine delivers would otherwise keep the worker here.
	left := uint64(s.a.L.RingSize)
	for {
		if left == 0 {
			s.again(so)
			return true
		}
		free, err := s.a.RxFree(so.slot, so.rxHead)
		if err != nil {
			s.kill(fmt.Sprintf("socket %d rx ring: %v", so.slot, err))
			return false
		}
		if free == 0 {
			// Ask the shim to ring when it makes room, then look again in
			// case it did so in between.
			atomic.OrUint32(&sh.DaemonWait, abi.DWaitRxSpace)
			if free, err = s.a.RxFree(so.slot, so.rxHead); err != nil || free == 0 {
				return true
			}
		}
		atomic.AndUint32(&sh.DaemonWait, ^uint32(abi.DWaitRxSpace))
		was, skip := so.rxHead, uint64(0)
		if free == uint64(len(data)) {
			free, skip = s.rewindRx(so, sh, free)
		}
		p, _ := arena.Span(data, so.rxHead, min(free, left))
		n, eof, err := so.es.Read(p)
		if n == 0 && so.rxHead != was {
			// No bytes after all: no rewind. The skip goes back too: left
			// in place, it would be passed by bytes written from was on,
			// and the shim would jump over them.
			so.rxHead = was
			atomic.StoreUint64(&sh.Rx.Skip, skip)
		}
		if n > 0 {
			left -= uint64(n)
			so.rxHead += uint64(n)
			so.rxBytes.Add(uint64(n))
			atomic.StoreUint64(&sh.Rx.Head, so.rxHead)
		}
		switch {
		case eof:
			so.state |= abi.SSRdEOF
			return true
		case err == nil:
		case errors.Is(err, stack.ErrWouldBlock):
			return true
		default:
			so.state |= abi.SSReset | abi.SSWrDead | abi.SSError
			if so.soErr == 0 {
				so.soErr = -errno(err)
			}
			return true
		}
		// A short read is not the end: loop until the engine says
		// would-block, or EOF (a FIN queued behind the data).
	}
}

// rewindRx rewinds so's empty rx ring (arena.RewindAt) when what the
// engine holds fits before the next byte's place, and returns the room
// then left (the ring was empty: free is its size) and the skip it
// replaced, for the caller to put back if the read brings nothing.
// Engines that cannot say how much they hold never rewind.
func (s *Session) rewindRx(so *sock, sh *abi.Sock, free uint64) (room, oldSkip uint64) {
	off := so.rxHead & (free - 1)
	if off < arena.RewindAt {
		return free, 0
	}
	q, ok := so.es.(stack.RxQueuer)
	if !ok {
		return free, 0
	}
	n := q.RxQueued()
	if n <= 0 {
		return free, 0
	}
	h := arena.Rewind(so.rxHead, free, uint64(n))
	if h == so.rxHead {
		return free, 0
	}
	oldSkip = atomic.LoadUint64(&sh.Rx.Skip)
	// Before Head, which the read after this publishes with its bytes.
	atomic.StoreUint64(&sh.Rx.Skip, h)
	so.rxHead = h
	return off, oldSkip
}

// sockStats snapshots a socket. Called with mu held.
func (s *Session) sockStats(so *sock, state string) SockStats {
	// A direct socket's bytes move without the daemon: count them now.
	_ = s.countDirect(so)
	st := so.es.Stats()
	if state == "" {
		state = stateName(so)
	}
	local, remote := so.local, so.remote
	if ap, err := so.es.LocalAddr(); err == nil && ap.IsValid() {
		local = ap
	}
	if ap, err := so.es.RemoteAddr(); err == nil && ap.IsValid() {
		remote = ap
	}
	if !local.IsValid() {
		local = so.local
	}
	so.local, so.remote = local, remote
	sh := s.a.Sock(so.slot)
	txq, _ := s.a.TxPending(so.slot, so.txTail)
	txq -= arena.SkipTo(so.txTail+txq, so.txTail, atomic.LoadUint64(&sh.Tx.Skip)) - so.txTail
	rxTail := atomic.LoadUint64(&sh.Rx.Tail)
	rxq, err := checkedUsed(so.rxHead, rxTail, s.a.L.RingSize)
	if err == nil {
		rxq = so.rxHead - arena.SkipTo(so.rxHead, rxTail, atomic.LoadUint64(&sh.Rx.Skip))
	}
	if so.direct {
		txq, rxq = so.dc.Unsent(), so.dc.Unread()
	}
	return SockStats{
		TxQueued: txq, RxQueued: rxq, Signals: signals(so, sh),
		Slot: so.slot, Engine: so.engine, Family: familyName(so.family), State: state,
		Local: addrString(local), Remote: addrString(remote),
		TxBytes: so.txBytes.Load(), RxBytes: so.rxBytes.Load(),
		SegsOut: st.SegsOut, SegsIn: st.SegsIn, Retransmits: st.Retransmits,
		Since: so.created,
	}
}

// checkedUsed is head-tail when that is sane, else 0.
func checkedUsed(head, tail uint64, size uint32) (uint64, error) {
	if head < tail || head-tail > uint64(size) {
		return 0, arena.ErrRing
	}
	return head - tail, nil
}

// signals describes a socket's readiness state in a few words.
func signals(so *sock, sh *abi.Sock) string {
	var w []string
	ev := so.es.Readiness()
	for _, e := range []struct {
		bit  stack.Events
		name string
	}{{stack.EventIn, "in"}, {stack.EventOut, "out"}, {stack.EventErr, "err"}, {stack.EventHup, "hup"}} {
		if ev&e.bit != 0 {
			w = append(w, "engine-"+e.name)
		}
	}
	if so.state&abi.SSTxStall != 0 {
		w = append(w, "tx-stall")
	}
	if so.direct {
		w = append(w, "direct")
	}
	switch atomic.LoadUint32(&sh.Fill) {
	case abi.FillDone:
		w = append(w, "fd-unwritable")
	}
	if n := atomic.LoadUint32(&sh.Sig); n != abi.SigNone {
		w = append(w, fmt.Sprintf("fd-readable(%d)", n))
	}
	if atomic.LoadUint32(&sh.Lazy) != 0 {
		w = append(w, "lazy")
	}
	if so.owed {
		w = append(w, "byte-owed")
	}
	if atomic.LoadUint32(&sh.DaemonWait)&abi.DWaitRxSpace != 0 {
		w = append(w, "wait-rx-space")
	}
	return strings.Join(w, " ")
}

func stateName(so *sock) string {
	switch {
	case so.closing:
		return "closing"
	case so.listening:
		return "listen"
	case so.connecting:
		return "connecting"
	case so.state&abi.SSRaw != 0:
		return "raw-reset" // raw.go
	case so.state&abi.SSReset != 0:
		return "reset"
	case so.state&abi.SSRdEOF != 0:
		return "peer-closed"
	case so.state&abi.SSConnected != 0:
		return "established"
	}
	return "open"
}

func familyName(f int) string {
	if f == syscall.AF_INET6 {
		return "tcp6"
	}
	return "tcp4"
}

func addrString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "-"
	}
	return ap.String()
}

// repair gives a socket whose pair we hung up for good (a failed connect,
// a reset, a listener shut down: hangUp) a fresh one, for
// NUSE_CTL_REPAIR: the shim asks before it connects or listens anew, so
// that the app fd does not poll HUP for good.
func (s *Session) repair(req *abi.CtlReq, pair int, rep *abi.CtlReply) {
	s.withChannel(req, pair, rep, "new pair", func(so *sock) syscall.Errno {
		switch {
		case so.closing || so.relay != nil:
			return syscall.EBADF
		case so.connecting || so.listening || so.state&abi.SSConnected != 0:
			return syscall.EISCONN
		}
		return 0
	}, func(so *sock, ino uint64) {
		s.srv.dropChannel(so.pair, so.pairIno)
		so.pair, so.pairIno = pair, ino
		so.pairShut, so.pairHup, so.pairCut, so.appGone = false, false, false, false
		so.edgeHead, so.edgeState, so.edgeConn, so.owed = so.rxHead, 0, false, false
		sh := s.a.Sock(so.slot)
		atomic.StoreUint32(&sh.LazyOwed, 0)
		atomic.StoreUint32(&sh.Sig, abi.SigNone)
		atomic.StoreUint32(&sh.Fill, abi.FillNone)
		rep.Sock, rep.Gen = so.slot, so.gen
	})
}
