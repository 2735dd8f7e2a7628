package kernel

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/stack"
)

// peer gives an engine socket connected to a plain kernel socket (the
// test's end), both closed at the end of the test.
func peer(t *testing.T, e *Engine) (stack.Socket, int) {
	t.Helper()
	l, ap := listener(t, e)
	t.Cleanup(func() { l.Close() })
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	s := accepted(t, l)
	t.Cleanup(func() { s.Close() })
	return s, fd
}

// readAll reads s as the daemon's pump does (until would-block, then
// waits for Notify) until want bytes and, if eof, the end came; a read
// the socket's events never lead to fails it.
func readAll(t *testing.T, s stack.Socket, want int, eof bool) string {
	t.Helper()
	ch, done := notified(s)
	defer done()
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.After(timeout)
	for {
		n, end, err := s.Read(buf)
		got = append(got, buf[:n]...)
		switch {
		case end:
			if !eof || len(got) != want {
				t.Fatalf("EOF after %q", got)
			}
			return string(got)
		case err == nil:
			if len(got) == want && !eof {
				return string(got)
			}
			continue
		case !errors.Is(err, stack.ErrWouldBlock):
			t.Fatalf("Read after %q: %v", got, err)
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("stalled after %q (want %d bytes, eof %v): the socket's events never led to the rest", got, want, eof)
		}
	}
}

// Read skips the system call when epoll reported nothing since a read
// found the socket empty or emptied it (a short read); what a short read
// can stop before must still be read: data and the peer's FIN that came
// in one report, and data behind urgent data (a read stops at the urgent
// mark). Without rxAlways both stall.
func TestShortReadsLeaveNothing(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()

	s, fd := peer(t, e)
	if _, err := unix.Write(fd, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, stack.EventIn)
	time.Sleep(10 * time.Millisecond) // the FIN too, before the first read
	if got := readAll(t, s, 3, true); got != "bye" {
		t.Fatalf("read %q, want bye then EOF", got)
	}

	s, fd = peer(t, e)
	if _, err := unix.Write(fd, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendto(fd, []byte("X"), unix.MSG_OOB, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fd, []byte("def")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, stack.EventIn)
	time.Sleep(10 * time.Millisecond)
	// The urgent byte is out of band (SO_OOBINLINE is off): not in the
	// stream.
	if got := readAll(t, s, 6, false); got != "abcdef" {
		t.Fatalf("read %q, want abcdef", got)
	}

	// A read when nothing was reported does not look: would-block with
	// no system call, though data came (its report is still to come).
	s, fd = peer(t, e)
	so := s.(*socket)
	so.rx.Store(0)
	if _, err := unix.Write(fd, []byte("later")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 5, false); got != "later" {
		t.Fatalf("read %q, want later", got)
	}
}

// While a worker polls (Polled(true)) the poller parks: events reach the
// sockets through Poll, on the caller's goroutine, and only then; once the
// workers sleep (Polled(false)) the poller reports them by itself again;
// Close ends a parked poller.
func TestPolledParksPoller(t *testing.T) {
	e := mustNew(t, Config{})
	s, fd := peer(t, e)
	fired := make(chan struct{}, 16)
	s.Notify(func(stack.Events) { fired <- struct{}{} })
	drain := func() {
		for {
			select {
			case <-fired:
			default:
				return
			}
		}
	}
	send := func(b string) {
		t.Helper()
		if _, err := unix.Write(fd, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(want string) {
		t.Helper()
		var b [16]byte
		if n, _, err := s.Read(b[:]); err != nil || string(b[:n]) != want {
			t.Fatalf("Read = %q, %v: want %q", b[:n], err, want)
		}
	}

	e.Polled(true)
	// The poller may be in epoll_wait still: the next event is its last.
	// One that did not come to it within a second found it parked.
	send("a")
	select {
	case <-fired:
	case <-time.After(time.Second):
		if !e.Poll() {
			t.Fatal("no report of data, by the poller or Poll")
		}
	}
	recv("a")
	drain()

	send("b")
	select {
	case <-fired:
		t.Fatal("the poller reported an event while a worker polls")
	case <-time.After(50 * time.Millisecond):
	}
	if !e.Poll() {
		t.Fatal("Poll found nothing; data came")
	}
	select {
	case <-fired:
	default:
		t.Fatal("Poll returned before the socket's callback ran")
	}
	recv("b")

	e.Polled(false)
	send("c")
	select {
	case <-fired:
	case <-time.After(timeout):
		t.Fatal("the workers sleep and the poller did not report data")
	}
	recv("c")

	e.Polled(true)
	send("d") // the poller's last report, if it was watching
	time.Sleep(10 * time.Millisecond)
	done := make(chan struct{})
	go func() {
		e.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatal("Close did not end a parked poller")
	}
}

// One Poll reports every event waiting, not a pass's worth: while a
// worker polls, nobody else looks, and a thousand busy connections would
// otherwise wait behind each other (tens of events a pass).
func TestPollTakesAll(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	const n = 200
	// fired counts callbacks; seen[i] the sockets among them (other
	// reports may come too: late ones of the handshakes).
	var fired atomic.Int64
	seen := make([]atomic.Bool, n)
	socks, fds := make([]stack.Socket, n), make([]int, n)
	for i := range n {
		socks[i], fds[i] = peer(t, e)
		socks[i].Notify(func(stack.Events) { fired.Add(1); seen[i].Store(true) })
	}
	e.Polled(true)
	// Park the poller: its last report, or one it left to Poll.
	if _, err := unix.Write(fds[0], []byte("x")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for fired.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	e.Poll()
	var b [8]byte
	if k, _, err := socks[0].Read(b[:]); k != 1 || err != nil {
		t.Fatalf("Read = %d, %v", k, err)
	}
	for e.Poll() { // what the read itself brought (nothing, or a late report)
	}
	for i := range seen {
		seen[i].Store(false)
	}
	for _, fd := range fds {
		if _, err := unix.Write(fd, []byte("y")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond) // loopback delivers within the write; margin
	if !e.Poll() {
		t.Fatal("Poll found nothing")
	}
	got := 0
	for i := range seen {
		if seen[i].Load() {
			got++
		}
	}
	if got != n {
		t.Fatalf("one Poll reported %d of %d sockets' data", got, n)
	}
}

// A connected socket reads only after reports: the hang-up a socket shows
// before its connect (TCP_CLOSE) must not make it read on every Read for
// good (it did: every connecting socket of the daemon made two system
// calls per message that found nothing).
func TestConnectedReadsOnReports(t *testing.T) {
	e, l, ap, c := listenerAndSocket(t)
	for e.Poll() { // the report of joining the set: HUP (not connected)
	}
	if err := c.Connect(ap); err != nil && !errors.Is(err, stack.ErrInProgress) {
		t.Fatal(err)
	}
	waitFor(t, c, stack.EventOut)
	s := accepted(t, l)
	defer s.Close()
	for _, m := range []string{"one", "two"} {
		if _, err := s.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c, len(m), false); got != m {
			t.Fatalf("read %q, want %q", got, m)
		}
		if c.(*socket).rx.Load()&rxAlways != 0 {
			t.Fatalf("after %q the connected socket reads on every Read (rx %b)", m, c.(*socket).rx.Load())
		}
	}
}
