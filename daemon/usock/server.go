// Package usock is nused's user-socket engine: it serves the sessions of
// preloaded processes over the control socket and their shared-memory
// arenas, and drives a transport engine (stack.Engine) on their behalf.
package usock

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/daemon/arena"
	"github.com/nuse-project/nuse/internal/futex"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
)

// Config configures the user-socket engine.
type Config struct {
	// Engine is the default transport engine: new sockets use it.
	Engine stack.Engine
	// Engines are all the engines the daemon runs, by name (Engine among
	// them; nil means just Engine). A socket's engine is looked up here
	// by name (engine), so a socket could be born on any of them.
	Engines map[string]stack.Engine
	Layout  arena.Layout
	Spin    time.Duration // how long a worker spins before it sleeps
	// SpinMax bounds how far a worker's spin grows when work keeps coming
	// just after it fell asleep (spinwin.go); at most Spin: a fixed spin.
	SpinMax  time.Duration
	ShimSpin time.Duration // how long shim threads spin before they sleep
	Linger   time.Duration // how long a closed socket may take to send its tx ring
	// Workers is how many goroutines serve the sessions (default 1): each
	// spins over all of its sessions, so traffic between two local
	// programs finds the worker awake. More are started when one has as
	// many sessions as it can sleep on.
	Workers int
	// SessionsPerWorker caps a worker's sessions (0: as many as it can
	// sleep on; 1 is what happens without futex_waitv).
	SessionsPerWorker int
	Logf              func(format string, args ...any)
	// NetStats, if set, adds the engine's interface counters to Stats.
	NetStats func() []NICStats
	// UCStats, if set, adds the uc proxy sessions to Stats.
	UCStats func() []UCStats
	// Handlers serve control connections whose first message has another
	// type (abi.MsgUC: uc/proxy). They own the connection until they return.
	Handlers map[uint16]Handler
	// Limits bound what any one user, or all of them, can hold of the
	// daemon (zero fields take the defaults of DefaultLimits).
	Limits Limits
	// ProfileLabels labels the workers' CPU profile samples (a CPU
	// profile runs: `nuse daemon --cpuprofile`) with the worker and the
	// session it serves, so `go tool pprof -tags` splits the daemon's CPU
	// per worker and per program (worker.go).
	ProfileLabels bool
}

// Limits are the daemon's defences against one local user starving the
// others: every resource a client can make the daemon hold is capped,
// per uid and in total. Root (uid 0) is held to the totals only.
type Limits struct {
	// Pending control connections that have not finished their first
	// message, and how long one may take to send it.
	MaxPending, MaxPendingPerUID int
	Handshake                    time.Duration
	// Live sessions (preloaded processes).
	MaxSessions, MaxSessionsPerUID int
	// NUSE sockets held by one uid's sessions together. (A session's own
	// cap is the arena's MaxSocks.)
	MaxSocketsPerUID int
	// Stats queries answered at once, and how long a client may take to
	// read one.
	MaxStats     int
	StatsTimeout time.Duration
	// FDReserve is how many of the daemon's file descriptors (of its
	// RLIMIT_NOFILE) no client can take: new sockets and sessions are
	// refused before the daemon itself runs out.
	FDReserve int
	// PassSockets and PassBytes bound what one worker pass does for one
	// session: it services at most PassSockets sockets and starts no new
	// one once it has moved PassBytes; the rest waits for the session's
	// next turn, so the sessions sharing a worker take turns fairly.
	PassSockets, PassBytes int
}

