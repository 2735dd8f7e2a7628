// Package delack gives a gVisor link endpoint delayed acknowledgements.
//
// Netstack acknowledges every batch of received segments at once: a
// request/response exchange costs two pure ACKs besides its two data
// segments, each one a full trip through both ends of the stack (on the
// loopback NIC, where both ends are in the daemon) or a packet on the wire.
// Linux delays such an ACK (40 ms at most, less in its quick-ACK mode), in
// the hope that the answer carries it. This endpoint does the same below the
// stack: a pure ACK that only moves the acknowledged sequence forward, by
// at most one segment's worth, is held for a short delay; a later segment of
// the same flow that acknowledges as much (the answer) makes it redundant,
// and it is dropped. Held ACKs are sent when the delay ends, before any
// other segment of their flow that does not replace them, and at once when
// a second ACK comes for the flow (Linux acknowledges at least every second
// full segment), so bulk transfers still see an ACK per two segments.
//
// What is never held: SYN, FIN and RST segments; segments with data;
// duplicate ACKs and window updates (they carry the same acknowledgement
// number as the last one: loss recovery and zero-window recovery depend on
// them); ACKs carrying SACK blocks or options other than timestamps; the
// first ACK of a flow (the handshake's last step: the listener's accept
// waits for it); an ACK that opens the window more than twofold.
//
// The delay adapts per flow. An answer that leaves after its held ACK
// expired (it acknowledges exactly what that ACK did) shows the flow's
// answers take longer than the delay: the flow's delay becomes twice that
// answer's time, up to the endpoint's maximum (100 ms by default: half
// the peer's smallest retransmission timeout). Under load (a server behind
// a thousand connections answers each tens of milliseconds later) a fixed
// short delay sends both bare ACKs of every exchange anyway, each a full
// trip through the stack. When the peer instead sends more before the
// answer (the ACK was waited for, as a Nagle sender waits), the flow's
// delay drops back to the base at once, so a flow pays a long delay at
// most once for a change of pattern. Linux's delayed-ACK timeout adapts
// too (from 40 ms, bounded by the RTT and 200 ms).
package delack

import (
	"container/heap"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// DefaultDelay is how long an ACK waits for a segment to ride on, at
// first and on flows whose answers come in time.
const DefaultDelay = time.Millisecond

// MaxDelay bounds the delay (Linux's largest delayed-ACK timeout).
const MaxDelay = 200 * time.Millisecond

// DefaultMaxDelay is the default bound of the per-flow delay: half the
// smallest retransmission timeout of Linux and netstack (200 ms), so that
// a held ACK does not race its sender's timer (a spurious retransmission
// would cost the flow its congestion window).
const DefaultMaxDelay = 100 * time.Millisecond

// Flows that saw no segment for this long are forgotten; at most maxFlows
// are tracked (segments of other flows pass untouched).
const (
	flowIdle = time.Minute
	maxFlows = 1 << 18
)

// Stats count what the endpoint did with pure ACKs.
type Stats struct {
	Held       uint64 // ACKs held back
	Replaced   uint64 // held ACKs dropped: a later segment acknowledged as much
	Expired    uint64 // held ACKs sent when their delay ended
	Flushed    uint64 // held ACKs sent ahead of a segment that did not replace them
	Late       uint64 // answers that came after their held ACK expired (the flow's delay grew)
	Untracked  uint64 // TCP segments passed untouched: too many flows
	Unparsable uint64 // TCP segments passed untouched: headers not as expected
}

// flowKey names one direction of a TCP connection: network protocol,
// addresses and ports as they appear on the wire.
type flowKey struct {
	proto    uint16
	src, dst [16]byte
	ports    uint32
}

type flow struct {
	hasAck  bool   // a segment with ACK set was sent on the flow
	ack     uint32 // the last acknowledgement number sent (or held)
	win     uint16 // and its window field
	held    *stack.PacketBuffer
	heldAck uint32
	heldAt  int64  // clock() when held was
	gen     uint64 // bumped per hold: tells stale queue entries apart
	used    int64  // clock() at the last segment
	delay   int64  // this flow's delay (ns)
	// late: the last held ACK (heldAck, heldAt) expired. The flow's next
	// segment that moves the acknowledgement or carries data settles
	// what the expiry meant, before anything is held again.
	late bool
}

type pending struct {
	key flowKey
	gen uint64
	due int64
}

// pendq is a min-heap of pending expiries by due time (flows have
// delays of their own).
type pendq []pending

func (q pendq) Len() int           { return len(q) }
func (q pendq) Less(i, j int) bool { return q[i].due < q[j].due }
func (q pendq) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *pendq) Push(x any)        { *q = append(*q, x.(pending)) }
func (q *pendq) Pop() any {
	old := *q
	p := old[len(old)-1]
	*q = old[:len(old)-1]
	return p
}

