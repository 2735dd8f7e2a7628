package gvisor

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/link/delack"
	"github.com/nuse-project/nuse/stack/netdev"
)

// Every wait in these tests is bounded by this.
const testTimeout = 20 * time.Second

// newTestEngine builds an engine with a loopback NIC and, if withNetdev, a
// dummy netdev (a channel endpoint nobody reads) that carries the stack's
// own addresses, so that "own address" traffic must be delivered locally.
func newTestEngine(t testing.TB, withNetdev bool) *Engine {
	t.Helper()
	cfg := Config{Loopback: true}
	if withNetdev {
		ch := channel.New(64, 65535, "\x02\x00\x00\x00\x00\x01")
		cfg.Netdev = &netdev.Device{Kind: "test", Name: "test0", Link: ch, Close: func() error { ch.Close(); return nil }}
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// waiter turns Notify into something a test can block on, bounded.
type notifier struct{ ch chan struct{} }

func watch(so stack.Socket) *notifier {
	n := &notifier{ch: make(chan struct{}, 1)}
	so.Notify(func(stack.Events) {
		select {
		case n.ch <- struct{}{}:
		default:
		}
	})
	return n
}

// wait blocks until so's readiness has any of want.
func (n *notifier) wait(t testing.TB, so stack.Socket, want stack.Events) stack.Events {
	t.Helper()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		if ev := so.Readiness(); ev&want != 0 {
			return ev
		}
		select {
		case <-n.ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for events %b (have %b)", want, so.Readiness())
		}
	}
}

func mustSocket(t testing.TB, e *Engine, family int) stack.Socket {
	t.Helper()
	so, err := e.Socket(family)
	if err != nil {
		t.Fatal(err)
	}
	return so
}

// connPair returns a listener on listenAt and a connected client/server pair
// reached through dial (whose port is taken from the listener).
func connPair(t testing.TB, e *Engine, lfam int, listenAt netip.AddrPort, cfam int, dial netip.Addr) (ln, cl, sv stack.Socket) {
	t.Helper()
	ln = mustSocket(t, e, lfam)
	if err := ln.Bind(listenAt); err != nil {
		t.Fatalf("bind %v: %v", listenAt, err)
	}
	if err := ln.Listen(16); err != nil {
		t.Fatal(err)
	}
	la, err := ln.LocalAddr()
	if err != nil {
		t.Fatal(err)
	}
	lnw := watch(ln)
	cl = mustSocket(t, e, cfam)
	clw := watch(cl)
	err = cl.Connect(netip.AddrPortFrom(dial, la.Port()))
	if err != nil && err != syscall.EINPROGRESS {
		t.Fatalf("connect: %v", err)
	}
	clw.wait(t, cl, stack.EventOut|stack.EventErr)
	if err := cl.ConnectResult(); err != nil {
		t.Fatalf("connect result: %v", err)
	}
	lnw.wait(t, ln, stack.EventIn)
	sv, _, err = ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { cl.Close(); sv.Close(); ln.Close() })
	return ln, cl, sv
}

var pairCases = []struct {
	name       string
	lfam       int
	listen     string
	cfam       int
	dial       string
	wantPeerOf string // the address the server sees for the client
}{
	{"lo4", syscall.AF_INET, "127.0.0.1:0", syscall.AF_INET, "127.0.0.1", "127.0.0.1"},
	{"lo6", syscall.AF_INET6, "[::1]:0", syscall.AF_INET6, "::1", "::1"},
	{"own4", syscall.AF_INET, "10.77.0.2:0", syscall.AF_INET, "10.77.0.2", "10.77.0.2"},
	{"own6", syscall.AF_INET6, "[fd77::2]:0", syscall.AF_INET6, "fd77::2", "fd77::2"},
	{"any4", syscall.AF_INET, "0.0.0.0:0", syscall.AF_INET, "10.77.0.2", "10.77.0.2"},
	// A dual-stack listener sees IPv4 peers as mapped addresses, as Linux.
	{"dual", syscall.AF_INET6, "[::]:0", syscall.AF_INET, "127.0.0.1", "::ffff:127.0.0.1"},
	{"dual-own", syscall.AF_INET6, "[::]:0", syscall.AF_INET, "10.77.0.2", "::ffff:10.77.0.2"},
	{"mapped-dial", syscall.AF_INET6, "[::]:0", syscall.AF_INET6, "::ffff:127.0.0.1", "::ffff:127.0.0.1"},
}

