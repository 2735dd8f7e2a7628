package usock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestNudge: a readable watched connection gets a read deadline of now
// (its reader, parked in Go's poller, wakes with a timeout, clears it and
// reads the message); an idle one is left alone; nudges are spaced by
// nudgeEvery; a dropped connection is no longer nudged.
func TestNudge(t *testing.T) {
	n := newNudger()
	defer n.close()
	if n.epfd < 0 {
		t.Fatal("no epoll instance")
	}
	a, b := unixPair(t)
	c, _ := unixPair(t)
	ea := n.add(a, a.SetReadDeadline)
	ec := n.add(c, c.SetReadDeadline)
	if ea == nil || ec == nil {
		t.Fatal("add failed")
	}
	if _, err := b.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	n.nudge(now)
	buf := make([]byte, 16)
	_, err := a.Read(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after a nudge: %v, want a timeout", err)
	}
	if !nudged(err, a.SetReadDeadline) {
		t.Fatal("nudged did not recognise the timeout")
	}
	if k, err := a.Read(buf); err != nil || string(buf[:k]) != "hello" {
		t.Fatalf("read after clearing: %q %v", buf[:k], err)
	}
	// c had nothing to read: no deadline.
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle conn: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})

	// Within nudgeEvery of the last nudge nothing happens.
	if _, err := b.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	n.nudge(now.Add(nudgeEvery / 2))
	_ = a.SetReadDeadline(time.Time{})
	if k, err := a.Read(buf); err != nil || string(buf[:k]) != "again" {
		t.Fatalf("read: %q %v", buf[:k], err)
	}
	// Dropped: not nudged, and a stale drop keeps the newer entry.
	n.drop(ea)
	if _, err := b.Write([]byte("third")); err != nil {
		t.Fatal(err)
	}
	n.nudge(now.Add(2 * nudgeEvery))
	if k, err := a.Read(buf); err != nil || string(buf[:k]) != "third" {
		t.Fatalf("read after drop: %q %v", buf[:k], err)
	}
	e2 := n.add(a, a.SetReadDeadline)
	n.drop(ea) // stale: must not remove e2
	n.mu.Lock()
	kept := n.conns[e2.fd] == e2
	n.mu.Unlock()
	if !kept {
		t.Fatal("a stale drop removed the newer entry")
	}
	n.drop(e2)
	n.drop(ec)
	n.drop(nil)
}

// TestRelayReadSurvivesNudge: a relay's reader woken by a nudge reads on
// (a nudge is not a stop); stopped, it returns.
func TestRelayReadSurvivesNudge(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "relay end")
	peer := os.NewFile(uintptr(fds[1]), "program end")
	defer f.Close()
	defer peer.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{f: f, rc: rc, done: make(chan struct{})}
	got := make(chan string, 1)
	go func() {
		buf, n, err := r.read()
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string((*buf)[:n])
		putBuf(buf)
	}()
	// Nudge the parked reader a few times, then give it bytes.
	for range 3 {
		time.Sleep(5 * time.Millisecond)
		_ = f.SetReadDeadline(time.Now())
	}
	time.Sleep(5 * time.Millisecond)
	if _, err := peer.Write([]byte("bytes")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "bytes" {
			t.Fatalf("read %q, want the bytes", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read did not return")
	}
	// Stopped: read returns (with an error) instead of waiting.
	go func() {
		_, _, err := r.read()
		got <- fmt.Sprint(err)
	}()
	time.Sleep(5 * time.Millisecond)
	r.stop(false)
	select {
	case s := <-got:
		if s == "<nil>" {
			t.Fatal("read after stop returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read after stop did not return")
	}
}