// Endpoint wraps a link endpoint with delayed ACKs.
type Endpoint struct {
	nested.Endpoint
	child    stack.LinkEndpoint
	delay    int64 // the base delay, ns
	maxDelay int64 // the most a flow's delay grows to, ns
	start    time.Time

	mu        sync.Mutex
	flows     map[flowKey]*flow
	queue     pendq
	timer     *time.Timer   // a channel timer: expirer waits on it (replaced, not Reset, to fire earlier: see schedule)
	rearm     chan struct{} // told when timer was replaced (capacity 1)
	stop      chan struct{} // closed by Close: expirer returns
	stopped   chan struct{} // closed by expirer as it returns
	armed     bool
	armedDue  int64 // when the armed timer fires
	closed    bool
	lastSweep int64

	held, replaced, expired, flushed, late, untracked, unparsable atomic.Uint64
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)

// New wraps child. delay is the base delay (<= 0: DefaultDelay), maxDelay
// the most a flow's delay may grow to (<= 0: DefaultMaxDelay; below delay:
// the delay is fixed); both are capped at MaxDelay.
func New(child stack.LinkEndpoint, delay, maxDelay time.Duration) *Endpoint {
	if delay <= 0 {
		delay = DefaultDelay
	}
	delay = min(delay, MaxDelay)
	if maxDelay <= 0 {
		maxDelay = max(DefaultMaxDelay, delay)
	}
	maxDelay = max(delay, min(maxDelay, MaxDelay))
	e := &Endpoint{child: child, delay: int64(delay), maxDelay: int64(maxDelay), start: time.Now(), flows: make(map[flowKey]*flow)}
	e.Endpoint.Init(child, e)
	e.timer = time.NewTimer(time.Hour)
	e.timer.Stop()
	e.rearm = make(chan struct{}, 1)
	e.stop, e.stopped = make(chan struct{}), make(chan struct{})
	go e.expirer()
	return e
}

// expirer runs expire each time the timer fires, on one goroutine for
// the endpoint's life. An expiring ACK's write goes down the whole stack
// (on the loopback NIC, through both ends of the connection), deep enough
// that a goroutine of its own per expiry, as time.AfterFunc gives, grew
// its stack anew each time: 4% of the daemon's CPU with a connection per
// request (redis-benchmark -k 0), in runtime.newstack.
func (e *Endpoint) expirer() {
	defer close(e.stopped)
	for {
		e.mu.Lock()
		t := e.timer
		e.mu.Unlock()
		select {
		case <-t.C:
			e.expire()
		case <-e.rearm: // wait on the timer that replaced t
		case <-e.stop:
			return
		}
	}
}

// Delay is the base delay an ACK is held for.
func (e *Endpoint) Delay() time.Duration { return time.Duration(e.delay) }

// MaxDelay is the most a flow's delay grows to.
func (e *Endpoint) MaxDelay() time.Duration { return time.Duration(e.maxDelay) }

// Stats reads the counters.
func (e *Endpoint) Stats() Stats {
	return Stats{
		Held: e.held.Load(), Replaced: e.replaced.Load(), Expired: e.expired.Load(),
		Flushed: e.flushed.Load(), Late: e.late.Load(), Untracked: e.untracked.Load(), Unparsable: e.unparsable.Load(),
	}
}

func (e *Endpoint) clock() int64 { return int64(time.Since(e.start)) }

// segment is what the endpoint reads of an outgoing TCP segment.
type segment struct {
	key   flowKey
	flags header.TCPFlags
	ack   uint32
	win   uint16
	pure  bool // ACK alone, no data, no options but timestamps
	data  bool // carries data or a FIN: an answer
	reset bool
}

