package shm

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/stack"
)

// What the conformance suite does not cover: the port table's rules, the
// backlog's waiting clients, resets, the engine's own settings.

func sock(t *testing.T, e *Engine, family int) stack.Socket {
	t.Helper()
	s, err := e.Socket(family)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func listen(t *testing.T, e *Engine, family int, ap string, backlog int) (stack.Socket, netip.AddrPort) {
	t.Helper()
	l := sock(t, e, family)
	if err := l.Bind(netip.MustParseAddrPort(ap)); err != nil {
		t.Fatalf("Bind(%s): %v", ap, err)
	}
	if err := l.Listen(backlog); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	la, _ := l.LocalAddr()
	return l, la
}

// connect connects; with room in the queue shm connects at once, though
// it answers EINPROGRESS as Linux does over loopback.
func connect(t *testing.T, e *Engine, family int, to netip.AddrPort) stack.Socket {
	t.Helper()
	c := sock(t, e, family)
	if err := c.Connect(to); !errors.Is(err, stack.ErrInProgress) {
		t.Fatalf("Connect(%s) = %v: want EINPROGRESS", to, err)
	}
	if ev := c.Readiness(); ev != stack.EventOut {
		t.Fatalf("Connect(%s): readiness %v at once: want out (connected)", to, ev)
	}
	if err := c.Connect(to); err != nil {
		t.Fatalf("Connect(%s) again: %v: want 0, as Linux once connected", to, err)
	}
	if err := c.Connect(to); !errors.Is(err, syscall.EISCONN) {
		t.Fatalf("Connect(%s) a third time: %v: want EISCONN", to, err)
	}
	return c
}

func accept(t *testing.T, l stack.Socket) (stack.Socket, netip.AddrPort) {
	t.Helper()
	s, peer, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	t.Cleanup(s.Close)
	return s, peer
}

func TestConnectRefused(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	// A port held by a socket that only bound.
	b := sock(t, e, syscall.AF_INET)
	if err := b.Bind(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	bp, _ := b.LocalAddr()
	for _, to := range []string{bp.String(), "127.0.0.1:0", "10.9.8.7:80"} {
		c := sock(t, e, syscall.AF_INET)
		if err := c.Connect(netip.MustParseAddrPort(to)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("Connect(%s) = %v: want ECONNREFUSED", to, err)
		}
		if err := c.ConnectResult(); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("ConnectResult after a refused connect = %v", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("Write after a refused connect = %v: want EPIPE", err)
		}
	}
	// A closed listener refuses; its port is free again.
	l, la := listen(t, e, syscall.AF_INET, "127.0.0.1:0", 4)
	l.Close()
	c := sock(t, e, syscall.AF_INET)
	if err := c.Connect(la); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Connect to a closed listener = %v: want ECONNREFUSED", err)
	}
	listen(t, e, syscall.AF_INET, la.String(), 4)
	// An IPv4 listener is not reached over IPv6, nor the other way.
	_, l4 := listen(t, e, syscall.AF_INET, "0.0.0.0:0", 4)
	c6 := sock(t, e, syscall.AF_INET6)
	if err := c6.Connect(netip.AddrPortFrom(netip.IPv6Loopback(), l4.Port())); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("IPv6 connect to an IPv4-only port = %v: want ECONNREFUSED", err)
	}
}