func TestConnectAcceptAddrs(t *testing.T) {
	for _, withNetdev := range []bool{false, true} {
		e := newTestEngine(t, withNetdev)
		for _, c := range pairCases {
			name := c.name
			if withNetdev {
				name += "/netdev"
			}
			t.Run(name, func(t *testing.T) {
				_, cl, sv := connPair(t, e, c.lfam, netip.MustParseAddrPort(c.listen), c.cfam, netip.MustParseAddr(c.dial))
				cla, _ := cl.LocalAddr()
				clr, _ := cl.RemoteAddr()
				sva, _ := sv.LocalAddr()
				svr, err := sv.RemoteAddr()
				if err != nil {
					t.Fatal(err)
				}
				if svr.Addr() != netip.MustParseAddr(c.wantPeerOf) {
					t.Errorf("server sees peer %v, want %v", svr, c.wantPeerOf)
				}
				if svr.Port() != cla.Port() || sva.Port() != clr.Port() {
					t.Errorf("ports disagree: client %v->%v server %v<-%v", cla, clr, sva, svr)
				}
				if clr.Addr() != netip.MustParseAddr(c.dial) {
					t.Errorf("client remote %v, want %v", clr, c.dial)
				}
				// One byte each way.
				if n, err := cl.Write([]byte{42}); n != 1 || err != nil {
					t.Fatalf("write: %d %v", n, err)
				}
				watch(sv).wait(t, sv, stack.EventIn)
				var b [4]byte
				if n, eof, err := sv.Read(b[:]); n != 1 || eof || err != nil || b[0] != 42 {
					t.Fatalf("read: %d %v %v %v", n, eof, err, b)
				}
			})
		}
	}
}

// pump writes data to w and reads it all from r (until EOF) concurrently,
// with odd read and write sizes, and returns what was read.
func pump(t *testing.T, w, r stack.Socket, data []byte, shutdown bool) []byte {
	t.Helper()
	var wg sync.WaitGroup
	var werr error
	ww := watch(w)
	rw := watch(r)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewSource(1))
		deadline := time.Now().Add(testTimeout)
		for off := 0; off < len(data); {
			if time.Now().After(deadline) {
				werr = errors.New("writer timed out")
				return
			}
			end := min(len(data), off+1+rng.Intn(256<<10))
			n, err := w.Write(data[off:end])
			if err == syscall.EAGAIN {
				ww.wait(t, w, stack.EventOut|stack.EventErr)
				continue
			}
			if err != nil {
				werr = err
				return
			}
			off += n
		}
		if shutdown {
			werr = w.Shutdown(syscall.SHUT_WR)
		}
	}()
	var got bytes.Buffer
	rng := rand.New(rand.NewSource(2))
	buf := make([]byte, 300<<10)
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		sz := 1 + rng.Intn(len(buf))
		if rng.Intn(4) == 0 {
			sz = 1 + rng.Intn(100) // small reads split segments
		}
		n, eof, err := r.Read(buf[:sz])
		if err == syscall.EAGAIN {
			rw.wait(t, r, stack.EventIn|stack.EventErr|stack.EventHup)
			continue
		}
		if err != nil {
			t.Fatalf("read after %d bytes: %v", got.Len(), err)
		}
		got.Write(buf[:n])
		if eof {
			break
		}
		if !shutdown && got.Len() == len(data) {
			break
		}
	}
	wg.Wait()
	if werr != nil {
		t.Fatal(werr)
	}
	return got.Bytes()
}

