// Package uc is the RDMA Unreliable Connection channel of NUSE: the small
// part of the verbs API that the UC netdev and the perf tool need (devices,
// memory regions, UC queue pairs, RDMA WRITE and WRITE WITH IMMEDIATE,
// receives and completions) with two backends behind it: uc/verbs (cgo over
// libibverbs, for real NICs and rdma_rxe) and uc/soft (pure-Go RoCEv2 UC
// over UDP 4791, wire-compatible with rxe).
package uc

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Access flags of a memory region (same meaning as IBV_ACCESS_*).
type Access uint32

const (
	AccessLocalWrite  Access = 1 << 0
	AccessRemoteWrite Access = 1 << 1
)

// Opcode of a work completion.
type Opcode uint8

const (
	// WCWrite completes a posted RDMA WRITE (with or without immediate).
	WCWrite Opcode = iota + 1
	// WCRecvRDMAWithImm completes a posted receive consumed by an incoming
	// RDMA WRITE WITH IMMEDIATE; Imm and ByteLen are valid.
	WCRecvRDMAWithImm
	// WCRecv completes a posted receive consumed by a SEND.
	WCRecv
)

// Status of a work completion; anything but WCSuccess is an error.
type Status uint8

const (
	WCSuccess Status = iota
	WCFlushErr
	WCLocalError
)

// WC is one work completion.
type WC struct {
	WRID    uint64
	Status  Status
	Opcode  Opcode
	ByteLen uint32
	Imm     uint32
}

// MR is a registered memory region. Buf is the memory itself: the peer
// writes into it (receive side) and writes read from it (send side).
type MR interface {
	Buf() []byte
	// Addr is the address a peer puts into its RETH to reach Buf()[0].
	Addr() uint64
	LKey() uint32
	RKey() uint32
	Dereg() error
}

// QPConfig sizes a queue pair and its completion queues.
type QPConfig struct {
	SendDepth int // max outstanding send WRs
	RecvDepth int // max posted receives
	// PathMTU in bytes: 256, 512, 1024, 2048 or 4096.
	PathMTU int
}

// ConnParams is what two sides exchange to connect a UC QP pair, and the
// buffer each exposes to the other.
type ConnParams struct {
	QPN   uint32
	PSN   uint32
	GID   [16]byte
	RKey  uint32
	Addr  uint64
	Len   uint64
	MTU   uint32 // path MTU the side wants; both use the smaller
	Extra uint64 // free for the user (e.g. ring geometry)
}

// WriteWR is one RDMA WRITE (WITH IMMEDIATE if HasImm).
type WriteWR struct {
	WRID       uint64
	Local      MR
	Offset     int // into Local.Buf()
	Length     int
	RemoteAddr uint64
	RKey       uint32
	HasImm     bool
	Imm        uint32
	// Signaled asks for a send completion.
	Signaled bool
}

// QP is a UC queue pair with its own send and receive completion queues.
type QP interface {
	QPN() uint32
	PSN() uint32
	// PathMTU is the largest path MTU this QP can use (the configured one,
	// clamped to the device's); put it in ConnParams.MTU.
	PathMTU() int
	// Connect moves the QP to RTS toward the peer.
	Connect(remote ConnParams) error
	PostWrite(wr *WriteWR) error
	// PostRecv posts a receive without buffer: it is consumed by an
	// incoming WRITE WITH IMMEDIATE (which carries its data in the MR).
	PostRecv(wrid uint64) error
	PollSend(wcs []WC) (int, error)
	PollRecv(wcs []WC) (int, error)
	// WaitRecv blocks until the receive CQ may have a completion, or the
	// timeout passes (the sleep path; callers poll first).
	WaitRecv(timeout time.Duration) error
	// WaitSend is WaitRecv for the send CQ.
	WaitSend(timeout time.Duration) error
	Close() error
}

// Notifier is implemented by QPs that can call a function when the device
// queues a receive completion, from the device's own receive path: a
// completion channel that needs no thread of its own, so that whoever
// forwards completions (uc/proxy) takes them without a thread switch.
type Notifier interface {
	// SetNotify makes f run after each receive completion the device
	// queues. f runs on the device's receive path: it must not block, and
	// it may poll the QP. SetNotify(nil) stops it; once SetNotify returns,
	// the previous f is not running and will not run again.
	SetNotify(f func())
}

// BatchPoster is implemented by QPs that post several writes at once (as
// ibv_post_send takes a list): their packets can share system calls.
type BatchPoster interface {
	// PostWrites posts wrs in order and returns how many were posted:
	// fewer than len(wrs) with the error of the write at that index
	// (ibv_post_send's bad_wr); the writes before it were posted.
	PostWrites(wrs []WriteWR) (int, error)
}

// Device is an opened RDMA device (or its soft equivalent).
type Device interface {
	Name() string
	GID() [16]byte
	RegMR(buf []byte, access Access) (MR, error)
	CreateQP(cfg QPConfig) (QP, error)
	Close() error
}

// Options select and configure a backend's device.
type Options struct {
	// Dev names the verbs device (rxe0); soft ignores it.
	Dev string
	// GIDIndex is the verbs GID table index (RoCEv2 IPv4 entries are
	// usually 1 on rxe).
	GIDIndex int
	// LocalIP is the soft backend's IPv4 address (its GID).
	LocalIP string
	// Port is the soft backend's UDP port (4791 unless testing).
	Port int
	// Daemon is the NUSE daemon's control socket for the "daemon"
	// backend (uc/proxy), and Via the backend the daemon opens for it.
	Daemon string
	Via    string
}

// Opener opens a device of one backend.
type Opener func(o Options) (Device, error)

var (
	mu       sync.Mutex
	backends = map[string]Opener{}
)

// Register makes a backend available to Open (backends call it in init).
func Register(name string, o Opener) {
	mu.Lock()
	defer mu.Unlock()
	backends[name] = o
}

// Open opens a device of the named backend ("soft", "verbs").
func Open(backend string, o Options) (Device, error) {
	mu.Lock()
	op := backends[backend]
	var names []string
	for n := range backends {
		names = append(names, n)
	}
	mu.Unlock()
	sort.Strings(names)
	if op == nil {
		hint := ""
		if backend == "verbs" {
			hint = "; the verbs backend needs a build with -tags verbs"
		}
		return nil, fmt.Errorf("uc: unknown backend %q (built in: %s)%s", backend, strings.Join(names, ", "), hint)
	}
	return op(o)
}

// ErrTimeout is returned by the Wait methods when nothing arrived.
var ErrTimeout = errors.New("uc: wait timed out")

// ErrClosed is returned on a closed QP or device.
var ErrClosed = errors.New("uc: closed")

// ValidMTU reports whether m is an InfiniBand path MTU.
func ValidMTU(m int) bool {
	switch m {
	case 256, 512, 1024, 2048, 4096:
		return true
	}
	return false
}

// Allocator is implemented by devices that need registered memory to come
// from them (verbs: outside the Go heap).
type Allocator interface {
	Alloc(n int) ([]byte, error)
}

// Alloc returns n bytes suitable for d.RegMR.
func Alloc(d Device, n int) ([]byte, error) {
	if a, ok := d.(Allocator); ok {
		return a.Alloc(n)
	}
	return make([]byte, n), nil
}