func TestWildcardListener(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	l, la := listen(t, e, syscall.AF_INET, "0.0.0.0:0", 8)
	for _, a := range []string{"127.0.0.1", "127.0.0.5", "10.1.2.3", "0.0.0.0"} {
		to := netip.AddrPortFrom(netip.MustParseAddr(a), la.Port())
		c := connect(t, e, syscall.AF_INET, to)
		s, peer := accept(t, l)
		want := to.Addr()
		if want.IsUnspecified() {
			want = netip.MustParseAddr("127.0.0.1") // as Linux: 0.0.0.0 is this host
		}
		cl, _ := c.LocalAddr()
		cr, _ := c.RemoteAddr()
		sl, _ := s.LocalAddr()
		if cl.Addr() != want || cr.Addr() != want || sl.Addr() != want || peer != cl || cl.Port() == la.Port() {
			t.Errorf("connect to %s: client %s -> %s, server %s sees %s", to, cl, cr, sl, peer)
		}
	}
	// A specific listener on the same port is preferred (with SO_REUSEADDR
	// on neither it would conflict, so use another port): 127.0.0.2 only.
	_, sp := listen(t, e, syscall.AF_INET, "127.0.0.2:0", 8)
	if c := sock(t, e, syscall.AF_INET); !errors.Is(c.Connect(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), sp.Port())), syscall.ECONNREFUSED) {
		t.Errorf("a connect to another address than a specific listener's was not refused")
	}
	// An IPv6 wildcard listener takes IPv4 (v4-mapped peers) unless V6Only.
	l6, l6a := listen(t, e, syscall.AF_INET6, "[::]:0", 8)
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l6a.Port())
	c := connect(t, e, syscall.AF_INET, to)
	s, peer := accept(t, l6)
	if sl, _ := s.LocalAddr(); peer.Addr() != netip.MustParseAddr("::ffff:127.0.0.1") || sl.Addr() != netip.MustParseAddr("::ffff:127.0.0.1") {
		t.Errorf("IPv6 listener: peer %s, local %s: want v4-mapped", peer, sl)
	}
	if cr, _ := c.RemoteAddr(); cr != to {
		t.Errorf("IPv4 client's RemoteAddr %s: want %s", cr, to)
	}
	v := sock(t, e, syscall.AF_INET6)
	_ = v.SetOption(stack.OptV6Only, 1)
	if err := v.Bind(netip.MustParseAddrPort("[::]:0")); err != nil {
		t.Fatal(err)
	}
	if err := v.Listen(8); err != nil {
		t.Fatal(err)
	}
	vp, _ := v.LocalAddr()
	if c := sock(t, e, syscall.AF_INET); !errors.Is(c.Connect(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), vp.Port())), syscall.ECONNREFUSED) {
		t.Errorf("IPv4 connect to a V6Only listener was not refused")
	}
	// ... and 0.0.0.0 may then take the same port.
	w := sock(t, e, syscall.AF_INET)
	if err := w.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), vp.Port())); err != nil {
		t.Errorf("0.0.0.0 next to a V6Only [::] on one port: %v", err)
	}
}

func TestBindRules(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	bind := func(family int, ap netip.AddrPort, opts ...stack.Option) (stack.Socket, error) {
		s := sock(t, e, family)
		for _, o := range opts {
			_ = s.SetOption(o, 1)
		}
		return s, s.Bind(ap)
	}
	a, err := bind(syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	ap, _ := a.LocalAddr()
	port := ap.Port()
	at := func(addr string) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(addr), port) }
	if ap.Port() < e.lo || ap.Port() > e.hi {
		t.Errorf("ephemeral port %d outside %d-%d", ap.Port(), e.lo, e.hi)
	}
	// Wildcards overlap specific addresses, across families too.
	for _, c := range []struct {
		family int
		addr   string
	}{{syscall.AF_INET, "0.0.0.0"}, {syscall.AF_INET6, "::"}, {syscall.AF_INET6, "::ffff:127.0.0.1"}} {
		if _, err := bind(c.family, at(c.addr)); !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("Bind(%s) next to 127.0.0.1 = %v: want EADDRINUSE", at(c.addr), err)
		}
	}
	// Other addresses do not; IPv6-only addresses neither.
	if _, err := bind(syscall.AF_INET, at("127.0.0.2")); err != nil {
		t.Errorf("Bind(127.0.0.2) next to 127.0.0.1: %v", err)
	}
	if _, err := bind(syscall.AF_INET6, at("::1")); err != nil {
		t.Errorf("Bind(::1) next to 127.0.0.1: %v", err)
	}
	// SO_REUSEADDR on both, neither listening: allowed; then one listens,
	// and the other cannot.
	r1, err := bind(syscall.AF_INET, netip.MustParseAddrPort("127.0.0.9:0"), stack.OptReuseAddr)
	if err != nil {
		t.Fatal(err)
	}
	rp, _ := r1.LocalAddr()
	r2, err := bind(syscall.AF_INET, rp, stack.OptReuseAddr)
	if err != nil {
		t.Fatalf("SO_REUSEADDR on both: %v", err)
	}
	if err := r1.Listen(4); err != nil {
		t.Fatal(err)
	}
	if err := r2.Listen(4); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("a second listener on a SO_REUSEADDR port = %v: want EADDRINUSE", err)
	}
	// A server's restart: the listener is gone, its accepted connection
	// holds the port; SO_REUSEADDR lets a new listener in.
	c := connect(t, e, syscall.AF_INET, rp)
	s, _ := accept(t, r1)
	r1.Close()
	r2.Close()
	if _, err := bind(syscall.AF_INET, rp); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Bind over an accepted connection's port without SO_REUSEADDR = %v: want EADDRINUSE", err)
	}
	n, err := bind(syscall.AF_INET, rp, stack.OptReuseAddr)
	if err != nil {
		t.Fatalf("Bind with SO_REUSEADDR over an accepted connection's port: %v", err)
	}
	if err := n.Listen(4); err != nil {
		t.Fatal(err)
	}
	_, _ = c, s
	// SO_REUSEPORT on both: two listeners share a port, connections go to
	// each in turn.
	p1, err := bind(syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), stack.OptReusePort)
	if err != nil {
		t.Fatal(err)
	}
	pp, _ := p1.LocalAddr()
	p2, err := bind(syscall.AF_INET, pp, stack.OptReusePort)
	if err != nil {
		t.Fatalf("SO_REUSEPORT on both: %v", err)
	}
	for _, l := range []stack.Socket{p1, p2} {
		if err := l.Listen(8); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		connect(t, e, syscall.AF_INET, pp)
	}
	for _, l := range []stack.Socket{p1, p2} {
		if _, _, err := l.Accept(); err != nil {
			t.Errorf("a SO_REUSEPORT listener got no connection of 4: %v", err)
		}
	}
	// Foreign addresses and bad families.
	if _, err := bind(syscall.AF_INET, netip.MustParseAddrPort("192.0.2.1:0")); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("Bind(192.0.2.1) = %v: want EADDRNOTAVAIL", err)
	}
	e2 := mustNew(t, Config{LocalAddrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}})
	defer e2.Close()
	x, _ := e2.Socket(syscall.AF_INET)
	defer x.Close()
	if err := x.Bind(netip.MustParseAddrPort("192.0.2.1:0")); err != nil {
		t.Errorf("Bind to a configured stack address: %v", err)
	}
	if _, err := bind(syscall.AF_INET, netip.MustParseAddrPort("[::1]:0")); !errors.Is(err, syscall.EAFNOSUPPORT) {
		t.Errorf("IPv4 socket bound to ::1 = %v: want EAFNOSUPPORT", err)
	}
}