// parse reads the network and TCP headers the stack built. ok is false for
// anything but TCP over IPv4 or IPv6 with whole headers.
func parse(pkt *stack.PacketBuffer) (s segment, ok bool) {
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
		return s, false
	}
	nh := pkt.NetworkHeader().Slice()
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		if len(nh) < header.IPv4MinimumSize {
			return s, false
		}
		copy(s.key.src[:], nh[12:16])
		copy(s.key.dst[:], nh[16:20])
	case header.IPv6ProtocolNumber:
		if len(nh) < header.IPv6MinimumSize {
			return s, false
		}
		copy(s.key.src[:], nh[8:24])
		copy(s.key.dst[:], nh[24:40])
	default:
		return s, false
	}
	s.key.proto = uint16(pkt.NetworkProtocolNumber)
	th := pkt.TransportHeader().Slice()
	if len(th) < header.TCPMinimumSize {
		return s, false
	}
	off := int(th[12]>>4) * 4
	if off < header.TCPMinimumSize || off > len(th) {
		return s, false
	}
	s.key.ports = binary.BigEndian.Uint32(th[0:4])
	s.flags = header.TCPFlags(th[13])
	s.ack = binary.BigEndian.Uint32(th[8:12])
	s.win = binary.BigEndian.Uint16(th[14:16])
	s.reset = s.flags&header.TCPFlagRst != 0
	s.pure = s.flags == header.TCPFlagAck && pkt.Data().Size() == 0 && onlyTimestamps(th[header.TCPMinimumSize:off])
	s.data = pkt.Data().Size() > 0 || s.flags&header.TCPFlagFin != 0
	return s, true
}

// onlyTimestamps reports whether TCP options hold nothing but padding and
// timestamps (a SACK block, say, must not wait).
func onlyTimestamps(opts []byte) bool {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			return true
		case header.TCPOptionNOP:
			i++
		case header.TCPOptionTS:
			if i+1 >= len(opts) || opts[i+1] != header.TCPOptionTSLength {
				return false
			}
			i += header.TCPOptionTSLength
		default:
			return false
		}
	}
	return true
}

// after reports whether sequence number a comes after b.
func after(a, b uint32) bool { return int32(a-b) > 0 }

// WritePackets implements stack.LinkEndpoint: pure ACKs may be held, held
// ACKs may go out first or be dropped; everything else passes in order.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var (
		out   stack.PacketBufferList
		ours  []*stack.PacketBuffer // held ACKs put in out: our references
		drop  []*stack.PacketBuffer
		given int // the caller's packets in out
	)
	// The per-segment limit on what a held ACK may acknowledge: one
	// segment of this link's size (Linux acknowledges every second one).
	limit := uint32(e.child.MTU())
	now := e.clock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return e.child.WritePackets(pkts)
	}
	e.sweep(now)
	for _, pkt := range pkts.AsSlice() {
		s, ok := parse(pkt)
		if !ok {
			if pkt.TransportProtocolNumber == header.TCPProtocolNumber {
				e.unparsable.Add(1)
			}
			out.PushBack(pkt)
			given++
			continue
		}
		f := e.flows[s.key]
		if f == nil {
			if len(e.flows) >= maxFlows {
				e.untracked.Add(1)
				out.PushBack(pkt)
				given++
				continue
			}
			f = &flow{delay: e.delay}
			e.flows[s.key] = f
		}
		f.used = now
		if f.late && s.flags&header.TCPFlagAck != 0 {
			e.settle(f, s, now)
		}
		if s.pure && f.held == nil && f.hasAck && after(s.ack, f.ack) && s.ack-f.ack <= limit &&
			s.win != 0 && uint32(s.win) <= 2*uint32(f.win) {
			f.held = pkt.IncRef()
			f.heldAck, f.heldAt = s.ack, now
			f.gen++
			f.ack, f.win = s.ack, s.win
			e.schedule(pending{key: s.key, gen: f.gen, due: now + f.delay}, now)
			e.held.Add(1)
			continue
		}
		if f.held != nil {
			if s.flags&header.TCPFlagAck != 0 && !after(f.heldAck, s.ack) && !(s.pure && s.ack == f.heldAck) {
				// This segment acknowledges as much: the held ACK
				// says nothing more.
				drop = append(drop, f.held)
				e.replaced.Add(1)
			} else {
				out.PushBack(f.held)
				ours = append(ours, f.held)
				e.flushed.Add(1)
			}
			f.held = nil
		}
		out.PushBack(pkt)
		given++
		if s.flags&header.TCPFlagAck != 0 {
			f.hasAck, f.ack, f.win = true, s.ack, s.win
		}
		if s.reset {
			delete(e.flows, s.key)
		}
	}
	e.mu.Unlock()
	for _, p := range drop {
		p.DecRef()
	}
	if out.Len() == 0 {
		return pkts.Len(), nil
	}
	n, err := e.child.WritePackets(out)
	for _, p := range ours {
		p.DecRef()
	}
	if err != nil {
		// Count the caller's packets among those written.
		w := 0
		for i, p := range out.AsSlice() {
			if i >= n {
				break
			}
			if !contains(ours, p) {
				w++
			}
		}
		return w, err
	}
	// Held packets count as written: the stack sees them sent.
	return pkts.Len(), nil
}

