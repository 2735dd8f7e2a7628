// Package enginetest is the conformance suite every transport engine
// passes: a table of semantic checks against the stack.Engine interface,
// each run over IPv4 and IPv6 loopback. An engine runs it from its own
// _test.go with one line:
//
//	func TestConformance(t *testing.T) {
//		enginetest.Run(t, func(t testing.TB) stack.Engine { return myengine.New(...) })
//	}
//	func BenchmarkEngine(b *testing.B) { enginetest.Bench(b, newEngine) }
//
// Each check gets a fresh engine (closed after it) and waits for readiness
// only through Notify: an engine whose callbacks do not fire fails by
// timing out, never by hanging (every wait is bounded).
package enginetest

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/stack"
)

// Timeout bounds every wait of the suite.
var Timeout = 10 * time.Second

// Check is one semantic check.
type Check struct {
	Name string
	What string // one line: what it shows
	// Family is 0 for checks that run for both families (ipv4/NAME and
	// ipv6/NAME), or the one family it needs.
	Family int
	Run    func(h *H)
}

// Checks is the suite, in the order it runs.
var Checks = []Check{
	{Name: "connect-refused", What: "connect to a port without listener: ECONNREFUSED (at once or as the connect's result, kept)", Run: checkConnectRefused},
	{Name: "accept", What: "listen, connect, accept; EAGAIN on an empty accept queue; EISCONN on a second connect", Run: checkAccept},
	{Name: "addresses", What: "LocalAddr/RemoteAddr of unbound, listening, connecting and accepted sockets; ENOTCONN for no peer", Run: checkAddresses},
	{Name: "partial-write-read", What: "writes are short or EAGAIN when the send buffer is full; reads take what fits; bytes arrive in order", Run: checkPartial},
	{Name: "readiness-notify", What: "EventIn/EventOut come and go with data and buffer space, and Notify fires on each change", Run: checkReadiness},
	{Name: "half-close", What: "Shutdown(SHUT_WR): the peer reads EOF after the data and can still send back", Run: checkHalfClose},
	{Name: "eof", What: "Close: the peer reads the data, then EOF (0, true, nil) and EventIn holds", Run: checkEOF},
	{Name: "reset", What: "Abort: the peer's read fails with ECONNRESET", Run: checkReset},
	{Name: "close-queued", What: "Close with data still queued for a peer that is not reading: all of it is delivered, then EOF", Run: checkCloseQueued},
	{Name: "options", What: "socket options set and read back; bad values EINVAL; unknown ENOPROTOOPT; congestion control by name", Run: checkOptions},
	{Name: "info-stats", What: "Info reports established/listen state and an MSS; Stats count segments", Run: checkInfo},
	{Name: "bind-conflict", What: "a second bind to a bound or listening address: EADDRINUSE; a foreign address: EADDRNOTAVAIL", Run: checkBindConflict},
	{Name: "listen-backlog", What: "connections beyond the backlog wait (no more than backlog+1 queued); accepting lets them in (clients that send first)", Family: syscall.AF_INET, Run: checkBacklog},
	{Name: "listen-backlog-idle", What: "as listen-backlog, with clients that send nothing: they too get in once there is room", Family: syscall.AF_INET, Run: checkBacklogIdle},
	{Name: "many-sockets", What: "500 sockets at once (250 connections), each carrying data", Family: syscall.AF_INET, Run: checkMany},
	{Name: "v4-mapped", What: "an IPv6 socket reaches an IPv4 listener via ::ffff:127.0.0.1; V6Only refuses it", Family: syscall.AF_INET6, Run: checkV4Mapped},
	{Name: "rx-queued", What: "RxQueued (engines that have it) counts the bytes received and not read", Run: checkRxQueued},
	{Name: "write-unconnected", What: "Write on a socket that never connected: EPIPE; Read: ENOTCONN", Run: checkWriteUnconnected},
}

// H is what a check gets: the engine, the family and loopback address
// under test, and helpers that fail the test rather than return errors.
type H struct {
	testing.TB
	E      stack.Engine
	Family int
	Lo     netip.Addr // 127.0.0.1 or ::1
}

// NewEngine makes a fresh engine for one check or benchmark; it fails tb
// if it cannot.
type NewEngine func(tb testing.TB) stack.Engine

// Option changes how Run runs.
type Option func(*options)

type options struct{ deviations map[string]string }

// Deviation declares that the engine is known to fail a check (by its
// Name), and why: the check is skipped with that reason, so the deviation
// shows in every verbose run instead of being silently left out. Fixing
// the engine means deleting its Deviation.
func Deviation(check, why string) Option {
	return func(o *options) { o.deviations[check] = why }
}

