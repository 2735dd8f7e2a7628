package usock

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/daemon/arena"
	"github.com/nuse-project/nuse/shim/abi"
)

var lo4 = netip.MustParseAddr("127.0.0.1")

func TestTransferBothWaysWithHalfClose(t *testing.T) {
	_, path := startServer(t, 64<<10) // small rings: wrap-around and back-pressure
	transferBothWays(t, path, 7001)
}

// Without futex_waitv every session has a worker of its own.
func TestTransferOneSessionPerWorker(t *testing.T) {
	srv, path := startServerWith(t, 64<<10, func(c *Config) { c.SessionsPerWorker = 1 })
	transferBothWays(t, path, 7002)
	srv.mu.Lock()
	n := len(srv.workers)
	srv.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d workers for two sessions, want 2", n)
	}
}

// Several pairs at once over two workers, each serving several sessions.
func TestTransfersOverSharedWorkers(t *testing.T) {
	srv, path := startServerWith(t, 64<<10, func(c *Config) { c.Workers = 2 })
	errs := make(chan string, 4)
	for i := 0; i < 4; i++ {
		go func(i int) {
			defer func() { errs <- "" }()
			transferBothWays(t, path, uint16(7010+i))
		}(i)
	}
	for i := 0; i < 4; i++ {
		<-errs
	}
	srv.mu.Lock()
	n := len(srv.workers)
	srv.mu.Unlock()
	if n > 2 {
		t.Fatalf("%d workers, want at most 2", n)
	}
}

func transferBothWays(t *testing.T, path string, port uint16) {
	srvCl := dialClient(t, path)
	cliCl := dialClient(t, path) // a second process: sessions talk through the stack
	ls := srvCl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, port))

	cs := cliCl.socket(syscall.AF_INET)
	done := make(chan error, 1)
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	go func() {
		if err := cliCl.connect(cs, netip.AddrPortFrom(lo4, port)); err != nil {
			done <- err
			return
		}
		if err := cliCl.send(cs, payload); err != nil {
			done <- err
			return
		}
		if res, _ := cliCl.cmd(cs, abi.OpShutdown, syscall.SHUT_WR, 0, nil, nil); res != 0 {
			done <- syscall.Errno(-res)
			return
		}
		back, err := cliCl.recvAll(cs)
		if err == nil && !bytes.Equal(back, []byte("thanks")) {
			err = errors.New("wrong reply " + string(back))
		}
		done <- err
	}()
	as, peer := srvCl.accept(ls)
	if !peer.Addr().Is4() || peer.Port() == 0 {
		t.Errorf("peer address %v", peer)
	}
	got, err := srvCl.recvAll(as)
	if err != nil {
		t.Fatalf("server recv: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("payload corrupted: got %d bytes, want %d", len(got), len(payload))
	}
	// Half-closed: the other direction still works.
	if err := srvCl.send(as, []byte("thanks")); err != nil {
		t.Fatal(err)
	}
	srvCl.closeSock(as)
	t.Logf("%s server closed", time.Now().Format("15:04:05.000"))
	if err := <-done; err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Logf("%s client done", time.Now().Format("15:04:05.000"))
	cliCl.closeSock(cs)
}

func TestConnectRefusedAndAddrInUse(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	s := cl.socket(syscall.AF_INET)
	if err := cl.connect(s, netip.AddrPortFrom(lo4, 7999)); err != syscall.ECONNREFUSED {
		t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
	}
	cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7002))
	s2 := cl.socket(syscall.AF_INET)
	if res, _ := cl.cmd(s2, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.AddrPortFrom(lo4, 7002)), nil); res != -int32(syscall.EADDRINUSE) {
		t.Fatalf("second bind: %d, want -EADDRINUSE", res)
	}
	// An IPv6 address for an IPv4 socket.
	if res, _ := cl.cmd(s2, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET6, netip.MustParseAddrPort("[::1]:7003")), nil); res != -int32(syscall.EAFNOSUPPORT) {
		t.Fatalf("bind v6 address on v4 socket: %d, want -EAFNOSUPPORT", res)
	}
}

