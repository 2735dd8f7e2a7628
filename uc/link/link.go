// Package link is a gVisor link endpoint over a UC queue pair: every IP
// packet becomes one RDMA WRITE WITH IMMEDIATE into the peer's ring of
// receive slots. The immediate names the slot and the length; the receiver
// returns credits (cumulative counts of consumed slots, also as WRITE WITH
// IMMEDIATE) so a sender never overwrites a slot the peer has not consumed.
// UC may drop a message: TCP above retransmits, and the receiver counts the
// slots of lost messages as consumed when a later message arrives.
//
// The netdev kind "uc" (see Parse for the argument syntax) opens one.
package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nuse-project/nuse/stack/netdev"
	"github.com/nuse-project/nuse/uc"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Immediate layout. Data: bit 31 clear, slot in bits 16-30, length in bits
// 0-15. Control: bit 31 set, kind in bits 29-30, value in bits 0-28.
const (
	immCtl       = 1 << 31
	immKindShift = 29
	kindCredit   = 0
	kindCreditRq = 1
	creditMask   = 1<<29 - 1
	maxSlots     = 1 << 15
	// MaxMTU is the largest packet an immediate can describe.
	MaxMTU = 65535
)

// Config says how to reach the peer and how big the ring is.
type Config struct {
	Backend string     // "soft" (default) or "verbs"
	Opts    uc.Options // backend device options
	// Exactly one of Peer (dial) and Listen (accept one peer) is set: the
	// TCP side channel over which the two sides exchange QP parameters.
	Peer, Listen string
	Slots        int           // receive slots offered to the peer (default 256)
	MTU          uint32        // link MTU = slot size (default 9000)
	PathMTU      int           // RoCE path MTU (default 4096)
	Wait         time.Duration // how long to wait for the peer (default 60s)
	TxQueue      int           // packets queued for credits before dropping (default 1024)
	Logf         func(string, ...any)
}

// Parse reads the netdev argument: comma-separated key=value pairs.
//
//	peer=HOST:PORT     dial the peer's side channel, or
//	listen=ADDR:PORT   wait for the peer on this address
//	backend=soft|verbs (default soft)
//	local=IP           soft: the local IPv4 address for RoCE (default: the
//	                   listen address, or the source address toward peer)
//	port=N             soft: the UDP port (default 4791; both sides alike)
//	dev=NAME           verbs: device (default: the first)
//	gid=N              verbs: GID index (default 1, RoCEv2 IPv4 on rxe)
//	slots=N            receive slots (default 256, at most 32768)
//	pmtu=N             path MTU 256..4096 (default 4096)
//	mtu=N              link MTU (default: the daemon's MTU, else 9000)
//	wait=DURATION      side-channel timeout (default 60s)
//
// Example: --netdev uc:peer=10.77.0.2:7471,local=10.77.0.1,slots=512
func Parse(arg string) (Config, error) {
	c := Config{Backend: "soft", Opts: uc.Options{GIDIndex: 1}}
	for _, kv := range strings.Split(arg, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return c, fmt.Errorf("uc: %q is not key=value", kv)
		}
		var err error
		num := func() int {
			var n int
			n, err = strconv.Atoi(v)
			return n
		}
		switch k {
		case "peer":
			c.Peer = v
		case "listen":
			c.Listen = v
		case "backend":
			c.Backend = v
		case "local":
			c.Opts.LocalIP = v
		case "port":
			c.Opts.Port = num()
		case "dev":
			c.Opts.Dev = v
		case "gid":
			c.Opts.GIDIndex = num()
		case "slots":
			c.Slots = num()
		case "pmtu":
			c.PathMTU = num()
		case "mtu":
			c.MTU = uint32(num())
		case "wait":
			c.Wait, err = time.ParseDuration(v)
		default:
			return c, fmt.Errorf("uc: unknown key %q", k)
		}
		if err != nil {
			return c, fmt.Errorf("uc: %s: %w", k, err)
		}
	}
	if (c.Peer == "") == (c.Listen == "") {
		return c, errors.New("uc: give exactly one of peer=HOST:PORT and listen=ADDR:PORT")
	}
	return c, nil
}

func init() {
	netdev.Register("uc", func(cfg netdev.Config) (*netdev.Device, error) {
		c, err := Parse(cfg.Arg)
		if err != nil {
			return nil, err
		}
		if c.MTU == 0 {
			c.MTU = cfg.MTU
		}
		c.Logf = cfg.Logf
		e, err := New(c)
		if err != nil {
			return nil, err
		}
		return &netdev.Device{Kind: "uc", Name: e.Name(), Link: e, Close: func() error { e.Close(); return nil }}, nil
	})
}

