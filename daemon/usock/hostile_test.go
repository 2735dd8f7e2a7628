package usock

// Hostile clients: each test mounts one attack on the daemon from a session
// of its own (issue 9), while honest sessions on the same worker keep
// moving checksummed data, and then checks that the daemon's fds,
// goroutines and CPU come back to where they were once the attacker is gone.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/daemon/arena"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
)

// usage is what the daemon (this test process) holds.
type usage struct {
	fds, goroutines int
}

func snapshot() usage { return usage{fds: openFDs(), goroutines: runtime.NumGoroutine()} }

// backToBaseline waits until the daemon holds no more than it did at base
// (slack covers the test's own fds and goroutines opened since).
func backToBaseline(t *testing.T, base usage, slack int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := snapshot()
		if now.fds <= base.fds+slack && now.goroutines <= base.goroutines+slack {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon still holds %d fds and %d goroutines, against %d and %d before the attack",
				now.fds, now.goroutines, base.fds, base.goroutines)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cpuTime is the CPU this process has used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleCPU measures the CPU the process uses over d while the test does
// nothing. A worker that spins uses all of d; one that sleeps, almost none.
func idleCPU(d time.Duration) time.Duration {
	c := cpuTime()
	time.Sleep(d)
	return cpuTime() - c
}

// honest is a pair of well-behaved sessions on the same server, with a
// listener, that prove the daemon still serves everyone.
type honest struct {
	t      *testing.T
	srv    *testClient
	cli    *testClient
	ls     *testSock
	port   uint16
	rounds int
	// unstick undoes an attack that stalls the daemon, so that a failing
	// test ends instead of hanging.
	unstick []func()
}

func newHonest(t *testing.T, path string, port uint16) *honest {
	h := &honest{t: t, srv: dialClient(t, path), cli: dialClient(t, path), port: port}
	h.ls = h.srv.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, port))
	t.Cleanup(func() { // before the clients' arenas go
		for _, f := range h.unstick {
			f()
		}
	})
	return h
}

// exchange connects, moves 256 KiB one way and a reply back, checksummed,
// and fails the test if that takes longer than 10 s.
func (h *honest) exchange() {
	h.t.Helper()
	h.rounds++
	payload := make([]byte, 256<<10)
	rand.Read(payload)
	cs := h.cli.socket(syscall.AF_INET)
	client := goErr(func() error {
		if err := h.cli.connect(cs, netip.AddrPortFrom(lo4, h.port)); err != nil {
			return err
		}
		if err := h.cli.send(cs, payload); err != nil {
			return err
		}
		h.cli.cmd(cs, abi.OpShutdown, syscall.SHUT_WR, 0, nil, nil)
		back, err := h.cli.recvAll(cs)
		if err == nil && string(back) != "ok" {
			err = fmt.Errorf("reply %q", back)
		}
		return err
	})
	server := goErr(func() error {
		as, _ := h.srv.accept(h.ls)
		defer h.srv.closeSock(as)
		got, err := h.srv.recvAll(as)
		if err == nil && sha256.Sum256(got) != sha256.Sum256(payload) {
			err = fmt.Errorf("%d bytes arrived, not the %d sent", len(got), len(payload))
		}
		if err == nil {
			err = h.srv.send(as, []byte("ok"))
		}
		return err
	})
	timeout := time.After(10 * time.Second)
	for _, c := range []chan error{server, client} {
		select {
		case err := <-c:
			if err != nil {
				h.t.Fatalf("honest exchange %d: %v", h.rounds, err)
			}
		case <-timeout:
			// Undo the attack so that the two goroutines can finish
			// before the cleanups unmap their arenas.
			h.t.Errorf("honest exchange %d: not done within 10 s: the daemon stopped serving", h.rounds)
			for _, f := range h.unstick {
				f()
			}
			for _, c := range []chan error{server, client} {
				select {
				case <-c:
				case <-time.After(20 * time.Second):
					panic("the daemon is stuck for good")
				}
			}
			h.t.FailNow()
		}
	}
	h.cli.closeSock(cs)
}

