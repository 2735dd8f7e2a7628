// Package kmod is a gVisor link endpoint over /dev/nuse, the NUSE kernel
// module's device (kmod/): a layer-3 network device whose packets move
// through two rings in shared memory instead of one read()/write() per
// packet as with TAP. It registers the netdev kind "kmod".
package kmod

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ErrNoDevice is returned (wrapped) by Open when the module is not loaded.
var ErrNoDevice = errors.New(DevPath + " not found: load nuse.ko (modprobe nuse) or use --netdev tap")

// Options configure Open.
type Options struct {
	// Name of the device: a name, a pattern with %d, or "" for nuse%d. An
	// existing unattached NUSE device of that name is attached to.
	Name string
	// MTU of the device (default 1500).
	MTU uint32
	// Persist keeps the device after the endpoint closes.
	Persist bool
	// TSO moves TCP segments of up to SlotSize bytes in one descriptor,
	// both ways: the kernel hands over unsegmented TCP (gVisor takes it as
	// it is) and segments what gVisor sends with host GSO. Needs SlotSize
	// 65536 to be worth it.
	TSO bool
	// K2USlots and U2KSlots size the rings (powers of two; 0 = 512).
	K2USlots, U2KSlots uint32
	// SlotSize is the room per packet (0 = the MTU rounded up to a power
	// of two, at least 2048).
	SlotSize uint32
	// Batch is how many packets the reader delivers per pass (default 64).
	Batch int
	// Spin is how long the reader polls the ring before it sleeps in
	// poll(2) (default 20µs; 0 = the default, negative = no spinning).
	Spin time.Duration
	// DevPath overrides /dev/nuse.
	DevPath string
}

// Stats are the endpoint's counters.
type Stats struct {
	RxPackets, TxPackets uint64 // gVisor's view: received from / sent to the kernel
	TxFull               uint64 // packets dropped because u2k stayed full
	TxTooBig             uint64 // packets larger than a slot
	RxBad                uint64 // k2u descriptors skipped as malformed
	Kicks, Sleeps        uint64 // u2k kicks made, reader sleeps in poll
	// Kernel-side counters from the shared control page.
	KernelK2UFull, KernelBadDesc uint64
}

// Endpoint is a stack.LinkEndpoint over /dev/nuse.
type Endpoint struct {
	fd      int
	stopFd  int
	mem     []byte
	r       *rings
	name    string
	ifindex int
	batch   int
	spin    time.Duration
	tso     bool
	mtu     atomic.Uint32

	wmu sync.Mutex // writers (u2k producer)

	dmu        sync.RWMutex
	dispatcher stack.NetworkDispatcher
	wg         sync.WaitGroup
	started    bool
	closed     atomic.Bool
	gone       atomic.Bool // the kernel deleted the device
	onClose    func()

	rxPackets, txPackets, txFull, txTooBig, rxBad, kicks, sleeps atomic.Uint64
}

var (
	_ stack.LinkEndpoint = (*Endpoint)(nil)
	_ stack.GSOEndpoint  = (*Endpoint)(nil)
)

