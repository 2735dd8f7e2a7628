package usock

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/shim/abi"
	"golang.org/x/sys/unix"
)

// spares hands the daemon n fresh pairs (NUSE_CTL_SPARES) and returns the
// reply's result, the ids it gave and our ends (in order; the ones not
// kept are closed).
func (cl *testClient) spares(n int) (int32, []uint32, []int) {
	var ours, theirs []int
	for i := 0; i < n; i++ {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			cl.t.Fatal(err)
		}
		_ = unix.SetNonblock(p[0], true)
		ours, theirs = append(ours, p[0]), append(theirs, p[1])
	}
	rep := cl.sparesMsg(int32(n), theirs)
	closeFDs(theirs)
	var ids []uint32
	for i, fd := range ours {
		if int32(i) < rep.Result {
			ids = append(ids, binary.LittleEndian.Uint32(rep.Addr[4*i:]))
			cl.fds[fd] = true
		} else {
			unix.Close(fd)
		}
	}
	return rep.Result, ids, ours[:len(ids)]
}

// sparesMsg sends NUSE_CTL_SPARES saying count, with fds.
func (cl *testClient) sparesMsg(count int32, fds []int) abi.CtlReply {
	return cl.exchange(abi.MsgSpares, abi.CtlReq{Family: count}, fds)
}

// spareSocket is OpSocket on spare id, whose end we hold as fd.
func (cl *testClient) spareSocket(id uint32, fd, family int) (*testSock, int32) {
	q := abi.OpSocketReq{Family: int32(family), Type: syscall.SOCK_STREAM, Protocol: syscall.IPPROTO_TCP}
	res, out := cl.cmd(&testSock{}, abi.OpSocket, id, 0, nil, bytesOf(&q))
	if res != 0 {
		return nil, res
	}
	if out.AddrLen != 8 {
		cl.t.Fatalf("OpSocket: %d bytes of answer, want 8", out.AddrLen)
	}
	return &testSock{slot: binary.LittleEndian.Uint32(out.Addr[0:]), gen: binary.LittleEndian.Uint32(out.Addr[4:]), fd: fd, family: family}, 0
}

// spareAccept is OpAccept of listener ls on spare id (our end fd).
func (cl *testClient) spareAccept(ls *testSock, id uint32, fd int) (*testSock, netip.AddrPort, int32) {
	res, out := cl.cmd(ls, abi.OpAccept, id, 0, nil, make([]byte, 8))
	if res != 0 {
		return nil, netip.AddrPort{}, res
	}
	peer, err := parseSockaddr(out.Addr[:out.AddrLen], ls.family)
	if err != nil || out.OptLen != 8 {
		cl.t.Fatalf("OpAccept: peer %v (%v), %d bytes of answer", peer, err, out.OptLen)
	}
	return &testSock{slot: binary.LittleEndian.Uint32(out.Opt[0:]), gen: binary.LittleEndian.Uint32(out.Opt[4:]), fd: fd, family: ls.family}, peer, 0
}

// Sockets born and accepted on spare pairs, as commands on the ring: they
// carry data like those born through the control socket; an id the daemon
// does not hold is ENOENT; a command that fails leaves its spare spare.
func TestSpares(t *testing.T) {
	srv, path := startServer(t, 1<<16)
	cl := dialClient(t, path)
	res, ids, fds := cl.spares(4)
	if res != 4 || len(ids) != 4 || ids[0] == 0 || ids[0] == ids[1] || ids[1] == ids[2] || ids[2] == ids[3] {
		t.Fatalf("spares: result %d, ids %v", res, ids)
	}
	held := func() int { return srv.Stats().Sessions[0].Spares }
	if n := held(); n != 4 {
		t.Fatalf("stats: %d spares held, want 4", n)
	}
	ap := netip.MustParseAddrPort("127.0.0.1:7742")
	ls, e := cl.spareSocket(ids[0], fds[0], syscall.AF_INET)
	if e != 0 {
		t.Fatalf("OpSocket: %v", syscall.Errno(-e))
	}
	if res, _ := cl.cmd(ls, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, ap), nil); res != 0 {
		t.Fatalf("bind: %v", syscall.Errno(-res))
	}
	if res, _ := cl.cmd(ls, abi.OpListen, 16, 0, nil, nil); res != 0 {
		t.Fatalf("listen: %v", syscall.Errno(-res))
	}
	// Nothing pending: EAGAIN, and the spare stays the daemon's.
	if _, _, e := cl.spareAccept(ls, ids[2], fds[2]); e != -int32(syscall.EAGAIN) {
		t.Fatalf("OpAccept with nothing pending: %d, want -EAGAIN", e)
	}
	c, e := cl.spareSocket(ids[1], fds[1], syscall.AF_INET)
	if e != 0 {
		t.Fatalf("OpSocket: %v", syscall.Errno(-e))
	}
	if _, e := cl.spareSocket(ids[1], fds[1], syscall.AF_INET); e != -int32(syscall.ENOENT) {
		t.Fatalf("OpSocket on a used spare: %d, want -ENOENT", e)
	}
	if err := cl.connect(c, ap); err != nil {
		t.Fatalf("connect: %v", err)
	}
	cl.waitFor(ls, unix.POLLIN, func() bool { return cl.state(ls)&abi.SSAcceptQ != 0 })
	a, peer, e := cl.spareAccept(ls, ids[2], fds[2])
	if e != 0 {
		t.Fatalf("OpAccept: %v", syscall.Errno(-e))
	}
	res, out := cl.cmd(c, abi.OpGetsockname, 0, 0, nil, nil)
	if local, err := parseSockaddr(out.Addr[:out.AddrLen], syscall.AF_INET); res != 0 || err != nil || local != peer {
		t.Fatalf("accepted peer %v, the client's address %v (%v)", peer, local, err)
	}
	msg := []byte("born on a spare pair")
	if err := cl.send(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64)
	n, err := cl.recv(a, got)
	if err != nil || !bytes.Equal(got[:n], msg) {
		t.Fatalf("recv %q, %v; want %q", got[:n], err, msg)
	}
	// A refused socket leaves its spare too.
	if _, e := cl.spareSocket(ids[3], fds[3], syscall.AF_UNIX); e != -int32(syscall.EAFNOSUPPORT) {
		t.Fatalf("OpSocket AF_UNIX: %d, want -EAFNOSUPPORT", e)
	}
	if _, e := cl.spareSocket(ids[3], fds[3], syscall.AF_INET6); e != 0 {
		t.Fatalf("OpSocket on the refused one's spare: %v", syscall.Errno(-e))
	}
	if n := held(); n != 0 {
		t.Fatalf("stats: %d spares held after all were used, want 0", n)
	}
}