// DefaultLimits are the limits a daemon runs with unless told otherwise.
var DefaultLimits = Limits{
	MaxPending: 256, MaxPendingPerUID: 32, Handshake: 5 * time.Second,
	MaxSessions: 4096, MaxSessionsPerUID: 512, MaxSocketsPerUID: 8192,
	MaxStats: 8, StatsTimeout: 5 * time.Second, FDReserve: 256,
	PassSockets: 64, PassBytes: 1 << 20,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	for _, f := range []struct{ v, def *int }{
		{&l.MaxPending, &d.MaxPending}, {&l.MaxPendingPerUID, &d.MaxPendingPerUID},
		{&l.MaxSessions, &d.MaxSessions}, {&l.MaxSessionsPerUID, &d.MaxSessionsPerUID},
		{&l.MaxSocketsPerUID, &d.MaxSocketsPerUID}, {&l.MaxStats, &d.MaxStats}, {&l.FDReserve, &d.FDReserve},
		{&l.PassSockets, &d.PassSockets}, {&l.PassBytes, &d.PassBytes},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	if l.Handshake <= 0 {
		l.Handshake = d.Handshake
	}
	if l.StatsTimeout <= 0 {
		l.StatsTimeout = d.StatsTimeout
	}
	return l
}

// Handler serves a control connection that opened with a message of its
// type: cred is the peer (SO_PEERCRED), seq and body the first message's.
type Handler func(c *net.UnixConn, cred *unix.Ucred, seq uint32, body []byte)

// Server accepts sessions.
type Server struct {
	cfg Config

	mu        sync.Mutex
	sessions  map[uint32]*Session
	relays    map[string]*relay    // sockets handed on (relay.go), by name
	lsns      map[string]*lsnShare // listeners that can be handed on (inherit.go), by name
	parkWatch atomic.Bool          // watchParked runs
	history   []SessionStats       // ended sessions, newest last
	nextID    uint32
	closed    bool
	ln        *net.UnixListener
	lnNudge   *nudgee
	nudge     *nudger // control connections served under load (nudge.go)
	wg        sync.WaitGroup
	workers   []*worker
	started   int // workers started so far (each one's id)
	perWork   int // sessions one worker may serve
	// pollers are the engines whose devices workers read in their passes;
	// eager[i] says pollers[i] is a stack.EagerPoller.
	pollers []stack.Poller
	eager   []bool
	// pollMu guards awake (workers not asleep) and pollOn (what the
	// pollers were last told, stack.Poller's Polled; [1] the eager ones).
	pollMu sync.Mutex
	awake  int
	pollOn [2]bool

	// What each uid holds, for the limits (under mu).
	pending, stats int
	perUID         map[uint32]*uidUse
	fdLimit        int // RLIMIT_NOFILE when the server started
	baseFDs        int // fds open when the server started
	// clientFDs counts the fds the daemon holds for clients: control
	// connections, arenas, socketpair ends.
	clientFDs atomic.Int64

	// pmu guards ports; it is taken with a session's mu held, never the
	// other way round.
	pmu   sync.Mutex
	ports map[uint16][]portUse // SO_REUSEPORT binds, by port
	pairs map[uint64]struct{}  // inodes of the socketpair ends held
	// unprivPort is net.ipv4.ip_unprivileged_port_start.
	unprivPort uint16

	totals totals
	// engTotals are the totals of closed sockets by engine; the map is
	// fixed at NewServer (one entry per configured engine).
	engTotals map[string]*totals
}

// uidUse counts what one uid holds. Sockets are counted with atomics: they
// come and go under the session's lock, not the server's.
type uidUse struct {
	pending, sessions int
	socks             atomic.Int64
}

type totals struct {
	tx, rx atomic.Uint64
}

func (t *totals) add(tx, rx uint64) { t.tx.Add(tx); t.rx.Add(rx) }

const (
	maxClosedSocks = 64
	maxHistory     = 32
)

// NewServer makes a user-socket engine.
func NewServer(cfg Config) *Server {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Linger == 0 {
		cfg.Linger = 30 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.Engine != nil && cfg.Engines[cfg.Engine.Name()] == nil {
		all := map[string]stack.Engine{cfg.Engine.Name(): cfg.Engine}
		for n, e := range cfg.Engines {
			all[n] = e
		}
		cfg.Engines = all
	}
	nd := newNudger() // before baseFDs counts the daemon's own fds
	srv := &Server{nudge: nd, engTotals: map[string]*totals{}, cfg: cfg, sessions: map[uint32]*Session{}, relays: map[string]*relay{}, lsns: map[string]*lsnShare{}, perWork: 1, perUID: map[uint32]*uidUse{},
		ports: map[uint16][]portUse{}, pairs: map[uint64]struct{}{}, fdLimit: fdLimit(), baseFDs: openFDs(), unprivPort: unprivilegedPortStart()}
	for name, e := range cfg.Engines {
		srv.engTotals[name] = &totals{}
		if p, ok := e.(stack.Poller); ok {
			_, eager := p.(stack.EagerPoller)
			srv.pollers, srv.eager = append(srv.pollers, p), append(srv.eager, eager)
		}
	}
	if futex.HaveWaitv() {
		srv.perWork = futex.WaitvMax - 2 // two words are the worker's own and futex.Kick
	}
	if cfg.SessionsPerWorker > 0 && cfg.SessionsPerWorker < srv.perWork {
		srv.perWork = cfg.SessionsPerWorker
	}
	return srv
}

func (srv *Server) logf(format string, args ...any) { srv.cfg.Logf(format, args...) }

// Listen creates the control socket at path (its directory too) and serves
// it until Close. Anyone who can reach the socket may open a session; the
// session is tied to the peer's pid and uid (SO_PEERCRED).
func (srv *Server) Listen(path string) error {
	if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	if c, err := net.Dial("unixpacket", path); err == nil {
		c.Close()
		return fmt.Errorf("a daemon is already serving %s", path)
	}
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	_ = os.Chmod(path, 0o666)
	srv.mu.Lock()
	srv.ln = ln
	srv.lnNudge = srv.nudge.add(ln, ln.SetDeadline)
	srv.mu.Unlock()
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		srv.acceptLoop(ln)
	}()
	return nil
}

// acceptLoop serves the control socket until it is closed. Running out of
// file descriptors or memory is not the end: it backs off and tries again,
// so that one user who exhausted something cannot lock everyone out of
// NUSE for the daemon's lifetime.
func (srv *Server) acceptLoop(ln *net.UnixListener) {
	var backoff time.Duration
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if nudged(err, ln.SetDeadline) {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			srv.logf("control socket: accept: %v; retrying in %v", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		srv.wg.Add(1)
		go func() {
			defer srv.wg.Done()
			srv.serveConn(c)
		}()
	}
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			if i == 0 {
				return "/"
			}
			return p[:i]
		}
	}
	return "."
}