func TestCloseWithUnreadDataResets(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	l, la := listen(t, e, syscall.AF_INET, "127.0.0.1:0", 4)
	c := connect(t, e, syscall.AF_INET, la)
	s, _ := accept(t, l)
	if _, err := s.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	s.Close() // "unread" is still in s: a reset
	if ev := c.Readiness(); ev&stack.EventErr == 0 || ev&stack.EventHup == 0 {
		t.Errorf("readiness after the peer's reset = %v: want err and hup", ev)
	}
	var b [16]byte
	if n, _, err := c.Read(b[:]); err != nil || string(b[:n]) != "reply" {
		t.Fatalf("Read = %q, %v: want what the peer sent before its reset", b[:n], err)
	}
	if _, _, err := c.Read(b[:]); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after the data = %v: want ECONNRESET", err)
	}
	if _, eof, err := c.Read(b[:]); !eof || err != nil {
		t.Errorf("Read after ECONNRESET = eof %v, %v: want EOF, as Linux", eof, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("Write after the reset = %v: want EPIPE", err)
	}
	if _, err := c.RemoteAddr(); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("RemoteAddr after a reset = %v: want ENOTCONN", err)
	}
	if st := c.Info().State; st != 7 {
		t.Errorf("Info().State after a reset = %d: want 7 (close)", st)
	}

	// A graceful close, then the peer writes: taken, then the reset
	// comes back (ECONNRESET once, then EPIPE).
	c2 := connect(t, e, syscall.AF_INET, la)
	s2, _ := accept(t, l)
	s2.Close()
	if _, eof, _ := c2.Read(b[:]); !eof {
		t.Errorf("no EOF after the peer's Close")
	}
	if st := c2.Info().State; st != 8 {
		t.Errorf("Info().State after the peer's FIN = %d: want 8 (close-wait)", st)
	}
	if n, err := c2.Write([]byte("late")); n != 4 || err != nil {
		t.Errorf("Write to a closed peer = %d, %v: want taken", n, err)
	}
	if _, err := c2.Write([]byte("late")); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("second Write to a closed peer = %v: want ECONNRESET", err)
	}
	if _, err := c2.Write([]byte("late")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("third Write to a closed peer = %v: want EPIPE", err)
	}

	// SO_LINGER 0: Close resets.
	c3 := connect(t, e, syscall.AF_INET, la)
	s3, _ := accept(t, l)
	_ = c3.SetOption(stack.OptLinger, 0)
	c3.Close()
	if _, _, err := s3.Read(b[:]); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Read after the peer's Close with SO_LINGER 0 = %v: want ECONNRESET", err)
	}
}