func TestBadCommandsGetErrorsAndHarmNothing(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	s := cl.socket(syscall.AF_INET)
	if res, _ := cl.cmd(s, 99, 0, 0, nil, nil); res != -int32(syscall.EINVAL) {
		t.Errorf("unknown op: %d", res)
	}
	if res, _ := cl.cmd(&testSock{slot: 63, gen: 7, family: syscall.AF_INET}, abi.OpListen, 1, 0, nil, nil); res != -int32(syscall.EBADF) {
		t.Errorf("free slot: %d", res)
	}
	if res, _ := cl.cmd(&testSock{slot: 1 << 30, family: syscall.AF_INET}, abi.OpListen, 1, 0, nil, nil); res != -int32(syscall.EINVAL) {
		t.Errorf("slot out of range: %d", res)
	}
	if res, _ := cl.cmd(&testSock{slot: s.slot, gen: s.gen + 1, family: syscall.AF_INET}, abi.OpListen, 1, 0, nil, nil); res != -int32(syscall.EBADF) {
		t.Errorf("stale generation: %d", res)
	}
	if res, _ := cl.cmd(s, abi.OpBind, 0, 0, []byte{2, 0, 1}, nil); res != -int32(syscall.EINVAL) {
		t.Errorf("short sockaddr: %d", res)
	}
	if res, _ := cl.cmd(s, abi.OpSetsockopt, solSocket, 12345, nil, []byte{1, 0, 0, 0}); res != -int32(syscall.ENOPROTOOPT) {
		t.Errorf("unknown option: %d", res)
	}
	// Options round-trip.
	if res, _ := cl.cmd(s, abi.OpSetsockopt, ipprotoTCP, tcpNoDelay, nil, []byte{1, 0, 0, 0}); res != 0 {
		t.Errorf("TCP_NODELAY: %d", res)
	}
	if res, out := cl.cmd(s, abi.OpGetsockopt, ipprotoTCP, tcpNoDelay, nil, make([]byte, 4)); res != 0 || out.Opt[0] != 1 || out.OptLen != 4 {
		t.Errorf("get TCP_NODELAY: %d %v", res, out.Opt[:4])
	}
	if len(srv.Stats().Sessions) != 1 {
		t.Errorf("session count %d", len(srv.Stats().Sessions))
	}
}

// A process that corrupts its ring loses its session; another process's
// session goes on.
func TestCorruptRingKillsOnlyThatSession(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	good := dialClient(t, path)
	bad := dialClient(t, path)
	ls := good.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7004))

	bs := bad.socket(syscall.AF_INET)
	if err := bad.connect(bs, netip.AddrPortFrom(lo4, 7004)); err != nil {
		t.Fatal(err)
	}
	good.accept(ls)
	skipDirect(t, bad, bs)
	sh := bad.a.Sock(bs.slot)
	atomic.StoreUint64(&sh.Tx.Head, 10*uint64(bad.a.L.RingSize)) // impossible
	bad.attention(bs)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := srv.Stats()
		ended := false
		for _, s := range append(st.Sessions, st.Ended...) {
			if s.Comm == "gotest" && s.Ended != "" {
				ended = true
			}
		}
		if ended {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the corrupt session was not ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The bad process's socket reads as reset.
	if _, err := bad.recv(bs, make([]byte, 10)); err != syscall.ECONNRESET {
		t.Errorf("recv on the killed session: %v, want ECONNRESET", err)
	}
	// The good session still works end to end.
	cs := good.socket(syscall.AF_INET)
	if err := good.connect(cs, netip.AddrPortFrom(lo4, 7004)); err != nil {
		t.Fatal(err)
	}
	as, _ := good.accept(ls)
	if err := good.send(cs, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := good.recv(as, buf)
	if err != nil || string(buf[:n]) != "still here" {
		t.Fatalf("good session: %q %v", buf[:n], err)
	}
}

// When a process goes away its session ends and its sockets are closed.
func TestProcessExitEndsSession(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7005))
	cl.close()
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.Stats().Sessions) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("session still live after its process went away")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The port is free again.
	cl2 := dialClient(t, path)
	cl2.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7005))
	if st := srv.Stats(); len(st.Ended) != 1 || st.Ended[0].Ended != "process ended" {
		t.Fatalf("history: %+v", st.Ended)
	}
}