// goErr runs f on a goroutine and delivers its error, also when f ends by
// t.Fatal (the test client's helpers call it).
func goErr(f func() error) chan error {
	c := make(chan error, 1)
	go func() {
		err := errors.New("ended by a failed check")
		defer func() { c <- err }()
		err = f()
	}()
	return c
}

// deadSession reports whether session id has ended (it may still linger).
func deadSession(srv *Server, id uint32) bool {
	srv.mu.Lock()
	s := srv.sessions[id]
	srv.mu.Unlock()
	if s == nil {
		return true
	}
	return s.gone.Load()
}

// liveSessions counts the live sessions in the server.
func liveSessions(srv *Server) int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.sessions)
}

func waitSessions(t *testing.T, srv *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for liveSessions(srv) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d live sessions, want %d", liveSessions(srv), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// 1. The client keeps a copy of the daemon's end of its socketpair and makes
// it blocking: the worker's drain read, and its readiness write into a
// full pair, must not block (they would, holding the session lock, stop
// every session on the worker).
func TestHostileBlockingPairDoesNotStallWorker(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	h := newHonest(t, path, 7101)
	h.exchange()
	base := snapshot()
	bad := dialClient(t, path)

	// Attack on the drain: FILL_DONE on a writable socket, nothing to read.
	p1, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	rep := bad.birthFD(abi.MsgSocket, abi.CtlReq{Family: syscall.AF_INET, Type: syscall.SOCK_STREAM}, p1[1])
	if rep.Result != 0 {
		t.Fatalf("socket: %v", syscall.Errno(-rep.Result))
	}
	s1 := &testSock{slot: rep.Sock, gen: rep.Gen, fd: p1[0], family: syscall.AF_INET}
	// Should the daemon block anyway, unblock it when the test ends so
	// that the failure is reported instead of hanging the cleanup.
	h.unstick = append(h.unstick, func() { unix.Write(p1[0], []byte{0}) })
	if err := unix.SetNonblock(p1[1], false); err != nil {
		t.Fatal(err)
	}

	// Attack on the readiness write: a listener whose pair is full, made
	// blocking, then made readable by a connection.
	p2, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	rep = bad.birthFD(abi.MsgSocket, abi.CtlReq{Family: syscall.AF_INET, Type: syscall.SOCK_STREAM}, p2[1])
	if rep.Result != 0 {
		t.Fatalf("socket: %v", syscall.Errno(-rep.Result))
	}
	s2 := &testSock{slot: rep.Sock, gen: rep.Gen, fd: p2[0], family: syscall.AF_INET}
	if res, _ := bad.cmd(s2, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.AddrPortFrom(lo4, 7102)), nil); res != 0 {
		t.Fatalf("bind: %v", syscall.Errno(-res))
	}
	if res, _ := bad.cmd(s2, abi.OpListen, 4, 0, nil, nil); res != 0 {
		t.Fatalf("listen: %v", syscall.Errno(-res))
	}
	filler := make([]byte, 64<<10)
	_ = unix.SetNonblock(p2[1], true)
	for {
		if _, err := unix.Write(p2[1], filler); err != nil {
			break
		}
	}
	h.unstick = append(h.unstick, func() { // as above: drain if the daemon blocked writing
		_ = unix.SetNonblock(p2[0], true)
		for {
			if _, err := unix.Read(p2[0], filler); err != nil {
				break
			}
		}
	})
	if err := unix.SetNonblock(p2[1], false); err != nil {
		t.Fatal(err)
	}
	atomic.StoreUint32(&bad.a.Sock(s2.slot).Sig, abi.SigNone)

	atomic.StoreUint32(&bad.a.Sock(s1.slot).Fill, abi.FillDone)
	bad.attention(s1)
	c := h.cli.socket(syscall.AF_INET) // makes the listener readable
	if err := h.cli.connect(c, netip.AddrPortFrom(lo4, 7102)); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 3; i++ {
		h.exchange()
	}
	if st := srv.Stats(); len(st.Sessions) != 3 {
		t.Errorf("%d live sessions, want 3", len(st.Sessions))
	}
	bad.close()
	for _, fd := range []int{p1[0], p1[1], p2[0], p2[1]} {
		unix.Close(fd)
	}
	waitSessions(t, srv, 2)
	h.exchange()
	backToBaseline(t, base, 4)
}

