package enginetest

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/nuse-project/nuse/stack"
)

func checkConnectRefused(h *H) {
	to := h.freePort()
	c := h.Socket()
	err := c.Connect(to)
	switch {
	case isErrno(err, syscall.ECONNREFUSED):
		return // refused at once: fine
	case errors.Is(err, stack.ErrInProgress):
	default:
		h.Fatalf("Connect to %s (no listener) = %v: want ECONNREFUSED or EINPROGRESS", to, err)
	}
	ev := c.Wait(stack.EventOut | stack.EventErr | stack.EventHup)
	if ev&(stack.EventErr|stack.EventHup) == 0 {
		h.Errorf("readiness after a refused connect = %s: want err or hup", evs(ev))
	}
	for i := 0; i < 2; i++ {
		if err := c.ConnectResult(); !isErrno(err, syscall.ECONNREFUSED) {
			h.Fatalf("ConnectResult #%d = %v: want ECONNREFUSED", i+1, err)
		}
	}
}

func checkAccept(h *H) {
	l, ap := h.Listener(8)
	if _, _, err := l.Accept(); !errors.Is(err, stack.ErrWouldBlock) {
		h.Fatalf("Accept on an empty queue = %v: want EAGAIN", err)
	}
	if ev := l.Readiness(); ev&stack.EventIn != 0 {
		h.Errorf("an idle listener is readable (%s)", evs(ev))
	}
	c := h.Connect(ap)
	s, peer := h.Accept(l)
	cl, _ := c.LocalAddr()
	if peer != cl {
		h.Errorf("Accept's peer %s, client's LocalAddr %s: want them equal", peer, cl)
	}
	// Linux answers the first connect after an asynchronous one finished
	// with 0 (it completes the call), later ones with EISCONN.
	if err := c.Connect(ap); err != nil && !isErrno(err, syscall.EISCONN) {
		h.Errorf("a second Connect of a connected socket = %v: want nil or EISCONN", err)
	}
	if err := c.Connect(ap); !isErrno(err, syscall.EISCONN) {
		h.Errorf("a third Connect of a connected socket = %v: want EISCONN", err)
	}
	c.WriteAll([]byte("ping"))
	if got := string(s.ReadN(4, 16)); got != "ping" {
		h.Errorf("read %q: want ping", got)
	}
	if _, _, err := l.Accept(); !errors.Is(err, stack.ErrWouldBlock) {
		h.Errorf("Accept after the only connection was taken = %v: want EAGAIN", err)
	}
}

func checkAddresses(h *H) {
	u := h.Socket()
	ap, err := u.LocalAddr()
	if err != nil || ap.Port() != 0 || !ap.Addr().IsUnspecified() {
		h.Errorf("unbound LocalAddr = %v, %v: want the unspecified address, port 0", ap, err)
	}
	if ap, err := u.RemoteAddr(); !isErrno(err, syscall.ENOTCONN) {
		h.Errorf("unconnected RemoteAddr = %v, %v: want ENOTCONN", ap, err)
	}
	l, lap := h.Listener(8)
	if lap.Addr() != h.Lo {
		h.Errorf("listener LocalAddr %s: want %s", lap, h.Lo)
	}
	if _, err := l.RemoteAddr(); !isErrno(err, syscall.ENOTCONN) {
		h.Errorf("listener RemoteAddr: %v: want ENOTCONN", err)
	}
	c := h.Connect(lap)
	s, _ := h.Accept(l)
	cl, err1 := c.LocalAddr()
	cr, err2 := c.RemoteAddr()
	sl, err3 := s.LocalAddr()
	sr, err4 := s.RemoteAddr()
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		h.Fatalf("addresses of a connected pair: %v", err)
	}
	if cr != lap || sl != lap {
		h.Errorf("client's RemoteAddr %s, server's LocalAddr %s: want the listener's %s", cr, sl, lap)
	}
	if sr != cl {
		h.Errorf("server's RemoteAddr %s: want the client's LocalAddr %s", sr, cl)
	}
	if cl.Addr() != h.Lo || cl.Port() == 0 || cl.Port() == lap.Port() {
		h.Errorf("client's LocalAddr %s: want %s and an ephemeral port", cl, h.Lo)
	}
}