// Stats of an endpoint.
type Stats struct {
	TxPackets, RxPackets, TxDropped, RxLost, CreditStalls, CreditsSent atomic.Uint64
	// Gauges for diagnosis: WRs posted but not completed, data messages
	// sent, the peer's consumed count as we know it, our next expected.
	TxInflight, DataSent, PeerCredit, RxNext atomic.Uint64
}

// String summarises the counters.
func (s *Stats) String() string {
	return fmt.Sprintf("tx %d rx %d txdrop %d rxlost %d stalls %d credits-sent %d inflight %d sent %d peer-credit %d rx-next %d",
		s.TxPackets.Load(), s.RxPackets.Load(), s.TxDropped.Load(), s.RxLost.Load(), s.CreditStalls.Load(), s.CreditsSent.Load(),
		s.TxInflight.Load(), s.DataSent.Load(), s.PeerCredit.Load(), s.RxNext.Load())
}

// Endpoint is the link endpoint.
type Endpoint struct {
	cfg    Config
	dev    uc.Device
	qp     uc.QP
	rx, tx uc.MR
	remote uc.ConnParams
	slot   int // bytes per slot (ours and the peer's)
	nPeer  int // peer's slots
	nOurs  int
	nTx    int // local send buffers
	Stats  Stats

	mtu        atomic.Uint32
	dispatcher atomic.Pointer[stack.NetworkDispatcher]
	onClose    func()

	mu        sync.Mutex
	queue     []*stack.PacketBuffer
	credit    uint64 // peer's consumed count: we may send while sent-credit < nPeer
	creditDue bool
	closed    bool
	kick      chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup

	// receiver state (receive goroutine only)
	next     uint64 // sequence number of the next data message expected
	lastSent uint64 // consumed count last reported to the peer
}