// Close stops accepting, ends all sessions and waits for them.
func (srv *Server) Close() {
	srv.mu.Lock()
	srv.closed = true
	ln := srv.ln
	var ss []*Session
	for _, s := range srv.sessions {
		ss = append(ss, s)
	}
	srv.mu.Unlock()
	if ln != nil {
		srv.nudge.drop(srv.lnNudge)
		ln.Close()
	}
	for _, s := range ss {
		s.mu.Lock()
		s.kill("daemon shutting down")
		s.mu.Unlock()
		s.wake()
	}
	srv.stopRelays()
	srv.wg.Wait()
	srv.nudge.close()
}

// serveConn handles one control connection: a session, or a stats query.
func (srv *Server) serveConn(c *net.UnixConn) {
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		srv.logf("control connection: %v", err)
		return
	}
	if why := srv.takePending(cred.Uid); why != "" {
		srv.logf("pid %d uid %d: refused: %s", cred.Pid, cred.Uid, why)
		// Take the hello first (briefly): hanging up on unread data
		// would reset the connection and lose the reason.
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, fds, _ := readCtl(c)
		closeFDs(fds)
		sendError(c, 0, why)
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(srv.cfg.Limits.Handshake))
	msg, fds, err := readCtl(c)
	srv.dropPending(cred.Uid)
	_ = c.SetReadDeadline(time.Time{})
	closeFDs(fds)
	if errors.Is(err, errEOF) {
		return // a liveness probe: connected and went away
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		srv.logf("pid %d: no hello within %v; hung up", cred.Pid, srv.cfg.Limits.Handshake)
		return
	}
	if err != nil {
		var ev errVersion
		if errors.As(err, &ev) {
			srv.logf("pid %d: %v", cred.Pid, err)
			sendError(c, 0, err.Error())
			return
		}
		srv.logf("pid %d: first message: %v", cred.Pid, err)
		sendError(c, 0, "malformed hello")
		return
	}
	if h := srv.cfg.Handlers[msg.typ]; h != nil {
		h(c, cred, msg.seq, msg.body)
		return
	}
	switch msg.typ {
	case abi.MsgStats:
		srv.sendStats(c, cred, msg.seq)
		return
	case abi.MsgHello:
	default:
		sendError(c, msg.seq, "expected a hello")
		return
	}
	// The session is the kernel's word on who connected (SO_PEERCRED, in
	// the daemon's pid namespace). The hello's pid is the process's own
	// getpid(), which differs inside a pid namespace (a container), so it
	// is only logged.
	if int32(msg.hello.Pid) != cred.Pid {
		srv.logf("pid %d calls itself pid %d (another pid namespace)", cred.Pid, msg.hello.Pid)
	}
	s, err := srv.newSession(cred, commString(msg.hello.Comm))
	if err != nil {
		srv.logf("pid %d: %v", cred.Pid, err)
		sendError(c, msg.seq, err.Error())
		return
	}
	ok := abi.CtlHelloOK{Hdr: hdr(abi.MsgHelloOK, msg.seq, int(unsafe.Sizeof(abi.CtlHelloOK{}))), ArenaSize: s.a.L.Size, SessionID: s.ID}
	_, _, werr := c.WriteMsgUnix(bytesOf(&ok), unix.UnixRights(s.a.FD()), nil)
	// kill reads conn under mu (Close may end the session at any time).
	s.mu.Lock()
	s.conn = c
	if werr != nil {
		srv.logf("pid %d: sending the arena: %v", cred.Pid, werr)
		s.kill("handshake failed")
	} else if s.dead {
		c.Close() // killed before we got here: hang up now
	}
	s.mu.Unlock()
	// Even a dead session goes to a worker: dropping it there moves it to
	// the history and frees its arena.
	srv.assign(s)
	if werr == nil {
		srv.logf("session %d: pid %d uid %d %s", s.ID, s.Pid, s.Uid, s.Comm)
		srv.sessionLoop(s, c)
	}
	s.mu.Lock()
	if !s.dead {
		s.die("process ended")
		// Sockets the process never closed are closed as the kernel would
		// at exit: gracefully, after their tx rings drain.
		for _, so := range s.socks {
			if so != nil && !so.closing {
				so.closing = true
				so.closeBy = time.Now().Add(srv.cfg.Linger)
				s.service(so) // closes it now if nothing is left to send
			}
		}
	}
	s.end = time.Now()
	s.mu.Unlock()
	s.wake()
	<-s.done
}

func (srv *Server) newSession(cred *unix.Ucred, comm string) (*Session, error) {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return nil, errors.New("daemon shutting down")
	}
	lim := srv.cfg.Limits
	u := srv.use(cred.Uid)
	switch {
	case len(srv.sessions) >= lim.MaxSessions:
		srv.mu.Unlock()
		return nil, fmt.Errorf("the daemon serves %d sessions, its limit", lim.MaxSessions)
	case cred.Uid != 0 && u.sessions >= lim.MaxSessionsPerUID:
		srv.mu.Unlock()
		return nil, fmt.Errorf("uid %d has %d sessions, the limit per user", cred.Uid, lim.MaxSessionsPerUID)
	case !srv.takeFDs(2): // the last check: it counts the control connection and the arena
		srv.mu.Unlock()
		return nil, errors.New("the daemon is short of file descriptors")
	}
	u.sessions++
	srv.nextID++
	id := srv.nextID
	srv.mu.Unlock()
	a, err := arena.Create(srv.cfg.Layout, fmt.Sprintf("nuse-session-%d", id), uint64(srv.cfg.ShimSpin.Nanoseconds()))
	if err != nil {
		srv.mu.Lock()
		srv.clientFDs.Add(-2)
		srv.unuse(cred.Uid, func(u *uidUse) { u.sessions-- })
		srv.mu.Unlock()
		return nil, fmt.Errorf("creating the arena: %w", err)
	}
	n := int(srv.cfg.Layout.MaxSocks)
	s := &Session{
		srv: srv, ID: id, Pid: cred.Pid, Uid: cred.Uid, Comm: comm, Start: time.Now(),
		a: a, socks: make([]*sock, n), gens: make([]uint32, n), freed: make([]time.Time, n),
		events: make([]atomic.Uint64, (n+63)/64), carry: make([]atomic.Uint64, (n+63)/64),
		done: make(chan struct{}), use: u,
	}
	for i := n - 1; i >= 0; i-- {
		s.free = append(s.free, uint32(i))
	}
	srv.mu.Lock()
	srv.sessions[id] = s
	srv.mu.Unlock()
	return s, nil
}

