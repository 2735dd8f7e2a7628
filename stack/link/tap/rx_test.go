package tap

import (
	"bytes"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/refs"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/nuse-project/nuse/internal/futex"
)

// A packet or buffer chunk the reader forgets to release fails the run.
func TestMain(m *testing.M) {
	refs.SetLeakMode(refs.LeaksPanic)
	code := m.Run()
	refs.DoLeakCheck()
	os.Exit(code)
}

// got records what the reader delivers.
type got struct {
	mu    sync.Mutex
	proto []tcpip.NetworkProtocolNumber
	data  [][]byte
	ch    chan struct{}
}

func (g *got) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	g.mu.Lock()
	g.proto = append(g.proto, p)
	g.data = append(g.data, pkt.Data().AsRange().ToSlice())
	g.mu.Unlock()
	g.ch <- struct{}{}
}

func (g *got) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func frame(dst, src tcpip.LinkAddress, proto tcpip.NetworkProtocolNumber, payload []byte) []byte {
	b := make([]byte, header.EthernetMinimumSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: src, DstAddr: dst, Type: proto})
	copy(b[header.EthernetMinimumSize:], payload)
	return b
}

var (
	mine  = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01")
	other = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
)

// device is a datagram socketpair standing in for a TAP: the endpoint
// reads fds[0] (non-blocking, as fdbased leaves a TAP's fd), the test
// writes frames into fds[1].
func device(t *testing.T) [2]int {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	return fds
}

// The reader on a datagram socketpair standing in for the device: frames
// for us and group-addressed ones reach the stack whole, others and runts
// do not, and Attach(nil) stops it.
func TestReader(t *testing.T) {
	fds := device(t)
	bcast := tcpip.LinkAddress("\xff\xff\xff\xff\xff\xff")
	const mtu = 9000
	e := newEndpoint(channel.New(1, mtu, mine), fds[0], mine)
	g := &got{ch: make(chan struct{}, 16)}
	e.Attach(g)
	if !e.IsAttached() {
		t.Fatal("not attached after Attach")
	}

	// Spans both views, near the largest frame (an MTU raised later).
	big := bytes.Repeat([]byte("0123456789abcdef"), (maxFrame-header.EthernetMinimumSize)/16)
	small := []byte("a small one")
	send := func(b []byte) {
		if _, err := unix.Write(fds[1], b); err != nil {
			t.Fatal(err)
		}
	}
	send(frame(other, mine, header.IPv4ProtocolNumber, small)) // not ours
	send([]byte{1, 2, 3})                                      // a runt
	send(frame(mine, other, header.IPv4ProtocolNumber, small))
	send(frame(bcast, other, header.ARPProtocolNumber, small))
	send(frame(mine, other, header.IPv6ProtocolNumber, big))
	for i := 0; i < 3; i++ {
		select {
		case <-g.ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of 3 frames delivered", i)
		}
	}
	e.Attach(nil)
	if e.IsAttached() {
		t.Fatal("attached after Attach(nil)")
	}
	send(frame(mine, other, header.IPv4ProtocolNumber, small)) // nobody reads it now
	time.Sleep(20 * time.Millisecond)

	g.mu.Lock()
	defer g.mu.Unlock()
	want := []struct {
		p tcpip.NetworkProtocolNumber
		d []byte
	}{{header.IPv4ProtocolNumber, small}, {header.ARPProtocolNumber, small}, {header.IPv6ProtocolNumber, big}}
	if len(g.data) != len(want) {
		t.Fatalf("%d frames delivered, want %d", len(g.data), len(want))
	}
	for i, w := range want {
		if g.proto[i] != w.p || !bytes.Equal(g.data[i], w.d) {
			t.Errorf("frame %d: protocol %d, %d bytes; want protocol %d, %d bytes", i, g.proto[i], len(g.data[i]), w.p, len(w.d))
		}
	}
	// Attach again: a new reader takes the frame left in the socket.
	g.mu.Unlock()
	e.Attach(g)
	select {
	case <-g.ch:
	case <-time.After(10 * time.Second):
		t.Error("a reattached reader read nothing")
	}
	e.Attach(nil)
	g.mu.Lock()
}

