package usock

import (
	"bytes"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"

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
	cl.seq++
	req := abi.CtlReq{Sock: slot, Gen: gen}
	req.Hdr = hdr(abi.MsgDirect, cl.seq, int(unsafe.Sizeof(req)))
	if _, err := cl.c.Write(bytesOf(&req)); err != nil {
		t.Fatal(err)
	}
	var rep abi.CtlReply
	oob := make([]byte, unix.CmsgSpace(4*4))
	_ = cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, oobn, _, _, err := cl.c.ReadMsgUnix(bytesOf(&rep), oob)
	_ = cl.c.SetReadDeadline(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	nfd := 0
	if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, cm := range cms {
			if fds, err := unix.ParseUnixRights(&cm); err == nil {
				nfd += len(fds)
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}
	return rep.Result, nfd
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
	shmSocket := func(c *testClient) *testSock {
		var req abi.CtlReq
		req.Family, req.Type = syscall.AF_INET, syscall.SOCK_STREAM
		copy(req.Engine[:], "shm")
		rep, fd := c.birth(abi.MsgSocket, req)
		if rep.Result != 0 {
			t.Fatalf("socket on shm: %v", syscall.Errno(-rep.Result))
		}
		return &testSock{slot: rep.Sock, gen: rep.Gen, fd: fd, family: syscall.AF_INET}
	}
	l := shmSocket(other)
	if res, _ := other.cmd(l, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.AddrPortFrom(lo4, 7401)), nil); res != 0 {
		t.Fatalf("bind: %v", syscall.Errno(-res))
	}
	if res, _ := other.cmd(l, abi.OpListen, 4, 0, nil, nil); res != 0 {
		t.Fatalf("listen: %v", syscall.Errno(-res))
	}
	c := shmSocket(cl)
	if err := cl.connect(c, netip.AddrPortFrom(lo4, 7401)); err != nil {
		t.Fatal(err)
	}
	a, _ := other.accept(l)
	if cl.state(c)&abi.SSDirect == 0 || other.state(a)&abi.SSDirect == 0 {
		t.Fatalf("shm ends not direct: states %#x %#x", cl.state(c), other.state(a))
	}
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