// 2. Whatever fd a client passes as a socket's channel is checked: not a
// socketpair end (an eventfd, a pipe, a UDP socket) is refused, and the same
// one passed again and again costs the daemon one descriptor, not one each.
func TestHostilePassedFdsAreChecked(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	h := newHonest(t, path, 7111)
	base := snapshot()
	bad := dialClient(t, path)
	req := abi.CtlReq{Family: syscall.AF_INET, Type: syscall.SOCK_STREAM}

	efd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
	var pipe [2]int
	_ = unix.Pipe2(pipe[:], unix.O_CLOEXEC)
	udp, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	dgram, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	for _, c := range []struct {
		name string
		fd   int
	}{{"eventfd", efd}, {"pipe", pipe[1]}, {"udp socket", udp}, {"unix datagram socket", dgram}} {
		if rep := bad.birthFD(abi.MsgSocket, req, c.fd); rep.Result >= 0 {
			t.Errorf("a %s was taken as a socket's channel", c.name)
		}
	}
	pair, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	before := openFDs()
	taken := 0
	for i := 0; i < 64; i++ {
		if rep := bad.birthFD(abi.MsgSocket, req, pair[1]); rep.Result == 0 {
			taken++
		} else if rep.Result != -int32(syscall.EEXIST) {
			t.Errorf("pass %d: %v, want EEXIST", i, syscall.Errno(-rep.Result))
		}
	}
	if taken != 1 {
		t.Errorf("the same fd was taken %d times, want once", taken)
	}
	if grew := openFDs() - before; grew > 2 {
		t.Errorf("64 passes of one fd cost the daemon %d fds", grew)
	}
	h.exchange()
	bad.close()
	for _, fd := range []int{efd, pipe[0], pipe[1], udp, dgram, pair[0], pair[1]} {
		unix.Close(fd)
	}
	waitSessions(t, srv, 2)
	backToBaseline(t, base, 4)
}

// 3a. Running out of fds makes accept fail; the control socket must keep
// serving once fds are back (it used to stop for good), and what the
// daemon held during the attack is given back.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	accepted := make(chan string, 16)
	srv, path := startServerWith(t, 64<<10, func(c *Config) {
		logf := c.Logf
		c.Logf = func(f string, a ...any) {
			if strings.Contains(f, "accept") {
				select {
				case accepted <- fmt.Sprintf(f, a...):
				default:
				}
			}
			logf(f, a...)
		}
	})
	base := snapshot()
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	low := rl
	low.Cur = uint64(openFDs() + 8)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
		}
	}
	t.Cleanup(restore)
	// The client's socket exists before the fds run out, so that its
	// connect needs none and the daemon's accept is what fails.
	c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cOpen := true
	closeC := func() {
		if cOpen {
			cOpen = false
			unix.Close(c)
		}
	}
	defer closeC()
	var hog []int
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		hog = append(hog, fd)
	}
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
		for _, fd := range hog {
			unix.Close(fd)
		}
		t.Fatal(err)
	}
	select {
	case line := <-accepted:
		t.Logf("the daemon said: %s", line)
	case <-time.After(2 * time.Second):
		t.Log("the daemon said nothing of a failed accept")
	}
	for _, fd := range hog {
		unix.Close(fd)
	}
	restore()
	h := newHonest(t, path, 7121) // fails within 10 s if nobody accepts
	h.exchange()
	// The connection that met EMFILE was accepted later: hung up, it goes.
	closeC()
	h.srv.close()
	h.cli.close()
	waitSessions(t, srv, 0)
	backToBaseline(t, base, 4)
}

