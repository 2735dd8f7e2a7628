// Package soft is a pure-Go RoCEv2 UC transport: RDMA WRITE and WRITE WITH
// IMMEDIATE over IPv4/UDP port 4791, wire-compatible with rdma_rxe and RoCE
// NICs. Packets go out through a UDP socket bound to the local address and
// port 4791 (unconnected, DF set, so Linux sends IP ID 0 and the ICRC can
// be computed over the exact header the kernel emits); they come in through
// a raw IPv4 socket, because verifying a peer's ICRC needs its IP header
// (the IP ID is covered by the ICRC and a UDP socket does not show it).
package soft

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nuse-project/nuse/uc"
	"golang.org/x/sys/unix"
)

func init() {
	uc.Register("soft", func(o uc.Options) (uc.Device, error) { return Open(o.LocalIP, o.Port) })
}

// Stats count what the device dropped and why.
type Stats struct {
	RxPackets, TxPackets                       atomic.Uint64
	BadICRC, BadHeader, NoQP, BadSrc           atomic.Uint64
	PSNDrops, SeqDrops, AccessDrops, NoRecvWQE atomic.Uint64
	MsgsDropped, CQOverflow, InjectedDrops     atomic.Uint64
}

// Device is a soft RoCEv2 device bound to one local IPv4 address.
type Device struct {
	local    [4]byte
	port     int
	tx       *net.UDPConn
	txRC     syscall.RawConn
	ifMTU    int // MTU of the interface that has the local address (0: unknown)
	rawFD    int
	stopping atomic.Bool
	rxLoss   atomic.Uint64 // float64 bits
	Stats    Stats

	mu      sync.Mutex
	mrs     map[uint32]*memRegion
	qps     map[uint32]*QP
	nextKey uint32
	nextVA  uint64
	closed  bool
	done    chan struct{}
}

// Open opens a soft device on localIP (an IPv4 address of this namespace)
// and UDP port (0 means 4791).
func Open(localIP string, port int) (*Device, error) {
	a, err := netip.ParseAddr(localIP)
	if err != nil || !a.Unmap().Is4() {
		return nil, fmt.Errorf("soft: local address %q is not IPv4", localIP)
	}
	if port == 0 {
		port = RoCEPort
	}
	d := &Device{local: a.Unmap().As4(), port: port, mrs: map[uint32]*memRegion{}, qps: map[uint32]*QP{},
		nextKey: rand.Uint32() & 0xffff00, nextVA: 0x7f0000000000, done: make(chan struct{})}
	d.tx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(d.local[:]), Port: port})
	if err != nil {
		return nil, fmt.Errorf("soft: %w", err)
	}
	if err := d.setupTx(); err != nil {
		d.tx.Close()
		return nil, err
	}
	if d.txRC, err = d.tx.SyscallConn(); err != nil {
		d.tx.Close()
		return nil, err
	}
	if err := d.openRaw(); err != nil {
		d.tx.Close()
		return nil, err
	}
	d.ifMTU = ifaceMTU(a.Unmap())
	go d.rxLoop()
	return d, nil
}

func (d *Device) setupTx() error {
	rc, err := d.tx.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// DF makes Linux send IP ID 0 from an unconnected socket: the ICRC
		// covers the ID, so it must be predictable.
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		if serr != nil {
			return
		}
		// Datagrams arrive through the raw socket; this one only keeps the
		// port owned (no ICMP port unreachable), so it drops everything.
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: 1, Filter: &[]unix.SockFilter{{Code: 0x06, K: 0}}[0]})
		if serr == nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("soft: tx socket: %w", err)
	}
	return nil
}

