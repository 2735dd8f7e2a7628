package kmod

// The Go mirror of kmod/nuse_uapi.h; uapi_test.go checks it against the
// header as the C compiler sees it.

// UAPIVersion is NUSE_UAPI_VERSION.
const UAPIVersion = 1

// DevPath is where the module's misc device appears.
const DevPath = "/dev/nuse"

// Setup flags, checksum states, ring flags, limits.
const (
	FlagPersist = 1 << 0
	FlagTSO     = 1 << 1

	GSONone  = 0
	GSOTCPv4 = 1
	GSOTCPv6 = 2

	CsumNone        = 0
	CsumUnnecessary = 1
	CsumPartial     = 2

	RingNeedKick = 1 << 0

	MinSlots    = 16
	MaxSlots    = 32768
	MinSlotSize = 2048
	MaxSlotSize = 65536
)

// ioctl numbers (_IOWR(0xe4, 1, struct nuse_setup), _IO(0xe4, 2),
// _IOW(0xe4, 3, int)).
const (
	iocCreate     = 3<<30 | 120<<16 | 0xe4<<8 | 1
	iocKick       = 0xe4<<8 | 2
	iocSetPersist = 1<<30 | 4<<16 | 0xe4<<8 | 3
)

// Desc is struct nuse_desc: one packet in a ring.
type Desc struct {
	Off        uint32
	Len        uint32
	Proto      uint16
	Csum       uint8
	GSOType    uint8
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
	Flags      uint16
	Reserved   [3]uint32
}

// RingCtrl is struct nuse_ring_ctrl: a ring's indices on separate lines.
type RingCtrl struct {
	Prod  uint32
	_     [15]uint32
	Cons  uint32
	_     [15]uint32
	Flags uint32
	_     [15]uint32
}

// Ctrl is struct nuse_ctrl, at offset 0 of the mapping.
type Ctrl struct {
	K2U, U2K    RingCtrl
	Version     uint32
	_           uint32
	ErrBadIndex uint64
	ErrBadOff   uint64
	ErrBadLen   uint64
	ErrBadProto uint64
	ErrBadCsum  uint64
	ErrNomem    uint64
	K2UFull     uint64
	K2UTooBig   uint64
}

// Setup is struct nuse_setup, the NUSE_IOC_CREATE argument.
type Setup struct {
	Version    uint32
	Flags      uint32
	Name       [16]byte
	MTU        uint32
	K2USlots   uint32
	U2KSlots   uint32
	SlotSize   uint32
	Ifindex    uint32
	DescSize   uint32
	MmapSize   uint64
	K2UDescOff uint64
	U2KDescOff uint64
	K2UBufOff  uint64
	U2KBufOff  uint64
	Reserved   [4]uint64
}
