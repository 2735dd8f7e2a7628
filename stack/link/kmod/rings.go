package kmod

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// rings is the user side of the two rings in the memory /dev/nuse shares
// (see kmod/nuse_uapi.h). It reads k2u (consumer) and writes u2k (producer).
// It works on any byte slice with the layout Setup describes, so it can be
// tested without the module.
type rings struct {
	mem      []byte
	ctrl     *Ctrl
	k2uDesc  []Desc
	u2kDesc  []Desc
	k2uBuf   []byte
	u2kBuf   []byte
	k2uMask  uint32
	u2kMask  uint32
	slotSize uint32

	k2uCons uint32 // our copies of the indices we own
	u2kProd uint32

	k2uRead Desc // readK2U's copy of the descriptor it hands to fn
}

// layout fills the offsets and mmap size of s the way the module does
// (used by tests; the module's values are what counts on a device).
func layout(s *Setup) {
	const page = 4096
	al := func(n uint64) uint64 { return (n + page - 1) &^ (page - 1) }
	ds := uint64(unsafe.Sizeof(Desc{}))
	s.SlotSize = (s.SlotSize + 63) &^ 63
	off := uint64(page)
	s.K2UDescOff = off
	off += al(uint64(s.K2USlots) * ds)
	s.U2KDescOff = off
	off += al(uint64(s.U2KSlots) * ds)
	s.K2UBufOff = off
	off += al(uint64(s.K2USlots) * uint64(s.SlotSize))
	s.U2KBufOff = off
	off += al(uint64(s.U2KSlots) * uint64(s.SlotSize))
	s.MmapSize = off
	s.DescSize = uint32(ds)
}

func pow2(n uint32) bool { return n != 0 && n&(n-1) == 0 }

// newRings checks the layout the kernel returned and maps the structures
// onto mem.
func newRings(mem []byte, s *Setup) (*rings, error) {
	ds := uint64(unsafe.Sizeof(Desc{}))
	if s.DescSize != uint32(ds) {
		return nil, fmt.Errorf("descriptor size %d, expected %d (module and daemon disagree)", s.DescSize, ds)
	}
	if !pow2(s.K2USlots) || !pow2(s.U2KSlots) || s.SlotSize == 0 {
		return nil, fmt.Errorf("bad ring sizes %d/%d/%d", s.K2USlots, s.U2KSlots, s.SlotSize)
	}
	in := func(off, n uint64) bool { return off <= uint64(len(mem)) && n <= uint64(len(mem))-off }
	k2uBytes := uint64(s.K2USlots) * uint64(s.SlotSize)
	u2kBytes := uint64(s.U2KSlots) * uint64(s.SlotSize)
	if !in(0, uint64(unsafe.Sizeof(Ctrl{}))) || !in(s.K2UDescOff, uint64(s.K2USlots)*ds) ||
		!in(s.U2KDescOff, uint64(s.U2KSlots)*ds) || !in(s.K2UBufOff, k2uBytes) || !in(s.U2KBufOff, u2kBytes) ||
		s.K2UDescOff%8 != 0 || s.U2KDescOff%8 != 0 {
		return nil, fmt.Errorf("ring layout does not fit the %d-byte mapping", len(mem))
	}
	r := &rings{
		mem:      mem,
		ctrl:     (*Ctrl)(unsafe.Pointer(&mem[0])),
		k2uDesc:  unsafe.Slice((*Desc)(unsafe.Pointer(&mem[s.K2UDescOff])), s.K2USlots),
		u2kDesc:  unsafe.Slice((*Desc)(unsafe.Pointer(&mem[s.U2KDescOff])), s.U2KSlots),
		k2uBuf:   mem[s.K2UBufOff : s.K2UBufOff+k2uBytes : s.K2UBufOff+k2uBytes],
		u2kBuf:   mem[s.U2KBufOff : s.U2KBufOff+u2kBytes : s.U2KBufOff+u2kBytes],
		k2uMask:  s.K2USlots - 1,
		u2kMask:  s.U2KSlots - 1,
		slotSize: s.SlotSize,
	}
	r.k2uCons = atomic.LoadUint32(&r.ctrl.K2U.Cons)
	r.u2kProd = atomic.LoadUint32(&r.ctrl.U2K.Prod)
	return r, nil
}

// k2uPending reports whether the kernel has published packets we have not
// read.
func (r *rings) k2uPending() bool {
	return atomic.LoadUint32(&r.ctrl.K2U.Prod) != r.k2uCons
}

// readK2U calls fn for up to max packets from the k2u ring, then releases
// their slots. fn must copy what it keeps (d included: it is reused). It
// returns the number read and the number of descriptors it skipped as
// malformed.
func (r *rings) readK2U(max int, fn func(d *Desc, pkt []byte)) (n, bad int) {
	prod := atomic.LoadUint32(&r.ctrl.K2U.Prod)
	cons := r.k2uCons
	if prod-cons > r.k2uMask+1 {
		// The kernel would never do this; don't read garbage.
		r.k2uCons = prod
		atomic.StoreUint32(&r.ctrl.K2U.Cons, prod)
		return 0, 1
	}
	for cons != prod && n < max {
		// One copy of the descriptor, in the rings (a local whose
		// address goes to fn would be a heap allocation per packet).
		d := &r.k2uRead
		*d = r.k2uDesc[cons&r.k2uMask]
		cons++
		n++
		if uint64(d.Off)+uint64(d.Len) > uint64(len(r.k2uBuf)) || d.Len == 0 {
			bad++
			continue
		}
		fn(d, r.k2uBuf[d.Off:d.Off+d.Len])
	}
	r.k2uCons = cons
	atomic.StoreUint32(&r.ctrl.K2U.Cons, cons)
	return n, bad
}

// u2kFree is the number of u2k slots free now.
func (r *rings) u2kFree() uint32 {
	cons := atomic.LoadUint32(&r.ctrl.U2K.Cons)
	used := r.u2kProd - cons
	if used > r.u2kMask+1 {
		return 0
	}
	return r.u2kMask + 1 - used
}

// u2kSlot returns the buffer of the next u2k slot, to be filled and then
// queued with u2kQueue. The caller checks u2kFree first.
func (r *rings) u2kSlot() []byte {
	i := r.u2kProd & r.u2kMask
	off := i * r.slotSize
	return r.u2kBuf[off : off+r.slotSize : off+r.slotSize]
}

// u2kQueue writes the descriptor of the packet in the current slot (its
// first n bytes) and moves to the next slot. Nothing is visible to the
// kernel before u2kPublish.
func (r *rings) u2kQueue(n uint32, proto uint16, csum uint8) {
	i := r.u2kProd & r.u2kMask
	r.u2kDesc[i] = Desc{Off: i * r.slotSize, Len: n, Proto: proto, Csum: csum}
	r.u2kProd++
}

// u2kQueueDesc is u2kQueue with the descriptor given (its offset is set
// to the current slot's).
func (r *rings) u2kQueueDesc(d Desc) {
	i := r.u2kProd & r.u2kMask
	d.Off = i * r.slotSize
	r.u2kDesc[i] = d
	r.u2kProd++
}

// u2kPublish makes the queued packets visible and reports whether the
// kernel asked for a kick.
func (r *rings) u2kPublish() (kick bool) {
	// Sequentially consistent: the flag load cannot pass the prod store.
	atomic.StoreUint32(&r.ctrl.U2K.Prod, r.u2kProd)
	return atomic.LoadUint32(&r.ctrl.U2K.Flags)&RingNeedKick != 0
}
