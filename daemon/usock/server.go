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
	Engine   stack.Engine
	Layout   arena.Layout
	Spin     time.Duration // how long a worker spins before it sleeps
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
}

// Handler serves a control connection that opened with a message of its
// type: cred is the peer (SO_PEERCRED), seq and body the first message's.
type Handler func(c *net.UnixConn, cred *unix.Ucred, seq uint32, body []byte)

// Server accepts sessions.
type Server struct {
	cfg Config

	mu       sync.Mutex
	sessions map[uint32]*Session
	history  []SessionStats // ended sessions, newest last
	nextID   uint32
	closed   bool
	ln       *net.UnixListener
	wg       sync.WaitGroup
	workers  []*worker
	perWork  int // sessions one worker may serve

	totals totals
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
	srv := &Server{cfg: cfg, sessions: map[uint32]*Session{}, perWork: 1}
	if futex.HaveWaitv() {
		srv.perWork = futex.WaitvMax - 1 // one word is the worker's own
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
	srv.mu.Unlock()
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			srv.wg.Add(1)
			go func() {
				defer srv.wg.Done()
				srv.serveConn(c)
			}()
		}
	}()
	return nil
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
		ln.Close()
	}
	for _, s := range ss {
		s.mu.Lock()
		s.kill("daemon shutting down")
		s.mu.Unlock()
		s.wake()
	}
	srv.wg.Wait()
}