// 3b. Connections that never say hello are hung up after the handshake
// time, and while they wait they are capped: the connection over the cap
// is refused with a message saying why.
func TestSilentConnectionsAreCappedAndTimedOut(t *testing.T) {
	_, path := startServerWith(t, 64<<10, func(c *Config) {
		c.Limits.Handshake = 300 * time.Millisecond
		c.Limits.MaxPending = 4
		c.Limits.MaxSessions = 3
	})
	base := snapshot()
	var silent []*net.UnixConn
	for i := 0; i < 4; i++ {
		silent = append(silent, dialRaw(t, path))
	}
	time.Sleep(50 * time.Millisecond) // let the daemon accept them
	over := dialRaw(t, path)
	if msg := readError(t, over); !strings.Contains(msg, "waiting for a first message") {
		t.Errorf("the fifth silent connection: %q", msg)
	}
	for i, c := range silent {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 64)); err == nil && n > 0 {
			continue // the error reply some get before the hang-up
		} else if os.IsTimeout(err) {
			t.Errorf("silent connection %d still open after 5 s", i)
		}
	}
	// Sessions are capped too.
	for i := 0; i < 3; i++ {
		dialClient(t, path)
	}
	c := dialRaw(t, path)
	writeHello(t, c)
	if msg := readError(t, c); !strings.Contains(msg, "3 sessions, its limit") {
		t.Errorf("the fourth session: %q", msg)
	}
	for _, c := range append(silent, over, c) {
		c.Close()
	}
	backToBaseline(t, base, 12) // three live sessions remain
}

// The daemon keeps a reserve of fds no client can take: sockets are
// refused with ENFILE, sessions with a message, before it runs out.
func TestFDReserveIsKept(t *testing.T) {
	srv, path := startServerWith(t, 64<<10, func(c *Config) {
		c.Limits.FDReserve = fdLimit() - openFDs() - 16
	})
	cl := dialClient(t, path)
	n := 0
	for ; n < 100; n++ {
		rep, fd := cl.birth(abi.MsgSocket, abi.CtlReq{Family: syscall.AF_INET, Type: syscall.SOCK_STREAM})
		if rep.Result < 0 {
			if rep.Result != -int32(syscall.ENFILE) {
				t.Errorf("socket %d refused with %v, want ENFILE", n, syscall.Errno(-rep.Result))
			}
			break
		}
		_ = fd // closed with the client
	}
	// 16 fds: the session's two, the rest for sockets (a socketpair end
	// each, and what the engine holds: NUSE_TEST_ENGINE=kernel).
	if want := 14 / (1 + stack.FDsPerSocket(srv.cfg.Engine)); n < want-3 || n > want {
		t.Fatalf("%d sockets before a refusal, want about %d", n, want)
	}
	c := dialRaw(t, path)
	writeHello(t, c)
	if msg := readError(t, c); !strings.Contains(msg, "short of file descriptors") {
		t.Errorf("a session while the budget is spent: %q", msg)
	}
}

// readError reads the daemon's answer and returns its error text.
func readError(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	var rep abi.CtlReply
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(bytesOf(&rep)); err != nil {
		t.Fatalf("no answer from the daemon: %v", err)
	}
	if rep.Hdr.Type != abi.MsgError {
		t.Fatalf("answer of type %d, want an error", rep.Hdr.Type)
	}
	return string(bytes.TrimRight(rep.Msg[:], "\x00"))
}

