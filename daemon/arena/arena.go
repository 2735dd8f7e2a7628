// Package arena creates and addresses a session's shared-memory arena: the
// memfd the daemon shares with one application process (layout in
// shim/abi/nuse_abi.h). The daemon computes every offset itself and never
// reads layout values back from shared memory.
package arena

import (
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/internal/shmem"
	"github.com/nuse-project/nuse/shim/abi"
)

// Layout says where things are in an arena.
type Layout struct {
	MaxSocks   uint32
	RingSize   uint32
	CmdOff     uint64
	SocksOff   uint64
	SockStride uint64
	Size       uint64
}

// PageSize is the page the arena's layout and trims go by.
const PageSize = 4096

// NewLayout checks the sizes and computes the offsets.
func NewLayout(maxSocks, ringSize uint32) (Layout, error) {
	if maxSocks == 0 || maxSocks > abi.MaxSocksLimit {
		return Layout{}, fmt.Errorf("max sockets per process must be 1..%d, not %d", abi.MaxSocksLimit, maxSocks)
	}
	if ringSize < PageSize || ringSize > 64<<20 || bits.OnesCount32(ringSize) != 1 {
		return Layout{}, fmt.Errorf("ring size must be a power of two from 4 KiB to 64 MiB, not %d", ringSize)
	}
	hdr := roundUp(uint64(unsafe.Sizeof(abi.ArenaHdr{})), PageSize)
	cmds := roundUp(abi.CmdSlots*uint64(unsafe.Sizeof(abi.Cmd{})), PageSize)
	l := Layout{
		MaxSocks:   maxSocks,
		RingSize:   ringSize,
		CmdOff:     hdr,
		SocksOff:   hdr + cmds,
		SockStride: abi.SockHdrSize + 2*uint64(ringSize),
	}
	l.Size = l.SocksOff + uint64(maxSocks)*l.SockStride
	return l, nil
}

func roundUp(v, to uint64) uint64 { return (v + to - 1) / to * to }

// Arena is one mapped arena.
type Arena struct {
	L   Layout
	fd  int
	mem []byte
	hdr *abi.ArenaHdr
}

// Create makes a memfd of the layout's size, maps it and fills the header.
// Pages are allocated only when touched, never as huge pages (shmem.Map).
func Create(l Layout, name string, shimSpinNs uint64) (*Arena, error) {
	fd, err := SealedMemfd(name, int64(l.Size))
	if err != nil {
		return nil, fmt.Errorf("creating the arena: %w", err)
	}
	mem, err := shmem.Map(fd, int(l.Size))
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mapping the arena: %w", err)
	}
	a := &Arena{L: l, fd: fd, mem: mem, hdr: (*abi.ArenaHdr)(unsafe.Pointer(&mem[0]))}
	h := a.hdr
	h.Magic = abi.Magic
	h.Version = abi.Version
	h.ArenaSize = l.Size
	h.MaxSocks = l.MaxSocks
	h.RingSize = l.RingSize
	h.CmdOff = l.CmdOff
	h.SocksOff = l.SocksOff
	h.SockStride = l.SockStride
	h.SpinNs = shimSpinNs
	return a, nil
}

// SealedMemfd makes a memfd of size bytes (close-on-exec) whose size is
// sealed before anyone else can see it: F_SEAL_SHRINK, F_SEAL_GROW, and
// F_SEAL_SEAL so that no seal can be added either. Shared memory another
// process holds must never shrink under the daemon's mapping: the daemon's
// next touch of a page past the end would be a SIGBUS, which no recover()
// catches, and every session would end with the daemon.
func SealedMemfd(name string, size int64) (int, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("memfd_create %s: %w", name, err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("sizing memfd %s to %d bytes: %w", name, size, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("sealing memfd %s: %w", name, err)
	}
	return fd, nil
}

// FD is the memfd, to pass to the application.
func (a *Arena) FD() int { return a.fd }

// Hdr is the shared header.
func (a *Arena) Hdr() *abi.ArenaHdr { return a.hdr }

// Cmd returns command slot i (i < abi.CmdSlots).
func (a *Arena) Cmd(i int) *abi.Cmd {
	return (*abi.Cmd)(unsafe.Pointer(&a.mem[a.L.CmdOff+uint64(i)*uint64(unsafe.Sizeof(abi.Cmd{}))]))
}

// Sock returns socket slot i's shared header (i < MaxSocks).
func (a *Arena) Sock(i uint32) *abi.Sock {
	return (*abi.Sock)(unsafe.Pointer(&a.mem[a.L.SocksOff+uint64(i)*a.L.SockStride]))
}

// Rx and Tx return the data areas of socket slot i's rings.
func (a *Arena) Rx(i uint32) []byte {
	off := a.L.SocksOff + uint64(i)*a.L.SockStride + abi.SockHdrSize
	return a.mem[off : off+uint64(a.L.RingSize) : off+uint64(a.L.RingSize)]
}

func (a *Arena) Tx(i uint32) []byte {
	off := a.L.SocksOff + uint64(i)*a.L.SockStride + abi.SockHdrSize + uint64(a.L.RingSize)
	return a.mem[off : off+uint64(a.L.RingSize) : off+uint64(a.L.RingSize)]
}

// Reset clears socket slot i's header (keeping its generation). Its ring
// pages keep what the last socket left, which is no one else's (the
// counters start again at 0): a slot reused at once costs no page faults.
func (a *Arena) Reset(i uint32) {
	s := a.Sock(i)
	gen := atomic.LoadUint32(&s.Gen)
	*s = abi.Sock{}
	atomic.StoreUint32(&s.Gen, gen)
}

// Reclaim gives slot i's ring pages back to the kernel, so a slot free for
// a while holds no memory. Punching a hole unmaps the pages in every
// process that maps the arena (an IPI to each of their CPUs): done for
// idle slots, off the connection's path.
func (a *Arena) Reclaim(i uint32) {
	a.punch(a.L.SocksOff+uint64(i)*a.L.SockStride+abi.SockHdrSize, 2*uint64(a.L.RingSize))
}

// TrimRx gives back the pages of slot i's rx ring but the one the next
// byte goes to (head, the daemon's producer counter). Only the producer
// may: the shim reads [tail, head) alone, and the rest is the producer's
// to write. The ring must be empty, so that no page the shim has yet to
// read goes.
func (a *Arena) TrimRx(i uint32, head uint64) {
	off := a.L.SocksOff + uint64(i)*a.L.SockStride + abi.SockHdrSize
	size := uint64(a.L.RingSize)
	keep := head & (size - 1) &^ (PageSize - 1)
	if keep > 0 {
		a.punch(off, keep)
	}
	if keep+PageSize < size {
		a.punch(off+keep+PageSize, size-keep-PageSize)
	}
}

func (a *Arena) punch(off, n uint64) {
	_ = unix.Fallocate(a.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n))
}