func (d *Device) openRaw() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fmt.Errorf("soft: raw socket (needs CAP_NET_RAW): %w", err)
	}
	dst := uint32(d.local[0])<<24 | uint32(d.local[1])<<16 | uint32(d.local[2])<<8 | uint32(d.local[3])
	// Keep only unfragmented datagrams to local:port, in the kernel.
	prog := []unix.SockFilter{
		{Code: 0x20, K: 16},                   // ld [16] (IP dst)
		{Code: 0x15, Jt: 0, Jf: 6, K: dst},    // jeq dst
		{Code: 0x28, K: 6},                    // ldh [6] (flags, frag off)
		{Code: 0x45, Jt: 4, Jf: 0, K: 0x3fff}, // jset MF|offset -> drop
		{Code: 0xb1, K: 0},                    // ldxb 4*([0]&0xf)
		{Code: 0x48, K: 2},                    // ldh [x+2] (UDP dport)
		{Code: 0x15, Jt: 0, Jf: 1, K: uint32(d.port)},
		{Code: 0x06, K: 0x40000}, // accept
		{Code: 0x06, K: 0},       // drop
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("soft: raw filter: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	// Drain what arrived before the filter was attached.
	var b [64]byte
	for {
		if _, _, err := unix.Recvfrom(fd, b[:], unix.MSG_DONTWAIT); err != nil {
			break
		}
	}
	// The receive loop blocks in recvfrom on its own thread rather than in
	// Go's netpoller: the kernel then wakes it directly, which keeps
	// latency low even while other goroutines spin on the CQ. The timeout
	// bounds how long Close waits for it.
	tv := unix.NsecToTimeval(int64(rxPollTimeout))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return fmt.Errorf("soft: raw socket timeout: %w", err)
	}
	d.rawFD = fd
	return nil
}

const rxPollTimeout = 100 * time.Millisecond

func (d *Device) rxLoop() {
	defer close(d.done)
	runtime.LockOSThread()
	// A batch per system call: under load the kernel queues many packets.
	b := newBatch(32, 65536)
	var done []*QP // QPs that queued a receive completion in this batch
	for !d.stopping.Load() {
		n, err := b.recv(d.rawFD)
		if err != nil {
			continue // timeout or EINTR: check for Close
		}
		for i := 0; i < n; i++ {
			if q := d.input(b.bufs[i][:b.msgs[i].n]); q != nil && !slices.Contains(done, q) {
				done = append(done, q)
			}
		}
		// Once per batch: whoever is notified takes the whole batch's
		// completions in one go.
		for i, q := range done {
			q.notified()
			done[i] = nil
		}
		done = done[:0]
	}
}

// SetRxLoss makes the device drop received packets at random with
// probability p, before any processing: fault injection for tests and
// experiments on hosts without sch_netem.
func (d *Device) SetRxLoss(p float64) { d.rxLoss.Store(math.Float64bits(p)) }

// input handles one raw IPv4 datagram; it returns the QP if the datagram
// completed a receive.
func (d *Device) input(b []byte) *QP {
	d.Stats.RxPackets.Add(1)
	if l := math.Float64frombits(d.rxLoss.Load()); l > 0 && rand.Float64() < l {
		d.Stats.InjectedDrops.Add(1)
		return nil
	}
	ip, udp, pl, err := SplitIPv4UDP(b)
	if err != nil {
		d.Stats.BadHeader.Add(1)
		return nil
	}
	if !VerifyICRC(ip, udp, pl) {
		d.Stats.BadICRC.Add(1)
		return nil
	}
	p, err := ParsePacket(pl)
	if err != nil {
		d.Stats.BadHeader.Add(1)
		return nil
	}
	d.mu.Lock()
	q := d.qps[p.DestQP]
	d.mu.Unlock()
	if q == nil {
		d.Stats.NoQP.Add(1)
		return nil
	}
	var src [4]byte
	copy(src[:], ip[12:16])
	if q.receive(&p, src) {
		return q
	}
	return nil
}

// Name implements uc.Device.
func (d *Device) Name() string { return "soft:" + netip.AddrFrom4(d.local).String() }

// GID is the IPv4-mapped IPv6 address, as RoCEv2 GIDs of IPv4 ports are.
func (d *Device) GID() [16]byte { return netip.AddrFrom4(d.local).As16() }

// Close stops the device; its QPs stop receiving.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	qps := d.qps
	d.qps = map[uint32]*QP{}
	d.mu.Unlock()
	for _, q := range qps {
		q.markClosed()
	}
	d.stopping.Store(true)
	<-d.done
	unix.Close(d.rawFD)
	d.tx.Close()
	return nil
}

type memRegion struct {
	d      *Device
	buf    []byte
	va     uint64
	key    uint32
	access uc.Access
}