// A process that says hello and leaves before the arena reaches it (the
// daemon's handshake write fails, or its first read sees EOF) leaves no
// live session behind.
func TestHelloThenHangUpLeavesNoSession(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	const n = 20 // under maxHistory
	for i := 0; i < n; i++ {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		writeHello(t, c)
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := srv.Stats()
		if len(st.Sessions) == 0 && len(st.Ended) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still live, %d ended, of %d", len(st.Sessions), len(st.Ended), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestVersionMismatchIsRefusedClearly(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path) // proves the server is up
	_ = cl
	// A newer shim, and an older one (version 2 had no engine name in
	// its socket requests).
	for _, v := range []uint16{abi.Version + 1, abi.Version - 1} {
		c := dialRaw(t, path)
		var h abi.CtlHello
		h.Hdr = hdr(abi.MsgHello, 1, 40)
		h.Hdr.Version = v
		if _, err := c.Write(bytesOf(&h)); err != nil {
			t.Fatal(err)
		}
		var rep abi.CtlReply
		if _, err := c.Read(bytesOf(&rep)); err != nil {
			t.Fatal(err)
		}
		msg := string(bytes.TrimRight(rep.Msg[:], "\x00"))
		want := fmt.Sprintf("ABI version %d not supported (this daemon speaks %d)", v, abi.Version)
		if rep.Hdr.Type != abi.MsgError || !strings.Contains(msg, want) {
			t.Fatalf("version %d: reply type %d msg %q", v, rep.Hdr.Type, msg)
		}
		c.Close()
	}
}

// A socket whose application fds are all gone, without a CLOSE, is closed by
// the daemon (its port is free again).
func TestAppFdGoneClosesSocket(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	ls := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7006))
	cl.closeFD(ls.fd) // no CLOSE command: as if its holder died
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := cl.socket(syscall.AF_INET)
		res, _ := cl.cmd(s, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.AddrPortFrom(lo4, 7006)), nil)
		cl.closeSock(s)
		if res == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port still bound 10 s after its last fd went away: %v", syscall.Errno(-res))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A closed socket's ring pages stay for a slot reused at once (no page
// faults on the next connection's path) and go back to the kernel once
// the slot has been free a while.
func TestFreeSlotPagesReclaimed(t *testing.T) {
	_, path := startServer(t, 64<<10)
	srvCl := dialClient(t, path)
	cliCl := dialClient(t, path)
	defer srvCl.close()
	defer cliCl.close()
	ls := srvCl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7350))
	cs := cliCl.socket(syscall.AF_INET)
	if err := cliCl.connect(cs, netip.AddrPortFrom(lo4, 7350)); err != nil {
		t.Fatal(err)
	}
	skipDirect(t, cliCl, cs)
	if err := cliCl.send(cs, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	slot := cs.slot
	cliCl.closeSock(cs)
	if cliCl.a.Tx(slot)[0] != 'h' {
		t.Fatal("the tx ring does not hold what was sent")
	}
	deadline := time.Now().Add(10 * time.Second)
	for cliCl.a.Tx(slot)[0] != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a slot free for seconds still holds its ring pages")
		}
		time.Sleep(50 * time.Millisecond)
	}
	srvCl.closeSock(ls)
}