// ended moves a finished session to the history.
func (srv *Server) ended(s *Session) {
	st := s.stats()
	srv.mu.Lock()
	delete(srv.sessions, s.ID)
	srv.clientFDs.Add(-2)
	srv.unuse(s.Uid, func(u *uidUse) { u.sessions-- })
	srv.history = append(srv.history, st)
	if len(srv.history) > maxHistory {
		srv.history = srv.history[len(srv.history)-maxHistory:]
	}
	srv.mu.Unlock()
	srv.logf("session %d ended: %s", s.ID, st.Ended)
}

// sessionLoop serves socket births until the process goes away.
func (srv *Server) sessionLoop(s *Session, c *net.UnixConn) {
	nd := srv.nudge.add(c, c.SetReadDeadline)
	defer srv.nudge.drop(nd)
	for {
		msg, fds, err := readCtl(c)
		if err != nil {
			closeFDs(fds)
			if nudged(err, c.SetReadDeadline) {
				continue
			}
			if !errors.Is(err, errEOF) {
				s.mu.Lock()
				s.kill(fmt.Sprintf("control message: %v", err))
				s.mu.Unlock()
				s.wake()
			}
			return
		}
		var rep abi.CtlReply
		dfd := -1 // an fd to send with the reply
		// The messages that carry one fd (the session's to close or
		// keep); the others carry none, and what came with them is closed.
		fd := -1
		switch msg.typ {
		case abi.MsgSocket, abi.MsgAccept, abi.MsgRelay, abi.MsgAdopt, abi.MsgRepair, abi.MsgIdent:
			if len(fds) == 1 {
				fd = fds[0]
			} else {
				closeFDs(fds)
				rep.Result = -int32(syscall.EINVAL)
			}
		case abi.MsgSpares:
			if len(fds) == 0 || len(fds) != int(msg.req.Family) {
				closeFDs(fds)
				fds = nil
				rep.Result = -int32(syscall.EINVAL)
			}
		default:
			closeFDs(fds)
		}
		switch {
		case rep.Result != 0:
		case msg.typ == abi.MsgSpares:
			s.addSpares(fds, &rep)
		case msg.typ == abi.MsgDirect:
			dfd = s.directFD(&msg.req, &rep)
		case msg.typ == abi.MsgWake:
			dfd = s.wakeFD(&msg.req, &rep)
		case msg.typ == abi.MsgSocket:
			s.openSocket(&msg.req, fd, &rep)
		case msg.typ == abi.MsgAccept:
			s.accept(&msg.req, fd, &rep)
		case msg.typ == abi.MsgRelay:
			s.relay(&msg.req, fd, &rep)
		case msg.typ == abi.MsgKeep:
			s.keep(&msg.req, &rep)
		case msg.typ == abi.MsgAdopt:
			s.adopt(fd, &rep)
			unix.Close(fd)
		case msg.typ == abi.MsgPortFree:
			s.srv.portFree(&msg.req, &rep)
		case msg.typ == abi.MsgRepair:
			s.repair(&msg.req, fd, &rep)
		case msg.typ == abi.MsgIdent:
			s.srv.ident(&msg.req, fd, &rep)
			unix.Close(fd)
		default:
			rep.Result = -int32(syscall.EINVAL)
		}
		rep.Hdr = hdr(abi.MsgReply, msg.seq, int(unsafe.Sizeof(rep)))
		if dfd >= 0 {
			_, _, err = c.WriteMsgUnix(bytesOf(&rep), unix.UnixRights(dfd), nil)
			unix.Close(dfd)
		} else {
			_, err = c.Write(bytesOf(&rep))
		}
		if err != nil {
			return
		}
		s.wake()
	}
}

// openSocket creates a socket for NUSE_CTL_SOCKET.
func (s *Session) openSocket(req *abi.CtlReq, pair int, rep *abi.CtlReply) {
	if e := checkSocketReq(req.Family, req.Type, req.Protocol); e != 0 {
		unix.Close(pair)
		rep.Result = -int32(e)
		return
	}
	s.onPair(pair, rep, func(ino uint64) (*sock, syscall.Errno) {
		return s.openLocked(int(req.Family), req.Engine, pair, ino)
	})
}