func (m *memRegion) Buf() []byte  { return m.buf }
func (m *memRegion) Addr() uint64 { return m.va }
func (m *memRegion) LKey() uint32 { return m.key }
func (m *memRegion) RKey() uint32 { return m.key }
func (m *memRegion) Dereg() error {
	m.d.mu.Lock()
	delete(m.d.mrs, m.key)
	m.d.mu.Unlock()
	return nil
}

// RegMR registers buf. Addresses are synthetic (a peer only needs them to
// be consistent with the rkey), page aligned, never reused.
func (d *Device) RegMR(buf []byte, access uc.Access) (uc.MR, error) {
	if len(buf) == 0 {
		return nil, errors.New("soft: empty memory region")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, uc.ErrClosed
	}
	d.nextKey++
	m := &memRegion{d: d, buf: buf, va: d.nextVA, key: d.nextKey, access: access}
	d.nextVA += (uint64(len(buf)) + 8191) &^ 4095
	d.mrs[m.key] = m
	return m, nil
}

func (d *Device) lookupMR(rkey uint32) *memRegion {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mrs[rkey]
}

// CreateQP creates a UC QP in the RESET-equivalent state; Connect makes it
// usable.
func (d *Device) CreateQP(cfg uc.QPConfig) (uc.QP, error) {
	if cfg.PathMTU == 0 {
		cfg.PathMTU = 1024
	}
	if !uc.ValidMTU(cfg.PathMTU) {
		return nil, fmt.Errorf("soft: bad path MTU %d", cfg.PathMTU)
	}
	// Like rxe, never use a path MTU whose packets do not fit the
	// interface (packets go out with DF): the peer learns the result in
	// the exchange and both use the smaller.
	for cfg.PathMTU > 256 && d.ifMTU > 0 && cfg.PathMTU+maxOverhead > d.ifMTU {
		cfg.PathMTU /= 2
	}
	if cfg.SendDepth <= 0 {
		cfg.SendDepth = 128
	}
	if cfg.RecvDepth <= 0 {
		cfg.RecvDepth = 128
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, uc.ErrClosed
	}
	var qpn uint32
	for {
		qpn = 0x100 + rand.Uint32N(0xfffe00)
		if d.qps[qpn] == nil {
			break
		}
	}
	q := &QP{d: d, qpn: qpn, psn: rand.Uint32() & psnMask, cfg: cfg,
		recvNote: make(chan struct{}, 1), sendNote: make(chan struct{}, 1),
		tx: newBatch(txBatch, 0)}
	for i := range q.txBufs {
		q.txBufs[i] = make([]byte, IPv4Len+UDPLen, IPv4Len+UDPLen+HeaderLen(OpUCWriteOnlyImm)+4096+8)
	}
	d.qps[qpn] = q
	return q, nil
}

// maxOverhead is IPv4, UDP, BTH, RETH, ImmDt and ICRC.
const maxOverhead = IPv4Len + UDPLen + BTHLen + RETHLen + ImmLen + ICRCLen

// ifaceMTU finds the MTU of the interface that holds addr.
func ifaceMTU(addr netip.Addr) int {
	ifs, err := net.Interfaces()
	if err != nil {
		return 0
	}
	for _, ifc := range ifs {
		as, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == addr {
					return ifc.MTU
				}
			}
		}
	}
	return 0
}

// txBatch is how many packets of one message go per sendmmsg.
const txBatch = 16

// sendBatch sends the first n datagrams of b.
func (d *Device) sendBatch(b *batch, n int) error {
	d.Stats.TxPackets.Add(uint64(n))
	off := 0
	var serr error
	err := d.txRC.Write(func(fd uintptr) bool {
		for off < n {
			m, err := b.sendFrom(int(fd), off, n)
			switch {
			case err == unix.EAGAIN:
				return false // wait until writable
			case err == unix.ENOBUFS || err == unix.EPERM:
				// A full qdisc or a firewall drop loses the packet as a
				// wire would; UC does not care.
				off++
			case err != nil:
				serr = err
				return true
			default:
				off += m
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

// ensure interface satisfaction
var _ uc.Device = (*Device)(nil)
