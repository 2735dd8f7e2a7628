package delack

import (
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/refs"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Packets held or dropped by the endpoint must all be released: gVisor's
// leak checker panics at the end otherwise.
func TestMain(m *testing.M) {
	refs.SetLeakMode(refs.LeaksPanic)
	code := m.Run()
	refs.DoLeakCheck()
	os.Exit(code)
}

const mtu = 1500

// seg describes a TCP segment to send through the endpoint.
type seg struct {
	v6         bool
	sport      uint16 // 1000 unless set (the flow under test)
	flags      header.TCPFlags
	ack        uint32
	win        uint16
	opts       []byte
	payload    int
	udp        bool
	shortTrans bool // a transport header too short to be TCP
}

func (s seg) packet() *stack.PacketBuffer {
	hlen := header.TCPMinimumSize + (len(s.opts)+3)&^3
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: hlen + header.IPv6MinimumSize,
		Payload:            buffer.MakeWithData(make([]byte, s.payload)),
	})
	sport := s.sport
	if sport == 0 {
		sport = 1000
	}
	switch {
	case s.udp:
		u := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
		u.Encode(&header.UDPFields{SrcPort: sport, DstPort: 2000, Length: uint16(header.UDPMinimumSize + s.payload)})
		pkt.TransportProtocolNumber = header.UDPProtocolNumber
	case s.shortTrans:
		pkt.TransportHeader().Push(8)
		pkt.TransportProtocolNumber = header.TCPProtocolNumber
	default:
		th := header.TCP(pkt.TransportHeader().Push(hlen))
		th.Encode(&header.TCPFields{SrcPort: sport, DstPort: 2000, SeqNum: 1, AckNum: s.ack, DataOffset: uint8(hlen), Flags: s.flags, WindowSize: s.win})
		copy(th[header.TCPMinimumSize:], s.opts)
		pkt.TransportProtocolNumber = header.TCPProtocolNumber
	}
	src, dst := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	if s.v6 {
		src, dst = netip.MustParseAddr("::1"), netip.MustParseAddr("::2")
		ip := header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize))
		ip.Encode(&header.IPv6Fields{PayloadLength: uint16(pkt.Size() - header.IPv6MinimumSize), TransportProtocol: tcpip.TransportProtocolNumber(pkt.TransportProtocolNumber), HopLimit: 64,
			SrcAddr: tcpip.AddrFromSlice(src.AsSlice()), DstAddr: tcpip.AddrFromSlice(dst.AsSlice())})
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(pkt.Size()), TTL: 64, Protocol: uint8(pkt.TransportProtocolNumber),
			SrcAddr: tcpip.AddrFromSlice(src.AsSlice()), DstAddr: tcpip.AddrFromSlice(dst.AsSlice())})
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	}
	return pkt
}

type rig struct {
	t  *testing.T
	ch *channel.Endpoint
	e  *Endpoint
}

func newRig(t *testing.T, delay time.Duration) *rig {
	ch := channel.New(64, mtu, "")
	r := &rig{t: t, ch: ch, e: New(ch, delay, 0)}
	r.e.delay = int64(delay) // beyond MaxDelay: "never" in these tests
	r.e.maxDelay = max(r.e.maxDelay, r.e.delay)
	t.Cleanup(func() {
		r.e.Close()
		ch.Drain()
	})
	return r
}

// send writes the segments in one call; every one must count as written.
func (r *rig) send(ss ...seg) {
	r.t.Helper()
	var l stack.PacketBufferList
	for _, s := range ss {
		l.PushBack(s.packet())
	}
	n, err := r.e.WritePackets(l)
	l.DecRef()
	if err != nil || n != len(ss) {
		r.t.Fatalf("WritePackets: %d of %d, %v", n, len(ss), err)
	}
}

// out reads what reached the child: "ack N" for pure ACKs, "data N" for
// segments with a payload, "flags N" otherwise, "other" for non-TCP.
func (r *rig) out() []string {
	var got []string
	for {
		p := r.ch.Read()
		if p == nil {
			return got
		}
		var d string
		if p.TransportProtocolNumber != header.TCPProtocolNumber {
			d = "other"
		} else if len(p.TransportHeader().Slice()) < header.TCPMinimumSize {
			d = "short"
		} else {
			th := header.TCP(p.TransportHeader().Slice())
			switch {
			case p.Data().Size() > 0:
				d = "data"
			case th.Flags() == header.TCPFlagAck:
				d = "ack"
			default:
				d = "flags"
			}
			d += " " + itoa(th.AckNumber())
		}
		got = append(got, d)
		p.DecRef()
	}
}