// Open opens /dev/nuse, creates (or attaches to) the device and maps its
// rings. The device starts down: bring it up (and give it addresses) with
// netlink; see the "kmod" netdev kind.
func Open(o Options) (*Endpoint, error) {
	path := o.DevPath
	if path == "" {
		path = DevPath
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("%w (%v)", ErrNoDevice, err)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	e := &Endpoint{fd: fd, stopFd: -1, batch: o.Batch, spin: o.Spin}
	if e.batch <= 0 {
		e.batch = 64
	}
	if e.spin == 0 {
		e.spin = 20 * time.Microsecond
	}
	s := Setup{Version: UAPIVersion, MTU: o.MTU, K2USlots: o.K2USlots, U2KSlots: o.U2KSlots, SlotSize: o.SlotSize}
	if o.Persist {
		s.Flags |= FlagPersist
	}
	if o.TSO {
		s.Flags |= FlagTSO
		e.tso = true
	}
	if len(o.Name) >= len(s.Name) {
		unix.Close(fd)
		return nil, fmt.Errorf("device name %q too long", o.Name)
	}
	copy(s.Name[:], o.Name)
	if err := ioctl(fd, iocCreate, unsafe.Pointer(&s)); err != nil {
		unix.Close(fd)
		why := ""
		switch {
		case errors.Is(err, unix.EEXIST):
			why = " (a network device of that name exists and is not a NUSE device)"
		case errors.Is(err, unix.EBUSY):
			why = " (the device is attached to another process)"
		case errors.Is(err, unix.EPERM):
			why = " (needs CAP_NET_ADMIN)"
		case errors.Is(err, unix.EPROTO):
			why = " (nuse.ko speaks another uapi version)"
		}
		return nil, fmt.Errorf("%s: create device %q: %w%s", path, o.Name, err, why)
	}
	mem, err := unix.Mmap(fd, 0, int(s.MmapSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: mmap %d bytes: %w", path, s.MmapSize, err)
	}
	e.mem = mem
	if e.r, err = newRings(mem, &s); err != nil {
		e.release()
		return nil, err
	}
	if v := atomic.LoadUint32(&e.r.ctrl.Version); v != UAPIVersion {
		e.release()
		return nil, fmt.Errorf("nuse.ko speaks uapi %d, this program %d", v, UAPIVersion)
	}
	e.stopFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		e.release()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	n := 0
	for n < len(s.Name) && s.Name[n] != 0 {
		n++
	}
	e.name = string(s.Name[:n])
	e.ifindex = int(s.Ifindex)
	e.mtu.Store(s.MTU)
	if e.mtu.Load() == 0 {
		e.mtu.Store(1500)
	}
	return e, nil
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

func (e *Endpoint) release() {
	if e.mem != nil {
		unix.Munmap(e.mem)
		e.mem = nil
	}
	if e.fd >= 0 {
		unix.Close(e.fd)
		e.fd = -1
	}
	if e.stopFd >= 0 {
		unix.Close(e.stopFd)
		e.stopFd = -1
	}
}

// Name is the kernel's name of the device (nuse0).
func (e *Endpoint) Name() string { return e.name }

// Ifindex is the device's interface index.
func (e *Endpoint) Ifindex() int { return e.ifindex }

// Fd is the /dev/nuse file descriptor (for tests).
func (e *Endpoint) Fd() int { return e.fd }

// SetPersist changes whether the device outlives the endpoint.
func (e *Endpoint) SetPersist(on bool) error {
	v := int32(0)
	if on {
		v = 1
	}
	return ioctl(e.fd, iocSetPersist, unsafe.Pointer(&v))
}

// Stats returns the counters.
func (e *Endpoint) Stats() Stats {
	s := Stats{
		RxPackets: e.rxPackets.Load(), TxPackets: e.txPackets.Load(), TxFull: e.txFull.Load(),
		TxTooBig: e.txTooBig.Load(), RxBad: e.rxBad.Load(), Kicks: e.kicks.Load(), Sleeps: e.sleeps.Load(),
	}
	if e.r != nil {
		c := e.r.ctrl
		s.KernelK2UFull = atomic.LoadUint64(&c.K2UFull)
		s.KernelBadDesc = atomic.LoadUint64(&c.ErrBadIndex) + atomic.LoadUint64(&c.ErrBadOff) +
			atomic.LoadUint64(&c.ErrBadLen) + atomic.LoadUint64(&c.ErrBadProto) + atomic.LoadUint64(&c.ErrBadCsum)
	}
	return s
}

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint. It changes gVisor's view only; the
// kernel side's MTU is set with netlink (and cannot exceed the slot size).
func (e *Endpoint) SetMTU(mtu uint32) {
	if mtu <= e.r.slotSize {
		e.mtu.Store(mtu)
	}
}

// MaxHeaderLength implements stack.LinkEndpoint: no link header.
func (*Endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: none.
func (*Endpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (*Endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint. The kernel hands over
// checksum-offloaded (partial) packets, so received checksums are not
// verified; sent packets carry full checksums, marked good for the kernel.
func (*Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// ARPHardwareType implements stack.LinkEndpoint.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (*Endpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (*Endpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *Endpoint) SetOnCloseAction(f func()) { e.onClose = f }

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool {
	e.dmu.RLock()
	defer e.dmu.RUnlock()
	return e.dispatcher != nil
}

// Attach implements stack.LinkEndpoint: starts the reader on the first
// attach; a nil dispatcher drops what arrives.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	e.dmu.Lock()
	e.dispatcher = d
	start := d != nil && !e.started && !e.closed.Load()
	if start {
		e.started = true
		e.wg.Add(1)
	}
	e.dmu.Unlock()
	if start {
		go e.readLoop()
	}
}

// Wait implements stack.LinkEndpoint. The reader stops only when the
// endpoint is closed, so before Close there is nothing to wait for (the
// stack's Destroy calls Wait before the owner closes the device).
func (e *Endpoint) Wait() {
	if e.closed.Load() {
		e.wg.Wait()
	}
}

// Close implements stack.LinkEndpoint: stops the reader, unmaps the rings
// and closes the device (which deletes it unless persistent).
func (e *Endpoint) Close() {
	if e.closed.Swap(true) {
		return
	}
	if e.onClose != nil {
		e.onClose()
	}
	one := [8]byte{1}
	unix.Write(e.stopFd, one[:])
	e.wg.Wait()
	e.wmu.Lock()
	e.release()
	e.wmu.Unlock()
}

type rxPkt struct {
	proto tcpip.NetworkProtocolNumber
	buf   buffer.Buffer
}

func (e *Endpoint) readLoop() {
	defer e.wg.Done()
	batch := make([]rxPkt, 0, e.batch)
	pfd := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}, {Fd: int32(e.stopFd), Events: unix.POLLIN}}
	for !e.closed.Load() {
		batch = batch[:0]
		_, bad := e.r.readK2U(e.batch, func(d *Desc, pkt []byte) {
			var proto tcpip.NetworkProtocolNumber
			switch d.Proto {
			case uint16(header.IPv4ProtocolNumber):
				proto = ipv4.ProtocolNumber
			case uint16(header.IPv6ProtocolNumber):
				proto = ipv6.ProtocolNumber
			default:
				e.rxBad.Add(1)
				return
			}
			batch = append(batch, rxPkt{proto, buffer.MakeWithData(pkt)})
		})
		if bad > 0 {
			e.rxBad.Add(uint64(bad))
		}
		if len(batch) > 0 {
			e.deliver(batch)
			continue
		}
		if e.spin > 0 {
			deadline := time.Now().Add(e.spin)
			for !e.r.k2uPending() && time.Now().Before(deadline) {
				runtime.Gosched()
			}
			if e.r.k2uPending() {
				continue
			}
		}
		e.sleeps.Add(1)
		pfd[0].Revents, pfd[1].Revents = 0, 0
		_, err := unix.Poll(pfd, -1)
		if err != nil && err != unix.EINTR {
			return
		}
		if pfd[1].Revents != 0 {
			return
		}
		if pfd[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			// The device was deleted under us.
			e.gone.Store(true)
			return
		}
	}
}

func (e *Endpoint) deliver(batch []rxPkt) {
	e.dmu.RLock()
	d := e.dispatcher
	e.dmu.RUnlock()
	for i := range batch {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: batch[i].buf})
		if d != nil {
			d.DeliverNetworkPacket(batch[i].proto, pkt)
			e.rxPackets.Add(1)
		}
		pkt.DecRef()
	}
}

// fullWait bounds how long a writer waits for u2k room before dropping.
const fullWait = 2 * time.Millisecond

// WritePackets implements stack.LinkWriter: copies the packets into the
// u2k ring, publishes them at once and kicks the kernel if it sleeps.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if e.r == nil || e.closed.Load() {
		return 0, &tcpip.ErrClosedForSend{}
	}
	if e.gone.Load() {
		e.txFull.Add(uint64(pkts.Len()))
		return 0, &tcpip.ErrClosedForSend{}
	}
	r := e.r
	n := 0
	queued := 0
	for _, pkt := range pkts.AsSlice() {
		size := pkt.Size()
		if size > int(r.slotSize) || size == 0 {
			e.txTooBig.Add(1)
			n++
			continue
		}
		if r.u2kFree() == 0 && !e.waitRoom(&queued) {
			e.txFull.Add(uint64(pkts.Len() - n))
			break
		}
		slot := r.u2kSlot()
		off := 0
		for _, v := range pkt.AsSlices() {
			off += copy(slot[off:], v)
		}
		var proto uint16
		switch pkt.NetworkProtocolNumber {
		case ipv4.ProtocolNumber:
			proto = uint16(header.IPv4ProtocolNumber)
		case ipv6.ProtocolNumber:
			proto = uint16(header.IPv6ProtocolNumber)
		}
		d := Desc{Len: uint32(off), Proto: proto, Csum: CsumUnnecessary}
		if g := &pkt.GSOOptions; g.Type != stack.GSONone {
			// Host GSO: the TCP checksum holds the pseudo-header sum
			// only; the kernel (or the segmentation) finishes it.
			if g.NeedsCsum {
				d.Csum = CsumPartial
				d.CsumStart = g.L3HdrLen
				d.CsumOffset = g.CsumOffset
			}
			if pkt.Data().Size() > int(g.MSS) {
				d.GSOSize = g.MSS
				d.GSOType = GSOTCPv4
				if g.Type == stack.GSOTCPv6 {
					d.GSOType = GSOTCPv6
				}
			}
		}
		r.u2kQueueDesc(d)
		queued++
		n++
	}
	if queued > 0 {
		e.publish()
		e.txPackets.Add(uint64(queued))
	}
	return n, nil
}

