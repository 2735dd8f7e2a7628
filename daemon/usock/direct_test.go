package usock

import (
	"bytes"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/gvisor"
	"github.com/nuse-project/nuse/stack/shm"
)

// directReq sends NUSE_CTL_DIRECT for (slot, gen) and returns the result
// and how many fds came with the reply.
func directReq(t *testing.T, cl *testClient, slot, gen uint32) (int32, int) {
	t.Helper()
	res, fds := cl.ctlFDs(abi.MsgDirect, slot, gen)
	closeFDs(fds)
	return res, len(fds)
}

// shmSocket opens a socket on the shm engine, whatever the default.
func shmSocket(t *testing.T, c *testClient) *testSock {
	t.Helper()
	var req abi.CtlReq
	req.Family, req.Type = syscall.AF_INET, syscall.SOCK_STREAM
	copy(req.Engine[:], "shm")
	rep, fd := c.birth(abi.MsgSocket, req)
	if rep.Result != 0 {
		t.Fatalf("socket on shm: %v", syscall.Errno(-rep.Result))
	}
	return &testSock{slot: rep.Sock, gen: rep.Gen, fd: fd, family: syscall.AF_INET}
}

// shmConn connects cl to a listener of other's on port, both on shm, and
// returns the connecting end and the accepted one (both direct).
func shmConn(t *testing.T, cl, other *testClient, port uint16) (c, a *testSock) {
	t.Helper()
	l := shmSocket(t, other)
	if res, _ := other.cmd(l, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.AddrPortFrom(lo4, port)), nil); res != 0 {
		t.Fatalf("bind: %v", syscall.Errno(-res))
	}
	if res, _ := other.cmd(l, abi.OpListen, 4, 0, nil, nil); res != 0 {
		t.Fatalf("listen: %v", syscall.Errno(-res))
	}
	c = shmSocket(t, cl)
	if err := cl.connect(c, netip.AddrPortFrom(lo4, port)); err != nil {
		t.Fatal(err)
	}
	a, _ = other.accept(l)
	if cl.state(c)&abi.SSDirect == 0 || other.state(a)&abi.SSDirect == 0 {
		t.Fatalf("shm ends not direct: states %#x %#x", cl.state(c), other.state(a))
	}
	return c, a
}

// shmServer runs a daemon with the shm engine as its default (cfg as
// given) and returns its control socket's path.
func shmServer(t *testing.T, cfg shm.Config) string {
	t.Helper()
	seng, err := shm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seng.Close() })
	_, path := startServerWith(t, 64<<10, func(c *Config) {
		c.Engine = seng
		c.Engines = map[string]stack.Engine{"shm": seng}
	})
	return path
}

