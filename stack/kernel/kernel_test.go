package kernel

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/stack"
)

const timeout = 10 * time.Second

// notified sets so's callback to one that leaves a token in the channel
// it returns; the func takes the callback away.
func notified(so stack.Socket) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	so.Notify(func(stack.Events) {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	return ch, func() { so.Notify(nil) }
}

// listenerAndSocket makes an engine, a listener on it and a socket still
// to connect, each closed when the test ends (the sockets first).
func listenerAndSocket(t *testing.T) (*Engine, stack.Socket, netip.AddrPort, stack.Socket) {
	t.Helper()
	e := mustNew(t, Config{})
	t.Cleanup(func() { e.Close() })
	l, ap := listener(t, e)
	t.Cleanup(func() { l.Close() })
	c, err := e.Socket(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return e, l, ap, c
}

// accepted waits for l's next connection and accepts it.
func accepted(t *testing.T, l stack.Socket) stack.Socket {
	t.Helper()
	waitFor(t, l, stack.EventIn)
	s, _, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitFor waits, through Notify only, until so's readiness has any of want.
func waitFor(t *testing.T, so stack.Socket, want stack.Events) {
	t.Helper()
	ch, done := notified(so)
	defer done()
	deadline := time.After(timeout)
	for so.Readiness()&want == 0 {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %b", want)
		}
	}
}

func listener(t *testing.T, e *Engine) (stack.Socket, netip.AddrPort) {
	t.Helper()
	l, err := e.Socket(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Bind(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(8); err != nil {
		t.Fatal(err)
	}
	ap, _ := l.LocalAddr()
	return l, ap
}

// Adopt wraps a kernel socket connected outside the engine (as an
// eBPF-redirected connection would be): it carries data both ways and
// reports readiness.
func TestAdopt(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	l, ap := listener(t, e)
	defer l.Close()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		t.Fatal(err) // blocking connect over loopback: done at once
	}
	c, err := e.Adopt(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ConnectResult(); err != nil {
		t.Fatalf("ConnectResult of an adopted connected socket: %v", err)
	}
	if r, _ := c.RemoteAddr(); r != ap {
		t.Fatalf("RemoteAddr %s, want %s", r, ap)
	}
	s := accepted(t, l)
	defer s.Close()
	if _, err := s.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, stack.EventIn)
	var b [8]byte
	if n, _, err := c.Read(b[:]); err != nil || string(b[:n]) != "hi" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
	c.(*socket).rx.Or(rxMaybe) // the next Read makes its system call
	if _, _, err := c.Read(b[:]); !errors.Is(err, stack.ErrWouldBlock) {
		t.Fatalf("the adopted socket is not non-blocking: %v", err)
	}
	// Adopting something that is not a TCP socket fails and closes it.
	p, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Adopt(p); !errors.Is(err, syscall.EPROTONOSUPPORT) {
		t.Fatalf("Adopt(unix socket) = %v", err)
	}
	if _, err := unix.FcntlInt(uintptr(p), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("a refused fd was left open")
	}
}

// An idle engine sleeps: connected sockets with nothing to do cost no CPU.
func TestIdleEngineUsesNoCPU(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	l, ap := listener(t, e)
	defer l.Close()
	for i := 0; i < 20; i++ {
		c, err := e.Socket(unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Notify(func(stack.Events) {})
		if err := c.Connect(ap); err != nil && !errors.Is(err, stack.ErrInProgress) {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // handshakes done
	var before, after unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &before)
	time.Sleep(500 * time.Millisecond)
	unix.Getrusage(unix.RUSAGE_SELF, &after)
	used := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	if used > 50*time.Millisecond {
		t.Fatalf("an idle engine used %v of CPU in 500 ms", used)
	}
}

// Close resets what is left, stops the poller and refuses new sockets.
func TestEngineClose(t *testing.T) {
	e := mustNew(t, Config{NoDelay: true})
	l, ap := listener(t, e)
	c, _ := e.Socket(unix.AF_INET)
	if err := c.Connect(ap); err != nil && !errors.Is(err, stack.ErrInProgress) {
		t.Fatal(err)
	}
	if v, _ := c.GetOption(stack.OptNoDelay); v != 1 {
		t.Fatalf("the nodelay setting was not applied: %d", v)
	}
	_ = l
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.done:
	default:
		t.Fatal("the poller is still running")
	}
	if _, err := e.Socket(unix.AF_INET); !errors.Is(err, syscall.ESHUTDOWN) {
		t.Fatalf("Socket after Close = %v", err)
	}
	c.Close() // already reset: harmless
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSettings(t *testing.T) {
	var c Config
	for _, kv := range [][2]string{{"nodelay", "on"}, {"cc", "reno"}, {"sndbuf", "65536"}, {"rcvbuf", "131072"}} {
		if err := c.Set(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if !c.NoDelay || c.Congestion != "reno" || c.SndBuf != 65536 || c.RcvBuf != 131072 {
		t.Fatalf("%+v", c)
	}
	if c.Set("nodelay", "maybe") == nil || c.Set("sndbuf", "-1") == nil || c.Set("bogus", "1") == nil {
		t.Fatal("bad settings accepted")
	}
	if _, err := stack.Start("kernel", stack.Env{Settings: map[string]string{"cc": "no-such-cc"}}); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Start with cc=no-such-cc = %v, want ENOENT", err)
	}
	e, err := stack.Start("kernel", stack.Env{Settings: map[string]string{"cc": "reno"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	so, err := e.Socket(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	defer so.Close()
	if cc, _ := so.Congestion(); cc != "reno" {
		t.Fatalf("cc setting not applied: %q", cc)
	}
	if _, err := stack.Start("kernel", stack.Env{Settings: map[string]string{"sack": "on"}}); err == nil {
		t.Fatal("an unknown setting was accepted")
	}
}

// A closed socket still reports the counters it had (nuse stats shows
// closed sockets).
func TestStatsSurviveClose(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	l, ap := listener(t, e)
	defer l.Close()
	c, _ := e.Socket(unix.AF_INET)
	if err := c.Connect(ap); err != nil && !errors.Is(err, stack.ErrInProgress) {
		t.Fatal(err)
	}
	waitFor(t, c, stack.EventOut)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if st := c.Stats(); st.SegsOut < 2 {
		t.Fatalf("stats after close: %+v", st)
	}
}

// notify hands on the mask epoll reported, read as poll(2)'s bits: the two
// agree bit for bit on Linux, and a change there must show here.
func TestEpollMaskIsPollMask(t *testing.T) {
	for _, c := range []struct {
		epoll uint32
		want  stack.Events
	}{
		{unix.EPOLLIN, stack.EventIn},
		{unix.EPOLLRDHUP, stack.EventIn},
		{unix.EPOLLOUT, stack.EventOut},
		{unix.EPOLLERR, stack.EventErr},
		{unix.EPOLLHUP, stack.EventHup},
		{unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLHUP, stack.EventIn | stack.EventOut | stack.EventHup},
		{unix.EPOLLPRI, 0},
	} {
		if got := events(int16(c.epoll)); got != c.want {
			t.Errorf("epoll mask %#x: events %v, want %v", c.epoll, got, c.want)
		}
	}
}

// The events handed to Notify's callback are the socket's state (epoll's
// mask): data from the peer shows as EventIn, and a closed peer as well.
func TestNotifyCarriesEvents(t *testing.T) {
	_, l, ap, c := listenerAndSocket(t)
	if err := c.Connect(ap); err != nil && !errors.Is(err, stack.ErrInProgress) {
		t.Fatal(err)
	}
	s := accepted(t, l)
	got := make(chan stack.Events, 64)
	c.Notify(func(ev stack.Events) {
		select {
		case got <- ev:
		default:
		}
	})
	defer c.Notify(nil)
	waitIn := func(what string) {
		t.Helper()
		deadline := time.After(timeout)
		for {
			select {
			case ev := <-got:
				if ev&stack.EventIn != 0 {
					return
				}
			case <-deadline:
				t.Fatalf("%s: no callback with EventIn", what)
			}
		}
	}
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitIn("data")
	var b [8]byte
	if n, _, err := c.Read(b[:]); err != nil || n != 1 {
		t.Fatalf("read %d, %v", n, err)
	}
	s.Close()
	waitIn("peer closed")
	if _, eof, err := c.Read(b[:]); !eof || err != nil {
		t.Fatalf("after the peer closed: eof %v, err %v", eof, err)
	}
}