// fill writes into c until the engine says EAGAIN, checking that writes
// are short or refused rather than blocking; it returns what it wrote.
func fill(h *H, c *Sock, seed byte) []byte {
	h.Helper()
	var sent []byte
	chunk := pattern(256<<10, seed)
	deadline := time.Now().Add(Timeout)
	for i := 0; ; i++ {
		if i > 4096 || time.Now().After(deadline) {
			h.Fatalf("wrote %d bytes to a peer that is not reading without EAGAIN", len(sent))
		}
		n, err := c.Write(chunk)
		if n < 0 || n > len(chunk) {
			h.Fatalf("Write returned %d for %d bytes", n, len(chunk))
		}
		sent = append(sent, chunk[:n]...)
		if errors.Is(err, stack.ErrWouldBlock) {
			return sent
		}
		if err != nil {
			h.Fatalf("Write: %v", err)
		}
		if n == 0 {
			h.Fatalf("Write took nothing without EAGAIN")
		}
	}
}

func checkPartial(h *H) {
	l, ap := h.Listener(8)
	c := h.Socket()
	_ = c.SetOption(stack.OptSndBuf, 64<<10)
	h.ConnectSock(c, ap)
	s, _ := h.Accept(l)
	_ = s.SetOption(stack.OptRcvBuf, 64<<10)
	sent := fill(h, c, 1)
	if len(sent) == 0 {
		h.Fatalf("the first Write to an empty connection took nothing")
	}
	// Writable right after EAGAIN only if room came meanwhile (the engine
	// sent and freed some): then a Write must take bytes, never lie.
	for i := 0; i < 64; i++ {
		ev := c.Readiness()
		if ev&stack.EventOut == 0 {
			break
		}
		more := fill(h, c, 1)
		if len(more) == 0 {
			h.Errorf("writable (%s) right after EAGAIN, and a Write takes nothing", evs(ev))
			break
		}
		sent = append(sent, more...)
	}
	// Read it all back in small, odd-sized reads, checking each is short.
	got := s.ReadN(len(sent), 999)
	if i := same(got, sent); i >= 0 {
		h.Fatalf("byte %d of %d differs", i, len(sent))
	}
	c.Wait(stack.EventOut)
}

func checkReadiness(h *H) {
	c, s := h.Pair()
	if ev := c.Readiness(); ev&stack.EventOut == 0 || ev&(stack.EventIn|stack.EventErr|stack.EventHup) != 0 {
		h.Errorf("readiness of a fresh connection = %s: want out only", evs(ev))
	}
	drainFired(s)
	c.WriteAll([]byte("x"))
	select {
	case <-s.fired:
	case <-time.After(Timeout):
		h.Fatalf("Notify did not fire when data arrived")
	}
	s.Wait(stack.EventIn)
	var b [16]byte
	if n, _, err := s.Read(b[:]); n != 1 || err != nil {
		h.Fatalf("Read = %d, %v: want 1 byte", n, err)
	}
	if _, _, err := s.Read(b[:]); !errors.Is(err, stack.ErrWouldBlock) {
		h.Fatalf("Read of an empty socket = %v: want EAGAIN", err)
	}
	if ev := s.Readiness(); ev&stack.EventIn != 0 {
		h.Errorf("still readable (%s) after reading everything", evs(ev))
	}
	// Again, to show Notify fires for every arrival, not just the first.
	drainFired(s)
	c.WriteAll([]byte("y"))
	select {
	case <-s.fired:
	case <-time.After(Timeout):
		h.Fatalf("Notify did not fire for the second arrival")
	}
	s.ReadN(1, 16)
	// Writable goes away when the buffer is full and comes back (with a
	// Notify) when the peer reads.
	sent := fill(h, c, 2)
	c.WaitNot(stack.EventOut)
	drainFired(c)
	got := s.ReadN(len(sent), 64<<10)
	if i := same(got, sent); i >= 0 {
		h.Fatalf("byte %d differs", i)
	}
	c.Wait(stack.EventOut)
}