func itoa(v uint32) string {
	if v == 0 {
		return "0"
	}
	var b []byte
	for ; v > 0; v /= 10 {
		b = append([]byte{byte('0' + v%10)}, b...)
	}
	return string(b)
}

func (r *rig) expect(want ...string) {
	r.t.Helper()
	got := r.out()
	if len(got) != len(want) {
		r.t.Fatalf("child got %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			r.t.Fatalf("child got %q, want %q", got, want)
		}
	}
}

var (
	ack  = header.TCPFlagAck
	data = func(a uint32) seg { return seg{flags: ack | header.TCPFlagPsh, ack: a, win: 1000, payload: 10} }
	pure = func(a uint32) seg { return seg{flags: ack, ack: a, win: 1000} }
)

func TestHeldACKReplacedByAnswer(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		r := newRig(t, time.Hour)
		first, next, answer := pure(100), pure(110), data(110)
		first.v6, next.v6, answer.v6 = v6, v6, v6
		r.send(first)
		r.expect("ack 100") // a flow's first ACK goes at once
		r.send(next)
		r.expect() // held
		r.send(answer)
		r.expect("data 110") // carries the acknowledgement
		if st := r.e.Stats(); st.Held != 1 || st.Replaced != 1 || st.Flushed != 0 {
			t.Fatalf("v6 %v: stats %+v", v6, st)
		}
	}
}

func TestHeldACKExpires(t *testing.T) {
	r := newRig(t, time.Millisecond)
	r.send(pure(100), pure(110))
	r.expect("ack 100")
	r.expireHeld("ack 110")
	if st := r.e.Stats(); st.Held != 1 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSecondACKGoesAtOnce(t *testing.T) {
	r := newRig(t, time.Hour)
	r.send(pure(100), pure(110))
	r.expect("ack 100")
	// Linux acknowledges every second segment: the next ACK goes, and
	// it covers the held one.
	r.send(pure(120))
	r.expect("ack 120")
	if st := r.e.Stats(); st.Replaced != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The flow can hold again afterwards.
	r.send(pure(130))
	r.expect()
	if st := r.e.Stats(); st.Held != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNeverHeld(t *testing.T) {
	sack := []byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionSACK, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	ts := []byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionTS, header.TCPOptionTSLength, 0, 0, 0, 1, 0, 0, 0, 2}
	for _, c := range []struct {
		name string
		s    seg
	}{
		{"duplicate ACK", pure(100)},
		{"window update", seg{flags: ack, ack: 100, win: 1500}},
		{"window opened twofold", seg{flags: ack, ack: 110, win: 2001}},
		{"zero window", seg{flags: ack, ack: 110, win: 0}},
		{"more than a segment acknowledged", pure(100 + mtu + 1)},
		{"SACK blocks", seg{flags: ack, ack: 110, win: 1000, opts: sack}},
		{"FIN", seg{flags: ack | header.TCPFlagFin, ack: 110, win: 1000}},
		{"data", data(110)},
		{"RST", seg{flags: ack | header.TCPFlagRst, ack: 110, win: 1000}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, time.Hour)
			r.send(pure(100))
			r.expect("ack 100")
			r.send(c.s)
			if got := r.out(); len(got) != 1 {
				t.Fatalf("child got %q, want the segment at once", got)
			}
			if st := r.e.Stats(); st.Held != 0 {
				t.Fatalf("held: %+v", st)
			}
		})
	}
	// Timestamps alone do not stop an ACK from waiting.
	r := newRig(t, time.Hour)
	r.send(pure(100), seg{flags: ack, ack: 110, win: 1000, opts: ts})
	r.expect("ack 100")
	if st := r.e.Stats(); st.Held != 1 {
		t.Fatalf("an ACK with timestamps was not held: %+v", st)
	}
}