func TestBulkHalfClose(t *testing.T) {
	data := make([]byte, 8<<20)
	rand.New(rand.NewSource(3)).Read(data)
	want := sha256.Sum256(data)
	for _, c := range []struct {
		name, listen, dial string
	}{{"lo", "127.0.0.1:0", "127.0.0.1"}, {"own", "10.77.0.2:0", "10.77.0.2"}, {"own6", "[fd77::2]:0", "fd77::2"}} {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEngine(t, true)
			fam := syscall.AF_INET
			if netip.MustParseAddr(c.dial).Is6() {
				fam = syscall.AF_INET6
			}
			_, cl, sv := connPair(t, e, fam, netip.MustParseAddrPort(c.listen), fam, netip.MustParseAddr(c.dial))
			got := pump(t, cl, sv, data, true)
			if len(got) != len(data) || sha256.Sum256(got) != want {
				t.Fatalf("server got %d bytes, sha256 mismatch (want %d)", len(got), len(data))
			}
			// EOF keeps being reported.
			if n, eof, err := sv.Read(make([]byte, 10)); n != 0 || !eof || err != nil {
				t.Fatalf("read after EOF: %d %v %v", n, eof, err)
			}
			// The half-closed client still receives: the server answers
			// with the data and its own FIN.
			back := pump(t, sv, cl, data[:1<<20], true)
			if !bytes.Equal(back, data[:1<<20]) {
				t.Fatalf("reply mismatch: %d bytes", len(back))
			}
			// Writing after SHUT_WR is EPIPE.
			if _, err := cl.Write([]byte("x")); err != syscall.EPIPE {
				t.Fatalf("write after shutdown: %v, want EPIPE", err)
			}
			st := cl.Stats()
			if st.SegsOut == 0 || st.SegsIn == 0 {
				t.Errorf("client stats empty: %+v", st)
			}
			var sawLo bool
			for _, n := range e.Stats() {
				if n.Name == "lo" && n.TxBytes > 8<<20 {
					sawLo = true
				}
			}
			if !sawLo {
				t.Errorf("loopback NIC counters do not show the transfer: %+v", e.Stats())
			}
		})
	}
}

func TestRefused(t *testing.T) {
	e := newTestEngine(t, true)
	for _, dial := range []string{"127.0.0.1:9", "10.77.0.2:9", "[::1]:9"} {
		ap := netip.MustParseAddrPort(dial)
		fam := syscall.AF_INET
		if ap.Addr().Is6() {
			fam = syscall.AF_INET6
		}
		cl := mustSocket(t, e, fam)
		w := watch(cl)
		err := cl.Connect(ap)
		if err != syscall.EINPROGRESS && err != syscall.ECONNREFUSED {
			t.Fatalf("%s: connect: %v", dial, err)
		}
		if err == syscall.EINPROGRESS {
			ev := w.wait(t, cl, stack.EventErr|stack.EventHup)
			if ev&stack.EventErr == 0 {
				t.Errorf("%s: events %b lack EventErr", dial, ev)
			}
		}
		for i := 0; i < 2; i++ {
			if err := cl.ConnectResult(); err != syscall.ECONNREFUSED {
				t.Fatalf("%s: connect result %v, want ECONNREFUSED", dial, err)
			}
		}
		cl.Close()
	}
}