func drainFired(s *Sock) {
	select {
	case <-s.fired:
	default:
	}
}

func checkHalfClose(h *H) {
	c, s := h.Pair()
	c.WriteAll([]byte("request"))
	if err := c.Shutdown(syscall.SHUT_WR); err != nil {
		h.Fatalf("Shutdown(SHUT_WR): %v", err)
	}
	if got := string(s.ReadN(7, 64)); got != "request" {
		h.Fatalf("read %q", got)
	}
	s.ReadEOF()
	if ev := s.Readiness(); ev&stack.EventIn == 0 {
		h.Errorf("readiness at EOF = %s: want in", evs(ev))
	}
	// The other direction still works.
	s.WriteAll([]byte("response"))
	if got := string(c.ReadN(8, 64)); got != "response" {
		h.Fatalf("read back %q", got)
	}
	if _, err := c.Write([]byte("more")); !isErrno(err, syscall.EPIPE) {
		h.Errorf("Write after SHUT_WR = %v: want EPIPE", err)
	}
	s.Close()
	c.ReadEOF()
}

func checkEOF(h *H) {
	c, s := h.Pair()
	msg := pattern(10000, 3)
	c.WriteAll(msg)
	c.Close()
	if got := s.ReadN(len(msg), 4096); same(got, msg) >= 0 {
		h.Fatalf("data differs")
	}
	s.ReadEOF()
	s.ReadEOF() // EOF stays
	if ev := s.Readiness(); ev&stack.EventIn == 0 {
		h.Errorf("readiness at EOF = %s: want in", evs(ev))
	}
}

func checkReset(h *H) {
	c, s := h.Pair()
	c.WriteAll([]byte("abc"))
	s.ReadN(3, 16)
	c.Abort()
	s.Wait(stack.EventIn | stack.EventErr | stack.EventHup)
	var b [16]byte
	deadline := time.Now().Add(Timeout)
	for {
		n, eof, err := s.Read(b[:])
		if isErrno(err, syscall.ECONNRESET) {
			break
		}
		if errors.Is(err, stack.ErrWouldBlock) && time.Now().Before(deadline) {
			s.Wait(stack.EventIn | stack.EventErr | stack.EventHup)
			continue
		}
		h.Fatalf("Read after the peer's Abort = %d, eof %v, %v: want ECONNRESET", n, eof, err)
	}
	if ev := s.Readiness(); ev&(stack.EventErr|stack.EventHup) == 0 {
		h.Errorf("readiness after a reset = %s: want err or hup", evs(ev))
	}
}

func checkCloseQueued(h *H) {
	l, ap := h.Listener(8)
	c := h.Socket()
	_ = c.SetOption(stack.OptSndBuf, 256<<10)
	h.ConnectSock(c, ap)
	s, _ := h.Accept(l)
	sent := fill(h, c, 4)
	c.Close() // with all of sent still on its way
	got := s.ReadN(len(sent), 32<<10)
	if i := same(got, sent); i >= 0 {
		h.Fatalf("byte %d of %d differs", i, len(sent))
	}
	s.ReadEOF()
}