// An idle connection's rings give back the pages they have cycled through,
// as a kernel socket's buffers do once read, and lose no byte doing so:
// the daemon the rx ring's, and it asks the shim (the producer) to give
// back the tx ring's.
func TestIdleRingPagesTrimmed(t *testing.T) {
	const ring = 64 << 10
	srvCl, cliCl, ss, cs := ringPair(t, ring, 7351)
	// Three rings' worth, a message at a time, each read before the next
	// is sent.
	msg := make([]byte, 3000)
	got := make([]byte, len(msg))
	for i := 0; i < 3*ring/len(msg); i++ {
		for j := range msg {
			msg[j] = byte(i + j%251)
		}
		if err := srvCl.send(ss, msg); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(msg); {
			m, err := cliCl.recv(cs, got[n:])
			if err != nil || m == 0 {
				t.Fatalf("message %d: recv %d, %v", i, m, err)
			}
			n += m
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("message %d came back different", i)
		}
	}
	_, rx, _, data, _ := cliCl.rings(cs)
	next := int(atomic.LoadUint64(&rx.Head) % ring / 4096)
	held := func() (pages []int) {
		for p := 0; p < ring/4096; p++ {
			if p != next && !allZero(data[p*4096:(p+1)*4096]) {
				pages = append(pages, p)
			}
		}
		return pages
	}
	deadline := time.Now().Add(10 * time.Second)
	for h := held(); len(h) > 0; h = held() {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the last read, the empty rx ring still holds pages %v (the next byte's is %d)", h, next)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The sender's tx ring moved three rings' worth: the shim is asked to
	// trim it; the receiver's moved nothing.
	for atomic.LoadUint32(&srvCl.a.Sock(ss.slot).DaemonWait)&abi.DWaitTrimTx == 0 {
		if time.Now().After(deadline) {
			t.Fatal("10 s after the last send, the shim was not asked to trim the idle tx ring")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if atomic.LoadUint32(&cliCl.a.Sock(cs.slot).DaemonWait)&abi.DWaitTrimTx != 0 {
		t.Error("asked to trim a tx ring that never moved")
	}
	// Still in order after the pages went.
	if err := srvCl.send(ss, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if n, err := cliCl.recv(cs, got); err != nil || string(got[:n]) != "after" {
		t.Fatalf("after the trim: %q, %v", got[:n], err)
	}
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// Small messages, each read before the next is written, stay in the rings'
// first pages: both producers (the daemon for rx, the shim -- here the
// test client, doing what the shim does -- for tx) rewind an empty ring
// once its next byte is arena.RewindAt into it, and the consumers follow.
func TestRingsRewind(t *testing.T) {
	const ring = 64 << 10
	srvCl, cliCl, ss, cs := ringPair(t, ring, 7352)
	const size = 1000
	msg, got := make([]byte, size), make([]byte, size)
	for i := 0; i < 4*ring/size; i++ {
		for j := range msg {
			msg[j] = byte(i*7 + j%253)
		}
		// client -> server through the client's tx ring and the server's
		// rx ring, then back the other way
		for _, d := range []struct {
			from, to *testClient
			fs, ts   *testSock
		}{{cliCl, srvCl, cs, ss}, {srvCl, cliCl, ss, cs}} {
			if err := d.from.send(d.fs, msg); err != nil {
				t.Fatal(err)
			}
			for n := 0; n < size; {
				m, err := d.to.recv(d.ts, got[n:])
				if err != nil || m == 0 {
					t.Fatalf("message %d: recv %d, %v", i, m, err)
				}
				n += m
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("message %d came through different", i)
			}
		}
	}
	// Four rings' worth went each way; the pages past where a rewind
	// happens (plus a message) were never touched.
	used := (arena.RewindAt + size + 4095) / 4096
	for _, c := range []struct {
		name string
		data []byte
	}{{"client tx", cliCl.a.Tx(cs.slot)}, {"client rx", cliCl.a.Rx(cs.slot)}, {"server tx", srvCl.a.Tx(ss.slot)}, {"server rx", srvCl.a.Rx(ss.slot)}} {
		for p := used; p < ring/4096; p++ {
			if !allZero(c.data[p*4096 : (p+1)*4096]) {
				t.Errorf("%s ring: page %d was written (a rewind keeps small messages in pages 0-%d)", c.name, p, used-1)
				break
			}
		}
	}
	for _, c := range []struct {
		name string
		r    *abi.Ring
	}{{"client rx", &cliCl.a.Sock(cs.slot).Rx}, {"server rx", &srvCl.a.Sock(ss.slot).Rx}} {
		if atomic.LoadUint64(&c.r.Skip) == 0 {
			t.Errorf("%s ring: the daemon never rewound it", c.name)
		}
	}
}

// ringPair connects a client's socket to a server's over rings of ring
// bytes (skipping the test where sockets go direct); the test's cleanup
// closes it all.
func ringPair(t *testing.T, ring uint32, port uint16) (srvCl, cliCl *testClient, ss, cs *testSock) {
	_, path := startServer(t, ring)
	srvCl, cliCl = dialClient(t, path), dialClient(t, path)
	t.Cleanup(srvCl.close)
	t.Cleanup(cliCl.close)
	ls := srvCl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, port))
	t.Cleanup(func() { srvCl.closeSock(ls) })
	cs = cliCl.socket(syscall.AF_INET)
	if err := cliCl.connect(cs, netip.AddrPortFrom(lo4, port)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cliCl.closeSock(cs) })
	skipDirect(t, cliCl, cs)
	ss, _ = srvCl.accept(ls)
	t.Cleanup(func() { srvCl.closeSock(ss) })
	return srvCl, cliCl, ss, cs
}