func TestErrnos(t *testing.T) {
	e := newTestEngine(t, true)
	ln := mustSocket(t, e, syscall.AF_INET)
	if err := ln.Bind(netip.MustParseAddrPort("127.0.0.1:7777")); err != nil {
		t.Fatal(err)
	}
	if err := ln.Listen(4); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	b := mustSocket(t, e, syscall.AF_INET)
	defer b.Close()
	if err := b.Bind(netip.MustParseAddrPort("127.0.0.1:7777")); err != syscall.EADDRINUSE {
		t.Errorf("second bind: %v, want EADDRINUSE", err)
	}
	if err := b.Bind(netip.MustParseAddrPort("10.9.9.9:0")); err != syscall.EADDRNOTAVAIL {
		t.Errorf("bind foreign address: %v, want EADDRNOTAVAIL", err)
	}
	if err := b.Bind(netip.MustParseAddrPort("[::1]:0")); err != syscall.EAFNOSUPPORT {
		t.Errorf("bind v6 on v4 socket: %v, want EAFNOSUPPORT", err)
	}
	if _, _, err := ln.Accept(); err != syscall.EAGAIN {
		t.Errorf("accept on empty queue: %v, want EAGAIN", err)
	}
	if _, _, err := b.Accept(); err != syscall.EINVAL {
		t.Errorf("accept on non-listener: %v, want EINVAL", err)
	}
	if _, _, err := b.Read(make([]byte, 8)); err != syscall.ENOTCONN {
		t.Errorf("read unconnected: %v, want ENOTCONN", err)
	}
	if _, err := b.RemoteAddr(); err != syscall.ENOTCONN {
		t.Errorf("getpeername unconnected: %v, want ENOTCONN", err)
	}
	if err := b.Shutdown(syscall.SHUT_WR); err != syscall.ENOTCONN {
		t.Errorf("shutdown unconnected: %v, want ENOTCONN", err)
	}
	if err := b.ConnectResult(); err != nil {
		t.Errorf("connect result (SO_ERROR) of a never-connected socket: %v, want nil", err)
	}
	if err := ln.ConnectResult(); err != nil {
		t.Errorf("connect result (SO_ERROR) of a listener: %v, want nil", err)
	}
	if _, err := e.Socket(syscall.AF_UNIX); err != syscall.EAFNOSUPPORT {
		t.Errorf("AF_UNIX socket: %v", err)
	}
	// A connect with no route (an engine without netdev has no default
	// route).
	c := mustSocket(t, newTestEngine(t, false), syscall.AF_INET)
	defer c.Close()
	if err := c.Connect(netip.MustParseAddrPort("192.0.2.1:80")); err != syscall.ENETUNREACH {
		t.Errorf("connect without route: %v, want ENETUNREACH", err)
	}

	// Connected pair: non-blocking read, EISCONN, EALREADY-free paths.
	_, cl, sv := connPair(t, e, syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), syscall.AF_INET, netip.MustParseAddr("127.0.0.1"))
	if _, _, err := sv.Read(make([]byte, 8)); err != syscall.EAGAIN {
		t.Errorf("read with nothing there: %v, want EAGAIN", err)
	}
	if err := cl.Connect(netip.MustParseAddrPort("127.0.0.1:7777")); err != syscall.EISCONN {
		t.Errorf("connect on connected: %v, want EISCONN", err)
	}
	if ev := sv.Readiness(); ev != stack.EventOut {
		t.Errorf("idle connected readiness %b, want EventOut only", ev)
	}
	// Abort: the peer sees ECONNRESET.
	w := watch(sv)
	cl.Abort()
	w.wait(t, sv, stack.EventErr|stack.EventHup)
	if _, _, err := sv.Read(make([]byte, 8)); err != syscall.ECONNRESET {
		t.Errorf("read after peer abort: %v, want ECONNRESET", err)
	}
	if _, err := sv.Write([]byte("x")); err != syscall.EPIPE && err != syscall.ECONNRESET {
		t.Errorf("write after peer abort: %v, want EPIPE or ECONNRESET", err)
	}
}

func TestInProgress(t *testing.T) {
	e := newTestEngine(t, true)
	ln := mustSocket(t, e, syscall.AF_INET)
	defer ln.Close()
	ln.Bind(netip.MustParseAddrPort("10.77.0.2:5000"))
	ln.Listen(1)
	c := mustSocket(t, e, syscall.AF_INET)
	defer c.Close()
	err := c.Connect(netip.MustParseAddrPort("10.77.0.2:5000"))
	if err != syscall.EINPROGRESS {
		t.Skipf("connect finished at once (%v); nothing to check", err)
	}
	// Reading or writing while the handshake runs: EAGAIN, as Linux does
	// for a non-blocking socket.
	if _, _, err := c.Read(make([]byte, 4)); err != syscall.EAGAIN && err != nil {
		t.Errorf("read while connecting: %v, want EAGAIN", err)
	}
	watch(c).wait(t, c, stack.EventOut)
	if err := c.ConnectResult(); err != nil {
		t.Fatal(err)
	}
}