// A worker's turn (poll) reads everything waiting, delivers it in order,
// and says whether there was anything.
func TestPoll(t *testing.T) {
	fds := device(t)
	e := newEndpoint(channel.New(1, 1500, mine), fds[0], mine)
	if e.poll() {
		t.Fatal("poll before Attach read something")
	}
	// Attached by hand, with no reader goroutine: only poll reads.
	g := &got{ch: make(chan struct{}, 2*batch)}
	var d stack.NetworkDispatcher = g
	e.disp.Store(&d)
	if e.poll() {
		t.Fatal("poll of an empty device said it read something")
	}
	const n = batch + 5 // more than one turn's worth
	for i := 0; i < n; i++ {
		if _, err := unix.Write(fds[1], frame(mine, other, header.IPv4ProtocolNumber, []byte{byte(i)})); err != nil {
			t.Fatal(err)
		}
	}
	turns := 0
	for e.poll() {
		turns++
	}
	if turns != 2 {
		t.Errorf("%d turns read %d frames, want 2", turns, n)
	}
	g.mu.Lock()
	if len(g.data) != n {
		t.Fatalf("%d frames delivered, want %d", len(g.data), n)
	}
	for i, b := range g.data {
		if len(b) != 1 || b[0] != byte(i) {
			t.Fatalf("frame %d carries %v: out of order", i, b)
		}
	}
	g.mu.Unlock()
	e.rxmu.Lock()
	e.release()
	e.rxmu.Unlock()
}

// The reader wakes the sleeping workers for a packet (futex.Kick), so that
// one takes it in its pass: a waiter on the word returns when a frame
// comes, and the word moved.
func TestReaderKicksWorkers(t *testing.T) {
	fds := device(t)
	e := newEndpoint(channel.New(1, 1500, mine), fds[0], mine)
	g := &got{ch: make(chan struct{}, 4)}
	e.Attach(g)
	defer e.Attach(nil)
	time.Sleep(10 * time.Millisecond) // let the reader reach its poll

	before := atomic.LoadUint32(&futex.Kick)
	woke := make(chan error, 1)
	go func() {
		var w futex.Waitv
		w.Add(&futex.Kick, before)
		woke <- w.Wait(10 * time.Second)
	}()
	time.Sleep(10 * time.Millisecond) // let the waiter sleep
	if _, err := unix.Write(fds[1], frame(mine, other, header.IPv4ProtocolNumber, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the frame was not delivered")
	}
	// nil: woken; EAGAIN: the word had moved before it slept. Either is
	// the kick; ETIMEDOUT is not.
	if err := <-woke; err != nil && err != unix.EAGAIN {
		t.Fatalf("a worker asleep on futex.Kick: %v", err)
	}
	if atomic.LoadUint32(&futex.Kick) == before {
		t.Fatal("futex.Kick did not move for a frame")
	}
}

// While a worker polls the device (polled(true)) the reader leaves it to
// that worker: a frame waits for a poll. When the workers sleep
// (polled(false)) the reader watches again and delivers it itself; Attach(nil)
// ends a reader parked on the workers too.
func TestReaderLeavesDeviceToAwakeWorkers(t *testing.T) {
	fds := device(t)
	e := newEndpoint(channel.New(1, 1500, mine), fds[0], mine)
	g := &got{ch: make(chan struct{}, 4)}
	e.polled(true)
	e.Attach(g)
	send := func(b byte) {
		t.Helper()
		if _, err := unix.Write(fds[1], frame(mine, other, header.IPv4ProtocolNumber, []byte{b})); err != nil {
			t.Fatal(err)
		}
	}
	send(1)
	select {
	case <-g.ch:
		t.Fatal("the reader took a frame while a worker polled the device")
	case <-time.After(50 * time.Millisecond):
	}
	if !e.poll() {
		t.Fatal("the worker's poll found nothing")
	}
	<-g.ch
	e.polled(false)
	send(2)
	select {
	case <-g.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("with the workers asleep the reader did not deliver the frame")
	}
	e.polled(true)
	send(3) // the reader may take this one (it was in its poll) or not
	time.Sleep(20 * time.Millisecond)
	done := make(chan struct{})
	go func() { e.Attach(nil); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Attach(nil) did not end a reader parked on the workers")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.data) < 2 || g.data[0][0] != 1 || g.data[1][0] != 2 {
		t.Fatalf("delivered %v", g.data)
	}
}