// Run runs every check against engines newEngine makes (one per check;
// the suite closes it). An engine that lacks something fails, visibly,
// unless it declares the Deviation.
func Run(t *testing.T, newEngine NewEngine, opts ...Option) {
	o := options{deviations: map[string]string{}}
	for _, f := range opts {
		f(&o)
	}
	for name := range o.deviations {
		found := false
		for _, c := range Checks {
			found = found || c.Name == name
		}
		if !found {
			t.Fatalf("Deviation names no check: %q", name)
		}
	}
	for _, fam := range []struct {
		name   string
		family int
		lo     netip.Addr
	}{{"ipv4", syscall.AF_INET, netip.MustParseAddr("127.0.0.1")}, {"ipv6", syscall.AF_INET6, netip.IPv6Loopback()}} {
		t.Run(fam.name, func(t *testing.T) {
			for _, c := range Checks {
				if c.Family != 0 && c.Family != fam.family {
					continue
				}
				t.Run(c.Name, func(t *testing.T) {
					if why, ok := o.deviations[c.Name]; ok {
						t.Skipf("known deviation of this engine: %s", why)
					}
					e := newEngine(t)
					defer e.Close()
					c.Run(&H{TB: t, E: e, Family: fam.family, Lo: fam.lo})
				})
			}
		})
	}
}

// ---- helpers ----

// Sock is a socket under test with its Notify turned into a channel.
type Sock struct {
	stack.Socket
	h     *H
	ch    chan struct{}
	fired chan struct{} // gets a token every time Notify's fn runs
}

// Socket makes a socket of the family under test and watches it.
func (h *H) Socket() *Sock {
	h.Helper()
	return h.SocketOf(h.Family)
}

// SocketOf makes a socket of a family and watches it.
func (h *H) SocketOf(family int) *Sock {
	h.Helper()
	so, err := h.E.Socket(family)
	if err != nil {
		h.Fatalf("Socket(%d): %v", family, err)
	}
	s := h.watch(so)
	h.Cleanup(func() { so.Close() })
	return s
}

func (h *H) watch(so stack.Socket) *Sock {
	s := &Sock{Socket: so, h: h, ch: make(chan struct{}, 1), fired: make(chan struct{}, 1)}
	so.Notify(func(stack.Events) {
		for _, c := range []chan struct{}{s.ch, s.fired} {
			select {
			case c <- struct{}{}:
			default:
			}
		}
	})
	return s
}

// Wait blocks (bounded) until the socket's readiness has any of want, and
// returns it. Only Notify wakes it.
func (s *Sock) Wait(want stack.Events) stack.Events {
	s.h.Helper()
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		if ev := s.Readiness(); ev&want != 0 {
			return ev
		}
		select {
		case <-s.ch:
		case <-deadline.C:
			s.h.Fatalf("timed out waiting for events %s (readiness %s): Notify did not fire", evs(want), evs(s.Readiness()))
		}
	}
}

// WaitNot blocks (bounded) until none of the events hold.
func (s *Sock) WaitNot(not stack.Events) stack.Events {
	s.h.Helper()
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		if ev := s.Readiness(); ev&not == 0 {
			return ev
		}
		select {
		case <-s.ch:
		case <-deadline.C:
			s.h.Fatalf("timed out waiting for events %s to clear (readiness %s)", evs(not), evs(s.Readiness()))
		}
	}
}

func evs(e stack.Events) string {
	s := ""
	for _, b := range []struct {
		e stack.Events
		n string
	}{{stack.EventIn, "in"}, {stack.EventOut, "out"}, {stack.EventErr, "err"}, {stack.EventHup, "hup"}} {
		if e&b.e != 0 {
			if s != "" {
				s += "|"
			}
			s += b.n
		}
	}
	if s == "" {
		return "none"
	}
	return s
}

// Listener makes a listening socket on loopback, port chosen by the engine.
func (h *H) Listener(backlog int) (*Sock, netip.AddrPort) {
	h.Helper()
	l := h.Socket()
	if err := l.Bind(netip.AddrPortFrom(h.Lo, 0)); err != nil {
		h.Fatalf("Bind(%s:0): %v", h.Lo, err)
	}
	if err := l.Listen(backlog); err != nil {
		h.Fatalf("Listen: %v", err)
	}
	ap, err := l.LocalAddr()
	if err != nil || ap.Port() == 0 {
		h.Fatalf("listener LocalAddr = %v, %v: want a port", ap, err)
	}
	return l, ap
}

