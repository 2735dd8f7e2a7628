package usock

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/shim/abi"
)

// relayPair asks the daemon to relay s through a fresh socketpair and
// returns the program's end of it (a plain blocking stream socket), or the
// daemon's refusal.
func (cl *testClient) relayPair(s *testSock) (*os.File, syscall.Errno) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		cl.t.Fatal(err)
	}
	rep := cl.birthFD(abi.MsgRelay, abi.CtlReq{Family: int32(s.family), Sock: s.slot, Gen: s.gen}, pair[1])
	unix.Close(pair[1])
	if rep.Result < 0 {
		unix.Close(pair[0])
		return nil, syscall.Errno(-rep.Result)
	}
	return os.NewFile(uintptr(pair[0]), "relayed"), 0
}

// readFull reads n bytes from f within a bounded time.
func readFull(t *testing.T, f *os.File, n int) []byte {
	t.Helper()
	_ = f.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatalf("reading %d bytes from the relay: %v", n, err)
	}
	return b
}

// A relayed socket carries, in order, what its rings held and then what
// the engine moves, both ways; it outlives the session that asked for it
// (an exec'd image, a process that got it over SCM_RIGHTS); EOF passes
// both ways; and when the program's end closes, the daemon holds nothing
// more than before.
func TestRelayCarriesRingsAndOutlivesSession(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	base := snapshot()
	counted := srv.clientFDs.Load()
	srvCl := dialClient(t, path)
	cliCl := dialClient(t, path)
	ls := srvCl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7310))
	cs := cliCl.socket(syscall.AF_INET)
	if err := cliCl.connect(cs, netip.AddrPortFrom(lo4, 7310)); err != nil {
		t.Fatal(err)
	}
	as, _ := srvCl.accept(ls)

	// Bytes the program has not read sit in its rx ring when it hands the
	// socket on: they must come out of the relay first.
	if err := srvCl.send(as, []byte("early")); err != nil {
		t.Fatal(err)
	}
	_, rx, _, _, _ := cliCl.rings(cs) // the slot's, or the shm region's
	cliCl.waitFor(cs, unix.POLLIN, func() bool { return atomic.LoadUint64(&rx.Head)-cs.rxTail >= 5 })

	f, e := cliCl.relayPair(cs)
	if e != 0 {
		t.Fatalf("relay: %v", e)
	}
	defer f.Close()
	// Handed on, but the session still holds the socket (the process that
	// handed it on, or a forked sibling, has not let go): its rings still
	// carry the connection, and the relay waits.
	if _, e := cliCl.relayPair(cs); e != syscall.EBUSY {
		t.Fatalf("a second hand-off of a socket still held: %v, want EBUSY", e)
	}
	if err := cliCl.send(cs, []byte("ring")); err != nil {
		t.Fatal(err)
	}
	if got := make([]byte, 4); func() bool { n, err := srvCl.recv(as, got); return err != nil || string(got[:n]) != "ring" }() {
		t.Fatalf("the session stopped carrying the socket once it was handed on")
	}
	// Its last holder lets go: the relay takes the connection.
	if res, _ := cliCl.cmd(cs, abi.OpClose, 0, 0, nil, nil); res != 0 {
		t.Fatalf("close: %v", syscall.Errno(-res))
	}
	if got := readFull(t, f, 5); string(got) != "early" {
		t.Fatalf("first bytes through the relay: %q, want the unread %q", got, "early")
	}
	if st, eng := srv.Stats(), srv.cfg.Engine.Name(); len(st.Relays) != 1 || st.Relays[0].Engine != eng || st.Relays[0].Remote != "127.0.0.1:7310" {
		t.Fatalf("stats should show the relay on %s to 127.0.0.1:7310: %+v", eng, st.Relays)
	}

	// The session that asked ends (the program exec'd); the relay goes on.
	cliCl.close()
	waitSessions(t, srv, 1)

	up := make([]byte, 1<<20)
	rand.Read(up)
	done := goErr(func() error {
		_, err := f.Write(up)
		return err
	})
	got := make([]byte, 0, len(up))
	buf := make([]byte, 64<<10)
	for len(got) < len(up) {
		n, err := srvCl.recv(as, buf)
		if err != nil || n == 0 {
			t.Fatalf("server read %d of %d bytes: %v", len(got), len(up), err)
		}
		got = append(got, buf[:n]...)
	}
	if sha256.Sum256(got) != sha256.Sum256(up) {
		t.Fatal("program -> peer bytes corrupted through the relay")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	down := make([]byte, 1<<20)
	rand.Read(down)
	done = goErr(func() error { return srvCl.send(as, down) })
	if back := readFull(t, f, len(down)); !bytes.Equal(back, down) {
		t.Fatal("peer -> program bytes corrupted through the relay")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// EOF both ways: the program's SHUT_WR reaches the peer, the peer's
	// close reaches the program.
	if err := unix.Shutdown(int(f.Fd()), unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	if rest, err := srvCl.recvAll(as); err != nil || len(rest) != 0 {
		t.Fatalf("the peer should read EOF after the program's SHUT_WR: %q, %v", rest, err)
	}
	srvCl.closeSock(as)
	_ = f.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := f.Read(buf); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("the program should read EOF after the peer's close: %d, %v", n, err)
	}
	f.Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(srv.Stats().Relays) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the relay outlived the program's last close")
		}
		time.Sleep(20 * time.Millisecond)
	}
	srvCl.closeSock(ls)
	srvCl.close()
	waitSessions(t, srv, 0)
	backToBaseline(t, base, 2)
	if n := srv.clientFDs.Load(); n != counted {
		t.Fatalf("the daemon counts %d fds held for clients after everything closed, %d before", n, counted)
	}
}

