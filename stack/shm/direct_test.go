package shm

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
)

// The direct path as the daemon drives it: the test plays the programs,
// writing the region through a mapping of its own, as a shim would.

// program is one end's view of the region: its own mapping of the fd
// Attach gave.
type program struct {
	mem  []byte
	hdr  *abi.Direct
	side int
	size uint64
}

func attach(t *testing.T, s stack.Socket) *program {
	t.Helper()
	ds, ok := s.(stack.DirectSocket)
	if !ok {
		t.Fatal("an shm socket is not a stack.DirectSocket")
	}
	fd, side, ok := ds.Attach()
	if !ok {
		t.Fatal("Attach: no region")
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(mem) })
	h := (*abi.Direct)(unsafe.Pointer(&mem[0]))
	if h.Magic != abi.DirectMagic || uint64(h.RingSize) != ds.RingSize() || uint64(st.Size) != abi.DirectHdrSize+2*uint64(h.RingSize) {
		t.Fatalf("region header %+v, file %d bytes, RingSize %d", h, st.Size, ds.RingSize())
	}
	return &program{mem: mem, hdr: h, side: side, size: uint64(h.RingSize)}
}

// send writes p as the program would: copy, then publish the head.
func (p *program) send(b []byte) {
	r := &p.hdr.Ring[p.side]
	head := atomic.LoadUint64(&r.Head)
	off := abi.DirectHdrSize + uint64(p.side)*p.size
	for i, c := range b {
		p.mem[off+(head+uint64(i))&(p.size-1)] = c
	}
	atomic.StoreUint64(&r.Head, head+uint64(len(b)))
}

// recv reads what is there as the program would.
func (p *program) recv() []byte {
	r := &p.hdr.Ring[1-p.side]
	head, tail := atomic.LoadUint64(&r.Head), atomic.LoadUint64(&r.Tail)
	off := abi.DirectHdrSize + uint64(1-p.side)*p.size
	var out []byte
	for i := tail; i < head; i++ {
		out = append(out, p.mem[off+i&(p.size-1)])
	}
	atomic.StoreUint64(&r.Tail, head)
	return out
}

func directPair(t *testing.T) (cl, srv stack.Socket) {
	e := mustNew(t, Config{Ring: 4096})
	t.Cleanup(func() { e.Close() })
	l, la := listen(t, e, syscall.AF_INET, "127.0.0.1:0", 4)
	cl = connect(t, e, syscall.AF_INET, la)
	srv, _ = accept(t, l)
	return cl, srv
}

func TestDirectBytesAndNotify(t *testing.T) {
	cl, srv := directPair(t)
	pc, ps := attach(t, cl), attach(t, srv)
	if pc.side != 0 || ps.side != 1 {
		t.Fatalf("sides: connecting end %d, accepted end %d: want 0 and 1", pc.side, ps.side)
	}
	var told atomic.Int32
	srv.Notify(func(stack.Events) { told.Add(1) })
	told.Store(0)
	pc.send([]byte("hello"))
	dc, err := cl.(stack.DirectSocket).Moved()
	if err != nil || dc.Unsent() != 5 {
		t.Fatalf("Moved after a 5-byte send: %+v %v", dc, err)
	}
	if told.Load() == 0 {
		t.Fatal("the reader was not notified of the bytes")
	}
	if ev := srv.Readiness(); ev&stack.EventIn == 0 {
		t.Fatalf("reader readiness %v: want in", ev)
	}
	// An attached end's engine Read moves no bytes: the program reads.
	if n, eof, err := srv.Read(make([]byte, 10)); n != 0 || eof || !errors.Is(err, stack.ErrWouldBlock) {
		t.Fatalf("engine Read on an attached end: %d %v %v: want would-block", n, eof, err)
	}
	if got := string(ps.recv()); got != "hello" {
		t.Fatalf("the reader's program read %q", got)
	}
	dc, _ = srv.(stack.DirectSocket).Moved()
	if dc.Unread() != 0 || dc.RxHead != 5 {
		t.Fatalf("reader counts %+v", dc)
	}
	// Half-close: EOF after the bytes, for the program and the engine.
	pc.send([]byte("bye"))
	_, _ = cl.(stack.DirectSocket).Moved()
	if err := cl.Shutdown(syscall.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	if _, eof, _ := srv.Read(nil); !eof {
		t.Fatal("no EOF after the writer's SHUT_WR")
	}
	if got := string(ps.recv()); got != "bye" {
		t.Fatalf("bytes before the FIN: %q", got)
	}
}

// A relay takes over an end: Detach, and the engine's Read gives the
// region's unread bytes first, in order.
func TestDirectDetach(t *testing.T) {
	cl, srv := directPair(t)
	pc := attach(t, cl)
	attach(t, srv)
	pc.send([]byte("queued"))
	_, _ = cl.(stack.DirectSocket).Moved()
	srv.(stack.DirectSocket).Detach()
	if _, err := cl.Write([]byte("x")); err == nil {
		t.Fatal("engine Write on an attached end succeeded")
	}
	pc.send([]byte("-more"))
	_, _ = cl.(stack.DirectSocket).Moved()
	buf := make([]byte, 64)
	n, _, err := srv.Read(buf)
	if err != nil || string(buf[:n]) != "queued-more" {
		t.Fatalf("Read after Detach: %q %v", buf[:n], err)
	}
}

// Counters out of range (a hostile or broken program) reset that
// connection only: both ends see ECONNRESET, nothing panics, and another
// connection of the engine goes on.
func TestDirectBogusCounters(t *testing.T) {
	cl, srv := directPair(t)
	pc := attach(t, cl)
	attach(t, srv)
	atomic.StoreUint64(&pc.hdr.Ring[0].Head, 1<<40) // far beyond the ring
	if _, err := cl.(stack.DirectSocket).Moved(); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Moved with a bogus head: %v: want ECONNRESET", err)
	}
	for name, s := range map[string]stack.Socket{"writer": cl, "reader": srv} {
		if ev := s.Readiness(); ev&stack.EventErr == 0 && ev&stack.EventHup == 0 {
			t.Errorf("%s readiness %v after corruption: want err/hup", name, ev)
		}
		if _, _, err := s.Read(make([]byte, 8)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s Read: %v: want ECONNRESET", name, err)
		}
	}
	// The reader's tail scribbled past the head: the same.
	cl2, srv2 := directPair(t)
	attach(t, cl2)
	ps2 := attach(t, srv2)
	atomic.StoreUint64(&ps2.hdr.Ring[0].Tail, 1<<40) // past the head
	if _, err := srv2.(stack.DirectSocket).Moved(); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Moved with a bogus tail: %v", err)
	}
}