// Connect starts a connection and waits until it is established.
func (h *H) Connect(to netip.AddrPort) *Sock {
	h.Helper()
	c := h.Socket()
	h.ConnectSock(c, to)
	return c
}

// ConnectSock connects c to to and waits until it is established.
func (h *H) ConnectSock(c *Sock, to netip.AddrPort) {
	h.Helper()
	err := c.Connect(to)
	if err != nil && !errors.Is(err, stack.ErrInProgress) {
		h.Fatalf("Connect(%s): %v", to, err)
	}
	c.Wait(stack.EventOut | stack.EventErr | stack.EventHup)
	if err := c.ConnectResult(); err != nil {
		h.Fatalf("ConnectResult after connecting to %s: %v", to, err)
	}
}

// Accept waits for a connection on l and accepts it.
func (h *H) Accept(l *Sock) (*Sock, netip.AddrPort) {
	h.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		l.Wait(stack.EventIn)
		so, peer, err := l.Accept()
		if err == nil {
			s := h.watch(so)
			h.Cleanup(func() { so.Close() })
			return s, peer
		}
		if !errors.Is(err, stack.ErrWouldBlock) {
			h.Fatalf("Accept: %v", err)
		}
		if time.Now().After(deadline) {
			h.Fatalf("Accept: EventIn but nothing to accept for %v", Timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// Pair makes a connected pair: client and server ends.
func (h *H) Pair() (client, server *Sock) {
	h.Helper()
	l, ap := h.Listener(16)
	c := h.Connect(ap)
	s, _ := h.Accept(l)
	return c, s
}

// WriteAll writes p, waiting for EventOut when the engine takes less.
func (s *Sock) WriteAll(p []byte) {
	s.h.Helper()
	for len(p) > 0 {
		n, err := s.Write(p)
		p = p[n:]
		if errors.Is(err, stack.ErrWouldBlock) || (err == nil && n == 0) {
			s.Wait(stack.EventOut | stack.EventErr)
			continue
		}
		if err != nil {
			s.h.Fatalf("Write: %v", err)
		}
	}
}

// ReadN reads exactly n bytes (in reads of at most chunk), waiting for
// EventIn; EOF or an error before n bytes fails the test.
func (s *Sock) ReadN(n, chunk int) []byte {
	s.h.Helper()
	out := make([]byte, 0, n)
	buf := make([]byte, chunk)
	for len(out) < n {
		k, eof, err := s.Read(buf[:min(chunk, n-len(out))])
		if k > chunk {
			s.h.Fatalf("Read returned %d bytes into a %d-byte buffer", k, chunk)
		}
		out = append(out, buf[:k]...)
		switch {
		case eof:
			s.h.Fatalf("EOF after %d of %d bytes", len(out), n)
		case errors.Is(err, stack.ErrWouldBlock):
			s.Wait(stack.EventIn | stack.EventErr | stack.EventHup)
		case err != nil:
			s.h.Fatalf("Read after %d of %d bytes: %v", len(out), n, err)
		}
	}
	return out
}

// ReadEOF waits for EOF, failing on data or errors.
func (s *Sock) ReadEOF() {
	s.h.Helper()
	var b [64]byte
	for {
		n, eof, err := s.Read(b[:])
		switch {
		case n > 0:
			s.h.Fatalf("read %d unexpected bytes while waiting for EOF", n)
		case eof:
			if err != nil {
				s.h.Fatalf("EOF with an error: %v", err)
			}
			return
		case errors.Is(err, stack.ErrWouldBlock):
			s.Wait(stack.EventIn | stack.EventErr | stack.EventHup)
		case err != nil:
			s.h.Fatalf("Read: %v (want EOF)", err)
		}
	}
}

// pattern is n bytes that show their own offsets.
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7+i>>8) ^ seed
	}
	return p
}

func same(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// freePort gives a loopback port that nothing listens on (bound and
// released by the engine itself).
func (h *H) freePort() netip.AddrPort {
	h.Helper()
	s, err := h.E.Socket(h.Family)
	if err != nil {
		h.Fatal(err)
	}
	defer s.Close()
	if err := s.Bind(netip.AddrPortFrom(h.Lo, 0)); err != nil {
		h.Fatal(err)
	}
	ap, err := s.LocalAddr()
	if err != nil {
		h.Fatal(err)
	}
	return ap
}

func isErrno(err error, want syscall.Errno) bool { return errors.Is(err, want) }