// 4. A session that ends with a command flagged in the arena, and unsent
// data lingering, must not make the worker spin; a forged tx.head on an
// unconnected socket must not keep a dead session around.
func TestHostileDeadSessionDoesNotSpin(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	h := newHonest(t, path, 7131)
	base := snapshot()
	cpuBefore := idleCPU(time.Second)

	bad := dialClient(t, path)
	// Unsent data that lingers: the honest server accepts but never reads.
	bs := bad.socket(syscall.AF_INET)
	connected := goErr(func() error { return bad.connect(bs, netip.AddrPortFrom(lo4, h.port)) })
	as, _ := h.srv.accept(h.ls)
	if err := <-connected; err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 2<<20)
	sh := bad.a.Sock(bs.slot)
	for i := 0; ; i++ { // fill the ring until the engine stops taking it
		n, _ := bad.a.TxPending(bs.slot, atomic.LoadUint64(&sh.Tx.Tail))
		if n == uint64(bad.a.L.RingSize) {
			break
		}
		if i == 1000 {
			t.Fatal("the engine never stopped taking data from a peer that does not read")
		}
		free := uint64(bad.a.L.RingSize) - n
		a, b := arena.Span(bad.a.Tx(bs.slot), bs.txHead, free)
		copy(a, junk)
		copy(b, junk)
		bs.txHead += free
		atomic.StoreUint64(&sh.Tx.Head, bs.txHead)
		bad.attention(bs)
		time.Sleep(20 * time.Millisecond)
	}
	// A forged head on a socket that never connected.
	us := bad.socket(syscall.AF_INET)
	atomic.StoreUint64(&bad.a.Sock(us.slot).Tx.Head, 1000)
	// Hang up, keeping the arena mapped (as a forked child would), and
	// once the session is dead flag a command that was never posted and
	// ask for attention.
	bad.c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !deadSession(srv, 3) {
		if time.Now().After(deadline) {
			t.Fatal("the session did not end when its process hung up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	atomic.OrUint64(&bad.a.Hdr().CmdPending, 1)
	bad.attention(us)

	spun := idleCPU(time.Second)
	t.Logf("CPU over 1 s idle: %v before the attack, %v after the attacker hung up", cpuBefore, spun)
	if spun > 500*time.Millisecond {
		t.Errorf("the daemon used %v of CPU in 1 s serving a dead session: it spins", spun)
	}
	for _, s := range srv.Stats().Sessions {
		for _, so := range s.Sockets {
			if s.ID == 3 && so.Slot == us.slot && so.State != "closed" {
				t.Errorf("the never-connected socket of the dead session lingers: %+v", so)
			}
		}
	}
	h.exchange()
	h.srv.closeSock(as) // unread data: reset, and the lingering socket goes
	waitSessions(t, srv, 2)
	bad.close()
	backToBaseline(t, base, 4)
}

// 7. Stats queries are capped in number, and a client that never reads its
// answer is dropped after the limit's time (it used to pin a goroutine and
// the whole answer forever).
func TestHostileStatsReadersAreBounded(t *testing.T) {
	srv, path := startServerWith(t, 16<<10, func(c *Config) {
		c.Layout, _ = arena.NewLayout(1024, 16<<10)
		c.Limits.MaxStats = 2
		c.Limits.StatsTimeout = 300 * time.Millisecond
	})
	for j := 0; j < 2; j++ {
		cl := dialClient(t, path)
		for i := 0; i < 1000; i++ { // a big answer: more than a socket buffer
			cl.socket(syscall.AF_INET)
		}
	}
	wmem := 212992
	if b, err := os.ReadFile("/proc/sys/net/core/wmem_default"); err == nil {
		fmt.Sscan(string(b), &wmem)
	}
	if b := statsQuery(t, path); len(b) < 2*wmem {
		t.Fatalf("the stats answer is only %d bytes: too small to block a writer (socket buffers are %d)", len(b), wmem)
	}
	base := snapshot()
	var stuck []*net.UnixConn
	for i := 0; i < 2; i++ {
		c := dialRaw(t, path)
		sendStatsReq(t, c)
		stuck = append(stuck, c)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		srv.mu.Lock()
		n := srv.stats
		srv.mu.Unlock()
		if n == 2 {
			break // both answers are being written
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d stats answers under way, want the 2 stuck ones", n)
		}
	}
	time.Sleep(50 * time.Millisecond) // and stuck, on a full socket buffer
	c := dialRaw(t, path)
	sendStatsReq(t, c)
	if msg := readError(t, c); !strings.Contains(msg, "stats queries are being answered") {
		t.Errorf("a third stats query while two are stuck: %q", msg)
	}
	c.Close()
	// Past the timeout the stuck ones are dropped and queries work again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cl := dialRaw(t, path)
		sendStatsReq(t, cl)
		buf := make([]byte, StatsChunk)
		_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := cl.Read(buf)
		cl.Close()
		if err == nil && k == 8 { // the length; a refusal is a longer message
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stats queries still refused 10 s after the stuck readers timed out")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range stuck {
		c.Close()
	}
	backToBaseline(t, base, 4)
}

func sendStatsReq(t testing.TB, c *net.UnixConn) {
	h := hdr(abi.MsgStats, 1, int(unsafe.Sizeof(abi.CtlHdr{})))
	if _, err := c.Write(bytesOf(&h)); err != nil {
		t.Fatal(err)
	}
}

// statsQuery asks for stats as `nuse stats` does and returns the JSON.
func statsQuery(t testing.TB, path string) []byte {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sendStatsReq(t, c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, StatsChunk)
	n, err := c.Read(buf)
	if err != nil || n != 8 {
		t.Fatalf("stats: %d bytes, %v", n, err)
	}
	want := binary.LittleEndian.Uint64(buf)
	var out []byte
	for uint64(len(out)) < want {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("stats: %v after %d of %d bytes", err, len(out), want)
		}
		out = append(out, buf[:n]...)
	}
	return out
}

func parseStats(t testing.TB, b []byte) Stats {
	var st Stats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// session finds a live session by id.
func session(t *testing.T, srv *Server, id uint32) *Session {
	t.Helper()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	s := srv.sessions[id]
	if s == nil {
		t.Fatalf("no live session %d", id)
	}
	return s
}

// The work budget: a session that floods -- every attention and command
// bit set all the time, every tx ring kept full, every rx ring emptied as
// it fills --
// gets no more than its budget in a worker pass, and honest sessions on
// the same worker keep moving checksummed data and getting answers.
func TestHostileFloodGetsOnlyItsBudget(t *testing.T) {
	const passSocks, passBytes = 8, 128 << 10
	const ring = 64 << 10
	srv, path := startServerWith(t, ring, func(c *Config) {
		c.Limits.PassSockets, c.Limits.PassBytes = passSocks, passBytes
	})
	h := newHonest(t, path, 7141)
	h.exchange()
	base := snapshot()

	bad := dialClient(t, path) // session 3
	ls := bad.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7142))
	var conns []*testSock
	for len(conns) < 62 { // with the listener, every slot of the arena
		c := bad.socket(syscall.AF_INET)
		if err := bad.connect(c, netip.AddrPortFrom(lo4, 7142)); err != nil {
			t.Fatal(err)
		}
		a, _ := bad.accept(ls)
		conns = append(conns, c, a)
	}
	stop := make(chan struct{})
	flood := goErr(func() error {
		hd := bad.a.Hdr()
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			for _, c := range conns {
				// Whatever the rings hold is sent; what arrives is
				// taken at once. Both counters only move forward.
				sh := bad.a.Sock(c.slot)
				atomic.StoreUint64(&sh.Tx.Head, atomic.LoadUint64(&sh.Tx.Tail)+ring)
				atomic.StoreUint64(&sh.Rx.Tail, atomic.LoadUint64(&sh.Rx.Head))
			}
			atomic.StoreUint64(&hd.Attention[0], ^uint64(0))
			atomic.StoreUint64(&hd.CmdPending, ^uint64(0)) // never posted: each costs a look
			bad.a.Doorbell()
		}
	})
	stopped := false
	stopFlood := func() error {
		if stopped {
			return nil
		}
		stopped = true
		close(stop)
		return <-flood
	}
	// Registered after bad's cleanup, so run before it: the flood stops
	// before bad's arena is unmapped, also when the test fails.
	t.Cleanup(func() { _ = stopFlood() })
	for i := 0; i < 3; i++ {
		h.exchange()
		if res, _ := h.srv.cmd(h.ls, abi.OpGetsockname, 0, 0, nil, nil); res != 0 {
			t.Fatalf("getsockname: %v", syscall.Errno(-res))
		}
	}
	if err := stopFlood(); err != nil {
		t.Fatal(err)
	}

	s := session(t, srv, 3)
	s.mu.Lock()
	most := s.busiest
	var moved uint64
	for _, so := range s.socks {
		if so != nil {
			moved += so.txBytes.Load()
		}
	}
	s.mu.Unlock()
	t.Logf("the flood moved %d bytes; the most one pass did for it: %d sockets, %d bytes", moved, most.socks, most.bytes)
	if most.socks < passSocks && most.bytes < passBytes {
		t.Fatalf("the flood never filled a pass's budget: too weak to test it")
	}
	// The socket that crosses the byte budget may move a ring each way.
	if most.socks > passSocks || most.bytes > passBytes+2*ring {
		t.Errorf("one pass did %d sockets and %d bytes for the flooding session: over its budget of %d sockets, %d bytes",
			most.socks, most.bytes, passSocks, passBytes)
	}
	bad.close()
	waitSessions(t, srv, 2)
	h.exchange()
	backToBaseline(t, base, 4)
	// Nothing the budget left over keeps the worker awake.
	if spun := idleCPU(time.Second); spun > 500*time.Millisecond {
		t.Errorf("the daemon used %v of CPU in 1 s idle after the flood: it spins", spun)
	}
}

