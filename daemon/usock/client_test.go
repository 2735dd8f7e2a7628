package usock

// A minimal application side of the protocol, in Go, to test the daemon
// without the C shim, and to misbehave in ways a real shim never would.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/daemon/arena"
	"github.com/nuse-project/nuse/internal/futex"
	"github.com/nuse-project/nuse/internal/testlog"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/gvisor"
	"github.com/nuse-project/nuse/stack/kernel"
	"github.com/nuse-project/nuse/stack/shm"
)

type testClient struct {
	t   testing.TB
	c   *net.UnixConn
	a   *arena.Arena
	seq uint32
	fds map[int]bool // the application ends of sockets not closed yet
}

type testSock struct {
	slot, gen uint32
	fd        int // the application's end of the socketpair
	family    int
	txHead    uint64
	rxTail    uint64
	dir       *directView // the connection's region, once mapped (shm)
}

// directView is a test socket's mapping of its connection's region, as
// the shim makes it (PROTOCOL.md "Direct connections").
type directView struct {
	mem            []byte
	hdr            *abi.Direct
	side           int
	txData, rxData []byte
}

// rings are the socket's rings: its slot's, or its region's once the
// state says DIRECT (mapped here at the first use, as the shim does).
func (cl *testClient) rings(s *testSock) (tx, rx *abi.Ring, txData, rxData []byte, dir *directView) {
	if s.dir == nil && cl.state(s)&abi.SSDirect != 0 {
		s.dir = cl.mapDirect(s)
	}
	if d := s.dir; d != nil {
		return &d.hdr.Ring[d.side], &d.hdr.Ring[1-d.side], d.txData, d.rxData, d
	}
	sh := cl.a.Sock(s.slot)
	return &sh.Tx, &sh.Rx, cl.a.Tx(s.slot), cl.a.Rx(s.slot), nil
}

// skipDirect skips a test of the slot's own rings on a socket that does
// not use them (NUSE_TEST_ENGINE=shm): stack/shm's direct tests check the
// region's counters.
func skipDirect(t *testing.T, cl *testClient, s *testSock) {
	if cl.state(s)&abi.SSDirect != 0 {
		t.Skip("a direct (shm) socket leaves its slot's rings unused; stack/shm TestDirect* check the region")
	}
}

// ctlFDs sends a control request of type typ for (slot, gen) and returns
// the reply's result and the fds that came with it (the caller's).
func (cl *testClient) ctlFDs(typ uint16, slot, gen uint32) (int32, []int) {
	cl.t.Helper()
	cl.seq++
	req := abi.CtlReq{Sock: slot, Gen: gen}
	req.Hdr = hdr(typ, cl.seq, int(unsafe.Sizeof(req)))
	if _, err := cl.c.Write(bytesOf(&req)); err != nil {
		cl.t.Fatal(err)
	}
	var rep abi.CtlReply
	oob := make([]byte, unix.CmsgSpace(4*4))
	_ = cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, oobn, _, _, err := cl.c.ReadMsgUnix(bytesOf(&rep), oob)
	_ = cl.c.SetReadDeadline(time.Time{})
	if err != nil {
		cl.t.Fatal(err)
	}
	var all []int
	if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, cm := range cms {
			if fds, err := unix.ParseUnixRights(&cm); err == nil {
				all = append(all, fds...)
			}
		}
	}
	return rep.Result, all
}

func (cl *testClient) mapDirect(s *testSock) *directView {
	res, fds := cl.ctlFDs(abi.MsgDirect, s.slot, s.gen)
	if res < 0 || len(fds) != 1 {
		closeFDs(fds)
		cl.t.Fatalf("DIRECT: result %d, fds %v", res, fds)
	}
	rep := abi.CtlReply{Result: res}
	defer unix.Close(fds[0])
	var st unix.Stat_t
	if err := unix.Fstat(fds[0], &st); err != nil {
		cl.t.Fatal(err)
	}
	mem, err := unix.Mmap(fds[0], 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		cl.t.Fatal(err)
	}
	cl.t.Cleanup(func() { _ = unix.Munmap(mem) })
	h := (*abi.Direct)(unsafe.Pointer(&mem[0]))
	size, side := uint64(h.RingSize), int(rep.Result)
	data := func(i int) []byte {
		off := h.DataOff + uint64(i)*size
		return mem[off : off+size : off+size]
	}
	return &directView{mem: mem, hdr: h, side: side, txData: data(side), rxData: data(1 - side)}
}

// startServer runs a user-socket engine over a stack-internal gVisor engine.
func startServer(t testing.TB, ring uint32) (*Server, string) {
	return startServerWith(t, ring, func(*Config) {})
}