func TestBacklog(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	l, la := listen(t, e, syscall.AF_INET, "127.0.0.1:0", 1)
	var fired sync.Map
	var cs []stack.Socket
	for i := range 4 {
		c := sock(t, e, syscall.AF_INET)
		c.Notify(func(stack.Events) { fired.Store(i, true) })
		if err := c.Connect(la); !errors.Is(err, stack.ErrInProgress) {
			t.Fatalf("connect %d = %v: want EINPROGRESS", i, err)
		}
		// backlog 1: the queue holds 2, as Linux; the others wait.
		if ev := c.Readiness(); (i < 2) != (ev == stack.EventOut) {
			t.Fatalf("connect %d: readiness %v", i, ev)
		}
		cs = append(cs, c)
	}
	if ev := cs[3].Readiness(); ev != 0 {
		t.Errorf("a waiting client's readiness = %v: want none", ev)
	}
	if st := cs[3].Info().State; st != 2 {
		t.Errorf("a waiting client's state = %d: want 2 (syn-sent)", st)
	}
	if err := cs[3].Connect(la); !errors.Is(err, syscall.EALREADY) {
		t.Errorf("Connect of a waiting client = %v: want EALREADY", err)
	}
	if _, err := cs[0].Write([]byte("q")); err != nil {
		t.Fatalf("a queued connection cannot send: %v", err)
	}
	accept(t, l)
	accept(t, l)
	// The queue is empty: this Accept lets the waiting ones in.
	if _, _, err := l.Accept(); !errors.Is(err, stack.ErrWouldBlock) {
		t.Fatalf("Accept with only waiting clients = %v: want EAGAIN", err)
	}
	if l.Readiness()&stack.EventIn == 0 {
		t.Errorf("listener not readable after letting clients in")
	}
	for i := 2; i < 4; i++ {
		if _, ok := fired.Load(i); !ok {
			t.Errorf("waiting client %d not notified when it got in", i)
		}
		if ev := cs[i].Readiness(); ev&stack.EventOut == 0 {
			t.Errorf("client %d readiness = %v after getting in: want out", i, ev)
		}
		if err := cs[i].ConnectResult(); err != nil {
			t.Errorf("client %d ConnectResult = %v", i, err)
		}
		if err := cs[i].Connect(la); err != nil {
			t.Errorf("client %d: first Connect after the asynchronous one = %v: want nil", i, err)
		}
		accept(t, l)
	}
	// Closing a listener resets what is queued and refuses who waits.
	l2, la2 := listen(t, e, syscall.AF_INET, "127.0.0.1:0", 0)
	q := connect(t, e, syscall.AF_INET, la2)
	w := sock(t, e, syscall.AF_INET)
	if err := w.Connect(la2); !errors.Is(err, stack.ErrInProgress) {
		t.Fatalf("connect beyond backlog 0 = %v", err)
	}
	l2.Close()
	var b [4]byte
	if _, _, err := q.Read(b[:]); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a queued connection of a closed listener reads %v: want ECONNRESET", err)
	}
	if ev := w.Readiness(); ev&stack.EventErr == 0 {
		t.Errorf("a waiting client of a closed listener: readiness %v: want err", ev)
	}
	if err := w.ConnectResult(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a waiting client of a closed listener: %v: want ECONNREFUSED", err)
	}
}