func checkOptions(h *H) {
	c, _ := h.Pair()
	u := h.Socket()
	type opt struct {
		name string
		o    stack.Option
		vals []int
	}
	for _, o := range []opt{
		{"nodelay", stack.OptNoDelay, []int{1, 0}},
		{"keepalive", stack.OptKeepAlive, []int{1, 0}},
		{"keepidle", stack.OptKeepIdle, []int{30, 7200}},
		{"keepintvl", stack.OptKeepIntvl, []int{5, 75}},
		{"keepcnt", stack.OptKeepCnt, []int{4, 9}},
		{"reuseaddr", stack.OptReuseAddr, []int{1, 0}},
		{"reuseport", stack.OptReusePort, []int{1, 0}},
		{"linger", stack.OptLinger, []int{5, 0, -1}},
		{"cork", stack.OptCork, []int{1, 0}},
	} {
		for _, v := range o.vals {
			if err := c.SetOption(o.o, v); err != nil {
				h.Errorf("SetOption(%s, %d): %v", o.name, v, err)
				continue
			}
			if got, err := c.GetOption(o.o); err != nil || got != v {
				h.Errorf("GetOption(%s) after setting %d = %d, %v", o.name, v, got, err)
			}
		}
	}
	// Buffers: the engine may round or double, but not shrink what was asked.
	for _, o := range []struct {
		name string
		o    stack.Option
	}{{"rcvbuf", stack.OptRcvBuf}, {"sndbuf", stack.OptSndBuf}} {
		if err := c.SetOption(o.o, 128<<10); err != nil {
			h.Errorf("SetOption(%s): %v", o.name, err)
		} else if got, err := c.GetOption(o.o); err != nil || got < 128<<10 {
			h.Errorf("GetOption(%s) after setting 128 KiB = %d, %v", o.name, got, err)
		}
	}
	if err := u.SetOption(stack.OptMaxSeg, 1200); err != nil {
		h.Errorf("SetOption(maxseg, 1200) before connecting: %v", err)
	} else if got, err := u.GetOption(stack.OptMaxSeg); err != nil || got != 1200 {
		h.Errorf("GetOption(maxseg) = %d, %v: want 1200", got, err)
	}
	if err := c.SetOption(stack.OptQuickAck, 1); err != nil {
		h.Errorf("SetOption(quickack): %v", err)
	}
	if _, err := c.GetOption(stack.OptQuickAck); err != nil {
		h.Errorf("GetOption(quickack): %v", err)
	}
	for _, o := range []struct {
		name string
		o    stack.Option
		v    int
	}{{"keepidle", stack.OptKeepIdle, 0}, {"keepintvl", stack.OptKeepIntvl, -1}, {"keepcnt", stack.OptKeepCnt, 0}} {
		if err := c.SetOption(o.o, o.v); !isErrno(err, syscall.EINVAL) {
			h.Errorf("SetOption(%s, %d) = %v: want EINVAL", o.name, o.v, err)
		}
	}
	if err := c.SetOption(stack.Option(9999), 1); !isErrno(err, syscall.ENOPROTOOPT) {
		h.Errorf("SetOption(unknown) = %v: want ENOPROTOOPT", err)
	}
	if _, err := c.GetOption(stack.Option(9999)); !isErrno(err, syscall.ENOPROTOOPT) {
		h.Errorf("GetOption(unknown) = %v: want ENOPROTOOPT", err)
	}
	// V6Only: only IPv6 sockets have it, and only before binding.
	if h.Family == syscall.AF_INET6 {
		if err := u.SetOption(stack.OptV6Only, 1); err != nil {
			h.Errorf("SetOption(v6only, 1): %v", err)
		} else if got, _ := u.GetOption(stack.OptV6Only); got != 1 {
			h.Errorf("GetOption(v6only) = %d: want 1", got)
		}
	} else if err := u.SetOption(stack.OptV6Only, 1); !isErrno(err, syscall.ENOPROTOOPT) {
		h.Errorf("SetOption(v6only) on IPv4 = %v: want ENOPROTOOPT", err)
	}
	cc, err := c.Congestion()
	if err != nil || cc == "" {
		h.Errorf("Congestion = %q, %v: want a name", cc, err)
	}
	if err := c.SetCongestion("reno"); err != nil {
		h.Errorf("SetCongestion(reno): %v", err)
	} else if cc, _ := c.Congestion(); cc != "reno" {
		h.Errorf("Congestion after setting reno = %q", cc)
	}
	if err := c.SetCongestion("no-such-cc"); !isErrno(err, syscall.ENOENT) {
		h.Errorf("SetCongestion(no-such-cc) = %v: want ENOENT", err)
	}
}

func checkInfo(h *H) {
	l, ap := h.Listener(8)
	if st := l.Info().State; st != 10 {
		h.Errorf("listener Info().State = %d: want 10 (listen)", st)
	}
	c := h.Connect(ap)
	s, _ := h.Accept(l)
	c.WriteAll(pattern(100000, 5))
	s.ReadN(100000, 1<<16)
	ci := c.Info()
	if ci.State != 1 {
		h.Errorf("Info().State = %d: want 1 (established)", ci.State)
	}
	if ci.SndMSS == 0 || ci.RTO == 0 {
		h.Errorf("Info() = %+v: want an MSS and an RTO", ci)
	}
	st := c.Stats()
	if st.SegsOut == 0 || st.SegsIn == 0 {
		h.Errorf("Stats after sending 100 kB = %+v: want segments both ways", st)
	}
}