func TestHeldACKGoesFirst(t *testing.T) {
	// A duplicate of the held ACK (loss recovery counts them) sends both,
	// in order.
	r := newRig(t, time.Hour)
	r.send(pure(100), pure(110))
	r.expect("ack 100")
	r.send(seg{flags: ack, ack: 110, win: 1000})
	r.expect("ack 110", "ack 110")
	if st := r.e.Stats(); st.Flushed != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A SYN of the same ports (a new connection) does not acknowledge the
	// held ACK's data: the ACK goes first.
	r.send(pure(120))
	r.expect() // held again
	r.send(seg{flags: header.TCPFlagSyn, win: 1000})
	r.expect("ack 120", "flags 0")
}

func TestOtherFlowsAndProtocols(t *testing.T) {
	r := newRig(t, time.Hour)
	r.send(pure(100), pure(110))
	r.expect("ack 100")
	// Another flow's data and non-TCP packets pass; the held ACK stays.
	other := data(500)
	other.sport = 1001
	r.send(other, seg{udp: true, payload: 4}, seg{shortTrans: true})
	r.expect("data 500", "other", "short")
	if st := r.e.Stats(); st.Held != 1 || st.Replaced != 0 || st.Flushed != 0 || st.Unparsable != 1 {
		t.Fatalf("stats %+v", st)
	}
	r.send(data(110))
	r.expect("data 110")
}

func TestCloseReleasesHeld(t *testing.T) {
	ch := channel.New(64, mtu, "")
	e := New(ch, time.Hour, 0)
	e.delay = int64(time.Hour)
	var l stack.PacketBufferList
	l.PushBack(pure(100).packet())
	l.PushBack(pure(110).packet())
	if n, err := e.WritePackets(l); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	l.DecRef()
	e.Close()
	ch.Drain()
	if st := e.Stats(); st.Held != 1 {
		t.Fatalf("stats %+v", st)
	}
	// After Close segments pass straight through.
	l = stack.PacketBufferList{}
	l.PushBack(pure(120).packet())
	_, _ = e.WritePackets(l)
	l.DecRef()
	ch.Drain()
	// The leak check in TestMain fails the run if the held ACK leaked.
}

func TestDelayBounds(t *testing.T) {
	ch := channel.New(1, mtu, "")
	defer ch.Close()
	ms := time.Millisecond
	// delay, max delay given; delay, max delay wanted
	for _, c := range [][4]time.Duration{
		{0, 0, DefaultDelay, DefaultMaxDelay},
		{-1, -1, DefaultDelay, DefaultMaxDelay},
		{time.Hour, time.Hour, MaxDelay, MaxDelay},
		{300 * time.Microsecond, 0, 300 * time.Microsecond, DefaultMaxDelay},
		{150 * ms, 0, 150 * ms, 150 * ms}, // the default bound is no less than the delay
		{5 * ms, time.Hour, 5 * ms, MaxDelay},
		{5 * ms, 40 * ms, 5 * ms, 40 * ms},
		{5 * ms, 2 * ms, 5 * ms, 5 * ms}, // below the delay: fixed
	} {
		e := New(ch, c[0], c[1])
		if d, m := e.Delay(), e.MaxDelay(); d != c[2] || m != c[3] {
			t.Errorf("New(%v, %v): delay %v, max %v; want %v, %v", c[0], c[1], d, m, c[2], c[3])
		}
		e.Close()
	}
}

// expireHeld waits for the flow's held ACK to go out by its delay.
func (r *rig) expireHeld(want string) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got []string
	for len(got) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		got = r.out()
	}
	if len(got) != 1 || got[0] != want {
		r.t.Fatalf("after the delay the child got %q, want %q", got, want)
	}
}

// lateAnswer holds an ACK (after the flow's first), lets it expire and
// sends the answer base x 5 later.
func (r *rig) lateAnswer(base time.Duration) {
	r.t.Helper()
	r.send(pure(100), pure(110))
	r.expect("ack 100")
	r.expireHeld("ack 110")
	time.Sleep(5 * base)
	r.send(data(110))
	r.expect("data 110")
}

// flowFrom is the IPv4 flow from sport. Called with mu held.
func (r *rig) flowFrom(sport uint16) *flow {
	r.t.Helper()
	for k, f := range r.e.flows {
		if k.ports>>16 == uint32(sport) && k.proto == uint16(header.IPv4ProtocolNumber) {
			return f
		}
	}
	r.t.Fatalf("no flow from port %d", sport)
	return nil
}

// flowDelay is the delay the flow under test (sport 1000, IPv4) holds
// its ACKs for now.
func (r *rig) flowDelay() time.Duration {
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	return time.Duration(r.flowFrom(1000).delay)
}