// New connects to the peer and returns a running endpoint.
func New(c Config) (*Endpoint, error) {
	if c.Backend == "" {
		c.Backend = "soft"
	}
	if c.Slots == 0 {
		c.Slots = 256
	}
	if c.Slots < 2 || c.Slots > maxSlots {
		return nil, fmt.Errorf("uc: slots %d out of range 2..%d", c.Slots, maxSlots)
	}
	if c.MTU == 0 {
		c.MTU = 9000
	}
	if c.MTU < 576 || c.MTU > MaxMTU {
		return nil, fmt.Errorf("uc: mtu %d out of range 576..%d", c.MTU, MaxMTU)
	}
	if c.PathMTU == 0 {
		c.PathMTU = 4096
	}
	if c.Wait == 0 {
		c.Wait = 60 * time.Second
	}
	if c.TxQueue == 0 {
		c.TxQueue = 1024
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	conn, err := sideChannel(&c)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	e := &Endpoint{cfg: c, slot: int(c.MTU), nOurs: c.Slots, nTx: 64, kick: make(chan struct{}, 1), done: make(chan struct{})}
	e.mtu.Store(c.MTU)
	if err := e.setup(conn); err != nil {
		e.release()
		return nil, err
	}
	e.wg.Add(2)
	go e.txLoop()
	go e.rxLoop()
	if pm := int(uc.MinMTU(uint32(e.qp.PathMTU()), e.remote.MTU)); e.slot > pm {
		c.Logf("uc: note: link MTU %d > path MTU %d, so a packet may span several RoCE packets; "+
			"rdma_rxe peers stop receiving after losing part of one (keep mtu <= pmtu on lossy paths to rxe)", e.slot, pm)
	}
	c.Logf("uc: link up: %s qpn %#x <-> peer qpn %#x, %d+%d slots of %d bytes, path MTU %d",
		e.dev.Name(), e.qp.QPN(), e.remote.QPN, e.nOurs, e.nPeer, e.slot, uc.MinMTU(uint32(e.qp.PathMTU()), e.remote.MTU))
	return e, nil
}

// sideChannel dials or accepts the TCP connection to the peer and fills in
// the soft backend's local address if it was not given.
func sideChannel(c *Config) (net.Conn, error) {
	deadline := time.Now().Add(c.Wait)
	if c.Listen != "" {
		ln, err := net.Listen("tcp", c.Listen)
		if err != nil {
			return nil, fmt.Errorf("uc: side channel: %w", err)
		}
		defer ln.Close()
		_ = ln.(*net.TCPListener).SetDeadline(deadline)
		conn, err := ln.Accept()
		if err != nil {
			return nil, fmt.Errorf("uc: waiting for the peer on %s: %w", c.Listen, err)
		}
		if c.Opts.LocalIP == "" {
			c.Opts.LocalIP = conn.LocalAddr().(*net.TCPAddr).IP.String()
		}
		return conn, nil
	}
	for {
		conn, err := net.DialTimeout("tcp", c.Peer, time.Second)
		if err == nil {
			if c.Opts.LocalIP == "" {
				c.Opts.LocalIP = conn.LocalAddr().(*net.TCPAddr).IP.String()
			}
			return conn, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("uc: side channel to %s: %w", c.Peer, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *Endpoint) setup(conn net.Conn) error {
	var err error
	if e.dev, err = uc.Open(e.cfg.Backend, e.cfg.Opts); err != nil {
		return err
	}
	rxBuf, err := uc.Alloc(e.dev, e.nOurs*e.slot)
	if err != nil {
		return err
	}
	txBuf, err := uc.Alloc(e.dev, e.nTx*e.slot)
	if err != nil {
		return err
	}
	if e.rx, err = e.dev.RegMR(rxBuf, uc.AccessLocalWrite|uc.AccessRemoteWrite); err != nil {
		return err
	}
	if e.tx, err = e.dev.RegMR(txBuf, uc.AccessLocalWrite); err != nil {
		return err
	}
	// Receives are tokens for incoming WRITE WITH IMMEDIATE: the peer sends
	// at most nOurs data messages unconsumed plus a few control messages.
	depth := e.nOurs + 64
	if e.qp, err = e.dev.CreateQP(uc.QPConfig{SendDepth: e.nTx + 16, RecvDepth: depth, PathMTU: e.cfg.PathMTU}); err != nil {
		return err
	}
	for i := 0; i < depth; i++ {
		if err := e.qp.PostRecv(uint64(i)); err != nil {
			return err
		}
	}
	local := uc.ConnParams{QPN: e.qp.QPN(), PSN: e.qp.PSN(), GID: e.dev.GID(), RKey: e.rx.RKey(), Addr: e.rx.Addr(),
		Len: uint64(e.nOurs * e.slot), MTU: uint32(e.qp.PathMTU()), Extra: uint64(e.slot)<<32 | uint64(e.nOurs)}
	if e.remote, err = uc.Exchange(conn, local, e.cfg.Wait); err != nil {
		return err
	}
	if int(e.remote.Extra>>32) != e.slot {
		return fmt.Errorf("uc: peer's slot size %d differs from ours %d (set the same mtu on both sides)", e.remote.Extra>>32, e.slot)
	}
	e.nPeer = int(e.remote.Extra & 0xffffffff)
	if e.nPeer < 2 || e.nPeer > maxSlots || uint64(e.nPeer*e.slot) > e.remote.Len {
		return fmt.Errorf("uc: peer offers a bad ring (%d slots, %d bytes)", e.nPeer, e.remote.Len)
	}
	if err := e.qp.Connect(e.remote); err != nil {
		return err
	}
	// Neither side may write before the other has connected its QP.
	return uc.Sync(conn, e.cfg.Wait)
}

func (e *Endpoint) release() {
	if e.qp != nil {
		e.qp.Close()
	}
	if e.rx != nil {
		e.rx.Dereg()
	}
	if e.tx != nil {
		e.tx.Dereg()
	}
	if e.dev != nil {
		e.dev.Close()
	}
}

// Name is the device name the daemon shows.
func (e *Endpoint) Name() string { return "uc:" + e.dev.Name() }

func (e *Endpoint) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// WritePackets implements stack.LinkWriter: packets wait in a bounded
// queue for peer credits, like a NIC's transmit ring; beyond it they drop.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	for _, pkt := range pkts.AsSlice() {
		if len(e.queue) >= e.cfg.TxQueue {
			e.Stats.TxDropped.Add(1)
			break
		}
		if pkt.Size() > e.slot {
			e.Stats.TxDropped.Add(1)
			continue
		}
		e.queue = append(e.queue, pkt.IncRef())
		n++
	}
	e.mu.Unlock()
	e.wake()
	if n == 0 {
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return n, nil
}

// txLoop is the only goroutine that posts to the QP.
func (e *Endpoint) txLoop() {
	defer e.wg.Done()
	var (
		sent      uint64 // data messages posted
		txPosted  uint64 // WRs posted (data and control)
		txDone    uint64 // WRs completed
		stalledAt time.Time
		lastRq    time.Time
		wcs       [32]uc.WC
	)
	post := func(wr *uc.WriteWR) bool {
		wr.WRID = txPosted
		wr.Signaled = true
		if err := e.qp.PostWrite(wr); err != nil {
			e.cfg.Logf("uc: post: %v", err)
			return false
		}
		txPosted++
		return true
	}
	ctl := func(kind, val uint32) {
		post(&uc.WriteWR{Local: e.tx, RemoteAddr: e.remote.Addr, RKey: e.remote.RKey, HasImm: true,
			Imm: immCtl | kind<<immKindShift | val&creditMask})
	}
	for {
		for {
			n, err := e.qp.PollSend(wcs[:])
			if err != nil || n == 0 {
				break
			}
			txDone += uint64(n)
		}
		e.mu.Lock()
		if e.closed {
			for _, p := range e.queue {
				p.DecRef()
			}
			e.queue = nil
			e.mu.Unlock()
			return
		}
		due := e.creditDue
		e.creditDue = false
		credit := e.credit
		e.mu.Unlock()
		// The send queue keeps room for credits beyond the data limit.
		if due && txPosted-txDone < uint64(e.nTx+15) {
			ctl(kindCredit, uint32(e.consumedForTx()))
			e.Stats.CreditsSent.Add(1)
		}
		progress := false
		for txPosted-txDone < uint64(e.nTx) && sent-credit < uint64(e.nPeer) {
			e.mu.Lock()
			if len(e.queue) == 0 {
				e.mu.Unlock()
				break
			}
			pkt := e.queue[0]
			e.queue = e.queue[:copy(e.queue, e.queue[1:])]
			e.mu.Unlock()
			off := int(txPosted%uint64(e.nTx)) * e.slot
			n := 0
			for _, s := range pkt.AsSlices() {
				n += copy(e.tx.Buf()[off+n:off+e.slot], s)
			}
			pkt.DecRef()
			slot := sent % uint64(e.nPeer)
			if post(&uc.WriteWR{Local: e.tx, Offset: off, Length: n, RemoteAddr: e.remote.Addr + slot*uint64(e.slot),
				RKey: e.remote.RKey, HasImm: true, Imm: uint32(slot)<<16 | uint32(n)}) {
				e.Stats.TxPackets.Add(1)
			}
			sent++
			progress = true
		}
		e.Stats.TxInflight.Store(txPosted - txDone)
		e.Stats.DataSent.Store(sent)
		e.Stats.PeerCredit.Store(credit)
		e.mu.Lock()
		waiting := len(e.queue) > 0
		e.mu.Unlock()
		var timeout time.Duration
		switch {
		case waiting && sent-credit >= uint64(e.nPeer):
			// Out of credits: the last credit message may have been lost,
			// so ask again now and then.
			if stalledAt.IsZero() {
				stalledAt = time.Now()
				e.Stats.CreditStalls.Add(1)
			}
			if time.Since(stalledAt) > time.Millisecond && time.Since(lastRq) > 2*time.Millisecond {
				// It carries how many messages we sent: the receiver
				// counts those it never saw as lost (UC delivers in order
				// or not at all, and this request comes after them), so a
				// window lost whole does not leave both sides waiting.
				ctl(kindCreditRq, uint32(sent))
				lastRq = time.Now()
			}
			timeout = time.Millisecond
		case waiting || txPosted != txDone:
			stalledAt = time.Time{}
			// Waiting for send completions (verbs): poll soon.
			timeout = 50 * time.Microsecond
		default:
			stalledAt = time.Time{}
		}
		if progress {
			continue
		}
		if timeout == 0 {
			select {
			case <-e.kick:
			case <-e.done:
			}
			continue
		}
		t := time.NewTimer(timeout)
		select {
		case <-e.kick:
		case <-e.done:
		case <-t.C:
		}
		t.Stop()
	}
}

// consumedForTx is the receiver's consumed count to report.
func (e *Endpoint) consumedForTx() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastSent
}

// rxLoop polls the receive CQ, hands data to the stack and turns control
// messages into credit state.
func (e *Endpoint) rxLoop() {
	defer e.wg.Done()
	var wcs [64]uc.WC
	idle := 0
	for {
		n, err := e.qp.PollRecv(wcs[:])
		if err != nil {
			return
		}
		if n == 0 {
			select {
			case <-e.done:
				return
			default:
			}
			// Spin briefly, then sleep on the completion channel.
			if idle++; idle < 64 {
				continue
			}
			_ = e.qp.WaitRecv(100 * time.Millisecond)
			continue
		}
		idle = 0
		for _, wc := range wcs[:n] {
			_ = e.qp.PostRecv(wc.WRID)
			if wc.Status != uc.WCSuccess || wc.Opcode != uc.WCRecvRDMAWithImm {
				continue
			}
			if wc.Imm&immCtl != 0 {
				e.control(wc.Imm)
				continue
			}
			slot, ln := uint64(wc.Imm>>16), int(wc.Imm&0xffff)
			if slot >= uint64(e.nOurs) || ln > e.slot || ln != int(wc.ByteLen) {
				continue
			}
			// Messages come in order or not at all: slots between the one
			// expected and this one belong to lost messages.
			k := e.next + (slot+uint64(e.nOurs)-e.next%uint64(e.nOurs))%uint64(e.nOurs)
			e.Stats.RxLost.Add(k - e.next)
			e.deliver(e.rx.Buf()[int(slot)*e.slot : int(slot)*e.slot+ln])
			e.next = k + 1
			e.Stats.RxNext.Store(e.next)
		}
		if consumed := e.next; consumed != e.lastSentLocked() {
			e.mu.Lock()
			e.lastSent = consumed
			e.creditDue = true
			e.mu.Unlock()
			e.wake()
		}
	}
}

func (e *Endpoint) lastSentLocked() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastSent
}

func (e *Endpoint) control(imm uint32) {
	switch (imm >> immKindShift) & 3 {
	case kindCredit:
		e.mu.Lock()
		// The peer reports consumed mod 2^29; it never exceeds what we sent,
		// and it lags by less than a ring, so the full count is recoverable.
		// A stale value (older than what we hold) must not move it back.
		c := e.credit
		delta := (uint64(imm&creditMask) - c) & creditMask
		if delta <= uint64(e.nPeer) {
			e.credit = c + delta
		}
		e.mu.Unlock()
		e.wake()
	case kindCreditRq:
		// The sender's sent count mod 2^29: it is at most a ring ahead of
		// what we consumed. Messages before it that have not arrived never
		// will: count them lost and consume their slots.
		ahead := (uint64(imm&creditMask) - e.next) & creditMask
		if ahead > 0 && ahead <= uint64(e.nOurs) {
			e.Stats.RxLost.Add(ahead)
			e.next += ahead
			e.Stats.RxNext.Store(e.next)
		}
		e.mu.Lock()
		e.lastSent = e.next
		e.creditDue = true
		e.mu.Unlock()
		e.wake()
	}
}

// deliver copies the slot into a packet buffer: gVisor buffers live in its
// own pooled chunks, so the registered slot cannot be lent to the stack.
func (e *Endpoint) deliver(b []byte) {
	d := e.dispatcher.Load()
	if d == nil || len(b) == 0 {
		return
	}
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(b) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		return
	}
	e.Stats.RxPackets.Add(1)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	(*d).DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint; the slot size bounds it.
func (e *Endpoint) SetMTU(m uint32) {
	if m <= uint32(e.slot) {
		e.mtu.Store(m)
	}
}

// MaxHeaderLength implements stack.LinkEndpoint: no link header.
func (*Endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: a point-to-point link.
func (*Endpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (*Endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint. The ICRC (CRC-32 over the
// whole packet, checked by the receiving RoCE device) protects the payload
// end to end, so received checksums need no second check.
func (*Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// Attach implements stack.LinkEndpoint.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		return
	}
	e.dispatcher.Store(&d)
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool { return e.dispatcher.Load() != nil }

// Wait implements stack.LinkEndpoint.
func (e *Endpoint) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (*Endpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (*Endpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *Endpoint) SetOnCloseAction(f func()) { e.onClose = f }

// Close stops the goroutines and releases the QP and device.
func (e *Endpoint) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.mu.Unlock()
	if e.onClose != nil {
		e.onClose()
	}
	close(e.done)
	e.wake()
	e.qp.Close() // wakes rxLoop
	e.wg.Wait()
	e.release()
}

// Addr is a convenience for tests: the soft local address in use.
func (e *Endpoint) Addr() netip.Addr { return netip.AddrFrom16(e.dev.GID()).Unmap() }

var _ stack.LinkEndpoint = (*Endpoint)(nil)