// What cannot be relayed is refused with an errno, and the session that
// asked goes on; what the client passes as the relay's channel is checked
// like any socketpair end.
func TestRelayRefusals(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	ls := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7320))
	if _, e := cl.relayPair(ls); e != syscall.EOPNOTSUPP {
		t.Errorf("relay of a listener: %v, want EOPNOTSUPP", e)
	}
	s := cl.socket(syscall.AF_INET)
	if _, e := cl.relayPair(s); e != syscall.ENOTCONN {
		t.Errorf("relay of an unconnected socket: %v, want ENOTCONN", e)
	}
	if _, e := cl.relayPair(&testSock{slot: s.slot, gen: s.gen + 1, family: s.family}); e != syscall.EBADF {
		t.Errorf("relay of a stale generation: %v, want EBADF", e)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	rep := cl.birthFD(abi.MsgRelay, abi.CtlReq{Family: syscall.AF_INET, Sock: s.slot, Gen: s.gen}, p[1])
	unix.Close(p[1])
	if rep.Result != -int32(syscall.ENOTSOCK) {
		t.Errorf("a pipe as the relay's channel: %v, want ENOTSOCK", syscall.Errno(-rep.Result))
	}
	// The session still answers.
	if err := cl.connect(s, netip.AddrPortFrom(lo4, 7320)); err != nil {
		t.Fatalf("the session stopped working after the refusals: %v", err)
	}
}

// A socket handed on whose holder in the session never closes it: the
// session's end (the process exited) hands the connection to the relay.
func TestRelayHandedOverAtSessionEnd(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	srvCl := dialClient(t, path)
	cliCl := dialClient(t, path)
	ls := srvCl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7330))
	cs := cliCl.socket(syscall.AF_INET)
	if err := cliCl.connect(cs, netip.AddrPortFrom(lo4, 7330)); err != nil {
		t.Fatal(err)
	}
	as, _ := srvCl.accept(ls)
	f, e := cliCl.relayPair(cs)
	if e != 0 {
		t.Fatalf("relay: %v", e)
	}
	defer f.Close()
	cliCl.close() // exits without closing the socket
	waitSessions(t, srv, 1)
	if err := srvCl.send(as, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, f, 5); string(got) != "after" {
		t.Fatalf("through the relay after the session ended: %q", got)
	}
	if _, err := f.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if n, err := srvCl.recv(as, got); err != nil || string(got[:n]) != "back" {
		t.Fatalf("the peer read %q, %v", got[:n], err)
	}
}