func TestShutdownStates(t *testing.T) {
	e := mustNew(t, Config{})
	defer e.Close()
	l, la := listen(t, e, syscall.AF_INET6, "[::1]:0", 4)
	c := connect(t, e, syscall.AF_INET6, la)
	s, _ := accept(t, l)
	if err := c.Shutdown(syscall.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	if st := c.Info().State; st != 5 {
		t.Errorf("state after SHUT_WR = %d: want 5 (fin-wait-2)", st)
	}
	if ev := c.Readiness(); ev&stack.EventOut == 0 || ev&stack.EventHup != 0 {
		t.Errorf("readiness after SHUT_WR = %v: want out (writes fail at once), no hup", ev)
	}
	if err := s.Shutdown(syscall.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	if ev := c.Readiness(); ev&stack.EventHup == 0 || ev&stack.EventIn == 0 {
		t.Errorf("readiness with both directions shut = %v: want in and hup", ev)
	}
	// SHUT_RD: reads give EOF.
	c2 := connect(t, e, syscall.AF_INET6, la)
	accept(t, l)
	if err := c2.Shutdown(syscall.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	if _, eof, err := c2.Read(b[:]); !eof || err != nil {
		t.Errorf("Read after SHUT_RD = eof %v, %v", eof, err)
	}
	// A listener's SHUT_RD stops it: Accept is EINVAL, connects refused.
	if err := l.Shutdown(syscall.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Accept(); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Accept on a shut-down listener = %v: want EINVAL", err)
	}
	if err := sock(t, e, syscall.AF_INET6).Connect(la); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect to a shut-down listener = %v: want ECONNREFUSED", err)
	}
	if err := sock(t, e, syscall.AF_INET6).Shutdown(syscall.SHUT_WR); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("Shutdown of a fresh socket = %v: want ENOTCONN", err)
	}
}

// Two goroutines move 8 MiB each way at once through small buffers, each
// waiting only for Notify: the pipes' state is shared between the ends
// (run with -race).
func TestConcurrentBulk(t *testing.T) {
	e := mustNew(t, Config{SndBuf: 8 << 10, RcvBuf: 8 << 10})
	defer e.Close()
	l, la := listen(t, e, syscall.AF_INET, "127.0.0.1:0", 4)
	c := connect(t, e, syscall.AF_INET, la)
	s, _ := accept(t, l)
	const total = 8 << 20
	data := make([]byte, total)
	for i := range data {
		data[i] = byte(i * 13 >> 3)
	}
	run := func(so stack.Socket, errc chan<- error) {
		wake := make(chan struct{}, 1)
		so.Notify(func(stack.Events) {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		var got []byte
		sent := 0
		buf := make([]byte, 5000)
		deadline := time.After(60 * time.Second)
		for len(got) < total || sent < total {
			progress := false
			if sent < total {
				n, err := so.Write(data[sent:min(total, sent+30000)])
				if err != nil && !errors.Is(err, stack.ErrWouldBlock) {
					errc <- err
					return
				}
				sent += n
				progress = progress || n > 0
				if sent == total {
					_ = so.Shutdown(syscall.SHUT_WR)
				}
			}
			n, eof, err := so.Read(buf)
			if err != nil && !errors.Is(err, stack.ErrWouldBlock) {
				errc <- err
				return
			}
			if eof && len(got) < total {
				errc <- errors.New("EOF early")
				return
			}
			got = append(got, buf[:n]...)
			progress = progress || n > 0
			if !progress {
				select {
				case <-wake:
				case <-deadline:
					errc <- errors.New("stalled: Notify missed a change")
					return
				}
			}
		}
		if !bytes.Equal(got, data) {
			errc <- errors.New("data differs")
			return
		}
		errc <- nil
	}
	errc := make(chan error, 2)
	go run(c, errc)
	go run(s, errc)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func TestEngineCloseResets(t *testing.T) {
	e := mustNew(t, Config{})
	l, la := listen(t, e, syscall.AF_INET, "127.0.0.1:0", 4)
	c := connect(t, e, syscall.AF_INET, la)
	s, _ := accept(t, l)
	e.Close()
	var b [4]byte
	for _, so := range []stack.Socket{c, s, l} {
		if _, _, err := so.Read(b[:]); err == nil || errors.Is(err, stack.ErrWouldBlock) {
			t.Errorf("Read after Engine.Close = %v: want an error", err)
		}
		if ev := so.Readiness(); ev&stack.EventHup == 0 {
			t.Errorf("readiness after Engine.Close = %v: want hup", ev)
		}
	}
	if _, err := e.Socket(syscall.AF_INET); err == nil {
		t.Errorf("Socket after Engine.Close: no error")
	}
}

func TestRegistered(t *testing.T) {
	if _, err := stack.Start("shm", stack.Env{Settings: map[string]string{"sndbuf": "64k", "rcvbuf": "1m"}}); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"sndbuf": "lots", "ring": "3000", "wake": "sometimes", "colour": "1k"} {
		if _, err := stack.Start("shm", stack.Env{Settings: map[string]string{k: v}}); err == nil {
			t.Errorf("shm.%s=%s was taken", k, v)
		}
	}
	for _, v := range []string{"peer", "daemon"} {
		e, err := stack.Start("shm", stack.Env{Settings: map[string]string{"wake": v}})
		if err != nil {
			t.Errorf("shm.wake=%s: %v", v, err)
			continue
		}
		e.Close()
	}
	e, err := stack.Start("shm", stack.Env{Settings: map[string]string{"rcvbuf": "64k"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, _ := e.Socket(syscall.AF_INET)
	defer s.Close()
	if v, _ := s.GetOption(stack.OptRcvBuf); v != 64<<10 {
		t.Errorf("rcvbuf setting: a new socket's SO_RCVBUF is %d", v)
	}
	// The daemon's stack addresses (its default ones when it names none)
	// are local to shm.
	if err := s.Bind(netip.MustParseAddrPort("10.77.0.2:0")); err != nil {
		t.Errorf("Bind to the daemon's default stack address: %v", err)
	}
}
