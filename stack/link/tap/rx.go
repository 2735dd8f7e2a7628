package tap

// rx.go owns the receive side of the TAP endpoint: the daemon's workers
// read the device in their passes (poll), and one goroutine reads it when
// they do not, sleeping in a poll that gives its thread's P back to the Go
// scheduler and that wakes the sleeping workers when a packet comes
// (pollKick, kick_amd64.go). Whoever reads hands the frames to the stack
// on its own thread, one reader at a time (frames of a flow stay in
// order).
//
// While a worker is awake (polled) the goroutine does not watch the
// device: it waits on a channel until the workers sleep. Had it slept in
// its poll all along, every frame would wake its thread while the worker
// polled anyway; on a daemon with one P that thread then waits for the
// P, and its next poll hands the P (and the worker) to yet another
// thread: two thread wake-ups per frame. A NUSE redis-benchmark -c 20
// against a kernel redis through the TAP made 26.0k requests/s so and
// makes 29.8k now (four rounds alternating). With a P to spare (--procs)
// the reader still reads beside the workers, which is faster again on
// the TAP and slower on the stack's loopback (README).
//
// Why not fdbased's reader: it sleeps in ppoll through syscall.Syscall6,
// which keeps the P. On a small machine nused runs its worker and the
// stack's goroutines on one P (--procs auto), so while the reader slept
// the worker could not run until the runtime's monitor took the P back,
// tens of microseconds to milliseconds later, once per packet the kernel
// sent: a NUSE redis-benchmark -c 1 against a kernel redis through the TAP
// made about 2,300 requests/s, against 13,000 for the kernel's own client.

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/nuse-project/nuse/internal/futex"
)

// smallView is the first part of every read: a frame that fits takes no
// more memory than it (the stack accounts segments by their buffers).
const smallView = 2048

// endpoint sends through fdbased's endpoint (writev per frame, its header
// and checksum handling) and never attaches it, so that it starts no
// reader of its own: frames come in through rx.
type endpoint struct {
	nested.Endpoint
	fd  int // non-blocking; owned by Open's caller
	mac tcpip.LinkAddress

	mu     sync.Mutex // serializes Attach
	stopFD int        // an eventfd that ends the reader goroutine
	stop   chan struct{}
	done   chan struct{}

	// polledNow: a worker reads the device every pass; watch takes a
	// token when that ends (polled).
	polledNow atomic.Bool
	watch     chan struct{}

	// disp is the attached dispatcher (nil: detached), loaded without
	// a lock by poll.
	disp atomic.Pointer[stack.NetworkDispatcher]
	// rxmu makes one reader at a time; it guards the read buffers.
	rxmu  sync.Mutex
	views [2]*buffer.View
	iov   [2]unix.Iovec
}

var _ stack.LinkEndpoint = (*endpoint)(nil)

// maxFrame is the largest Ethernet frame a TAP device hands over: the
// largest MTU (ETH_MAX_MTU) and the header.
const maxFrame = 0xFFFF + header.EthernetMinimumSize

// viewSizes are the two parts of every read: room for the largest frame
// a TAP carries, whatever the MTU is now (`ip link set nuse0 mtu ...` may
// raise the kernel's side later).
var viewSizes = [2]int{smallView, maxFrame - smallView}

// batch is the most frames one turn reads before it lets go of rxmu.
const batch = 64

func newEndpoint(child stack.LinkEndpoint, fd int, mac tcpip.LinkAddress) *endpoint {
	e := &endpoint{fd: fd, mac: mac, stopFD: -1, watch: make(chan struct{}, 1)}
	e.Endpoint.Init(child, e)
	return e
}

// Attach implements stack.LinkEndpoint: it starts (or, with nil, stops and
// waits for) the reader goroutine. The child is never attached.
func (e *endpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if d == nil {
		if e.disp.Swap(nil) == nil {
			return
		}
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(e.stopFD, one[:])
		close(e.stop)
		<-e.done
		unix.Close(e.stopFD)
		e.stopFD = -1
		// A poll that loaded the dispatcher before it went finishes
		// its turn before we return.
		e.rxmu.Lock()
		e.release()
		e.rxmu.Unlock()
		return
	}
	if e.disp.Load() != nil {
		return
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		// No reader: the device stays deaf, and says why once.
		println("nuse: tap: no eventfd for the reader:", err.Error())
		return
	}
	e.stopFD, e.stop, e.done = efd, make(chan struct{}), make(chan struct{})
	e.disp.Store(&d)
	go e.reader(efd, e.stop, e.done)
}