// settle reads what followed an expired ACK of flow f: an answer that
// acknowledges what the ACK did came late, and the flow waits twice its
// time from now on; an acknowledgement that moved on means the peer sent
// more first, and the flow's delay is the base again. Anything else (a
// window update, say) leaves it open. Called with mu held.
func (e *Endpoint) settle(f *flow, s segment, now int64) {
	switch {
	case after(s.ack, f.heldAck):
		f.delay, f.late = e.delay, false
	case s.ack == f.heldAck && s.data:
		f.delay = min(e.maxDelay, max(f.delay, 2*(now-f.heldAt)))
		f.late = false
		e.late.Add(1)
	}
}

// schedule queues an expiry and arms the timer for it if it is the
// earliest. Called with mu held.
//
// A timer that is to fire earlier than armed is replaced, not Reset. Go
// keeps the timers that goroutines wait on in a heap per P, and a Reset
// of one in the heap only marks it; once the marked time comes, the
// runtime walks the whole heap and rebuilds it (runtime.(*timers).adjust).
// With many connections that heap is large (gVisor's TIME-WAIT timers
// alone stay 60 s each), and under redis-benchmark -k 0 those walks took
// a quarter of the daemon's instructions (callgrind). A stopped timer is
// only counted, and swept with the others in bulk; a new one goes in the
// heap at the cost of a push.
func (e *Endpoint) schedule(p pending, now int64) {
	heap.Push(&e.queue, p)
	switch {
	case !e.armed:
		// The timer fired (expire disarmed it) or never ran: it is in
		// no heap, and Reset puts it there afresh.
		e.armed, e.armedDue = true, p.due
		e.timer.Reset(time.Duration(p.due - now))
	case p.due < e.armedDue:
		e.armedDue = p.due
		e.timer.Stop()
		e.timer = time.NewTimer(time.Duration(p.due - now))
		select {
		case e.rearm <- struct{}{}:
		default: // the expirer has yet to see an earlier replacement
		}
	}
}

func contains(ps []*stack.PacketBuffer, p *stack.PacketBuffer) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// expire sends the held ACKs whose delay has ended and forgets idle flows.
// It writes after letting go of the lock (the write may deliver packets
// that send more through this endpoint), so a segment of the same flow
// may overtake an expiring ACK: the ACK then arrives old, which TCP
// ignores, as it does reordering on any link.
func (e *Endpoint) expire() {
	var out stack.PacketBufferList
	now := e.clock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	for len(e.queue) > 0 && e.queue[0].due <= now {
		p := heap.Pop(&e.queue).(pending)
		f := e.flows[p.key]
		if f == nil || f.held == nil || f.gen != p.gen {
			continue
		}
		out.PushBack(f.held)
		f.held = nil
		f.late = true
		e.expired.Add(1)
	}
	if len(e.queue) > 0 {
		e.armedDue = e.queue[0].due
		e.timer.Reset(time.Duration(e.armedDue - now))
	} else {
		e.armed = false
	}
	e.sweep(now)
	e.mu.Unlock()
	if out.Len() > 0 {
		_, _ = e.child.WritePackets(out)
		out.DecRef()
	}
}

// sweep forgets the flows idle for flowIdle, once per flowIdle.
func (e *Endpoint) sweep(now int64) {
	if now-e.lastSweep < int64(flowIdle) {
		return
	}
	e.lastSweep = now
	for k, f := range e.flows {
		if f.held == nil && now-f.used > int64(flowIdle) {
			delete(e.flows, k)
		}
	}
}

// Close implements stack.LinkEndpoint: held ACKs are dropped (the NIC is
// going away) and the child is closed.
func (e *Endpoint) Close() {
	e.mu.Lock()
	was := e.closed
	e.closed = true
	e.timer.Stop()
	var drop []*stack.PacketBuffer
	for _, f := range e.flows {
		if f.held != nil {
			drop = append(drop, f.held)
			f.held = nil
		}
	}
	e.queue = nil
	e.mu.Unlock()
	for _, p := range drop {
		p.DecRef()
	}
	if !was {
		close(e.stop)
		<-e.stopped
	}
	e.Endpoint.Close()
}