func checkBindConflict(h *H) {
	a := h.Socket()
	if err := a.Bind(netip.AddrPortFrom(h.Lo, 0)); err != nil {
		h.Fatal(err)
	}
	ap, _ := a.LocalAddr()
	b := h.Socket()
	if err := b.Bind(ap); !isErrno(err, syscall.EADDRINUSE) {
		h.Errorf("second Bind to %s = %v: want EADDRINUSE", ap, err)
	}
	if err := a.Listen(8); err != nil {
		h.Fatal(err)
	}
	c := h.Socket()
	_ = c.SetOption(stack.OptReuseAddr, 1)
	if err := c.Bind(ap); !isErrno(err, syscall.EADDRINUSE) {
		h.Errorf("Bind with SO_REUSEADDR to listening %s = %v: want EADDRINUSE", ap, err)
	}
	if err := a.Bind(netip.AddrPortFrom(h.Lo, 0)); !isErrno(err, syscall.EINVAL) {
		h.Errorf("Bind of a bound socket = %v: want EINVAL", err)
	}
	foreign := netip.MustParseAddr("192.0.2.1")
	if h.Family == syscall.AF_INET6 {
		foreign = netip.MustParseAddr("2001:db8::1")
	}
	d := h.Socket()
	if err := d.Bind(netip.AddrPortFrom(foreign, 0)); !isErrno(err, syscall.EADDRNOTAVAIL) {
		h.Errorf("Bind to foreign %s = %v: want EADDRNOTAVAIL", foreign, err)
	}
}

// checkBacklog: clients that speak first (HTTP-like: their request carries
// the handshake's ACK again) and, with idle, clients that wait for the
// server to speak (SMTP-like): on Linux both get in, since a full accept
// queue drops the SYN and the client retries it.
func checkBacklog(h *H)     { backlog(h, false) }
func checkBacklogIdle(h *H) { backlog(h, true) }

func backlog(h *H, idle bool) {
	const backlog, clients = 2, 6
	l, ap := h.Listener(backlog)
	var cs []*Sock
	for i := 0; i < clients; i++ {
		c := h.Socket()
		if err := c.Connect(ap); err != nil && !errors.Is(err, stack.ErrInProgress) {
			h.Fatalf("Connect #%d: %v", i, err)
		}
		cs = append(cs, c)
	}
	wrote := make([]bool, clients)
	speak := func() {
		for i, c := range cs {
			if !idle && !wrote[i] && c.Readiness()&stack.EventOut != 0 {
				if _, err := c.Write([]byte("hello")); err == nil {
					wrote[i] = true
				}
			}
		}
	}
	l.Wait(stack.EventIn)
	for i := 0; i < 10; i++ { // let the handshakes that can finish
		speak()
		time.Sleep(10 * time.Millisecond)
	}
	queued := 0
	for {
		so, _, err := l.Accept()
		if err != nil {
			break
		}
		so.Close()
		queued++
	}
	if queued < 1 || queued > backlog+1 {
		h.Errorf("%d connections queued with backlog %d: want 1..%d", queued, backlog, backlog+1)
	}
	// The rest get in once there is room (a SYN retry: about a second on
	// Linux).
	deadline := time.Now().Add(Timeout)
	for queued < clients && time.Now().Before(deadline) {
		speak()
		so, _, err := l.Accept()
		if err == nil {
			so.Close()
			queued++
			continue
		}
		select {
		case <-l.ch:
		case <-time.After(20 * time.Millisecond):
		}
	}
	if queued < clients {
		var states []uint8
		for _, c := range cs {
			states = append(states, c.Info().State)
		}
		h.Errorf("only %d of %d connections accepted within %v (client TCP states %v; 1 = established although the server never queued it)", queued, clients, Timeout, states)
	}
	for _, c := range cs {
		c.Close()
	}
}