// NUSE_CTL_WAKE gives a direct socket's program a copy of the daemon's
// end of its peer's app pair: a byte written there makes the peer's fd
// readable, with no daemon in between. It is refused for anything else,
// once the peer is closed, and when the engine is set to wake readers
// itself (shm.wake=daemon); the region's wake_ok says which.
func TestWakeRequest(t *testing.T) {
	path := shmServer(t, shm.Config{})
	cl, other := dialClient(t, path), dialClient(t, path)
	t.Cleanup(cl.close)
	t.Cleanup(other.close)
	c, a := shmConn(t, cl, other, 7402)
	cl.rings(c) // maps the region
	if ok := c.dir.hdr.WakeOK; ok != [2]uint32{1, 1} {
		t.Fatalf("wake_ok %v after both ends attached, want [1 1]", ok)
	}
	res, fds := cl.ctlFDs(abi.MsgWake, c.slot, c.gen)
	if res != 0 || len(fds) != 1 {
		closeFDs(fds)
		t.Fatalf("WAKE: result %d with fds %v, want 0 and one", res, fds)
	}
	if _, err := unix.Write(fds[0], []byte{1}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[0])
	pfd := []unix.PollFd{{Fd: int32(a.fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 5000); n != 1 || err != nil {
		t.Fatalf("the peer's app fd is not readable after the waker's byte: %d %v", n, err)
	}
	b := make([]byte, 8)
	if n, err := unix.Read(a.fd, b); n != 1 || err != nil || b[0] != 1 {
		t.Fatalf("the peer's app fd gave %q %v, want the one byte", b[:max(n, 0)], err)
	}

	for _, bad := range []struct {
		what      string
		slot, gen uint32
		want      syscall.Errno
	}{
		{"a stale generation", c.slot, c.gen + 7, syscall.EBADF},
		{"a slot out of range", 1 << 20, 1, syscall.EBADF},
	} {
		if res, fds := cl.ctlFDs(abi.MsgWake, bad.slot, bad.gen); res != -int32(bad.want) || len(fds) != 0 {
			closeFDs(fds)
			t.Errorf("WAKE on %s: %d with %d fds, want %v and none", bad.what, res, len(fds), bad.want)
		}
	}
	plain := cl.socket(syscall.AF_INET)
	if res, fds := cl.ctlFDs(abi.MsgWake, plain.slot, plain.gen); res != -int32(syscall.EINVAL) || len(fds) != 0 {
		closeFDs(fds)
		t.Errorf("WAKE on an unconnected socket: %d with %d fds, want EINVAL and none", res, len(fds))
	}

	// The peer closes: its waker is dropped before its pair goes.
	other.closeSock(a)
	deadline := time.Now().Add(10 * time.Second)
	for c.dir.hdr.WakeOK[1] != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ok := c.dir.hdr.WakeOK[1]; ok != 0 {
		t.Fatalf("wake_ok[1] = %d after the accepted end closed", ok)
	}
	if res, fds := cl.ctlFDs(abi.MsgWake, c.slot, c.gen); res != -int32(syscall.EAGAIN) || len(fds) != 0 {
		closeFDs(fds)
		t.Errorf("WAKE after the peer closed: %d with %d fds, want EAGAIN and none", res, len(fds))
	}

	// shm.wake=daemon: no end gets a waker.
	path = shmServer(t, shm.Config{DaemonWakes: true})
	cl2, other2 := dialClient(t, path), dialClient(t, path)
	t.Cleanup(cl2.close)
	t.Cleanup(other2.close)
	c2, _ := shmConn(t, cl2, other2, 7403)
	cl2.rings(c2)
	if ok := c2.dir.hdr.WakeOK; ok != [2]uint32{} {
		t.Errorf("wake_ok %v with shm.wake=daemon, want none", ok)
	}
	if res, fds := cl2.ctlFDs(abi.MsgWake, c2.slot, c2.gen); res != -int32(syscall.EAGAIN) || len(fds) != 0 {
		closeFDs(fds)
		t.Errorf("WAKE with shm.wake=daemon: %d with %d fds, want EAGAIN and none", res, len(fds))
	}
}

// NUSE_CTL_DIRECT gives a region only for a direct socket of the asking
// session: not for another engine's socket, a listener, a stale slot, and
// never an fd with a refusal.
func TestDirectRequestRefusals(t *testing.T) {
	seng, err := shm.New(shm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seng.Close() })
	// gvisor by name, whatever NUSE_TEST_ENGINE made the default.
	geng, err := gvisor.New(gvisor.Config{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { geng.Close() })
	_, path := startServerWith(t, 64<<10, func(cfg *Config) {
		cfg.Engine = geng
		cfg.Engines = map[string]stack.Engine{"gvisor": geng, "shm": seng}
	})
	cl := dialClient(t, path)
	t.Cleanup(cl.close)
	// A gvisor connection: not direct.
	ls := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7400))
	cs := cl.socket(syscall.AF_INET)
	if err := cl.connect(cs, netip.AddrPortFrom(lo4, 7400)); err != nil {
		t.Fatal(err)
	}
	if res, nfd := directReq(t, cl, cs.slot, cs.gen); res != -int32(syscall.EINVAL) || nfd != 0 {
		t.Errorf("DIRECT on a gvisor socket: %d with %d fds, want EINVAL and none", res, nfd)
	}
	if res, nfd := directReq(t, cl, ls.slot, ls.gen); res != -int32(syscall.EINVAL) || nfd != 0 {
		t.Errorf("DIRECT on a listener: %d with %d fds, want EINVAL and none", res, nfd)
	}
	if res, nfd := directReq(t, cl, cs.slot, cs.gen+7); res != -int32(syscall.EBADF) || nfd != 0 {
		t.Errorf("DIRECT on a stale generation: %d with %d fds, want EBADF and none", res, nfd)
	}
	if res, nfd := directReq(t, cl, 1<<20, 1); res != -int32(syscall.EBADF) || nfd != 0 {
		t.Errorf("DIRECT on a slot out of range: %d with %d fds, want EBADF and none", res, nfd)
	}

	// An shm connection, its ends in two sessions: each gets the region
	// with its own side, and the bytes go through it.
	other := dialClient(t, path)
	t.Cleanup(other.close)
	c, a := shmConn(t, cl, other, 7401)
	if err := cl.send(c, []byte("via the region")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := other.recv(a, buf)
	if err != nil || !bytes.Equal(buf[:n], []byte("via the region")) {
		t.Fatalf("recv %q %v", buf[:n], err)
	}
	if c.dir == nil || a.dir == nil || c.dir.side != 0 || a.dir.side != 1 {
		t.Fatalf("regions: connecting end %+v, accepted end %+v", c.dir, a.dir)
	}
	// The slot's own rings carried nothing.
	if h := cl.a.Sock(c.slot).Tx.Head; h != 0 {
		t.Errorf("the slot's tx ring moved (head %d) on a direct socket", h)
	}
}