// polled is netdev.Device.Polled: on, a worker polls the device every
// pass; off, the reader goroutine must watch it (it is woken for that).
func (e *endpoint) polled(on bool) {
	e.polledNow.Store(on)
	if !on {
		select {
		case e.watch <- struct{}{}:
		default: // a token is there already
		}
	}
}

// IsAttached implements stack.LinkEndpoint.
func (e *endpoint) IsAttached() bool { return e.disp.Load() != nil }

// Wait implements stack.LinkEndpoint: Attach(nil) already waited.
func (e *endpoint) Wait() {}

// poll is netdev.Device.Poll: a worker's turn at the device. It never
// waits for the reader goroutine: if that one is reading, its frames are
// on their way anyway.
func (e *endpoint) poll() bool {
	d := e.disp.Load()
	if d == nil || !e.rxmu.TryLock() {
		return false
	}
	n, _ := e.drain(*d)
	e.rxmu.Unlock()
	return n > 0
}

// reader reads when no worker does, until stopFD is written (and stop
// closed).
func (e *endpoint) reader(stopFD int, stop, done chan struct{}) {
	defer close(done)
	polls := [2]rawfile.PollEvent{{FD: int32(e.fd), Events: unix.POLLIN}, {FD: int32(stopFD), Events: unix.POLLIN}}
	for {
		d := e.disp.Load()
		if d == nil {
			return
		}
		if e.polledNow.Load() {
			// A worker reads the device (and was kicked if we woke for
			// a frame); polled(false) leaves a token when that ends, so
			// a change after our load is not lost.
			select {
			case <-e.watch:
			case <-stop:
				return
			}
			continue
		}
		e.rxmu.Lock()
		n, err := e.drain(*d)
		e.rxmu.Unlock()
		switch {
		case n == batch:
			continue // more may wait
		case err != unix.EAGAIN && err != unix.EINTR && err != 0:
			return // the device is gone
		}
		polls[0].Revents, polls[1].Revents = 0, 0
		// Gives the P back while it sleeps, and wakes the workers for
		// a packet before it asks for a P again (kick_amd64.go).
		if _, perr := pollKick(&polls[0], len(polls), &futex.Kick); perr != 0 && perr != unix.EINTR {
			return
		}
		if polls[1].Revents != 0 {
			return
		}
	}
}

// drain reads and delivers up to batch frames; it returns how many it
// read and the error that stopped it (EAGAIN: nothing more waits), 0 when
// it stopped at batch. Called with rxmu held.
func (e *endpoint) drain(d stack.NetworkDispatcher) (int, unix.Errno) {
	for n := 0; n < batch; n++ {
		for i := range e.views {
			if e.views[i] == nil {
				e.views[i] = buffer.NewViewSize(viewSizes[i])
				e.iov[i].Base = &e.views[i].AsSlice()[0]
				e.iov[i].SetLen(viewSizes[i])
			}
		}
		r, _, err := unix.RawSyscall(unix.SYS_READV, uintptr(e.fd), uintptr(unsafe.Pointer(&e.iov[0])), uintptr(len(e.iov)))
		if err != 0 {
			return n, err
		}
		if int(r) <= 0 {
			return n, unix.EIO // a TAP reads no empty frames: it is gone
		}
		var data buffer.Buffer
		for i, left := 0, int(r); i < len(e.views) && left > 0; i++ {
			take := min(left, viewSizes[i])
			e.views[i].CapLength(take)
			data.Append(e.views[i])
			e.views[i], left = nil, left-take
		}
		e.deliver(d, data)
	}
	return batch, 0
}

// release gives back the read buffers. Called with rxmu held.
func (e *endpoint) release() {
	for i, v := range e.views {
		if v != nil {
			v.Release()
			e.views[i] = nil
		}
	}
}

// deliver hands one Ethernet frame to the stack, if it is for us.
func (e *endpoint) deliver(d stack.NetworkDispatcher, data buffer.Buffer) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: data})
	defer pkt.DecRef()
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if !ok {
		return
	}
	eth := header.Ethernet(hdr)
	// Ours, or group-addressed (the low bit of the first octet).
	if dst := eth.DestinationAddress(); dst != e.mac && dst[0]&1 == 0 {
		return
	}
	pkt.NetworkProtocolNumber = eth.Type()
	d.DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
}
