package kmod

// Tests against the real module. They run in the guest test bed
// (scripts/guest/run.sh, from `make test-kmod`) where nuse.ko is loaded,
// and are skipped elsewhere.

import (
	"encoding/binary"
	"errors"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nuse-project/nuse/stack/netdev"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func needModule(t *testing.T) {
	t.Helper()
	if os.Getenv("NUSE_GUEST") == "" || !DevicePresent() {
		t.Skip("needs nuse.ko loaded (run in the guest: make test-kmod)")
	}
}

func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

func sysStat(t *testing.T, dev, name string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/sys/class/net/" + dev + "/statistics/" + name)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

func TestGuestLifecycle(t *testing.T) {
	needModule(t)

	// Created on open, gone on close.
	e, err := Open(Options{Name: "nuset%d"})
	if err != nil {
		t.Fatal(err)
	}
	name := e.Name()
	if !strings.HasPrefix(name, "nuset") || !linkExists(name) {
		t.Fatalf("device %q not there", name)
	}
	e.Close()
	if linkExists(name) {
		t.Fatalf("%s still there after close", name)
	}

	// Default name.
	e, err = Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(e.Name(), "nuse") {
		t.Fatalf("default name %q", e.Name())
	}
	e.Close()

	// Persistent: survives close, can be attached to again, once at a time.
	e, err = Open(Options{Name: "nusep0", Persist: true, MTU: 4000})
	if err != nil {
		t.Fatal(err)
	}
	idx := e.Ifindex()
	e.Close()
	if !linkExists("nusep0") {
		t.Fatal("persistent device gone after close")
	}
	e, err = Open(Options{Name: "nusep0"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Ifindex() != idx || e.MTU() != 4000 {
		t.Fatalf("reattached to ifindex %d mtu %d, want %d 4000", e.Ifindex(), e.MTU(), idx)
	}
	if _, err := Open(Options{Name: "nusep0"}); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("second attach: %v, want EBUSY", err)
	}
	// MTU: not above the slot size while attached.
	l, _ := netlink.LinkByName("nusep0")
	if err := netlink.LinkSetMTU(l, 9000); err == nil {
		t.Fatal("MTU above the slot size accepted")
	}
	if err := netlink.LinkSetMTU(l, 1280); err != nil {
		t.Fatalf("MTU 1280: %v", err)
	}
	if err := e.SetPersist(false); err != nil {
		t.Fatal(err)
	}
	e.Close()
	if linkExists("nusep0") {
		t.Fatal("device stayed after persist was cleared")
	}

	// A name of another kind of device is refused.
	if _, err := Open(Options{Name: "lo"}); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("attach to lo: %v, want EEXIST", err)
	}

	// Deleted under an open endpoint: the fd reports it, close still works.
	e, err = Open(Options{Name: "nused0"})
	if err != nil {
		t.Fatal(err)
	}
	l, _ = netlink.LinkByName("nused0")
	if err := netlink.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	pfd := []unix.PollFd{{Fd: int32(e.Fd()), Events: unix.POLLIN}}
	unix.Poll(pfd, 1000)
	if pfd[0].Revents&unix.POLLHUP == 0 {
		t.Fatalf("poll after delete: revents %#x, want POLLHUP", pfd[0].Revents)
	}
	if err := ioctl(e.Fd(), iocKick, nil); !errors.Is(err, unix.ENXIO) {
		t.Fatalf("kick after delete: %v, want ENXIO", err)
	}
	e.Close()

	// Bad setups.
	for _, o := range []Options{{K2USlots: 100}, {U2KSlots: 8}, {SlotSize: 1024}, {MTU: 9000, SlotSize: 4096}, {MTU: 20}} {
		if e, err := Open(o); err == nil {
			e.Close()
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}

// ipv4UDP builds an IPv4/UDP packet with correct checksums.
func ipv4UDP(src, dst netip.AddrPort, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 17
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	binary.BigEndian.PutUint16(p[10:], ^csumFold(csumAdd(0, p[:20])))
	u := p[20:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	binary.BigEndian.PutUint16(u[6:], ^csumFold(udpPseudo(p)+csumAdd(0, u)))
	return p
}

func udpPseudo(p []byte) uint32 {
	s := csumAdd(0, p[12:20])
	return s + 17 + uint32(len(p)-20)
}

func csumAdd(s uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func csumFold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// guestDev opens a device with a kernel UDP socket listening behind it.
func guestDev(t *testing.T, name string, n int) (*Endpoint, *net.UDPConn, netip.AddrPort, netip.AddrPort) {
	return guestDevOpts(t, Options{Name: name, MTU: 1500, K2USlots: 64, U2KSlots: 64}, n)
}

func guestDevOpts(t *testing.T, o Options, n int) (*Endpoint, *net.UDPConn, netip.AddrPort, netip.AddrPort) {
	t.Helper()
	e, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	host := netip.MustParsePrefix("10.97." + strconv.Itoa(n) + ".1/24")
	if err := ConfigureHost(e.Name(), netdev.Config{HostAddrs: []netip.Prefix{host}}); err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(host.Addr(), 7000)
	src := netip.AddrPortFrom(host.Addr().Next(), 7001)
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	uc.SetReadBuffer(1 << 20)
	return e, uc, src, dst
}

// recvAll reads datagrams until none comes for a while.
func recvAll(uc *net.UDPConn) []string {
	var got []string
	b := make([]byte, 4096)
	for {
		uc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := uc.ReadFrom(b)
		if err != nil {
			return got
		}
		got = append(got, string(b[:n]))
	}
}

func (e *Endpoint) kick() { ioctl(e.fd, iocKick, nil) }

func TestGuestMalformed(t *testing.T) {
	needModule(t)
	e, uc, src, dst := guestDev(t, "nusem0", 1)
	r := e.r
	c := r.ctrl
	area := uint32(len(r.u2kBuf))
	good := func(tag string) {
		n := copy(r.u2kSlot(), ipv4UDP(src, dst, []byte(tag)))
		r.u2kQueue(uint32(n), 0x0800, CsumNone)
	}
	bad := func(d Desc) {
		// The slot holds a valid packet: only the descriptor is wrong.
		copy(r.u2kSlot(), ipv4UDP(src, dst, []byte("BAD")))
		i := r.u2kProd & r.u2kMask
		r.u2kDesc[i] = d
		r.u2kProd++
	}
	pktLen := uint32(len(ipv4UDP(src, dst, []byte("BAD"))))
	slotOff := func() uint32 { return (r.u2kProd & r.u2kMask) * r.slotSize }

	rxErr0 := sysStat(t, e.Name(), "rx_errors")
	good("g1")
	bad(Desc{Off: area, Len: pktLen, Proto: 0x0800})      // offset at the end
	bad(Desc{Off: area - 10, Len: pktLen, Proto: 0x0800}) // runs over the end
	bad(Desc{Off: 0xfffffff0, Len: 0x20, Proto: 0x0800})  // wraps 32 bits
	good("g2")
	bad(Desc{Off: slotOff(), Len: 0, Proto: 0x0800})          // empty
	bad(Desc{Off: slotOff(), Len: 1501, Proto: 0x0800})       // over the MTU
	bad(Desc{Off: slotOff(), Len: 0xffffffff, Proto: 0x0800}) // huge
	bad(Desc{Off: slotOff(), Len: pktLen, Proto: 0x1234})     // unknown protocol
	bad(Desc{Off: slotOff(), Len: pktLen, Proto: 0x86dd})     // says v6, is v4
	bad(Desc{Off: slotOff(), Len: pktLen, Proto: 0x0800, Csum: 9})
	bad(Desc{Off: slotOff(), Len: pktLen, Proto: 0x0800, GSOType: 1, GSOSize: 1400})
	bad(Desc{Off: slotOff(), Len: pktLen, Proto: 0x0800, Csum: CsumPartial, CsumStart: 200, CsumOffset: 6})
	bad(Desc{Off: slotOff(), Len: pktLen, Proto: 0x0800, Flags: 1})
	good("g3")
	// A good packet with a partial checksum: the pseudo-header sum in the
	// checksum field, the rest for the kernel to finish.
	{
		p := ipv4UDP(src, dst, []byte("g4"))
		binary.BigEndian.PutUint16(p[26:], csumFold(udpPseudo(p)))
		n := copy(r.u2kSlot(), p)
		i := r.u2kProd & r.u2kMask
		r.u2kDesc[i] = Desc{Off: i * r.slotSize, Len: uint32(n), Csum: CsumPartial, CsumStart: 20, CsumOffset: 6}
		r.u2kProd++
	}
	r.u2kPublish()
	e.kick()
	got := recvAll(uc)
	if strings.Join(got, ",") != "g1,g2,g3,g4" {
		t.Fatalf("received %q, want g1..g4", got)
	}
	wantErr := map[string][2]uint64{
		"off": {atomic.LoadUint64(&c.ErrBadOff), 3}, "len": {atomic.LoadUint64(&c.ErrBadLen), 3},
		"proto": {atomic.LoadUint64(&c.ErrBadProto), 2}, "csum": {atomic.LoadUint64(&c.ErrBadCsum), 4},
	}
	for k, v := range wantErr {
		if v[0] != v[1] {
			t.Errorf("err_bad_%s = %d, want %d", k, v[0], v[1])
		}
	}
	if d := sysStat(t, e.Name(), "rx_errors") - rxErr0; d != 12 {
		t.Errorf("rx_errors grew by %d, want 12", d)
	}

	// Wrapped indices: a producer far ahead of the consumer, and one behind.
	for _, delta := range []uint32{r.u2kMask + 2, 0x80000000, 0xffffffff} {
		before := atomic.LoadUint64(&c.ErrBadIndex)
		cons := atomic.LoadUint32(&c.U2K.Cons)
		atomic.StoreUint32(&c.U2K.Prod, cons+delta)
		e.kick()
		time.Sleep(50 * time.Millisecond)
		if atomic.LoadUint64(&c.ErrBadIndex) != before+1 {
			t.Errorf("prod = cons+%#x: err_bad_index %d, want %d", delta, atomic.LoadUint64(&c.ErrBadIndex), before+1)
		}
		// The kernel skipped to our producer index; carry on from there.
		r.u2kProd = atomic.LoadUint32(&c.U2K.Cons)
		if r.u2kProd != cons+delta {
			t.Errorf("kernel consumer %#x, want %#x", r.u2kProd, cons+delta)
		}
		good("after")
		r.u2kPublish()
		e.kick()
		if got := recvAll(uc); strings.Join(got, ",") != "after" {
			t.Fatalf("after a bad index (delta %#x) received %q", delta, got)
		}
	}
	t.Logf("kernel counters: %+v", e.Stats())
}

// TestGuestFuzz writes random descriptors and indices while the kernel
// consumes them, then checks that good packets still flow.
func TestGuestFuzz(t *testing.T) {
	needModule(t)
	t.Run("plain", func(t *testing.T) { fuzzDev(t, Options{Name: "nusef0", MTU: 1500, K2USlots: 64, U2KSlots: 64}, 2) })
	t.Run("tso", func(t *testing.T) {
		fuzzDev(t, Options{Name: "nusef1", MTU: 1500, K2USlots: 64, U2KSlots: 64, SlotSize: 65536, TSO: true}, 4)
	})
}

func fuzzDev(t *testing.T, o Options, n int) {
	e, uc, src, dst := guestDevOpts(t, o, n)
	r := e.r
	c := r.ctrl
	rng := rand.New(rand.NewSource(1))
	deadline := time.Now().Add(3 * time.Second)
	rounds := 0
	for ; rounds < 20000 && time.Now().Before(deadline); rounds++ {
		for i := range r.u2kDesc {
			d := &r.u2kDesc[i]
			switch rng.Intn(4) {
			case 0:
				*d = Desc{Off: rng.Uint32(), Len: rng.Uint32(), Proto: uint16(rng.Uint32()), Csum: uint8(rng.Uint32())}
			case 1:
				*d = Desc{Off: uint32(rng.Intn(len(r.u2kBuf))), Len: uint32(rng.Intn(3000)), Csum: uint8(rng.Intn(3)),
					CsumStart: uint16(rng.Intn(2000)), CsumOffset: uint16(rng.Intn(2000))}
			default:
				// Random bytes in a slot that starts like an IP packet.
				off := uint32(rng.Intn(int(r.u2kMask+1))) * r.slotSize
				b := r.u2kBuf[off : off+r.slotSize]
				rng.Read(b[:64])
				b[0] = 0x45
				*d = Desc{Off: off, Len: uint32(20 + rng.Intn(int(r.slotSize)-20)), Proto: 0x0800, Csum: uint8(rng.Intn(3)),
					CsumStart: uint16(rng.Intn(64)), CsumOffset: uint16(rng.Intn(64))}
				if rng.Intn(2) == 0 {
					// A TCP-looking packet, maybe offered for GSO.
					b[9] = 6
					d.GSOType = uint8(rng.Intn(4))
					d.GSOSize = uint16(rng.Intn(2000))
					d.CsumStart = uint16(20 + rng.Intn(3)*4)
					d.CsumOffset = 16
				}
			}
		}
		cons := atomic.LoadUint32(&c.U2K.Cons)
		switch rng.Intn(3) {
		case 0:
			atomic.StoreUint32(&c.U2K.Prod, rng.Uint32())
		default:
			atomic.StoreUint32(&c.U2K.Prod, cons+uint32(rng.Intn(int(r.u2kMask+2))))
		}
		if rng.Intn(4) == 0 {
			// Also scribble over our own view of the k2u ring and the
			// flags: they are ours to break.
			atomic.StoreUint32(&c.U2K.Flags, rng.Uint32())
			atomic.StoreUint32(&c.K2U.Cons, rng.Uint32())
		}
		e.kick()
	}
	time.Sleep(100 * time.Millisecond)
	recvAll(uc) // whatever random packets got through
	// Recover: clear the descriptors, resume after the kernel's consumer.
	for i := range r.u2kDesc {
		r.u2kDesc[i] = Desc{}
	}
	atomic.StoreUint32(&c.K2U.Cons, atomic.LoadUint32(&c.K2U.Prod))
	r.u2kProd = atomic.LoadUint32(&c.U2K.Prod)
	e.kick()
	time.Sleep(100 * time.Millisecond)
	r.u2kProd = atomic.LoadUint32(&c.U2K.Cons)
	for i := 0; i < 10; i++ {
		n := copy(r.u2kSlot(), ipv4UDP(src, dst, []byte("ok"+strconv.Itoa(i))))
		r.u2kQueue(uint32(n), 0x0800, CsumNone)
	}
	r.u2kPublish()
	e.kick()
	got := recvAll(uc)
	if len(got) != 10 {
		t.Fatalf("after %d fuzz rounds received %d of 10 good packets: %q", rounds, len(got), got)
	}
	t.Logf("%d fuzz rounds; rx_errors %d; counters %+v", rounds, sysStat(t, e.Name(), "rx_errors"), e.Stats())
}

// TestGuestK2UFull fills the kernel-to-user ring with nobody reading: the
// kernel drops and counts, never blocks.
func TestGuestK2UFull(t *testing.T) {
	needModule(t)
	e, _, _, _ := guestDev(t, "nuseq0", 3)
	ku, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(10, 97, 3, 2), Port: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer ku.Close()
	for i := 0; i < 200; i++ {
		ku.Write([]byte("x"))
	}
	if d := sysStat(t, e.Name(), "tx_dropped"); d < 200-64 {
		t.Fatalf("tx_dropped %d, want at least %d", d, 200-64)
	}
	if n := sysStat(t, e.Name(), "tx_packets"); n != 64 {
		t.Fatalf("tx_packets %d, want 64 (the ring size)", n)
	}
	if f := atomic.LoadUint64(&e.r.ctrl.K2UFull); f < 200-64 {
		t.Fatalf("k2u_full %d", f)
	}
	// Reading frees the ring.
	n, _ := e.r.readK2U(1000, func(*Desc, []byte) {})
	if n != 64 {
		t.Fatalf("read %d, want 64", n)
	}
	ku.Write([]byte("y"))
	time.Sleep(50 * time.Millisecond)
	if n, _ := e.r.readK2U(1000, func(*Desc, []byte) {}); n < 1 {
		t.Fatalf("after draining, read %d, want at least 1", n)
	}
}

// TestGuestMalformedGSO sends bad GSO descriptors to a TSO device: each is
// dropped and counted, a good packet after them still arrives.
func TestGuestMalformedGSO(t *testing.T) {
	needModule(t)
	e, uc, src, dst := guestDevOpts(t, Options{Name: "nuseg0", MTU: 1500, K2USlots: 64, U2KSlots: 64, SlotSize: 65536, TSO: true}, 5)
	r := e.r
	c := r.ctrl
	big := ipv4UDP(src, dst, make([]byte, 4000))
	big[9] = 6 // "TCP"
	bad := func(d Desc) {
		n := copy(r.u2kSlot(), big)
		if d.Len == 0 {
			d.Len = uint32(n)
		}
		r.u2kQueueDesc(d)
	}
	before := atomic.LoadUint64(&c.ErrBadCsum) + atomic.LoadUint64(&c.ErrBadLen)
	bad(Desc{Proto: 0x0800, Csum: CsumNone, GSOType: GSOTCPv4, GSOSize: 1400})                                   // no partial csum
	bad(Desc{Proto: 0x0800, Csum: CsumPartial, CsumStart: 20, CsumOffset: 16, GSOType: GSOTCPv4})                // gso_size 0
	bad(Desc{Proto: 0x0800, Csum: CsumPartial, CsumStart: 20, CsumOffset: 16, GSOType: GSOTCPv4, GSOSize: 9000}) // over the MTU
	bad(Desc{Proto: 0x0800, Csum: CsumPartial, CsumStart: 20, CsumOffset: 16, GSOType: GSOTCPv6, GSOSize: 1400}) // v6 type, v4 packet
	bad(Desc{Proto: 0x0800, Csum: CsumPartial, CsumStart: 20, CsumOffset: 6, GSOType: GSOTCPv4, GSOSize: 1400})  // not the TCP checksum
	bad(Desc{Proto: 0x0800, Csum: CsumPartial, CsumStart: 20, CsumOffset: 16, GSOType: 7, GSOSize: 1400})        // unknown type
	bad(Desc{Proto: 0x0800, Csum: CsumUnnecessary, GSOSize: 1400})                                               // size without type
	bad(Desc{Proto: 0x0800, Len: 70000, Csum: CsumPartial, CsumStart: 20, CsumOffset: 16, GSOType: GSOTCPv4, GSOSize: 1400})
	n := copy(r.u2kSlot(), ipv4UDP(src, dst, []byte("good")))
	r.u2kQueue(uint32(n), 0x0800, CsumNone)
	r.u2kPublish()
	e.kick()
	if got := recvAll(uc); strings.Join(got, ",") != "good" {
		t.Fatalf("received %q, want good", got)
	}
	if d := atomic.LoadUint64(&c.ErrBadCsum) + atomic.LoadUint64(&c.ErrBadLen) - before; d != 8 {
		t.Fatalf("%d bad descriptors counted, want 8", d)
	}
}

// TestGuestChurn attaches to and detaches from a persistent device, and
// deletes it, while the kernel transmits on it and user space injects and
// kicks: the attach/detach paths against the data paths.
func TestGuestChurn(t *testing.T) {
	needModule(t)
	e, err := Open(Options{Name: "nusec0", Persist: true})
	if err != nil {
		t.Fatal(err)
	}
	host := netip.MustParsePrefix("10.97.6.1/24")
	if err := ConfigureHost("nusec0", netdev.Config{HostAddrs: []netip.Prefix{host}}); err != nil {
		t.Fatal(err)
	}
	e.Close()
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(10, 97, 6, 2), Port: 9})
		if err != nil {
			return
		}
		defer c.Close()
		for !stop.Load() {
			c.Write([]byte("churn"))
		}
	}()
	pkt := ipv4UDP(netip.MustParseAddrPort("10.97.6.2:7"), netip.MustParseAddrPort("10.97.6.1:9"), []byte("in"))
	rng := rand.New(rand.NewSource(3))
	deadline := time.Now().Add(4 * time.Second)
	i := 0
	for ; i < 200 && time.Now().Before(deadline); i++ {
		if i%25 == 24 {
			// Delete it under an attached file, then make it again.
			e, err := Open(Options{Name: "nusec0"})
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			l, _ := netlink.LinkByName("nusec0")
			go netlink.LinkDel(l)
			for j := 0; j < 100; j++ {
				ioctl(e.fd, iocKick, nil)
			}
			time.Sleep(10 * time.Millisecond)
			e.Close()
			if e, err = Open(Options{Name: "nusec0", Persist: true}); err != nil {
				t.Fatalf("round %d: recreate: %v", i, err)
			}
			ConfigureHost("nusec0", netdev.Config{HostAddrs: []netip.Prefix{host}})
			e.Close()
			continue
		}
		e, err := Open(Options{Name: "nusec0"})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		r := e.r
		end := time.Now().Add(time.Duration(1+rng.Intn(4)) * time.Millisecond)
		for time.Now().Before(end) {
			r.readK2U(64, func(*Desc, []byte) {})
			for r.u2kFree() > 0 && rng.Intn(8) != 0 {
				n := copy(r.u2kSlot(), pkt)
				r.u2kQueue(uint32(n), 0x0800, CsumNone)
			}
			r.u2kPublish()
			e.kick()
		}
		e.Close()
	}
	stop.Store(true)
	<-done
	if l, err := netlink.LinkByName("nusec0"); err == nil {
		netlink.LinkDel(l)
	}
	t.Logf("%d attach/detach rounds", i)
}

// TestGuestSmallHeads checks the heads of small packets (1 KiB pieces of a
// page the device reuses once all its pieces are back, kmod/nuse.c): a
// UDP socket holds on to some of the packets while more arrive, and every
// packet read back is intact and in order, small and large alike.
func TestGuestSmallHeads(t *testing.T) {
	needModule(t)
	e, uc, src, dst := guestDev(t, "nuseh0", 7)
	r := e.r
	rng := rand.New(rand.NewSource(7))
	payload := func(seq int) []byte {
		// 4..703 bytes: packets both sides of the small-head limit.
		n := 4 + (seq*37)%700
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(seq*7 + i)
		}
		binary.BigEndian.PutUint32(p, uint32(seq))
		return p
	}
	b := make([]byte, 2048)
	sent, got := 0, 0
	readOne := func() {
		uc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := uc.ReadFrom(b)
		if err != nil {
			t.Fatalf("packet %d of %d sent: %v", got, sent, err)
		}
		if want := payload(got); string(b[:n]) != string(want) {
			t.Fatalf("packet %d (%d bytes) is not the one sent (%d bytes)", got, n, len(want))
		}
		got++
	}
	deadline := time.Now().Add(5 * time.Second)
	for round := 0; round < 300 && time.Now().Before(deadline); round++ {
		// Keep at most a few hundred queued in the socket (1 MiB).
		for k := rng.Intn(int(r.u2kMask) + 1); k > 0 && sent-got < 300 && r.u2kFree() > 0; k-- {
			n := copy(r.u2kSlot(), ipv4UDP(src, dst, payload(sent)))
			r.u2kQueue(uint32(n), 0x0800, CsumNone)
			sent++
		}
		r.u2kPublish()
		e.kick()
		for k := rng.Intn(sent - got + 1); k > 0; k-- {
			readOne()
		}
	}
	for got < sent {
		readOne()
	}
	if e := sysStat(t, e.Name(), "rx_errors"); e != 0 {
		t.Fatalf("rx_errors %d", e)
	}
	t.Logf("%d packets, all intact", sent)
}
