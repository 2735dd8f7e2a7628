package kmod

import (
	"bytes"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
)

func testRings(t *testing.T, slots, slotSize uint32) (*rings, *Setup) {
	t.Helper()
	s := &Setup{K2USlots: slots, U2KSlots: slots, SlotSize: slotSize}
	layout(s)
	mem := make([]byte, s.MmapSize)
	r, err := newRings(mem, s)
	if err != nil {
		t.Fatal(err)
	}
	return r, s
}

// kernelK2U plays the module's producer side.
func kernelK2U(r *rings, prod *uint32, pkt []byte) bool {
	cons := atomic.LoadUint32(&r.ctrl.K2U.Cons)
	if *prod-cons >= r.k2uMask+1 {
		return false
	}
	i := *prod & r.k2uMask
	off := i * r.slotSize
	copy(r.k2uBuf[off:], pkt)
	r.k2uDesc[i] = Desc{Off: off, Len: uint32(len(pkt)), Proto: 0x0800}
	*prod++
	atomic.StoreUint32(&r.ctrl.K2U.Prod, *prod)
	return true
}

func TestK2URing(t *testing.T) {
	r, _ := testRings(t, 16, 2048)
	var prod uint32
	var got [][]byte
	read := func(max int) int {
		n, bad := r.readK2U(max, func(d *Desc, p []byte) { got = append(got, bytes.Clone(p)) })
		if bad != 0 {
			t.Fatalf("bad descriptors: %d", bad)
		}
		return n
	}
	for round := 0; round < 5; round++ { // wraps the ring several times
		for i := 0; i < 16; i++ {
			if !kernelK2U(r, &prod, []byte{0x45, byte(round), byte(i)}) {
				t.Fatalf("ring full at %d", i)
			}
		}
		if kernelK2U(r, &prod, []byte{1}) {
			t.Fatal("17th packet fit in a 16-slot ring")
		}
		got = nil
		if n := read(10); n != 10 {
			t.Fatalf("read %d, want 10", n)
		}
		if n := read(100); n != 6 {
			t.Fatalf("read %d, want 6", n)
		}
		for i, p := range got {
			if !bytes.Equal(p, []byte{0x45, byte(round), byte(i)}) {
				t.Fatalf("packet %d = %x", i, p)
			}
		}
		if r.k2uPending() {
			t.Fatal("ring still pending")
		}
	}
}

func TestK2URejectsBadDescriptors(t *testing.T) {
	r, _ := testRings(t, 16, 2048)
	r.k2uDesc[0] = Desc{Off: uint32(len(r.k2uBuf)) - 10, Len: 100}
	r.k2uDesc[1] = Desc{Off: 0, Len: 0}
	r.k2uDesc[2] = Desc{Off: 4096, Len: 20}
	atomic.StoreUint32(&r.ctrl.K2U.Prod, 3)
	calls := 0
	n, bad := r.readK2U(64, func(*Desc, []byte) { calls++ })
	if n != 3 || bad != 2 || calls != 1 {
		t.Fatalf("n=%d bad=%d calls=%d, want 3 2 1", n, bad, calls)
	}
	// A producer index far ahead is not followed.
	atomic.StoreUint32(&r.ctrl.K2U.Prod, 3+1000)
	n, bad = r.readK2U(64, func(*Desc, []byte) { calls++ })
	if n != 0 || bad != 1 || r.k2uPending() {
		t.Fatalf("n=%d bad=%d pending=%v", n, bad, r.k2uPending())
	}
}

func TestU2KRing(t *testing.T) {
	r, s := testRings(t, 16, 2048)
	if s.SlotSize != 2048 || s.K2UDescOff != 4096 {
		t.Fatalf("layout %+v", s)
	}
	atomic.StoreUint32(&r.ctrl.U2K.Flags, RingNeedKick)
	var cons uint32
	for round := 0; round < 3; round++ {
		for i := 0; i < 16; i++ {
			if r.u2kFree() == 0 {
				t.Fatalf("no room at %d", i)
			}
			n := copy(r.u2kSlot(), []byte{0x60, byte(round), byte(i)})
			r.u2kQueue(uint32(n), 0x86dd, CsumUnnecessary)
		}
		if r.u2kFree() != 0 {
			t.Fatal("room in a full ring")
		}
		if !r.u2kPublish() {
			t.Fatal("no kick asked for")
		}
		// The kernel's side.
		prod := atomic.LoadUint32(&r.ctrl.U2K.Prod)
		if prod-cons != 16 {
			t.Fatalf("prod-cons = %d", prod-cons)
		}
		for ; cons != prod; cons++ {
			d := r.u2kDesc[cons&r.u2kMask]
			p := r.u2kBuf[d.Off : d.Off+d.Len]
			if d.Proto != 0x86dd || d.Csum != CsumUnnecessary || !bytes.Equal(p, []byte{0x60, byte(round), byte(cons % 16)}) {
				t.Fatalf("desc %+v data %x", d, p)
			}
		}
		atomic.StoreUint32(&r.ctrl.U2K.Cons, cons)
		if r.u2kFree() != 16 {
			t.Fatalf("free = %d", r.u2kFree())
		}
	}
	// A consumer index that makes no sense leaves no room rather than
	// letting us overwrite slots.
	atomic.StoreUint32(&r.ctrl.U2K.Cons, cons+100)
	if r.u2kFree() != 0 {
		t.Fatal("room after a bogus consumer index")
	}
}

func TestNewRingsChecksLayout(t *testing.T) {
	s := &Setup{K2USlots: 16, U2KSlots: 16, SlotSize: 2048}
	layout(s)
	if _, err := newRings(make([]byte, s.MmapSize-1), s); err == nil {
		t.Fatal("short mapping accepted")
	}
	s2 := *s
	s2.K2USlots = 15
	if _, err := newRings(make([]byte, s.MmapSize), &s2); err == nil {
		t.Fatal("non-power-of-two ring accepted")
	}
	s3 := *s
	s3.DescSize = 24
	if _, err := newRings(make([]byte, s.MmapSize), &s3); err == nil {
		t.Fatal("wrong descriptor size accepted")
	}
}

func TestOpenWithoutModule(t *testing.T) {
	_, err := Open(Options{DevPath: filepath.Join(t.TempDir(), "nuse")})
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("err = %v, want ErrNoDevice", err)
	}
	if want := "/dev/nuse not found: load nuse.ko (modprobe nuse) or use --netdev tap"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Fatalf("message %q lacks %q", err, want)
	}
}