func startServerWith(t testing.TB, ring uint32, mod func(*Config)) (*Server, string) {
	path := filepath.Join(t.TempDir(), "nused.sock")
	return startServerAt(t, ring, path, mod), path
}

// startServerAt serves a daemon on the control socket path.
func startServerAt(t testing.TB, ring uint32, path string, mod func(*Config)) *Server {
	// NUSE_TEST_ENGINE=kernel runs these tests on the kernel engine, whose
	// sockets are real: do it in a namespace of its own
	// (unshare -n sh -c 'ip link set lo up; NUSE_TEST_ENGINE=kernel go test ./daemon/usock/').
	var eng stack.Engine
	var err error
	switch os.Getenv("NUSE_TEST_ENGINE") {
	case "kernel":
		eng, err = kernel.New(kernel.Config{})
	case "shm": // NUSE_TEST_ENGINE=shm: both ends of every connection on shm
		eng, err = shm.New(shm.Config{})
	default:
		eng, err = gvisor.New(gvisor.Config{Loopback: true})
	}
	if err != nil {
		t.Fatal(err)
	}
	l, err := arena.NewLayout(64, ring)
	if err != nil {
		t.Fatal(err)
	}
	// Made before the server's cleanup is registered, so it shuts after it.
	logf := testlog.Logf(t)
	cfg := Config{Engine: eng, Layout: l, Spin: 20 * time.Microsecond, ShimSpin: 10 * time.Microsecond,
		Linger: 30 * time.Second, Logf: logf}
	mod(&cfg)
	srv := NewServer(cfg)
	if err := srv.Listen(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); eng.Close() })
	return srv
}

func dialClient(t testing.TB, path string) *testClient {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	cl := &testClient{t: t, c: c, fds: map[int]bool{}}
	writeHello(t, c)
	var ok abi.CtlHelloOK
	oob := make([]byte, unix.CmsgSpace(4))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a test fails, never hangs
	n, oobn, _, _, err := c.ReadMsgUnix(bytesOf(&ok), oob)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil || n != int(unsafe.Sizeof(ok)) || ok.Hdr.Type != abi.MsgHelloOK {
		t.Fatalf("hello: n=%d type=%d err=%v", n, ok.Hdr.Type, err)
	}
	cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
	fds, err := unix.ParseUnixRights(&cms[0])
	if err != nil {
		t.Fatal(err)
	}
	cl.a, err = arena.Map(fds[0], ok.ArenaSize)
	unix.Close(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.close)
	return cl
}

// writeHello sends the hello a shim sends first, as this process.
func writeHello(t testing.TB, c *net.UnixConn) {
	var h abi.CtlHello
	h.Hdr = hdr(abi.MsgHello, 1, int(unsafe.Sizeof(h)))
	h.Pid = uint32(os.Getpid())
	copy(h.Comm[:], "gotest")
	if _, err := c.Write(bytesOf(&h)); err != nil {
		t.Fatal(err)
	}
}

func (cl *testClient) close() {
	for fd := range cl.fds {
		unix.Close(fd)
	}
	clear(cl.fds)
	cl.c.Close()
	if cl.a != nil {
		cl.a.Close()
		cl.a = nil
	}
}

// birth sends SOCKET or ACCEPT with a fresh socketpair end.
func (cl *testClient) birth(typ uint16, req abi.CtlReq) (abi.CtlReply, int) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		cl.t.Fatal(err)
	}
	rep := cl.birthFD(typ, req, pair[1])
	unix.Close(pair[1])
	_ = unix.SetNonblock(pair[0], true)
	if rep.Result < 0 {
		unix.Close(pair[0])
		return rep, -1
	}
	cl.fds[pair[0]] = true
	return rep, pair[0]
}

// birthFD sends SOCKET or ACCEPT passing fd as the daemon's end, which the
// caller keeps (a hostile client can).
func (cl *testClient) birthFD(typ uint16, req abi.CtlReq, fd int) abi.CtlReply {
	return cl.exchange(typ, req, []int{fd})
}

// exchange sends a control message with fds attached (the caller keeps
// its copies) and returns the daemon's reply.
func (cl *testClient) exchange(typ uint16, req abi.CtlReq, fds []int) abi.CtlReply {
	cl.seq++
	req.Hdr = hdr(typ, cl.seq, int(unsafe.Sizeof(req)))
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := cl.c.WriteMsgUnix(bytesOf(&req), oob, nil); err != nil {
		cl.t.Fatal(err)
	}
	var rep abi.CtlReply
	_ = cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := cl.c.Read(bytesOf(&rep)); err != nil {
		cl.t.Fatal(err)
	}
	_ = cl.c.SetReadDeadline(time.Time{})
	return rep
}

