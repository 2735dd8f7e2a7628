package shm

import (
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/internal/shmem"
	"github.com/nuse-project/nuse/shim/abi"
)

// region is one connection's bytes: a sealed memfd holding both
// directions' rings (shim/abi/nuse_abi.h, struct nuse_direct), mapped by
// the daemon and, once the daemon hands it out (stack.DirectSocket), by
// the two ends' programs and nobody else. ring[d] carries what side d
// writes. Each counter has one owner: the end's program while the end is
// attached, the engine otherwise; the engine keeps its own copy of every
// counter (conn.head, conn.tail) and checks what programs write.
type region struct {
	fd   int
	mem  []byte
	hdr  *abi.Direct
	size uint64
	data [2][]byte
}

// regionSize is the ring capacity for a connection whose directions hold
// up to capa bytes (SO_SNDBUF + SO_RCVBUF): the next power of two.
func regionSize(capa int) uint64 {
	c := uint64(max(capa, 4096))
	return 1 << bits.Len64(c-1)
}

func newRegion(size uint64) (*region, error) {
	fd, err := unix.MemfdCreate("nuse-shm-conn", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	total := int64(abi.DirectHdrSize) + 2*int64(size)
	if err := unix.Ftruncate(fd, total); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Sealed before anyone else sees it: an end that could shrink it
	// would make the daemon's (and its peer's) next touch a SIGBUS.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return nil, err
	}
	mem, err := shmem.Map(fd, int(total))
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	r := &region{fd: fd, mem: mem, hdr: (*abi.Direct)(unsafe.Pointer(&mem[0])), size: size}
	r.hdr.Magic = abi.DirectMagic
	r.hdr.Version = abi.Version
	r.hdr.RingSize = uint32(size)
	r.hdr.DataOff = abi.DirectHdrSize
	for d := range 2 {
		off := uint64(abi.DirectHdrSize) + uint64(d)*size
		r.data[d] = mem[off : off+size : off+size]
	}
	return r, nil
}

func (r *region) free() {
	_ = unix.Munmap(r.mem)
	unix.Close(r.fd)
	r.mem, r.hdr = nil, nil
}

func (r *region) loadHead(d int) uint64     { return atomic.LoadUint64(&r.hdr.Ring[d].Head) }
func (r *region) loadTail(d int) uint64     { return atomic.LoadUint64(&r.hdr.Ring[d].Tail) }
func (r *region) storeHead(d int, v uint64) { atomic.StoreUint64(&r.hdr.Ring[d].Head, v) }
func (r *region) storeTail(d int, v uint64) { atomic.StoreUint64(&r.hdr.Ring[d].Tail, v) }

// copyIn writes p into ring d at byte count pos, wrapping.
func (r *region) copyIn(d int, pos uint64, p []byte) {
	data := r.data[d]
	off := pos & (r.size - 1)
	k := copy(data[off:], p)
	copy(data, p[k:])
}

// copyOut reads len(p) bytes of ring d at byte count pos, wrapping.
func (r *region) copyOut(d int, pos uint64, p []byte) {
	data := r.data[d]
	off := pos & (r.size - 1)
	k := copy(p, data[off:])
	copy(p[k:], data)
}
