package usock

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/internal/futex"
	"github.com/nuse-project/nuse/shim/abi"
)

// post fills command slot i and submits it without ringing or waiting (the
// caller sets the pending bits, so that several land in one batch).
func (cl *testClient) post(i int, s *testSock, op, flags uint16, addr []byte) *abi.Cmd {
	c := cl.a.Cmd(i)
	if !atomic.CompareAndSwapUint32(&c.State, abi.CmdFree, abi.CmdClaimed) {
		cl.t.Fatalf("command slot %d is not free", i)
	}
	c.Op, c.Flags, c.Sock, c.Gen, c.Arg0, c.Arg1 = op, flags, s.slot, s.gen, 0, 0
	c.AddrLen = uint32(copy(c.Addr[:], addr))
	c.OptLen = 0
	atomic.StoreUint32(&c.State, abi.CmdSubmitted)
	return c
}

// waitState waits until command c's state is want.
func (cl *testClient) waitState(c *abi.Cmd, want uint32) {
	deadline := time.Now().Add(10 * time.Second)
	for st := atomic.LoadUint32(&c.State); st != want; st = atomic.LoadUint32(&c.State) {
		if time.Now().After(deadline) {
			cl.t.Fatalf("command %d: state %d, want %d", c.Op, st, want)
		}
		futex.Wait(&c.State, st, 10*time.Millisecond)
	}
}

// An asynchronous CLOSE (close() that does not wait) runs before the
// commands of its batch: a BIND of the port the closed listener held,
// posted after it in a lower slot (which the daemon would otherwise serve
// first), finds the port free. The daemon frees the CLOSE's slot itself;
// any other op marked asynchronous is refused and answered.
func TestAsyncCloseRunsFirst(t *testing.T) {
	_, path := startServer(t, 1<<16)
	cl := dialClient(t, path)
	ap := netip.MustParseAddrPort("127.0.0.1:7741")
	for round := 0; round < 3; round++ {
		ls := cl.listen(syscall.AF_INET, ap)
		s := cl.socket(syscall.AF_INET)
		// The BIND in slot 0, the CLOSE in slot 1: one batch.
		bind := cl.post(0, s, abi.OpBind, 0, sockaddr(syscall.AF_INET, ap))
		cls := cl.post(1, ls, abi.OpClose, abi.CmdAsync, nil)
		atomic.OrUint64(&cl.a.Hdr().CmdPending, 1|2)
		cl.a.Doorbell()
		cl.waitState(bind, abi.CmdDone)
		if bind.Result != 0 {
			t.Fatalf("round %d: bind after the listener's asynchronous close: %v", round, syscall.Errno(-bind.Result))
		}
		atomic.StoreUint32(&bind.State, abi.CmdFree)
		cl.waitState(cls, abi.CmdFree)
		cl.closeFD(ls.fd)
		if res, _ := cl.cmd(s, abi.OpListen, 16, 0, nil, nil); res != 0 {
			t.Fatalf("round %d: listen on the port: %v", round, syscall.Errno(-res))
		}
		cl.closeSock(s) // a waited CLOSE still answers DONE
	}
	// Only CLOSE may go unanswered.
	s := cl.socket(syscall.AF_INET)
	c := cl.post(2, s, abi.OpGetsockname, abi.CmdAsync, nil)
	atomic.OrUint64(&cl.a.Hdr().CmdPending, 4)
	cl.a.Doorbell()
	cl.waitState(c, abi.CmdDone)
	if c.Result != -int32(syscall.EINVAL) {
		t.Fatalf("asynchronous GETSOCKNAME: result %d, want -EINVAL", c.Result)
	}
	atomic.StoreUint32(&c.State, abi.CmdFree)
}

// postOpt is post for a SETSOCKOPT or GETSOCKOPT of an int option.
func (cl *testClient) postOpt(i int, s *testSock, op, flags uint16, level, name uint32, val int32) *abi.Cmd {
	c := cl.post(i, s, op, flags, nil)
	atomic.StoreUint32(&c.State, abi.CmdClaimed)
	c.Arg0, c.Arg1 = level, name
	binary.LittleEndian.PutUint32(c.Opt[:], uint32(val))
	c.OptLen = 4
	atomic.StoreUint32(&c.State, abi.CmdSubmitted)
	return c
}

// A keep-alive option set without waiting (the shim posts SETSOCKOPT
// ASYNC on a connected socket) runs before the commands of its batch: a
// GETSOCKOPT of it, posted after it in a lower slot, reads the new value.
// The daemon frees the slot, also when the option fails or the socket is
// gone (nobody would).
func TestAsyncSetsockoptRunsFirst(t *testing.T) {
	_, path := startServer(t, 1<<16)
	cl := dialClient(t, path)
	ap := netip.MustParseAddrPort("127.0.0.1:7742")
	ls := cl.listen(syscall.AF_INET, ap)
	s := cl.socket(syscall.AF_INET)
	if err := cl.connect(s, ap); err != nil {
		t.Fatal(err)
	}
	a, _ := cl.accept(ls)
	get := func(level, name uint32) int32 {
		res, out := cl.cmd(a, abi.OpGetsockopt, level, name, nil, make([]byte, 4))
		if res != 0 {
			t.Fatalf("getsockopt(%d, %d): %v", level, name, syscall.Errno(-res))
		}
		return int32(binary.LittleEndian.Uint32(out.Opt[:]))
	}
	for _, o := range []struct {
		level, name uint32
		val         int32
	}{{solSocket, soKeepAlive, 1}, {ipprotoTCP, tcpKeepIdle, 45}, {ipprotoTCP, tcpKeepIntvl, 7}, {ipprotoTCP, tcpKeepCnt, 4}} {
		if get(o.level, o.name) == o.val {
			t.Fatalf("option (%d, %d) is %d already", o.level, o.name, o.val)
		}
		// The GETSOCKOPT in slot 0, the SETSOCKOPT in slot 1: one batch.
		g := cl.postOpt(0, a, abi.OpGetsockopt, 0, o.level, o.name, 0)
		set := cl.postOpt(1, a, abi.OpSetsockopt, abi.CmdAsync, o.level, o.name, o.val)
		atomic.OrUint64(&cl.a.Hdr().CmdPending, 1|2)
		cl.a.Doorbell()
		cl.waitState(g, abi.CmdDone)
		if v := int32(binary.LittleEndian.Uint32(g.Opt[:])); g.Result != 0 || v != o.val {
			t.Fatalf("option (%d, %d) read after its unanswered set: %d (result %d), want %d", o.level, o.name, v, g.Result, o.val)
		}
		atomic.StoreUint32(&g.State, abi.CmdFree)
		cl.waitState(set, abi.CmdFree)
	}
	// A value the engine refuses, and a socket that is gone: slots freed,
	// the option as it was.
	bad := cl.postOpt(2, a, abi.OpSetsockopt, abi.CmdAsync, ipprotoTCP, tcpKeepCnt, 500)
	gone := cl.postOpt(3, &testSock{slot: a.slot, gen: a.gen + 1, family: a.family}, abi.OpSetsockopt, abi.CmdAsync, ipprotoTCP, tcpKeepCnt, 9)
	atomic.OrUint64(&cl.a.Hdr().CmdPending, 4|8)
	cl.a.Doorbell()
	cl.waitState(bad, abi.CmdFree)
	cl.waitState(gone, abi.CmdFree)
	if v := get(ipprotoTCP, tcpKeepCnt); v != 4 {
		t.Fatalf("TCP_KEEPCNT %d after a refused and a stale set, want 4", v)
	}
}
