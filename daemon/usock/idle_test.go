package usock

import (
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A thread blocked in the shim reminds the daemon of its socket once a
// second (attention, shim/sockstate.c). A pass whose only news is such a
// reminder, for sockets with nothing to do, is not work: counted as work,
// each reminder kept the worker in its busy window (1 ms sleeps for 100
// ms, the control connections nudged), and idle programs kept an idle
// daemon waking hundreds of times a second. A reminder for a socket with
// data to move still is.
func TestIdleReminderIsNotWork(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	ls := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7410))
	cs := cl.socket(syscall.AF_INET)
	if err := cl.connect(cs, netip.AddrPortFrom(lo4, 7410)); err != nil {
		t.Fatal(err)
	}
	as, _ := cl.accept(ls)
	srv.mu.Lock()
	var s *Session
	for _, x := range srv.sessions {
		s = x
	}
	n := len(srv.sessions)
	srv.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d sessions, want the one client's", n)
	}
	pass := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.pass()
	}
	// What the connection's setup left (engine events, delayed ACKs) is
	// served first.
	for deadline := time.Now().Add(10 * time.Second); pass(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("passes still find work 10 s after the connection was set up")
		}
	}
	remind := func(socks ...*testSock) {
		for _, so := range socks {
			atomic.OrUint64(&cl.a.Hdr().Attention[so.slot/64], 1<<(so.slot%64))
		}
	}
	remind(ls, cs, as)
	if pass() {
		t.Fatal("reminders for a listener and two connected sockets with nothing to do counted as work")
	}
	// Bytes in a tx ring: the same reminder is work. The session's lock
	// keeps the worker from serving them before this pass does.
	s.mu.Lock()
	if err := cl.send(cs, []byte("x")); err != nil {
		s.mu.Unlock()
		t.Fatal(err)
	}
	did := s.pass()
	s.mu.Unlock()
	if !did {
		t.Fatal("a pass that moved a byte out of a tx ring did not count as work")
	}
	buf := make([]byte, 1)
	if k, err := cl.recv(as, buf); err != nil || k != 1 || buf[0] != 'x' {
		t.Fatalf("recv: %d %q %v", k, buf[:k], err)
	}
}