func TestOptions(t *testing.T) {
	e := newTestEngine(t, false)
	s6 := mustSocket(t, e, syscall.AF_INET6)
	defer s6.Close()
	s4 := mustSocket(t, e, syscall.AF_INET)
	defer s4.Close()
	for _, c := range []struct {
		o    stack.Option
		v    int
		want int // -2: at least v
	}{
		{stack.OptReuseAddr, 1, 1}, {stack.OptReuseAddr, 0, 0},
		{stack.OptReusePort, 1, 1},
		{stack.OptKeepAlive, 1, 1},
		{stack.OptKeepIdle, 30, 30}, {stack.OptKeepIntvl, 5, 5}, {stack.OptKeepCnt, 4, 4},
		{stack.OptNoDelay, 1, 1}, {stack.OptNoDelay, 0, 0},
		{stack.OptLinger, 3, 3}, {stack.OptLinger, -1, -1},
		{stack.OptCork, 1, 1}, {stack.OptCork, 0, 0},
		{stack.OptRcvBuf, 256 << 10, -2}, {stack.OptSndBuf, 256 << 10, -2},
		{stack.OptMaxSeg, 1200, 1200},
		{stack.OptV6Only, 1, 1}, {stack.OptV6Only, 0, 0},
	} {
		if err := s6.SetOption(c.o, c.v); err != nil {
			t.Errorf("set %d=%d: %v", c.o, c.v, err)
			continue
		}
		got, err := s6.GetOption(c.o)
		if err != nil {
			t.Errorf("get %d: %v", c.o, err)
		}
		if (c.want == -2 && got < c.v) || (c.want != -2 && got != c.want) {
			t.Errorf("option %d: set %d, got %d", c.o, c.v, got)
		}
	}
	if err := s4.SetOption(stack.OptV6Only, 1); err != syscall.ENOPROTOOPT {
		t.Errorf("V6ONLY on AF_INET: %v, want ENOPROTOOPT", err)
	}
	if _, err := s4.GetOption(stack.Option(999)); err != syscall.ENOPROTOOPT {
		t.Errorf("unknown option: %v, want ENOPROTOOPT", err)
	}
	if err := s4.SetOption(stack.OptKeepIdle, 0); err != syscall.EINVAL {
		t.Errorf("keepidle 0: %v, want EINVAL", err)
	}
}

func TestV6Only(t *testing.T) {
	e := newTestEngine(t, false)
	ln := mustSocket(t, e, syscall.AF_INET6)
	defer ln.Close()
	if err := ln.SetOption(stack.OptV6Only, 1); err != nil {
		t.Fatal(err)
	}
	if err := ln.Bind(netip.MustParseAddrPort("[::]:6000")); err != nil {
		t.Fatal(err)
	}
	if err := ln.Listen(4); err != nil {
		t.Fatal(err)
	}
	// The IPv4 port is still free, and an IPv4 connect is refused by it.
	c := mustSocket(t, e, syscall.AF_INET)
	defer c.Close()
	if err := c.Connect(netip.MustParseAddrPort("127.0.0.1:6000")); err == syscall.EINPROGRESS {
		watch(c).wait(t, c, stack.EventErr|stack.EventHup)
	}
	if err := c.ConnectResult(); err != syscall.ECONNREFUSED {
		t.Errorf("v4 connect to v6only listener: %v, want ECONNREFUSED", err)
	}
	v4 := mustSocket(t, e, syscall.AF_INET)
	defer v4.Close()
	if err := v4.Bind(netip.MustParseAddrPort("0.0.0.0:6000")); err != nil {
		t.Errorf("bind v4 beside v6only listener: %v", err)
	}
}