// onPair makes a socket whose channel is pair, a control message's fd:
// mk (called with mu held) creates it on the pair once taken; on any
// failure the pair is let go of and rep says why, else rep has the slot.
func (s *Session) onPair(pair int, rep *abi.CtlReply, mk func(ino uint64) (*sock, syscall.Errno)) {
	ino, e := s.takePair(pair)
	if e != 0 {
		unix.Close(pair)
		rep.Result = -int32(e)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	so, e := mk(ino)
	if e != 0 {
		s.dropPair(pair, ino)
		rep.Result = -int32(e)
		return
	}
	rep.Sock, rep.Gen = so.slot, so.gen
	if so.state&abi.SSConnected != 0 { // an accepted one: its peer
		rep.AddrLen = putSockaddr(rep.Addr[:], so.family, so.remote)
	}
}

// checkSocketReq refuses what NUSE sockets are not: TCP over IPv4 or IPv6.
func checkSocketReq(family, typ, protocol int32) syscall.Errno {
	switch {
	case family != syscall.AF_INET && family != syscall.AF_INET6:
		return syscall.EAFNOSUPPORT
	case typ != syscall.SOCK_STREAM:
		return syscall.ESOCKTNOSUPPORT
	case protocol != 0 && protocol != syscall.IPPROTO_TCP:
		return syscall.EPROTONOSUPPORT
	}
	return 0
}

// openLocked makes a socket on the engine named (all zero: the default)
// with pair (taken by takePair) as its channel. On failure the caller
// still owns pair. Called with mu held.
func (s *Session) openLocked(family int, engine [abi.EngineLen]byte, pair int, ino uint64) (*sock, syscall.Errno) {
	if s.dead {
		return nil, syscall.ECONNRESET
	}
	// The engine the shim's rule named ("": the default). One the daemon
	// does not run gets ENOPROTOOPT, which only this refusal gives: the
	// shim then says so once and keeps the socket in the kernel.
	name, err := engineName(engine)
	if err != nil {
		return nil, syscall.EINVAL
	}
	eng, err := s.srv.engine(name)
	if err != nil {
		return nil, syscall.ENOPROTOOPT
	}
	slot, ok := s.alloc()
	if !ok {
		return nil, syscall.EMFILE
	}
	fds, ok := s.chargeEngine(eng)
	if !ok {
		s.free = append(s.free, slot)
		return nil, syscall.ENFILE
	}
	es, err := eng.Socket(family)
	if err != nil {
		s.srv.clientFDs.Add(-int64(fds))
		s.free = append(s.free, slot)
		return nil, syscall.Errno(-errno(err))
	}
	so := s.attach(slot, es, eng.Name(), family, pair, ino)
	so.engFDs = fds
	return so, 0
}

// engine finds an engine by name; "" is the default.
func (srv *Server) engine(name string) (stack.Engine, error) {
	if name == "" || name == srv.cfg.Engine.Name() {
		return srv.cfg.Engine, nil
	}
	if e := srv.cfg.Engines[name]; e != nil {
		return e, nil
	}
	return nil, fmt.Errorf("engine %q is not running", name)
}

// takePair checks and counts the daemon's end of a new socket's
// socketpair, passed by the client: its kind, that it is not one the
// daemon holds already, and the user's and the daemon's fd budgets. The
// caller closes pair if it fails.
func (s *Session) takePair(pair int) (uint64, syscall.Errno) {
	srv := s.srv
	if s.Uid != 0 && s.use.socks.Load() >= int64(srv.cfg.Limits.MaxSocketsPerUID) {
		s.logf("uid %d holds %d NUSE sockets, the limit per user", s.Uid, srv.cfg.Limits.MaxSocketsPerUID)
		return 0, syscall.EMFILE
	}
	if !srv.takeFDs(1) {
		s.logf("the daemon is short of file descriptors; socket refused")
		return 0, syscall.ENFILE
	}
	ino, e := srv.checkPair(pair)
	if e != 0 {
		srv.clientFDs.Add(-1)
		s.logf("socket refused: the fd passed as its channel is unusable (%v)", e)
		return 0, e
	}
	// Every call on it is MSG_DONTWAIT: the client shares this open file
	// description and can clear O_NONBLOCK under us.
	_ = unix.SetNonblock(pair, true)
	s.use.socks.Add(1)
	return ino, 0
}

// dropPair undoes takePair.
func (s *Session) dropPair(pair int, ino uint64) {
	unix.Close(pair)
	s.srv.forgetPair(ino)
	s.use.socks.Add(-1)
	s.srv.clientFDs.Add(-1)
}

// accept takes a pending connection for NUSE_CTL_ACCEPT.
func (s *Session) accept(req *abi.CtlReq, pair int, rep *abi.CtlReply) {
	s.onPair(pair, rep, func(ino uint64) (*sock, syscall.Errno) {
		return s.acceptLocked(req.Sock, req.Gen, pair, ino)
	})
}

// acceptLocked takes a pending connection of listener (sock, gen) with
// pair (taken by takePair) as its channel. On failure the caller still
// owns pair. Called with mu held.
func (s *Session) acceptLocked(sock, gen uint32, pair int, ino uint64) (*sock, syscall.Errno) {
	if s.dead {
		return nil, syscall.ECONNABORTED
	}
	ls := s.lookup(sock, gen)
	if ls == nil {
		return nil, syscall.EBADF
	}
	if !ls.listening {
		return nil, syscall.EINVAL
	}
	if len(s.free) == 0 {
		return nil, syscall.EMFILE
	}
	eng, err := s.srv.engine(ls.engine)
	if err != nil {
		return nil, syscall.ENOPROTOOPT
	}
	fds, ok := s.chargeEngine(eng)
	if !ok {
		return nil, syscall.ENFILE
	}
	es, peer, err := ls.es.Accept()
	defer s.service(ls) // the accept queue may be empty now
	if err != nil {
		s.srv.clientFDs.Add(-int64(fds))
		return nil, syscall.Errno(-errno(err))
	}
	slot, _ := s.alloc()
	so := s.attach(slot, es, ls.engine, ls.family, pair, ino)
	so.engFDs = fds
	so.state |= abi.SSConnected
	so.remote = peer
	so.local, _ = es.LocalAddr()
	s.goDirect(so)
	s.service(so)
	return so, 0
}

// ---- control socket plumbing ----

var errEOF = errors.New("control connection closed")

// readCtl reads one control message and any fds that came with it. The
// caller owns the fds, even on error.
func readCtl(c *net.UnixConn) (ctlMsg, []int, error) {
	var buf [512]byte
	oob := make([]byte, unix.CmsgSpace(4*abi.SparesMax))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf[:], oob)
	var fds []int
	if oobn > 0 {
		if cms, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, cm := range cms {
				if got, rerr := unix.ParseUnixRights(&cm); rerr == nil {
					fds = append(fds, got...)
				}
			}
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ctlMsg{}, fds, err
		}
		return ctlMsg{}, fds, errEOF
	}
	if n == 0 {
		return ctlMsg{}, fds, errEOF
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return ctlMsg{}, fds, errBadCtl
	}
	m, err := decodeCtl(buf[:n])
	return m, fds, err
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