// serveConn handles one control connection: a session, or a stats query.
func (srv *Server) serveConn(c *net.UnixConn) {
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		srv.logf("control connection: %v", err)
		return
	}
	msg, fds, err := readCtl(c)
	closeFDs(fds)
	if errors.Is(err, errEOF) {
		return // a liveness probe: connected and went away
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
		srv.sendStats(c, msg.seq)
		return
	case abi.MsgHello:
	default:
		sendError(c, msg.seq, "expected a hello")
		return
	}
	if int32(msg.hello.Pid) != cred.Pid {
		srv.logf("pid %d claims to be pid %d; refused", cred.Pid, msg.hello.Pid)
		sendError(c, msg.seq, "the pid in the hello is not the caller's")
		return
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
		s.dead = true
		s.why = "process ended"
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
	srv.nextID++
	id := srv.nextID
	srv.mu.Unlock()
	a, err := arena.Create(srv.cfg.Layout, fmt.Sprintf("nuse-session-%d", id), uint64(srv.cfg.ShimSpin.Nanoseconds()))
	if err != nil {
		return nil, fmt.Errorf("creating the arena: %w", err)
	}
	n := int(srv.cfg.Layout.MaxSocks)
	s := &Session{
		srv: srv, ID: id, Pid: cred.Pid, Uid: cred.Uid, Comm: comm, Start: time.Now(),
		a: a, nwords: (n + 63) / 64, socks: make([]*sock, n),
		events: make([]atomic.Uint64, (n+63)/64), done: make(chan struct{}),
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
	srv.history = append(srv.history, st)
	if len(srv.history) > maxHistory {
		srv.history = srv.history[len(srv.history)-maxHistory:]
	}
	srv.mu.Unlock()
	srv.logf("session %d ended: %s", s.ID, st.Ended)
}

// sessionLoop serves socket births until the process goes away.
func (srv *Server) sessionLoop(s *Session, c *net.UnixConn) {
	for {
		msg, fds, err := readCtl(c)
		if err != nil {
			closeFDs(fds)
			if !errors.Is(err, errEOF) {
				s.mu.Lock()
				s.kill(fmt.Sprintf("control message: %v", err))
				s.mu.Unlock()
				s.wake()
			}
			return
		}
		var rep abi.CtlReply
		switch msg.typ {
		case abi.MsgSocket, abi.MsgAccept:
			if len(fds) != 1 {
				closeFDs(fds)
				rep.Result = -int32(syscall.EINVAL)
				break
			}
			if msg.typ == abi.MsgSocket {
				s.openSocket(&msg.req, fds[0], &rep)
			} else {
				s.accept(&msg.req, fds[0], &rep)
			}
		default:
			closeFDs(fds)
			rep.Result = -int32(syscall.EINVAL)
		}
		rep.Hdr = hdr(abi.MsgReply, msg.seq, int(unsafe.Sizeof(rep)))
		if _, err := c.Write(bytesOf(&rep)); err != nil {
			return
		}
		s.wake()
	}
}

// openSocket creates a socket for NUSE_CTL_SOCKET.
func (s *Session) openSocket(req *abi.CtlReq, pair int, rep *abi.CtlReply) {
	fail := func(e syscall.Errno) { unix.Close(pair); rep.Result = -int32(e) }
	family := int(req.Family)
	if family != syscall.AF_INET && family != syscall.AF_INET6 {
		fail(syscall.EAFNOSUPPORT)
		return
	}
	if req.Type != syscall.SOCK_STREAM {
		fail(syscall.ESOCKTNOSUPPORT)
		return
	}
	if req.Protocol != 0 && req.Protocol != syscall.IPPROTO_TCP {
		fail(syscall.EPROTONOSUPPORT)
		return
	}
	if err := unix.SetNonblock(pair, true); err != nil {
		fail(syscall.EBADF)
		return
	}
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
	es, err := s.srv.cfg.Engine.Socket(family)
	if err != nil {
		s.free = append(s.free, slot)
		fail(syscall.Errno(-errno(err)))
		return
	}
	so := s.attach(slot, es, family, pair)
	rep.Sock, rep.Gen = so.slot, so.gen
}

// accept takes a pending connection for NUSE_CTL_ACCEPT.
func (s *Session) accept(req *abi.CtlReq, pair int, rep *abi.CtlReply) {
	fail := func(e syscall.Errno) { unix.Close(pair); rep.Result = -int32(e) }
	if err := unix.SetNonblock(pair, true); err != nil {
		fail(syscall.EBADF)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		fail(syscall.ECONNABORTED)
		return
	}
	ls := s.lookup(req.Sock, req.Gen)
	if ls == nil {
		fail(syscall.EBADF)
		return
	}
	if !ls.listening {
		fail(syscall.EINVAL)
		return
	}
	if len(s.free) == 0 {
		fail(syscall.EMFILE)
		return
	}
	es, peer, err := ls.es.Accept()
	defer s.service(ls) // the accept queue may be empty now
	if err != nil {
		fail(syscall.Errno(-errno(err)))
		return
	}
	slot, _ := s.alloc()
	so := s.attach(slot, es, ls.family, pair)
	so.state |= abi.SSConnected
	so.remote = peer
	so.local, _ = es.LocalAddr()
	rep.Sock, rep.Gen = so.slot, so.gen
	rep.AddrLen = putSockaddr(rep.Addr[:], ls.family, peer)
	s.service(so)
}

// ---- control socket plumbing ----

var errEOF = errors.New("control connection closed")

// readCtl reads one control message and any fds that came with it. The
// caller owns the fds, even on error.
func readCtl(c *net.UnixConn) (ctlMsg, []int, error) {
	var buf [512]byte
	oob := make([]byte, unix.CmsgSpace(4*4))
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
	ID      uint32      `json:"id"`
	Pid     int32       `json:"pid"`
	Uid     uint32      `json:"uid"`
	Comm    string      `json:"comm"`
	Start   time.Time   `json:"start"`
	End     *time.Time  `json:"end,omitempty"`
	Ended   string      `json:"ended,omitempty"`
	TxBytes uint64      `json:"tx_bytes"`
	RxBytes uint64      `json:"rx_bytes"`
	Sockets []SockStats `json:"sockets"`
}

// Stats is what `nuse stats` shows.
type Stats struct {
	Engine   string         `json:"engine"`
	Sessions []SessionStats `json:"sessions"`
	Ended    []SessionStats `json:"ended"`
	TxBytes  uint64         `json:"tx_bytes"`
	RxBytes  uint64         `json:"rx_bytes"`
	Net      []NICStats     `json:"net,omitempty"`
	UC       []UCStats      `json:"uc,omitempty"`
}

// UCStats describe one uc proxy session (a program posting RDMA verbs
// through the daemon).
type UCStats struct {
	Pid       int32     `json:"pid"`
	Device    string    `json:"device"`
	QPs       int       `json:"qps"`
	Posted    uint64    `json:"posted"`    // work requests taken from the program's rings
	Completed uint64    `json:"completed"` // completions handed back
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
}

func (s *Session) stats() SessionStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SessionStats{ID: s.ID, Pid: s.Pid, Uid: s.Uid, Comm: s.Comm, Start: s.Start}
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
			if so.State != "closed" {
				st.TxBytes += so.TxBytes
				st.RxBytes += so.RxBytes
			}
		}
	}
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
func (srv *Server) sendStats(c *net.UnixConn, seq uint32) {
	b, err := json.Marshal(srv.Stats())
	if err != nil {
		sendError(c, seq, err.Error())
		return
	}
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

// StatsChunk is the largest message of a stats answer.
const StatsChunk = 32 << 10
