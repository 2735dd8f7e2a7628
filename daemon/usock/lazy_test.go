package usock

import (
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// queued is how many readiness bytes wait in s's app fd.
func queued(t *testing.T, s *testSock) int {
	n, err := unix.IoctlGetInt(s.fd, unix.SIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Lazy readiness (PROTOCOL.md): with the socket lazy and nobody asleep,
// data arrives without its byte and the daemon says it owes one; a thread
// counted in Watched gets the byte of the next data; and a shim that
// makes the socket loud again gets the byte owed, at its attention.
func TestLazyReadiness(t *testing.T) {
	srv, path := startServer(t, 64<<10)
	srvCl := dialClient(t, path)
	cliCl := dialClient(t, path)
	defer srvCl.close()
	defer cliCl.close()
	ls := srvCl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7360))
	cs := cliCl.socket(syscall.AF_INET)
	if err := cliCl.connect(cs, netip.AddrPortFrom(lo4, 7360)); err != nil {
		t.Fatal(err)
	}
	as, _ := srvCl.accept(ls)
	skipDirect(t, srvCl, as)
	sh := srvCl.a.Sock(as.slot)
	_, rx, _, _, _ := srvCl.rings(as)
	atomic.StoreUint32(&sh.Lazy, 1)

	arrived := func(want uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for atomic.LoadUint64(&rx.Head) < want {
			if time.Now().After(deadline) {
				t.Fatalf("rx head %d, want %d", atomic.LoadUint64(&rx.Head), want)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // the daemon's pass after the data
	}
	if err := cliCl.send(cs, []byte("a")); err != nil {
		t.Fatal(err)
	}
	arrived(1)
	if n := queued(t, as); n != 0 || atomic.LoadUint32(&sh.Sig) != 0 {
		t.Fatalf("lazy, nobody asleep: %d bytes queued, sig %d; want none", n, sh.Sig)
	}
	if atomic.LoadUint32(&sh.LazyOwed) != 1 {
		t.Fatalf("lazy_owed %d after a byte left out, want 1", sh.LazyOwed)
	}

	// A sleeper: the next data's byte goes.
	atomic.AddUint32(&sh.Watched, 1)
	if err := cliCl.send(cs, []byte("b")); err != nil {
		t.Fatal(err)
	}
	arrived(2)
	if n := queued(t, as); n != 1 || atomic.LoadUint32(&sh.LazyOwed) != 0 {
		t.Fatalf("with a sleeper: %d bytes queued, lazy_owed %d; want 1 and 0", n, sh.LazyOwed)
	}
	atomic.AddUint32(&sh.Watched, ^uint32(0))
	var buf [8]byte
	if n, err := srvCl.recv(as, buf[:]); err != nil || string(buf[:n]) != "ab" {
		t.Fatalf("recv %q %v, want ab", buf[:n], err)
	}
	if n := queued(t, as); n != 0 {
		t.Fatalf("%d bytes queued after the ring was read", n)
	}

	// Left out again, then the shim makes the socket loud: the byte comes.
	if err := cliCl.send(cs, []byte("c")); err != nil {
		t.Fatal(err)
	}
	arrived(3)
	if n := queued(t, as); n != 0 || atomic.LoadUint32(&sh.LazyOwed) != 1 {
		t.Fatalf("lazy again: %d bytes queued, lazy_owed %d; want 0 and 1", n, sh.LazyOwed)
	}
	atomic.StoreUint32(&sh.Lazy, 0)
	srvCl.attention(as)
	deadline := time.Now().Add(10 * time.Second)
	for atomic.LoadUint32(&sh.LazyOwed) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("lazy_owed still set 10 s after the socket was made loud")
		}
		time.Sleep(time.Millisecond)
	}
	if n := queued(t, as); n != 1 || atomic.LoadUint32(&sh.Sig) != 1 {
		t.Fatalf("made loud: %d bytes queued, sig %d; want 1 and 1", n, sh.Sig)
	}

	// The backstop: a byte owed too long is written anyway (a program
	// that waits where its shim cannot see stalls, never hangs).
	if n, err := srvCl.recv(as, buf[:]); err != nil || string(buf[:n]) != "c" {
		t.Fatalf("recv %q %v, want c", buf[:n], err)
	}
	atomic.StoreUint32(&sh.Lazy, 1)
	if err := cliCl.send(cs, []byte("d")); err != nil {
		t.Fatal(err)
	}
	arrived(4)
	if n := queued(t, as); n != 0 || atomic.LoadUint32(&sh.LazyOwed) != 1 {
		t.Fatalf("lazy once more: %d bytes queued, lazy_owed %d; want 0 and 1", n, sh.LazyOwed)
	}
	for deadline := time.Now().Add(10 * time.Second); queued(t, as) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a byte owed for 10 s was never written")
		}
	}
	var wakes, skipped, late uint64
	for _, ss := range srv.Stats().Sessions {
		wakes += ss.Wakes
		skipped += ss.LazySkipped
		late += ss.LazyLate
	}
	if skipped < 3 || wakes < 3 || late != 1 {
		t.Errorf("stats: wakes %d, lazy_skipped %d, lazy_late %d; want at least 3, at least 3, 1", wakes, skipped, late)
	}
}
