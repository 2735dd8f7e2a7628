package soft

import (
	"github.com/nuse-project/nuse/internal/racesync"

	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr (x/sys/unix has no recvmmsg/sendmmsg).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// batch is a set of message buffers for recvmmsg/sendmmsg.
type batch struct {
	msgs []mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
	addr []unix.RawSockaddrInet4
}

func newBatch(n, size int) *batch {
	b := &batch{msgs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n), addr: make([]unix.RawSockaddrInet4, n)}
	for i := range b.msgs {
		if size > 0 {
			b.bufs[i] = make([]byte, size)
			b.iovs[i].Base = &b.bufs[i][0]
			b.iovs[i].SetLen(size)
		}
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	return b
}

// The kernel carrying a datagram between two soft devices of one process
// (tests; a daemon and a peer) is invisible to the race detector.
var wireSync racesync.Token

// recvmmsg receives up to len(b.msgs) datagrams, blocking for the first.
func (b *batch) recv(fd int) (int, error) {
	for i := range b.msgs {
		b.iovs[i].SetLen(len(b.bufs[i]))
		b.msgs[i].n = 0
	}
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)),
		unix.MSG_WAITFORONE, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	wireSync.Acquire()
	return int(n), nil
}

// sendFrom sends prepared datagrams from..n-1 (set with set) to their
// addresses; it returns how many went.
func (b *batch) sendFrom(fd, from, n int) (int, error) {
	wireSync.Release()
	m, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[from])), uintptr(n-from),
		unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(m), nil
}

// set points message i at p, for dst:port.
func (b *batch) set(i int, p []byte, dst [4]byte, port int) {
	b.iovs[i].Base = &p[0]
	b.iovs[i].SetLen(len(p))
	a := &b.addr[i]
	a.Family = unix.AF_INET
	a.Port = uint16(port>>8) | uint16(port&0xff)<<8
	a.Addr = dst
	b.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(a))
	b.msgs[i].hdr.Namelen = unix.SizeofSockaddrInet4
}