// Resident is how many bytes of the arena have pages (in memory or swap).
func (a *Arena) Resident() uint64 {
	var st unix.Stat_t
	if a.fd < 0 || unix.Fstat(a.fd, &st) != nil {
		return 0
	}
	return uint64(st.Blocks) * 512
}

// Close unmaps the arena and closes the memfd.
func (a *Arena) Close() error {
	err := unix.Munmap(a.mem)
	if a.fd >= 0 {
		if cerr := unix.Close(a.fd); err == nil {
			err = cerr
		}
	}
	a.mem, a.hdr = nil, nil
	return err
}

// ErrRing reports ring counters that no well-behaved shim could produce.
var ErrRing = errors.New("ring counters out of range")

// TxPending returns how many bytes the shim has produced in tx ring i beyond
// tail (the daemon's own copy of the consumer counter).
func (a *Arena) TxPending(i uint32, tail uint64) (uint64, error) {
	head := atomic.LoadUint64(&a.Sock(i).Tx.Head)
	return checkSpan(head, tail, a.L.RingSize)
}

// RxFree returns how many bytes ring i can take beyond head (the daemon's own
// copy of the producer counter), given the shim's tail.
func (a *Arena) RxFree(i uint32, head uint64) (uint64, error) {
	tail := atomic.LoadUint64(&a.Sock(i).Rx.Tail)
	used, err := checkSpan(head, tail, a.L.RingSize)
	if err != nil {
		return 0, err
	}
	return uint64(a.L.RingSize) - used, nil
}

// RewindAt is where a producer rewinds its ring: finding it empty with the
// next byte at least this far into it, it writes what fits before that
// point at the ring's start instead, having published Skip (the count of
// the ring's start) before Head. A light connection's bytes so stay in the
// ring's first pages: warm, and few to hold (shim/ring.h, the shim's side).
const RewindAt = 16 << 10

// Rewind is where a producer writes n bytes into an empty ring of size
// bytes whose head is head.
func Rewind(head, size, n uint64) uint64 {
	off := head & (size - 1)
	if off >= RewindAt && n <= off {
		return head - off + size
	}
	return head
}

// SkipTo is the consumer's first byte of a ring: tail, or skip if the
// producer rewound past it. A hostile producer's skip moves the consumer
// at most to head.
func SkipTo(head, tail, skip uint64) uint64 {
	if int64(skip-tail) > 0 && int64(head-skip) >= 0 {
		return skip
	}
	return tail
}

// checkSpan validates head-tail for a ring of size bytes.
func checkSpan(head, tail uint64, size uint32) (uint64, error) {
	n := head - tail
	if head < tail || n > uint64(size) {
		return 0, fmt.Errorf("%w: head %d tail %d size %d", ErrRing, head, tail, size)
	}
	return n, nil
}

// Span returns the (up to two) contiguous pieces of ring data covering
// [from, from+n); n must not exceed len(data).
func Span(data []byte, from, n uint64) (a, b []byte) {
	size := uint64(len(data))
	off := from & (size - 1)
	if off+n <= size {
		return data[off : off+n], nil
	}
	return data[off:size], data[:n-(size-off)]
}

// Map maps an arena received from a daemon (the shim's view, used by tests
// and tools that play the application side). It takes the layout from the
// header, which it checks for consistency.
func Map(fd int, size uint64) (*Arena, error) {
	if size < PageSize || size > 1<<40 {
		return nil, fmt.Errorf("arena size %d out of range", size)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || uint64(st.Size) != size {
		return nil, fmt.Errorf("arena file is %d bytes, not the %d announced", st.Size, size)
	}
	mem, err := shmem.Map(fd, int(size))
	if err != nil {
		return nil, fmt.Errorf("mapping the arena: %w", err)
	}
	h := (*abi.ArenaHdr)(unsafe.Pointer(&mem[0]))
	l, lerr := NewLayout(h.MaxSocks, h.RingSize)
	if h.Magic != abi.Magic || h.Version != abi.Version || lerr != nil || l.Size != size || l.SocksOff != h.SocksOff || l.CmdOff != h.CmdOff || l.SockStride != h.SockStride {
		unix.Munmap(mem)
		return nil, fmt.Errorf("arena header does not match this ABI (magic %#x version %d)", h.Magic, h.Version)
	}
	return &Arena{L: l, fd: -1, mem: mem, hdr: h}, nil
}