// An answer that leaves after its ACK expired makes the flow wait twice
// the answer's time; the next ACK is then held for that long and the
// answer replaces it.
func TestLateAnswerLengthensDelay(t *testing.T) {
	base := time.Millisecond
	r := newRig(t, base)
	r.send(pure(100), pure(110))
	r.expect("ack 100")
	held := time.Now()
	r.expireHeld("ack 110")
	for time.Since(held) < 10*base {
		time.Sleep(base)
	}
	r.send(data(110)) // the answer, late
	r.expect("data 110")
	d := r.flowDelay()
	// Measured from the hold, which came before our clock read.
	if d < 20*base || d > DefaultMaxDelay {
		t.Fatalf("after an answer %v late the flow's delay is %v, want 2x that (at most %v)", time.Since(held), d, DefaultMaxDelay)
	}
	if st := r.e.Stats(); st.Late != 1 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The longer delay is what the next hold gets.
	r.send(pure(120))
	r.e.mu.Lock()
	var due int64
	for _, p := range r.e.queue {
		due = max(due, p.due)
	}
	f := r.e.flows[r.e.queue[0].key]
	heldAt := f.heldAt
	r.e.mu.Unlock()
	if due-heldAt != int64(d) {
		t.Fatalf("the next ACK is due %v after its hold, want the flow's %v", time.Duration(due-heldAt), d)
	}
	r.send(data(120))
	r.expect("data 120") // replaced
	if st := r.e.Stats(); st.Replaced != 1 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// When the peer sends more before the answer (the expired ACK was waited
// for, as a Nagle sender waits for it), the flow's delay is the base
// again; a window update in between settles nothing.
func TestMoreDataResetsDelay(t *testing.T) {
	base := time.Millisecond
	r := newRig(t, base)
	r.lateAnswer(base)
	if d := r.flowDelay(); d <= base {
		t.Fatalf("flow delay %v after a late answer, want more than %v", d, base)
	}
	long := r.flowDelay()
	r.e.mu.Lock()
	for _, f := range r.e.flows {
		f.delay = int64(2 * base) // short enough to wait out here
	}
	r.e.mu.Unlock()
	r.send(pure(120))
	r.expireHeld("ack 120")
	// A window update (same acknowledgement, pure): not an answer.
	up := pure(120)
	up.win = 1500
	r.send(up)
	r.expect("ack 120")
	if d := r.flowDelay(); d != 2*base {
		t.Fatalf("a window update changed the flow's delay to %v", d)
	}
	r.send(pure(130)) // the peer sent more: no answer was coming
	r.expect()        // held, with the base delay
	if d := r.flowDelay(); d != base {
		t.Fatalf("flow delay %v after the peer sent more, want the base %v (was %v)", d, base, long)
	}
	r.expireHeld("ack 130")
	if st := r.e.Stats(); st.Late != 1 || st.Expired != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// With the maximum at the base the delay never grows.
func TestFixedDelay(t *testing.T) {
	base := time.Millisecond
	ch := channel.New(64, mtu, "")
	r := &rig{t: t, ch: ch, e: New(ch, base, base)}
	t.Cleanup(func() {
		r.e.Close()
		ch.Drain()
	})
	r.lateAnswer(base)
	if d := r.flowDelay(); d != base {
		t.Fatalf("fixed delay: the flow's delay became %v", d)
	}
}

// goroutineRecorder is a child link that notes which goroutine each write
// comes from.
type goroutineRecorder struct {
	*channel.Endpoint
	mu  sync.Mutex
	ids []string
}

func (g *goroutineRecorder) WritePackets(l stack.PacketBufferList) (int, tcpip.Error) {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	g.mu.Lock()
	g.ids = append(g.ids, id)
	g.mu.Unlock()
	return g.Endpoint.WritePackets(l)
}

// expirers counts the expirer goroutines once the count is want (a new
// one may not have run yet), or after 5 s.
func expirers(want int) int {
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		n := strings.Count(string(buf[:runtime.Stack(buf, true)]), "delack.(*Endpoint).expirer(")
		if n == want || time.Now().After(deadline) {
			return n
		}
	}
}

// Every expiry runs on the endpoint's one expirer goroutine, whose stack
// has grown to the depth of a write down the stack already (a goroutine
// per expiry grew its own each time), and Close ends it.
func TestExpiriesOnOneGoroutine(t *testing.T) {
	before := expirers(0)
	g := &goroutineRecorder{Endpoint: channel.New(64, mtu, "")}
	r := &rig{t: t, ch: g.Endpoint, e: New(g, time.Millisecond, time.Millisecond)}
	if n := expirers(before + 1); n != before+1 {
		t.Fatalf("%d expirer goroutines after New, want %d", n, before+1)
	}
	r.send(pure(100))
	r.expect("ack 100")
	for a := uint32(110); a <= 130; a += 10 {
		r.send(pure(a))
		r.expect() // held
		r.expireHeld("ack " + itoa(a))
	}
	g.mu.Lock()
	ids := append([]string(nil), g.ids...)
	g.mu.Unlock()
	// the first write is the caller's (a flow's first ACK goes at once);
	// then one per expiry, from the expirer
	if len(ids) != 4 || ids[1] != ids[2] || ids[2] != ids[3] || ids[1] == ids[0] {
		t.Fatalf("writes came from goroutines %q: want the caller's, then one expirer's three times", ids)
	}
	r.e.Close()
	g.Drain()
	if n := expirers(before); n != before {
		t.Fatalf("%d expirer goroutines after Close, want %d", n, before)
	}
	r.e.Close() // a second Close is harmless
}

// An ACK due before the armed expiry (flows have delays of their own)
// goes on time: the timer is replaced rather than Reset (a Reset of a
// timer the expirer waits on costs a walk of the runtime's whole timer
// heap when it comes due), and the expirer waits on the new one; the
// later ACK stays held until its own time.
func TestEarlierExpiryReplacesTimer(t *testing.T) {
	r := newRig(t, time.Millisecond)
	r.send(pure(100))
	r.expect("ack 100")
	r.setDelay(1000, time.Hour) // flow A
	r.send(pure(110))
	r.expect() // held for an hour
	r.e.mu.Lock()
	armed := r.e.timer
	r.e.mu.Unlock()
	time.Sleep(5 * time.Millisecond) // let the expirer wait on it

	b := func(a uint32) seg { s := pure(a); s.sport = 1001; return s }
	r.send(b(200))
	r.expect("ack 200") // flow B's first ACK goes at once
	r.send(b(210))      // held for the base delay: earlier than flow A's
	r.e.mu.Lock()
	replaced := r.e.timer != armed
	r.e.mu.Unlock()
	if !replaced {
		t.Fatal("the timer was Reset to fire earlier, not replaced")
	}
	r.expireHeld("ack 210")
	if st := r.e.Stats(); st.Held != 2 || st.Expired != 1 {
		t.Fatalf("stats %+v: flow A's ACK should still be held", st)
	}
	// A hold due after the armed expiry leaves the timer alone. Two new
	// flows, C and D, get delays of their own, long enough that C's hold
	// comes while D's is still armed, however slow the machine.
	c := func(a uint32) seg { s := pure(a); s.sport = 1002; return s }
	d := func(a uint32) seg { s := pure(a); s.sport = 1003; return s }
	r.send(c(300), d(400))
	r.expect("ack 300", "ack 400")
	r.setDelay(1002, 400*time.Millisecond)
	r.setDelay(1003, 200*time.Millisecond)
	r.send(d(410)) // armed for this one (flow A's is an hour away)
	r.e.mu.Lock()
	cur := r.e.timer
	r.e.mu.Unlock()
	r.send(c(310)) // held, due after flow D's
	r.e.mu.Lock()
	same := r.e.timer == cur
	r.e.mu.Unlock()
	if !same {
		t.Fatal("the timer was replaced for an expiry after the armed one")
	}
	var got []string
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		got = append(got, r.out()...)
	}
	if len(got) != 2 || got[0] != "ack 410" || got[1] != "ack 310" {
		t.Fatalf("after their delays the child got %q, want [ack 410 ack 310]", got)
	}
	if st := r.e.Stats(); st.Held != 4 || st.Expired != 3 {
		t.Fatalf("stats %+v: flow A's ACK should still be held", st)
	}
}

// setDelay sets the delay of the IPv4 flow from sport.
func (r *rig) setDelay(sport uint16, d time.Duration) {
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	r.flowFrom(sport).delay = int64(d)
}