func hdr(typ uint16, seq uint32, n int) abi.CtlHdr {
	return abi.CtlHdr{Magic: abi.Magic, Version: abi.Version, Type: typ, Len: uint32(n), Seq: seq}
}

func sendError(c *net.UnixConn, seq uint32, msg string) {
	var rep abi.CtlReply
	rep.Hdr = hdr(abi.MsgError, seq, int(unsafe.Sizeof(rep)))
	rep.Result = -int32(syscall.EPROTO)
	copy(rep.Msg[:len(rep.Msg)-1], msg)
	_, _ = c.Write(bytesOf(&rep))
}

// bytesOf views a fixed-size ABI struct as bytes (little-endian host).
func bytesOf[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// ---- stats ----

// SockStats describes one socket.
type SockStats struct {
	Slot        uint32 `json:"slot"`
	Engine      string `json:"engine"` // the transport engine carrying it
	Family      string `json:"family"`
	State       string `json:"state"`
	Local       string `json:"local"`
	Remote      string `json:"remote"`
	TxBytes     uint64 `json:"tx_bytes"`
	RxBytes     uint64 `json:"rx_bytes"`
	SegsOut     uint64 `json:"segs_out"`
	SegsIn      uint64 `json:"segs_in"`
	Retransmits uint64 `json:"retransmits"`
	// TxQueued is what the program wrote that the engine has not taken
	// yet; RxQueued is what the engine delivered that the program has not
	// read (like ss's Send-Q and Recv-Q, ring side).
	TxQueued uint64 `json:"tx_queued"`
	RxQueued uint64 `json:"rx_queued"`
	// Signals is the readiness bookkeeping, for debugging: the engine's
	// readiness, and what the application fd is made to show.
	Signals string    `json:"signals,omitempty"`
	Since   time.Time `json:"since"`
}

// SessionStats describes one session.
type SessionStats struct {
	ID      uint32     `json:"id"`
	Pid     int32      `json:"pid"`
	Uid     uint32     `json:"uid"`
	Comm    string     `json:"comm"`
	Start   time.Time  `json:"start"`
	End     *time.Time `json:"end,omitempty"`
	Ended   string     `json:"ended,omitempty"`
	TxBytes uint64     `json:"tx_bytes"`
	RxBytes uint64     `json:"rx_bytes"`
	// Shm is the memory the session's shared arena holds (its rings'
	// pages in use), while it lives.
	Shm uint64 `json:"shm_bytes,omitempty"`
	// Wakes counts the readiness bytes the daemon wrote into the
	// session's fds; LazySkipped the bytes of data lazy readiness left
	// out (the program was awake and looked at its rings itself).
	Wakes       uint64 `json:"wakes"`
	LazySkipped uint64 `json:"lazy_skipped"`
	// LazyLate counts the bytes owed so long that the daemon wrote them
	// anyway (lazyLate): a program that waits where the shim cannot see.
	LazyLate uint64 `json:"lazy_late,omitempty"`
	// Spares counts the spare pairs the daemon holds for it (spares.go).
	Spares  int         `json:"spares,omitempty"`
	Sockets []SockStats `json:"sockets"`
}

// Stats is what `nuse stats` shows.
type Stats struct {
	// Engine is the default engine; Engines has every engine the daemon
	// runs, with its totals.
	Engine   string         `json:"engine"`
	Engines  []EngineStats  `json:"engines"`
	Sessions []SessionStats `json:"sessions"`
	Ended    []SessionStats `json:"ended"`
	TxBytes  uint64         `json:"tx_bytes"`
	RxBytes  uint64         `json:"rx_bytes"`
	// Others counts live sessions of other users that the asker may not
	// see (StatsFor); the totals then cover only the asker's own.
	Others int `json:"others,omitempty"`
	// Relays are sockets handed to code the shim does not see (an exec'd
	// image, another process): the daemon relays their bytes.
	Relays []RelayStats `json:"relays,omitempty"`
	Net    []NICStats   `json:"net,omitempty"`
	UC     []UCStats    `json:"uc,omitempty"`
}

// EngineStats are one engine's totals over the sessions shown.
type EngineStats struct {
	Name    string `json:"name"`
	Default bool   `json:"default,omitempty"`
	Sockets int    `json:"sockets"` // live sockets on it now
	TxBytes uint64 `json:"tx_bytes"`
	RxBytes uint64 `json:"rx_bytes"`
	// TCP: the engine's own TCP counters (an engine with a stack of its
	// own: stack.TCPCounter), over all users' sockets.
	TCP *stack.TCPStats `json:"tcp,omitempty"`
}

// UCStats describe one uc proxy session (a program posting RDMA verbs
// through the daemon).
type UCStats struct {
	Pid       int32     `json:"pid"`
	Device    string    `json:"device"`
	QPs       int       `json:"qps"`
	Posted    uint64    `json:"posted"`    // work requests taken from the program's rings
	Completed uint64    `json:"completed"` // completions handed back
	Direct    uint64    `json:"direct"`    // of those, handed over on the device's receive path
	Answered  uint64    `json:"answered"`  // writes taken there, waiting for the program's answer
	Since     time.Time `json:"since"`
}

// NICStats are one engine interface's counters.
type NICStats struct {
	Name        string `json:"name"`
	RxPackets   uint64 `json:"rx_packets"`
	RxBytes     uint64 `json:"rx_bytes"`
	TxPackets   uint64 `json:"tx_packets"`
	TxBytes     uint64 `json:"tx_bytes"`
	RxMalformed uint64 `json:"rx_malformed"`
	TxDropped   uint64 `json:"tx_dropped"`
	// Delayed ACKs (gvisor's delayed-ack): held back, then dropped because
	// a later segment acknowledged as much, or sent when the delay ended
	// or ahead of a segment of their flow; answers that came after their
	// ACK had gone (the flow's delay grew).
	AcksHeld     uint64 `json:"acks_held"`
	AcksReplaced uint64 `json:"acks_replaced"`
	AcksExpired  uint64 `json:"acks_expired"`
	AcksFlushed  uint64 `json:"acks_flushed"`
	AcksLate     uint64 `json:"acks_late"`
}

func (s *Session) stats() SessionStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SessionStats{ID: s.ID, Pid: s.Pid, Uid: s.Uid, Comm: s.Comm, Start: s.Start, Wakes: s.wakes.Load(), LazySkipped: s.skipped.Load(), LazyLate: s.late.Load(),
		Spares: len(s.spares)}
	if s.dead {
		st.Ended = s.why
		if !s.end.IsZero() {
			e := s.end
			st.End = &e
		}
	}
	st.Sockets = append(st.Sockets, s.closed...)
	for _, so := range s.socks {
		if so != nil {
			st.Sockets = append(st.Sockets, s.sockStats(so, ""))
		}
	}
	for _, so := range st.Sockets {
		st.TxBytes += so.TxBytes
		st.RxBytes += so.RxBytes
	}
	s.amu.RLock()
	if !s.aclosed {
		st.Shm = s.a.Resident()
	}
	s.amu.RUnlock()
	return st
}

