package usock

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/shim/abi"
)

// revents polls fd without waiting.
func revents(fd int) int16 {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT | unix.POLLRDHUP}}
	if n, _ := unix.Poll(p, 0); n != 1 {
		return 0
	}
	return p[0].Revents
}

// fill does what the shim does when a connect is under way: it makes the
// app end unwritable with junk and says so.
func (cl *testClient) fill(s *testSock) {
	_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1)
	junk := make([]byte, 1024)
	for {
		if _, err := unix.Write(s.fd, junk); err != nil {
			break
		}
	}
	atomic.StoreUint32(&cl.a.Sock(s.slot).Fill, abi.FillDone)
	cl.attention(s)
}

// slotGone waits until the daemon has let go of s (a command on it fails
// with EBADF).
func (cl *testClient) slotGone(s *testSock) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, _ := cl.cmd(s, abi.OpGetsockopt, solSocket, soError, nil, make([]byte, 4))
		if res == -int32(syscall.EBADF) {
			return
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("%v still held 10 s after its last fd went away (%d)", s, res)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A failed connect lets go of the daemon's end with the shim's junk in it:
// the app end polls as Linux's socket (ERR until SO_ERROR reads it), and
// REPAIR gives the socket a fresh pair that carries a connection.
func TestRefusedConnectCutsPairAndRepairs(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	s := cl.socket(syscall.AF_INET)
	res, _ := cl.cmd(s, abi.OpConnect, 0, 0, sockaddr(syscall.AF_INET, netip.AddrPortFrom(lo4, 7019)), nil)
	if res == -int32(syscall.ECONNREFUSED) && os.Getenv("NUSE_TEST_ENGINE") == "shm" {
		t.Skip("shm refuses at once: no connect in progress to fail later")
	}
	if res != -int32(syscall.EINPROGRESS) {
		t.Fatalf("connect: %d, want -EINPROGRESS", res)
	}
	cl.fill(s)
	// ERR shows as the daemon's end goes; OUT once its junk is freed.
	want := int16(unix.POLLIN | unix.POLLOUT | unix.POLLERR | unix.POLLHUP | unix.POLLRDHUP)
	cl.waitFor(s, unix.POLLIN, func() bool { return revents(s.fd) == want })
	if e, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != int(syscall.ECONNRESET) {
		t.Fatalf("the app end's error: %d %v", e, err)
	}
	if ev := revents(s.fd); ev != want&^unix.POLLERR {
		t.Fatalf("after SO_ERROR the app fd polls %#x, want %#x", ev, want&^unix.POLLERR)
	}
	_, out := cl.cmd(s, abi.OpGetsockopt, solSocket, soError, nil, make([]byte, 4))
	if e := syscall.Errno(binary.LittleEndian.Uint32(out.Opt[:])); e != syscall.ECONNREFUSED {
		t.Fatalf("SO_ERROR: %v, want ECONNREFUSED", e)
	}

	// A fresh pair; the old app end goes.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep := cl.birthFD(abi.MsgRepair, abi.CtlReq{Sock: s.slot, Gen: s.gen}, pair[1]); rep.Result != 0 {
		t.Fatalf("repair: %v", syscall.Errno(-rep.Result))
	}
	unix.Close(pair[1])
	cl.closeFD(s.fd)
	_ = unix.SetNonblock(pair[0], true)
	s.fd = pair[0]
	cl.fds[s.fd] = true
	if ev := revents(s.fd); ev != unix.POLLOUT {
		t.Fatalf("the new pair polls %#x, want POLLOUT", ev)
	}

	ls := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7018))
	if err := cl.connect(s, netip.AddrPortFrom(lo4, 7018)); err != nil {
		t.Fatalf("connect after the repair: %v", err)
	}
	as, _ := cl.accept(ls)
	if err := cl.send(s, []byte("again")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := cl.recv(as, buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("recv: %q %v", buf[:n], err)
	}
	// Only an idle socket takes a new pair, and only its own.
	for _, c := range []struct {
		req  abi.CtlReq
		want syscall.Errno
	}{{abi.CtlReq{Sock: s.slot, Gen: s.gen}, syscall.EISCONN}, {abi.CtlReq{Sock: s.slot, Gen: s.gen + 1}, syscall.EBADF}} {
		rep, fd := cl.birth(abi.MsgRepair, c.req)
		if fd >= 0 || rep.Result != -int32(c.want) {
			t.Fatalf("repair %+v: %d, want %v", c.req, rep.Result, c.want)
		}
	}
}