func TestEngineCloseResets(t *testing.T) {
	e, err := New(Config{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	_, cl, _ := connPair(t, e, syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), syscall.AF_INET, netip.MustParseAddr("127.0.0.1"))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.Read(make([]byte, 4)); err == nil || err == syscall.EAGAIN {
		t.Errorf("read after engine close: %v, want an error", err)
	}
}

func TestConfig(t *testing.T) {
	var c TCPConfig
	for _, kv := range [][2]string{{"sack", "off"}, {"cc", "reno"}, {"rcvbuf", "2m"}, {"rcvbuf-max", "8m"}, {"sndbuf", "512k"}, {"rack", "off"}, {"moderate-rcvbuf", "off"}, {"nodelay", "on"}} {
		if err := c.Set(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if !c.NoSACK || c.CongestionControl != "reno" || c.RcvBufDefault != 2<<20 || c.RcvBufMax != 8<<20 || c.SndBufDefault != 512<<10 || !c.NoRACK || !c.NoModerateRcvBuf || !c.NoDelay {
		t.Fatalf("settings not applied: %+v", c)
	}
	e, err := New(Config{Loopback: true, TCP: c})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var sack tcpip.TCPSACKEnabled
	e.Stack().TransportProtocolOption(6, &sack)
	if sack {
		t.Error("SACK still on")
	}
	so := mustSocket(t, e, syscall.AF_INET)
	if v, _ := so.GetOption(stack.OptNoDelay); v != 1 {
		t.Error("nodelay setting not applied to new sockets")
	}
	so.Close()
	if err := c.Set("bogus", "1"); err == nil {
		t.Error("unknown setting accepted")
	}
	if _, err := New(Config{TCP: TCPConfig{CongestionControl: "bbr"}}); err == nil {
		t.Error("unknown congestion control accepted")
	}
	for _, kv := range [][2]string{{"delayed-ack", "maybe"}, {"ack-delay", "0"}, {"ack-delay", "1s"}, {"ack-delay", "-1ms"}, {"ack-delay", "soon"}, {"ack-delay-max", "0"}, {"ack-delay-max", "201ms"}} {
		if err := c.Set(kv[0], kv[1]); err == nil {
			t.Errorf("%s=%s accepted", kv[0], kv[1])
		}
	}
	var d TCPConfig
	if err := d.Set("ack-delay", "250us"); err != nil || d.ACKDelay != 250*time.Microsecond {
		t.Errorf("ack-delay=250us: %v %v", d.ACKDelay, err)
	}
	if err := d.Set("ack-delay-max", "40ms"); err != nil || d.ACKDelayMax != 40*time.Millisecond || d.ACKDelay != 250*time.Microsecond {
		t.Errorf("ack-delay-max=40ms: %+v %v", d, err)
	}
	if err := d.Set("delayed-ack", "off"); err != nil || !d.NoDelayedACK {
		t.Errorf("delayed-ack=off: %+v %v", d, err)
	}
}

// TestDelayedACKs: on the loopback NIC a request/response exchange's ACKs
// ride on the answers (the delayed ACKs are dropped as redundant), the
// bytes arrive intact, and nothing is retransmitted; delayed-ack=off sends
// every ACK.
func TestDelayedACKs(t *testing.T) {
	for _, off := range []bool{false, true} {
		// A long delay: a slow (-race, loaded) run must not see the
		// held ACKs expire before the answers replace them.
		e, err := New(Config{Loopback: true, TCP: TCPConfig{NoDelayedACK: off, NoDelay: true, ACKDelay: 100 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		_, cl, sv := connPair(t, e, syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), syscall.AF_INET, netip.MustParseAddr("127.0.0.1"))
		const rounds = 200
		for i := range rounds {
			req := []byte(fmt.Sprintf("request %d", i))
			if got := pump(t, cl, sv, req, false); !bytes.Equal(got, req) {
				t.Fatalf("round %d: server got %q", i, got)
			}
			resp := bytes.Repeat([]byte{byte(i)}, 100+i)
			if got := pump(t, sv, cl, resp, false); !bytes.Equal(got, resp) {
				t.Fatalf("round %d: client got %d bytes", i, len(got))
			}
		}
		var lo NICStats
		for _, n := range e.Stats() {
			if n.Name == "lo" {
				lo = n
			}
		}
		st := lo.DelayedACK
		if off {
			if st != (delack.Stats{}) || e.delack != nil {
				t.Errorf("delayed-ack=off: %+v", st)
			}
		} else if st.Held < rounds || st.Replaced < rounds {
			// Each round's request and response each have their ACK
			// held, and most are replaced by the next segment.
			t.Errorf("delayed ACKs over %d rounds: %+v", rounds, st)
		}
		if r := e.Stack().Stats().TCP.Retransmits.Value(); r != 0 {
			t.Errorf("delayed-ack off=%v: %d retransmitted segments on loopback", off, r)
		}
		e.Close()
	}
}

func TestErrnoTable(t *testing.T) {
	for _, c := range []struct {
		in   tcpip.Error
		want syscall.Errno
	}{
		{&tcpip.ErrConnectionRefused{}, syscall.ECONNREFUSED},
		{&tcpip.ErrPortInUse{}, syscall.EADDRINUSE},
		{&tcpip.ErrWouldBlock{}, syscall.EAGAIN},
		{&tcpip.ErrConnectStarted{}, syscall.EINPROGRESS},
		{&tcpip.ErrAlreadyConnecting{}, syscall.EALREADY},
		{&tcpip.ErrAlreadyConnected{}, syscall.EISCONN},
		{&tcpip.ErrNotConnected{}, syscall.ENOTCONN},
		{&tcpip.ErrClosedForSend{}, syscall.EPIPE},
		{&tcpip.ErrConnectionReset{}, syscall.ECONNRESET},
		{&tcpip.ErrConnectionAborted{}, syscall.ECONNABORTED},
		{&tcpip.ErrTimeout{}, syscall.ETIMEDOUT},
		{&tcpip.ErrHostUnreachable{}, syscall.EHOSTUNREACH},
		{&tcpip.ErrNetworkUnreachable{}, syscall.ENETUNREACH},
		{&tcpip.ErrBadLocalAddress{}, syscall.EADDRNOTAVAIL},
		{&tcpip.ErrInvalidEndpointState{}, syscall.EINVAL},
		{&tcpip.ErrUnknownProtocolOption{}, syscall.ENOPROTOOPT},
	} {
		if got := errno(c.in); got != c.want {
			t.Errorf("%v -> %v, want %v", c.in, got, c.want)
		}
	}
	if errno(nil) != nil {
		t.Error("errno(nil) != nil")
	}
}

func TestListenAutobindAndInherit(t *testing.T) {
	e, err := New(Config{Loopback: true, TCP: TCPConfig{NoDelay: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ln := mustSocket(t, e, syscall.AF_INET)
	defer ln.Close()
	if ev := ln.Readiness(); ev != stack.EventOut|stack.EventHup {
		t.Errorf("fresh socket readiness %b, want Out|Hup as Linux", ev)
	}
	if err := ln.Listen(0); err != nil {
		t.Fatal(err)
	}
	la, err := ln.LocalAddr()
	if err != nil || la.Port() == 0 {
		t.Fatalf("listen without bind: %v %v", la, err)
	}
	if ev := ln.Readiness(); ev != 0 {
		t.Errorf("idle listener readiness %b, want 0", ev)
	}
	c := mustSocket(t, e, syscall.AF_INET)
	defer c.Close()
	lw := watch(ln)
	if err := c.Connect(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), la.Port())); err != nil && err != syscall.EINPROGRESS {
		t.Fatal(err)
	}
	lw.wait(t, ln, stack.EventIn)
	sv, peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	if cl, _ := c.LocalAddr(); cl != peer {
		t.Errorf("accept peer %v, client local %v", peer, cl)
	}
	if v, _ := sv.GetOption(stack.OptNoDelay); v != 1 {
		t.Errorf("accepted socket NODELAY %d, want inherited 1", v)
	}
	// A callback that calls Readiness and Notify from inside must not
	// deadlock.
	got := make(chan stack.Events, 16)
	sv.Notify(func(ev stack.Events) {
		sv.Readiness()
		select {
		case got <- ev:
		default:
		}
	})
	c.Write([]byte("hi"))
	select {
	case ev := <-got:
		if ev&stack.EventIn == 0 {
			t.Errorf("notified with %b, want EventIn", ev)
		}
	case <-time.After(testTimeout):
		t.Fatal("no notification")
	}
	sv.Notify(nil)
}

// Data written just before Close still arrives, followed by EOF; SHUT_RD
// makes reads return EOF; a fully closed connection reports EventHup.
func TestGracefulClose(t *testing.T) {
	e := newTestEngine(t, true)
	_, cl, sv := connPair(t, e, syscall.AF_INET, netip.MustParseAddrPort("10.77.0.2:0"), syscall.AF_INET, netip.MustParseAddr("10.77.0.2"))
	data := make([]byte, 512<<10)
	rand.New(rand.NewSource(4)).Read(data)
	n, err := cl.Write(data)
	if err != nil || n != len(data) {
		t.Fatalf("write %d: %v (send buffer smaller than expected?)", n, err)
	}
	cl.Close()
	got := make([]byte, 0, len(data))
	buf := make([]byte, 64<<10)
	w := watch(sv)
	for {
		k, eof, err := sv.Read(buf)
		if err == syscall.EAGAIN {
			w.wait(t, sv, stack.EventIn|stack.EventHup|stack.EventErr)
			continue
		}
		if err != nil {
			t.Fatalf("read after %d: %v", len(got), err)
		}
		got = append(got, buf[:k]...)
		if eof {
			break
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want %d intact", len(got), len(data))
	}
	if err := sv.Shutdown(syscall.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	if ev := w.wait(t, sv, stack.EventHup); ev&stack.EventIn == 0 {
		t.Errorf("closed connection readiness %b lacks EventIn", ev)
	}

	// SHUT_RD on a live connection: reads say EOF at once.
	_, c2, s2 := connPair(t, e, syscall.AF_INET6, netip.MustParseAddrPort("[::1]:0"), syscall.AF_INET6, netip.MustParseAddr("::1"))
	if err := s2.Shutdown(syscall.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	if n, eof, err := s2.Read(buf); n != 0 || !eof || err != nil {
		t.Fatalf("read after SHUT_RD: %d %v %v", n, eof, err)
	}
	if err := c2.Shutdown(99); err != syscall.EINVAL {
		t.Errorf("shutdown(99): %v, want EINVAL", err)
	}
}

// The stack's TCP counters (nuse stats) count what happened: a connection
// opened actively and passively and established, a connect refused (a
// reset out, a reset in), segments both ways; nothing lost, nothing resent.
func TestTCPStats(t *testing.T) {
	e := newTestEngine(t, false)
	if got := e.TCPStats(); got != (stack.TCPStats{}) {
		t.Fatalf("a new engine's counters are not zero: %+v", got)
	}
	_, cl, _ := connPair(t, e, syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), syscall.AF_INET, netip.MustParseAddr("127.0.0.1"))
	ref := mustSocket(t, e, syscall.AF_INET)
	w := watch(ref)
	if err := ref.Connect(netip.MustParseAddrPort("127.0.0.1:9")); err == syscall.EINPROGRESS {
		w.wait(t, ref, stack.EventErr|stack.EventHup)
	}
	ref.Close()
	st := e.TCPStats()
	want := stack.TCPStats{ActiveOpens: 2, PassiveOpens: 1, Established: 2, ResetsSent: 1, ResetsReceived: 1}
	got := st
	got.SegsOut, got.SegsIn = 0, 0
	if got != want {
		t.Errorf("counters %+v, want %+v (segments aside)", st, want)
	}
	// Out: SYN, SYN-ACK, ACK, SYN, RST. In: what reached a socket (not
	// the SYN to the closed port).
	if st.SegsOut < 5 || st.SegsIn < 4 || st.SegsIn > st.SegsOut {
		t.Errorf("segments out %d, in %d: want at least 5 and 4, no more in than out", st.SegsOut, st.SegsIn)
	}
	cl.Close()
}