// Stats snapshots the engine.
func (srv *Server) Stats() Stats {
	srv.mu.Lock()
	var live []*Session
	for _, s := range srv.sessions {
		live = append(live, s)
	}
	st := Stats{Engine: srv.cfg.Engine.Name(), Ended: append([]SessionStats(nil), srv.history...)}
	srv.mu.Unlock()
	for _, s := range live {
		st.Sessions = append(st.Sessions, s.stats())
	}
	sortSessions(st.Sessions)
	st.TxBytes, st.RxBytes = srv.totals.tx.Load(), srv.totals.rx.Load()
	for _, s := range st.Sessions {
		for _, so := range s.Sockets {
			if !gone(so.State) {
				st.TxBytes += so.TxBytes
				st.RxBytes += so.RxBytes
			}
		}
	}
	st.Relays = srv.relayStats(0, true)
	for _, r := range st.Relays {
		st.TxBytes += r.TxBytes
		st.RxBytes += r.RxBytes
	}
	st.Engines = srv.engineStats(st.Sessions, st.Relays, func(name string) (uint64, uint64) {
		if t := srv.engTotals[name]; t != nil {
			return t.tx.Load(), t.rx.Load()
		}
		return 0, 0
	})
	if srv.cfg.NetStats != nil {
		st.Net = srv.cfg.NetStats()
	}
	if srv.cfg.UCStats != nil {
		st.UC = srv.cfg.UCStats()
	}
	return st
}

func sortSessions(ss []SessionStats) {
	for i := 1; i < len(ss); i++ {
		for j := i; j > 0 && ss[j].ID < ss[j-1].ID; j-- {
			ss[j], ss[j-1] = ss[j-1], ss[j]
		}
	}
}