// A reset hangs the pair up both ways (HUP), and the daemon still tells
// the program's last close from its own shutdown.
func TestResetHangsUpAndIsReapedOnClose(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	ls := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7016))
	c := cl.socket(syscall.AF_INET)
	if err := cl.connect(c, netip.AddrPortFrom(lo4, 7016)); err != nil {
		t.Fatal(err)
	}
	a, _ := cl.accept(ls)
	skipDirect(t, cl, a) // the test watches the slot's rx ring
	if err := cl.send(c, []byte("unread")); err != nil {
		t.Fatal(err)
	}
	cl.waitFor(a, unix.POLLIN, func() bool { return atomic.LoadUint64(&cl.a.Sock(a.slot).Rx.Head) != 0 })
	cl.closeSock(a) // unread data: a reset
	want := int16(unix.POLLIN | unix.POLLOUT | unix.POLLHUP | unix.POLLRDHUP)
	cl.waitFor(c, unix.POLLIN, func() bool { return revents(c.fd) == want })
	if cl.state(c)&abi.SSReset == 0 {
		t.Fatalf("state %#x: no RESET", cl.state(c))
	}
	// The listener's fd goes without a CLOSE: once it is let go of, the
	// daemon has swept hang-ups since the reset, and the reset socket,
	// whose pair polls HUP by the daemon's own doing, is still there.
	cl.closeFD(ls.fd)
	cl.slotGone(ls)
	if res, _ := cl.cmd(c, abi.OpGetsockopt, solSocket, soError, nil, make([]byte, 4)); res != 0 {
		t.Fatalf("the reset socket was let go of with its fd still open (%d)", res)
	}
	cl.closeFD(c.fd)
	cl.slotGone(c)
}

// A listener shut down has its pair cut: the shim puts another socket
// under its fds, and the close of the old app end is not the program's
// (the socket stays, and listens again on a fresh pair).
func TestShutListenerCutsPairAndListensAgain(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	ls := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7014))
	if res, _ := cl.cmd(ls, abi.OpShutdown, unix.SHUT_RDWR, 0, nil, nil); res != 0 {
		t.Fatalf("shutdown: %v", syscall.Errno(-res))
	}
	if ev := revents(ls.fd); ev&unix.POLLHUP == 0 {
		t.Fatalf("after the shutdown the old app end polls %#x: no HUP", ev)
	}
	cl.closeFD(ls.fd) // the shim's unpair
	other := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7015))
	cl.closeFD(other.fd)
	cl.slotGone(other) // a hang-up sweep has run since
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep := cl.birthFD(abi.MsgRepair, abi.CtlReq{Sock: ls.slot, Gen: ls.gen}, pair[1]); rep.Result != 0 {
		t.Fatalf("repair of the shut listener: %v", syscall.Errno(-rep.Result))
	}
	unix.Close(pair[1])
	_ = unix.SetNonblock(pair[0], true)
	ls.fd = pair[0]
	cl.fds[ls.fd] = true
	if res, _ := cl.cmd(ls, abi.OpListen, 16, 0, nil, nil); res != 0 {
		t.Fatalf("listen again: %v", syscall.Errno(-res))
	}
	c := cl.socket(syscall.AF_INET)
	if err := cl.connect(c, netip.AddrPortFrom(lo4, 7014)); err != nil {
		t.Fatalf("connect to the listener again: %v", err)
	}
	cl.accept(ls)
}