func (e *Endpoint) publish() {
	if e.r.u2kPublish() {
		e.kickNow()
	}
}

// kickNow tells the kernel to poll u2k. ENXIO means the device was deleted
// under us: from then on writes are dropped at once.
func (e *Endpoint) kickNow() {
	e.kicks.Add(1)
	if err := ioctl(e.fd, iocKick, nil); errors.Is(err, unix.ENXIO) {
		e.gone.Store(true)
	}
}

// waitRoom publishes what is queued, kicks the kernel and waits (bounded)
// for a free u2k slot.
func (e *Endpoint) waitRoom(queued *int) bool {
	if *queued > 0 {
		e.publish()
		e.txPackets.Add(uint64(*queued))
		*queued = 0
	}
	e.kickNow()
	deadline := time.Now().Add(fullWait)
	for e.r.u2kFree() == 0 {
		if e.gone.Load() || time.Now().After(deadline) {
			return false
		}
		runtime.Gosched()
	}
	return true
}

// GSOMaxSize implements stack.GSOEndpoint: the largest packet gVisor may
// hand over for segmentation (a slot, less room for headers gVisor adds
// beyond its payload limit).
func (e *Endpoint) GSOMaxSize() uint32 {
	if !e.tso {
		return 0
	}
	return min(e.r.slotSize, 65536) - 128
}

// SupportedGSO implements stack.GSOEndpoint: host GSO when the device was
// opened with TSO (the kernel segments what gVisor sends).
func (e *Endpoint) SupportedGSO() stack.SupportedGSO {
	if !e.tso {
		return stack.GSONotSupported
	}
	return stack.HostGSOSupported
}

// DevicePresent reports whether /dev/nuse exists.
func DevicePresent() bool {
	_, err := os.Stat(DevPath)
	return err == nil
}