// A write to a peer that has closed resets the writer (the RST TCP's peer
// would send), but bytes written before the close do not.
func TestDirectWriteAfterPeerClosed(t *testing.T) {
	cl, srv := directPair(t)
	pc, ps := attach(t, cl), attach(t, srv)
	pc.send([]byte("before"))
	if got := string(ps.recv()); got != "before" {
		t.Fatalf("read %q", got)
	}
	srv.Close() // its Moved never ran: the engine must not count "before" as late
	if _, err := cl.(stack.DirectSocket).Moved(); err != nil {
		t.Fatal(err)
	}
	if _, eof, err := cl.Read(nil); !eof || err != nil {
		t.Fatalf("after the peer's close: eof %v err %v: want EOF", eof, err)
	}
	pc.send([]byte("after"))
	_, _ = cl.(stack.DirectSocket).Moved()
	if _, _, err := cl.Read(nil); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after writing to a closed peer: %v: want ECONNRESET", err)
	}
}

// Both programs move their counters while the daemon looks (Moved,
// Readiness): a look between the two counters' loads must not take a
// tail that passed the head, or a head a ring ahead of the tail, for
// corruption. It did (nginx + wrk on shm: a few hundred resets in 3 s).
func TestDirectConcurrentLooks(t *testing.T) {
	cl, srv := directPair(t)
	pc, ps := attach(t, cl), attach(t, srv)
	const total = 4 << 20
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- f()
		}()
	}
	run(func() error { // the writer's program: a counting pattern, waiting for room
		r := &pc.hdr.Ring[0]
		off := uint64(abi.DirectHdrSize)
		for pos := uint64(0); pos < total && !stop.Load(); {
			head, tail := atomic.LoadUint64(&r.Head), atomic.LoadUint64(&r.Tail)
			n := min(pc.size-(head-tail), total-pos, 700)
			for i := uint64(0); i < n; i++ {
				pc.mem[off+(head+i)&(pc.size-1)] = byte(pos + i)
			}
			atomic.StoreUint64(&r.Head, head+n)
			pos += n
		}
		return nil
	})
	run(func() error { // the reader's program
		for got := uint64(0); got < total && !stop.Load(); {
			for _, b := range ps.recv() {
				if b != byte(got) {
					return errors.New("bytes out of order")
				}
				got++
			}
		}
		return nil
	})
	run(func() error { // the daemon, looking all the while
		for i := 0; i < 100000 && !stop.Load(); i++ {
			if _, err := cl.(stack.DirectSocket).Moved(); err != nil {
				return err
			}
			if _, err := srv.(stack.DirectSocket).Moved(); err != nil {
				return err
			}
			if ev := srv.Readiness(); ev&(stack.EventErr|stack.EventHup) != 0 {
				return errors.New("the reader's end reads as broken")
			}
		}
		return nil
	})
	var first error
	for range 3 {
		if err := <-errs; err != nil && first == nil {
			first = err
			stop.Store(true)
		}
	}
	wg.Wait()
	if first != nil {
		t.Fatalf("a sane connection was taken for a corrupt one: %v", first)
	}
}