// sendStats answers a stats query with JSON: a message holding its length
// (8 bytes, little-endian), then the text in messages of up to 32 KiB.
// Queries are capped in number and each must be read within the limit's
// time, so clients that never read cannot pin the daemon's memory.
func (srv *Server) sendStats(c *net.UnixConn, cred *unix.Ucred, seq uint32) {
	srv.mu.Lock()
	busy := srv.stats >= srv.cfg.Limits.MaxStats
	if !busy {
		srv.stats++
	}
	srv.mu.Unlock()
	if busy {
		sendError(c, seq, fmt.Sprintf("%d stats queries are being answered, the limit; try again", srv.cfg.Limits.MaxStats))
		return
	}
	defer func() {
		srv.mu.Lock()
		srv.stats--
		srv.mu.Unlock()
	}()
	b, err := json.Marshal(srv.StatsFor(cred.Uid))
	if err != nil {
		sendError(c, seq, err.Error())
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(srv.cfg.Limits.StatsTimeout))
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
	if _, err := c.Write(n[:]); err != nil {
		return
	}
	for len(b) > 0 {
		k := min(len(b), StatsChunk)
		if _, err := c.Write(b[:k]); err != nil {
			return
		}
		b = b[k:]
	}
}

// StatsFor is what user uid may see: root and the daemon's own user see
// everything; any other user sees their own sessions in full, and of other
// users' only how many there are (Stats.Others), as ps shows processes but
// not what other users' sockets carry. Interface counters are shown to all
// (as /proc/net/dev is).
func (srv *Server) StatsFor(uid uint32) Stats {
	st := srv.Stats()
	if uid == 0 || int(uid) == os.Getuid() {
		return st
	}
	mine := func(ss []SessionStats) []SessionStats {
		var out []SessionStats
		for _, s := range ss {
			if s.Uid == uid {
				out = append(out, s)
			}
		}
		return out
	}
	st.Others = len(st.Sessions)
	st.Sessions = mine(st.Sessions)
	st.Others -= len(st.Sessions)
	st.Ended = mine(st.Ended)
	st.UC = nil // only root and the daemon's user may use the uc proxy
	st.TxBytes, st.RxBytes = 0, 0
	for _, ss := range [][]SessionStats{st.Sessions, st.Ended} {
		for _, s := range ss {
			st.TxBytes += s.TxBytes
			st.RxBytes += s.RxBytes
		}
	}
	// Per engine, from what this user may see: the sockets of their live
	// sessions (closed ones included, as far as kept) and ended ones.
	byEngine := map[string][2]uint64{}
	for _, ss := range [][]SessionStats{st.Sessions, st.Ended} {
		for _, s := range ss {
			for _, so := range s.Sockets {
				t := byEngine[so.Engine]
				byEngine[so.Engine] = [2]uint64{t[0] + so.TxBytes, t[1] + so.RxBytes}
			}
		}
	}
	st.Relays = srv.relayStats(uid, false)
	for _, r := range st.Relays {
		st.TxBytes += r.TxBytes
		st.RxBytes += r.RxBytes
	}
	for _, r := range st.Relays {
		t := byEngine[r.Engine]
		byEngine[r.Engine] = [2]uint64{t[0] + r.TxBytes, t[1] + r.RxBytes}
	}
	st.Engines = srv.engineStats(st.Sessions, st.Relays, func(string) (uint64, uint64) { return 0, 0 })
	for i := range st.Engines {
		// The byte counts are the sums above (engineStats's count only
		// the live sockets).
		t := byEngine[st.Engines[i].Name]
		st.Engines[i].TxBytes, st.Engines[i].RxBytes = t[0], t[1]
	}
	return st
}

// gone says a socket's row is history: closed, or handed to a relay
// (whose own row counts from then on).
func gone(state string) bool { return state == "closed" || state == "relayed" }

// engineStats sums the live sockets of sessions and the relays by engine,
// on top of base (what closed sockets carried), for every engine the
// server runs.
func (srv *Server) engineStats(sessions []SessionStats, relays []RelayStats, base func(name string) (tx, rx uint64)) []EngineStats {
	var names []string
	for n := range srv.cfg.Engines {
		names = append(names, n)
	}
	sort.Strings(names)
	idx := map[string]int{}
	out := make([]EngineStats, len(names))
	for i, n := range names {
		idx[n] = i
		out[i] = EngineStats{Name: n, Default: srv.cfg.Engine != nil && n == srv.cfg.Engine.Name()}
		out[i].TxBytes, out[i].RxBytes = base(n)
		if c, ok := srv.cfg.Engines[n].(stack.TCPCounter); ok {
			t := c.TCPStats()
			out[i].TCP = &t
		}
	}
	for _, s := range sessions {
		for _, so := range s.Sockets {
			i, ok := idx[so.Engine]
			if !ok || gone(so.State) {
				continue
			}
			out[i].Sockets++
			out[i].TxBytes += so.TxBytes
			out[i].RxBytes += so.RxBytes
		}
	}
	for _, r := range relays {
		if i, ok := idx[r.Engine]; ok {
			out[i].Sockets++
			out[i].TxBytes += r.TxBytes
			out[i].RxBytes += r.RxBytes
		}
	}
	return out
}

// StatsChunk is the largest message of a stats answer.
const StatsChunk = 32 << 10
