package usock

import (
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/shim/abi"
)

// ctl sends a control message with fd (none if fd < 0) and returns the
// daemon's reply.
func (cl *testClient) ctl(typ uint16, req abi.CtlReq, fd int) abi.CtlReply {
	if fd >= 0 {
		return cl.exchange(typ, req, []int{fd})
	}
	return cl.exchange(typ, req, nil)
}

// A listener handed on (issue 11 case 2): the giver asks the daemon to keep
// it, the taker proves it holds the fd and gets a slot of its own on the
// same listener; after the giver closes, the taker accepts; once nobody
// holds the fd the listener closes (its port is free again) and the daemon
// holds no more fds than before.
func TestListenerHandedOn(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	base := snapshot()
	counted := srv.clientFDs.Load()
	ap := netip.AddrPortFrom(lo4, 7340)
	giver := dialClient(t, path)
	ls := giver.listen(syscall.AF_INET, ap)
	if rep := giver.ctl(abi.MsgKeep, abi.CtlReq{Family: syscall.AF_INET, Sock: ls.slot, Gen: ls.gen}, -1); rep.Result != 0 {
		t.Fatalf("keep: %v", syscall.Errno(-rep.Result))
	}
	// The taker holds the same fd (in a real program: inherited or
	// received); here it is the giver's, in this one process.
	fd, err := unix.Dup(ls.fd)
	if err != nil {
		t.Fatal(err)
	}
	taker := dialClient(t, path)
	taker.fds[fd] = true
	rep := taker.ctl(abi.MsgAdopt, abi.CtlReq{}, fd)
	if rep.Result != 0 {
		t.Fatalf("adopt: %v", syscall.Errno(-rep.Result))
	}
	if got, err := parseSockaddr(rep.Addr[:rep.AddrLen], syscall.AF_INET); err != nil || got != ap {
		t.Fatalf("adopt says the listener is at %v (%v), want %v", got, err, ap)
	}
	tls := &testSock{slot: rep.Sock, gen: rep.Gen, fd: fd, family: syscall.AF_INET}
	if st := taker.state(tls); st&abi.SSListening == 0 {
		t.Fatalf("the adopted slot's state %#x is not listening", st)
	}
	giver.closeSock(ls) // its CLOSE: the taker's hold keeps the listener

	cl := dialClient(t, path)
	cs := cl.socket(syscall.AF_INET)
	if err := cl.connect(cs, ap); err != nil {
		t.Fatalf("connect after the giver closed: %v", err)
	}
	as, _ := taker.accept(tls)
	if err := cl.send(cs, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if n, err := taker.recv(as, got); err != nil || string(got[:n]) != "hello" {
		t.Fatalf("the taker's connection read %q, %v", got[:n], err)
	}
	// The client closes first and the server after its EOF: no TIME_WAIT
	// on the listener's port (a simultaneous close leaves one).
	cl.closeSock(cs)
	if rest, err := taker.recvAll(as); err != nil || len(rest) != 0 {
		t.Fatalf("the taker's connection: %q, %v before EOF", rest, err)
	}
	taker.closeSock(as)

	// The taker's CLOSE, then the last copy of the fd: the listener ends
	// (parked for the fd's holder until then) and its port is free.
	taker.closeSock(tls)
	deadline := time.Now().Add(10 * time.Second)
	for {
		probe := cl.socket(syscall.AF_INET)
		// SO_REUSEADDR: the closed connection's TIME_WAIT is no listener.
		cl.cmd(probe, abi.OpSetsockopt, solSocket, soReuseAddr, nil, []byte{1, 0, 0, 0})
		res, _ := cl.cmd(probe, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, ap), nil)
		cl.closeSock(probe)
		if res == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the port is still taken after every holder let go: %v", syscall.Errno(-res))
		}
		time.Sleep(50 * time.Millisecond)
	}
	giver.close()
	taker.close()
	cl.close()
	waitSessions(t, srv, 0)
	backToBaseline(t, base, 2)
	deadline = time.Now().Add(10 * time.Second)
	for srv.clientFDs.Load() != counted {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon counts %d fds held for clients after everything closed, %d before",
				srv.clientFDs.Load(), counted)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// What is not a handed-on listener is refused, and the session goes on.
func TestListenerRefusals(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	s := cl.socket(syscall.AF_INET)
	if rep := cl.ctl(abi.MsgKeep, abi.CtlReq{Sock: s.slot, Gen: s.gen}, -1); rep.Result != -int32(syscall.EINVAL) {
		t.Fatalf("keep of an unconnected socket: %d, want EINVAL", rep.Result)
	}
	if rep := cl.ctl(abi.MsgKeep, abi.CtlReq{Sock: s.slot, Gen: s.gen + 1}, -1); rep.Result != -int32(syscall.EBADF) {
		t.Fatalf("keep of a stale generation: %d, want EBADF", rep.Result)
	}
	// A socket's own app end is no listener's; nor is a pipe.
	if rep := cl.ctl(abi.MsgAdopt, abi.CtlReq{}, s.fd); rep.Result != -int32(syscall.ENOTSOCK) {
		t.Fatalf("adopt of a socket's fd: %d, want ENOTSOCK", rep.Result)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if rep := cl.ctl(abi.MsgAdopt, abi.CtlReq{}, p[0]); rep.Result != -int32(syscall.ENOTSOCK) {
		t.Fatalf("adopt of a pipe: %d, want ENOTSOCK", rep.Result)
	}
	// A stranger binding our name's shape in its own socket proves nothing.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	if err := unix.Bind(pair[1], &unix.SockaddrUnix{Name: "@nuse-lsn/1/999999"}); err != nil {
		t.Fatal(err)
	}
	if rep := cl.ctl(abi.MsgAdopt, abi.CtlReq{}, pair[0]); rep.Result != -int32(syscall.ENOTSOCK) {
		t.Fatalf("adopt of a forged name: %d, want ENOTSOCK", rep.Result)
	}
	// The session still works.
	if res, _ := cl.cmd(s, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.AddrPortFrom(lo4, 7341)), nil); res != 0 {
		t.Fatalf("bind after the refusals: %v", syscall.Errno(-res))
	}
	cl.closeSock(s)
	cl.close()
}