func (cl *testClient) socket(family int) *testSock {
	rep, fd := cl.birth(abi.MsgSocket, abi.CtlReq{Family: int32(family), Type: syscall.SOCK_STREAM})
	if rep.Result != 0 {
		cl.t.Fatalf("socket: %v", syscall.Errno(-rep.Result))
	}
	return &testSock{slot: rep.Sock, gen: rep.Gen, fd: fd, family: family}
}

// cmd posts a command and waits for its answer.
func (cl *testClient) cmd(s *testSock, op uint16, arg0, arg1 uint32, addr, opt []byte) (int32, abi.Cmd) {
	for i := 0; i < abi.CmdSlots; i++ {
		c := cl.a.Cmd(i)
		if !atomic.CompareAndSwapUint32(&c.State, abi.CmdFree, abi.CmdClaimed) {
			continue
		}
		c.Op, c.Sock, c.Gen, c.Arg0, c.Arg1 = op, s.slot, s.gen, arg0, arg1
		c.AddrLen = uint32(copy(c.Addr[:], addr))
		c.OptLen = uint32(copy(c.Opt[:], opt))
		atomic.StoreUint32(&c.State, abi.CmdSubmitted)
		atomic.OrUint64(&cl.a.Hdr().CmdPending, 1<<i)
		cl.a.Doorbell()
		deadline := time.Now().Add(10 * time.Second)
		for atomic.LoadUint32(&c.State) != abi.CmdDone {
			if time.Now().After(deadline) {
				cl.t.Fatalf("command %d: no answer", op)
			}
			atomic.StoreUint32(&c.Waiting, 1)
			futex.Wait(&c.State, abi.CmdSubmitted, 50*time.Millisecond)
		}
		out := *c
		atomic.StoreUint32(&c.Waiting, 0)
		atomic.StoreUint32(&c.State, abi.CmdFree)
		return out.Result, out
	}
	cl.t.Fatal("no free command slot")
	return 0, abi.Cmd{}
}

func sockaddr(family int, ap netip.AddrPort) []byte {
	b := make([]byte, abi.AddrLen)
	return b[:putSockaddr(b, family, ap)]
}

// waitFor polls the application fd until cond holds.
func (cl *testClient) waitFor(s *testSock, events int16, cond func() bool) {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			cl.t.Fatal("timed out waiting")
		}
		pfd := []unix.PollFd{{Fd: int32(s.fd), Events: events}}
		_, _ = unix.Poll(pfd, 100)
	}
}

func (cl *testClient) state(s *testSock) uint32 {
	return atomic.LoadUint32(&cl.a.Sock(s.slot).State)
}

func (cl *testClient) connect(s *testSock, ap netip.AddrPort) error {
	res, _ := cl.cmd(s, abi.OpConnect, 0, 0, sockaddr(s.family, ap), nil)
	if res == -int32(syscall.EINPROGRESS) {
		cl.waitFor(s, unix.POLLIN|unix.POLLOUT, func() bool { return cl.state(s)&(abi.SSConnected|abi.SSError) != 0 })
		if cl.state(s)&abi.SSConnected != 0 {
			return nil
		}
		res, out := cl.cmd(s, abi.OpGetsockopt, solSocket, soError, nil, make([]byte, 4))
		if res != 0 {
			return syscall.Errno(-res)
		}
		return syscall.Errno(binary.LittleEndian.Uint32(out.Opt[:]))
	}
	if res < 0 {
		return syscall.Errno(-res)
	}
	return nil
}

func (cl *testClient) listen(family int, ap netip.AddrPort) *testSock {
	s := cl.socket(family)
	if res, _ := cl.cmd(s, abi.OpBind, 0, 0, sockaddr(family, ap), nil); res != 0 {
		cl.t.Fatalf("bind %v: %v", ap, syscall.Errno(-res))
	}
	if res, _ := cl.cmd(s, abi.OpListen, 16, 0, nil, nil); res != 0 {
		cl.t.Fatalf("listen: %v", syscall.Errno(-res))
	}
	return s
}

func (cl *testClient) accept(ls *testSock) (*testSock, netip.AddrPort) {
	for {
		cl.waitFor(ls, unix.POLLIN, func() bool { return cl.state(ls)&abi.SSAcceptQ != 0 })
		rep, fd := cl.birth(abi.MsgAccept, abi.CtlReq{Sock: ls.slot, Gen: ls.gen})
		if rep.Result == -int32(syscall.EAGAIN) {
			continue
		}
		if rep.Result != 0 {
			cl.t.Fatalf("accept: %v", syscall.Errno(-rep.Result))
		}
		peer, err := parseSockaddr(rep.Addr[:rep.AddrLen], ls.family)
		if err != nil {
			cl.t.Fatal(err)
		}
		return &testSock{slot: rep.Sock, gen: rep.Gen, fd: fd, family: ls.family}, peer
	}
}