// What a pass's budget leaves over is served in the next passes, not
// lost: sockets flagged once, with one doorbell, all get their data sent.
func TestPassBudgetLeavesNoWorkBehind(t *testing.T) {
	_, path := startServerWith(t, 64<<10, func(c *Config) {
		c.Limits.PassSockets, c.Limits.PassBytes = 2, 16<<10
	})
	h := newHonest(t, path, 7151)
	const n = 12
	var cs []*testSock
	payloads := make([][]byte, n)
	for i := range payloads {
		cs = append(cs, h.cli.socket(syscall.AF_INET))
		if err := h.cli.connect(cs[i], netip.AddrPortFrom(lo4, h.port)); err != nil {
			t.Fatal(err)
		}
		payloads[i] = make([]byte, 32<<10)
		rand.Read(payloads[i])
	}
	var as []*testSock
	for range cs {
		a, _ := h.srv.accept(h.ls)
		as = append(as, a)
	}
	skipDirect(t, h.cli, cs[0])
	// Each socket's ring filled without a word to the daemon, then every
	// attention bit at once and a single doorbell.
	var bits uint64
	for i, c := range cs {
		sh := h.cli.a.Sock(c.slot)
		a, b := arena.Span(h.cli.a.Tx(c.slot), c.txHead, uint64(len(payloads[i])))
		copy(a, payloads[i])
		copy(b, payloads[i][len(a):])
		c.txHead += uint64(len(payloads[i]))
		atomic.StoreUint64(&sh.Tx.Head, c.txHead)
		bits |= 1 << c.slot
	}
	atomic.OrUint64(&h.cli.a.Hdr().Attention[0], bits)
	h.cli.a.Doorbell()
	// The peers' data arrives (32 KiB fits a ring); which accepted socket
	// carries which connection does not matter, only that every payload
	// comes whole.
	want := map[[32]byte]bool{}
	for _, p := range payloads {
		want[sha256.Sum256(p)] = true
	}
	deadline := time.Now().Add(10 * time.Second)
	for i, a := range as {
		sh := h.srv.a.Sock(a.slot)
		for atomic.LoadUint64(&sh.Rx.Head)-a.rxTail < 32<<10 {
			if time.Now().After(deadline) {
				t.Fatalf("connection %d: %d bytes of 32 KiB came: work a pass left over was lost",
					i, atomic.LoadUint64(&sh.Rx.Head)-a.rxTail)
			}
			time.Sleep(5 * time.Millisecond)
		}
		x, y := arena.Span(h.srv.a.Rx(a.slot), a.rxTail, 32<<10)
		if !want[sha256.Sum256(append(append([]byte(nil), x...), y...))] {
			t.Errorf("connection %d: not one of the payloads sent", i)
		}
	}
}

// A slot's generation is the daemon's own count: a process that writes
// another into its arena neither picks the slot's next generation nor
// makes a handle with the forged one valid.
func TestGenerationIsTheDaemonsOwn(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	old := cl.socket(syscall.AF_INET)
	forged := old.gen + 1000
	atomic.StoreUint32(&cl.a.Sock(old.slot).Gen, forged)
	cl.closeSock(old)
	s := cl.socket(syscall.AF_INET)
	if s.slot != old.slot {
		t.Fatalf("the new socket took slot %d, not the freed %d", s.slot, old.slot)
	}
	if s.gen != old.gen+1 {
		t.Errorf("generation %d after %d (the arena said %d)", s.gen, old.gen, forged)
	}
	for _, g := range []uint32{forged, forged + 1} {
		if res, _ := cl.cmd(&testSock{slot: s.slot, gen: g, family: syscall.AF_INET}, abi.OpGetsockname, 0, 0, nil, nil); res != -int32(syscall.EBADF) {
			t.Errorf("a command with generation %d: %d, want EBADF", g, res)
		}
	}
}