// A session holds at most abi.SparesHeld spares; those whose program end
// is gone make room again; malformed SPARES messages are refused; the
// session's end lets go of the rest (our ends hang up).
func TestSparesBounded(t *testing.T) {
	_, path := startServer(t, 1<<16)
	cl := dialClient(t, path)
	var all []int
	for i := 0; i < abi.SparesHeld/abi.SparesMax; i++ {
		res, _, fds := cl.spares(abi.SparesMax)
		if res != abi.SparesMax {
			t.Fatalf("spares batch %d: result %d", i, res)
		}
		all = append(all, fds...)
	}
	if res, _, _ := cl.spares(1); res != -int32(syscall.EMFILE) {
		t.Fatalf("a spare past %d: result %d, want -EMFILE", abi.SparesHeld, res)
	}
	cl.closeFD(all[0])
	cl.closeFD(all[1])
	if res, _, _ := cl.spares(3); res != 2 {
		t.Fatalf("after two spares hung up: result %d, want 2", res)
	}
	p, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(p[0])
	if rep := cl.sparesMsg(2, p[1:]); rep.Result != -int32(syscall.EINVAL) {
		t.Fatalf("SPARES saying 2 with 1 fd: result %d, want -EINVAL", rep.Result)
	}
	unix.Close(p[1])
	if rep := cl.sparesMsg(0, nil); rep.Result != -int32(syscall.EINVAL) {
		t.Fatalf("SPARES with none: result %d, want -EINVAL", rep.Result)
	}
	// What is not a socketpair end is refused, and the session goes on.
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	defer pw.Close()
	if rep := cl.sparesMsg(1, []int{int(pr.Fd())}); rep.Result >= 0 {
		t.Fatalf("a pipe as a spare: result %d, want -errno", rep.Result)
	}
	// Malformed OpSocket requests: refused, the spare kept.
	cl.closeFD(all[2]) // room for one (the session holds its fill)
	if res, _, _ := cl.spares(1); res != 1 {
		t.Fatalf("a spare where one hung up: result %d, want 1", res)
	}
	cl.closeFD(all[3])
	_, ids, fds := cl.spares(1)
	if res, _ := cl.cmd(&testSock{}, abi.OpSocket, ids[0], 0, nil, []byte{2, 0, 0, 0}); res != -int32(syscall.EINVAL) {
		t.Fatalf("OpSocket with a short request: %d, want -EINVAL", res)
	}
	bad := abi.OpSocketReq{Family: syscall.AF_INET, Type: syscall.SOCK_STREAM}
	copy(bad.Engine[:], "no terminator!!!")
	if res, _ := cl.cmd(&testSock{}, abi.OpSocket, ids[0], 0, nil, bytesOf(&bad)); res != -int32(syscall.EINVAL) {
		t.Fatalf("OpSocket with an unterminated engine name: %d, want -EINVAL", res)
	}
	copy(bad.Engine[:], "nosuch\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	if res, _ := cl.cmd(&testSock{}, abi.OpSocket, ids[0], 0, nil, bytesOf(&bad)); res != -int32(syscall.ENOPROTOOPT) {
		t.Fatalf("OpSocket on an engine the daemon does not run: %d, want -ENOPROTOOPT", res)
	}
	if _, e := cl.spareSocket(ids[0], fds[0], syscall.AF_INET); e != 0 {
		t.Fatalf("OpSocket on the spare the malformed ones left: %v", syscall.Errno(-e))
	}
	last := all[len(all)-1]
	cl.c.Close() // the session ends
	pfd := []unix.PollFd{{Fd: int32(last), Events: unix.POLLIN}}
	deadline := time.Now().Add(10 * time.Second)
	for pfd[0].Revents&unix.POLLHUP == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a spare's end did not hang up when the session ended")
		}
		_, _ = unix.Poll(pfd, 100)
	}
}