// send copies all of p into the tx ring, waiting for room.
func (cl *testClient) send(s *testSock, p []byte) error {
	for len(p) > 0 {
		if st := cl.state(s); st&(abi.SSWrDead|abi.SSReset) != 0 {
			return syscall.EPIPE
		}
		tx, _, data, _, dir := cl.rings(s)
		size := uint64(len(data))
		free := size - (s.txHead - atomic.LoadUint64(&tx.Tail))
		if free == 0 {
			cl.waitFor(s, unix.POLLOUT, func() bool {
				return s.txHead-atomic.LoadUint64(&tx.Tail) < size || cl.state(s)&abi.SSWrDead != 0
			})
			continue
		}
		if free == size && dir == nil {
			// Rewind an empty ring as the shim does (shim/ring.h).
			if h := arena.Rewind(s.txHead, size, uint64(len(p))); h != s.txHead {
				atomic.StoreUint64(&tx.Skip, h)
				s.txHead = h
				free = size - (h - atomic.LoadUint64(&tx.Tail))
			}
		}
		n := min(free, uint64(len(p)))
		a, b := arena.Span(data, s.txHead, n)
		copy(a, p)
		copy(b, p[len(a):])
		s.txHead += n
		atomic.StoreUint64(&tx.Head, s.txHead)
		cl.attention(s)
		p = p[n:]
	}
	return nil
}

func (cl *testClient) attention(s *testSock) {
	atomic.OrUint64(&cl.a.Hdr().Attention[s.slot/64], 1<<(s.slot%64))
	cl.a.Doorbell()
}

// recv reads what is there (at least one byte, or EOF as 0).
func (cl *testClient) recv(s *testSock, p []byte) (int, error) {
	sh := cl.a.Sock(s.slot)
	for {
		_, rx, _, data, dir := cl.rings(s)
		head := atomic.LoadUint64(&rx.Head)
		from := arena.SkipTo(head, s.rxTail, atomic.LoadUint64(&rx.Skip)) // the daemon rewound the ring
		avail := head - from
		if avail > 0 {
			s.rxTail = from
			n := min(avail, uint64(len(p)))
			a, b := arena.Span(data, s.rxTail, n)
			copy(p, a)
			copy(p[len(a):], b)
			s.rxTail += n
			atomic.StoreUint64(&rx.Tail, s.rxTail)
			switch {
			case dir != nil:
				if atomic.SwapUint32(&dir.hdr.WWait[1-dir.side], 0) != 0 {
					cl.attention(s)
				}
			case atomic.LoadUint32(&sh.DaemonWait)&abi.DWaitRxSpace != 0:
				cl.attention(s)
			}
			cl.unsignal(s)
			return int(n), nil
		}
		st := cl.state(s)
		if st&abi.SSReset != 0 {
			return 0, syscall.ECONNRESET
		}
		if st&abi.SSRdEOF != 0 {
			return 0, nil
		}
		var pfd = []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 5000); err != nil && err != unix.EINTR {
			return 0, err
		}
		if pfd[0].Revents&unix.POLLHUP != 0 {
			return 0, syscall.ECONNRESET
		}
	}
}

// unsignal drains the readiness byte once the ring is empty.
func (cl *testClient) unsignal(s *testSock) {
	sh := cl.a.Sock(s.slot)
	_, rx, _, _, _ := cl.rings(s)
	if atomic.LoadUint64(&rx.Head) != s.rxTail {
		return
	}
	if n := atomic.SwapUint32(&sh.Sig, abi.SigNone); n != abi.SigNone {
		var b [64]byte
		_, _, _ = unix.Recvfrom(s.fd, b[:min(int(n), len(b))], unix.MSG_DONTWAIT)
		if atomic.LoadUint64(&rx.Head) != s.rxTail || cl.state(s)&(abi.SSRdEOF|abi.SSReset) != 0 {
			cl.attention(s)
		}
	}
}

func (cl *testClient) recvAll(s *testSock) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := cl.recv(s, buf)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

func (cl *testClient) closeSock(s *testSock) {
	cl.cmd(s, abi.OpClose, 0, 0, nil, nil)
	cl.closeFD(s.fd)
}

// closeFD closes a socket's application end without a CLOSE command.
func (cl *testClient) closeFD(fd int) {
	if cl.fds[fd] {
		delete(cl.fds, fd)
		unix.Close(fd)
	}
}

func (s *testSock) String() string { return fmt.Sprintf("sock %d/%d", s.slot, s.gen) }

func dialRaw(t testing.TB, path string) *net.UnixConn {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