func checkMany(h *H) {
	const conns = 250
	l, ap := h.Listener(conns)
	type pair struct{ c, s *Sock }
	var ps []pair
	for i := 0; i < conns; i++ {
		c := h.Socket()
		if err := c.Connect(ap); err != nil && !errors.Is(err, stack.ErrInProgress) {
			h.Fatalf("Connect #%d: %v", i, err)
		}
		s, _ := h.Accept(l)
		ps = append(ps, pair{c, s})
	}
	for i, p := range ps {
		p.c.Wait(stack.EventOut)
		if err := p.c.ConnectResult(); err != nil {
			h.Fatalf("connection %d: %v", i, err)
		}
		p.c.WriteAll([]byte(fmt.Sprintf("%05d", i)))
	}
	for i, p := range ps {
		if got, want := string(p.s.ReadN(5, 16)), fmt.Sprintf("%05d", i); got != want {
			h.Fatalf("connection %d read %q, want %q", i, got, want)
		}
		p.s.WriteAll([]byte("k"))
	}
	for _, p := range ps {
		p.c.ReadN(1, 4)
		p.c.Close()
		p.s.ReadEOF()
		p.s.Close()
	}
}

func checkV4Mapped(h *H) {
	l4 := h.SocketOf(syscall.AF_INET)
	if err := l4.Bind(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		h.Fatal(err)
	}
	if err := l4.Listen(8); err != nil {
		h.Fatal(err)
	}
	ap4, _ := l4.LocalAddr()
	mapped := netip.AddrPortFrom(netip.AddrFrom16(ap4.Addr().As16()), ap4.Port())
	c := h.Socket()
	h.ConnectSock(c, mapped)
	if r, _ := c.RemoteAddr(); r != mapped {
		h.Errorf("RemoteAddr of a v4-mapped connection = %s: want %s", r, mapped)
	}
	s, peer := h.Accept(l4)
	if !peer.Addr().Is4() {
		h.Errorf("IPv4 listener sees peer %s: want an IPv4 address", peer)
	}
	c.WriteAll([]byte("v4"))
	s.ReadN(2, 4)
	// A V6Only socket cannot reach IPv4.
	v := h.Socket()
	if err := v.SetOption(stack.OptV6Only, 1); err != nil {
		h.Fatal(err)
	}
	err := v.Connect(mapped)
	if err == nil || errors.Is(err, stack.ErrInProgress) {
		v.Wait(stack.EventOut | stack.EventErr | stack.EventHup)
		err = v.ConnectResult()
	}
	if err == nil {
		h.Errorf("a V6Only socket connected to %s", mapped)
	}
}

func checkWriteUnconnected(h *H) {
	u := h.Socket()
	if _, err := u.Write([]byte("x")); !isErrno(err, syscall.EPIPE) {
		h.Errorf("Write on a fresh socket = %v: want EPIPE", err)
	}
	var b [4]byte
	if _, _, err := u.Read(b[:]); !isErrno(err, syscall.ENOTCONN) {
		h.Errorf("Read on a fresh socket = %v: want ENOTCONN", err)
	}
}

func checkRxQueued(h *H) {
	c, s := h.Pair()
	q, ok := s.Socket.(stack.RxQueuer)
	if !ok {
		h.Skip("the engine does not implement stack.RxQueuer (the daemon then never rewinds its sockets' rx rings)")
	}
	if n := q.RxQueued(); n != 0 {
		h.Fatalf("RxQueued = %d before anything was sent", n)
	}
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		h.Fatal(err)
	}
	deadline := time.Now().Add(Timeout)
	for q.RxQueued() != 1000 {
		if time.Now().After(deadline) {
			h.Fatalf("RxQueued = %d, 1000 bytes sent", q.RxQueued())
		}
		time.Sleep(time.Millisecond)
	}
	s.ReadN(400, 400)
	if n := q.RxQueued(); n != 600 {
		h.Fatalf("RxQueued = %d after reading 400 of 1000", n)
	}
	s.ReadN(600, 600)
	if n := q.RxQueued(); n != 0 {
		h.Fatalf("RxQueued = %d after reading everything", n)
	}
}
