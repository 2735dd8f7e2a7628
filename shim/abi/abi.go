// Package abi mirrors shim/abi/nuse_abi.h: the control messages and the
// shared-memory arena layout between libnuse.so and the daemon. The test in
// this package compares every size and offset with the C header.
package abi

const (
	Magic   = 0x4553554e
	Version = 13

	CacheLine = 64

	CommLen   = 16
	EngineLen = 16 // engine names: up to 15 of [a-z0-9_-], NUL-padded
	AddrLen   = 128
	MsgLen    = 128
	OptLen    = 64
	InfoLen   = 256

	CmdSlots        = 64
	MaxSocksLimit   = 65536
	SockHdrSize     = 4096
	DefaultRing     = 1 << 20
	DefaultSocks    = 4096
	DefaultSockPath = "/run/nuse/nused.sock"
)

// Control message types.
const (
	MsgHello    = 1
	MsgHelloOK  = 2
	MsgSocket   = 3
	MsgAccept   = 4
	MsgReply    = 5
	MsgError    = 6
	MsgStats    = 7
	MsgUC       = 8  // a uc proxy session (uc/proxy)
	MsgRelay    = 9  // a socket handed on: the daemon relays it through a fresh pair
	MsgIdent    = 10 // a relayed socket's fd: which TCP addresses it has
	MsgKeep     = 11 // a listener handed on: keep it for its next holder
	MsgAdopt    = 12 // an inherited listener's fd: give it a slot in this session
	MsgRepair   = 13 // a fresh pair for a socket whose pair the daemon let go of
	MsgPortFree = 14 // is a port the kernel picked free in every engine too
	MsgDirect   = 15 // a shm connection's direct region: the reply carries its memfd
	MsgWake     = 16 // a copy of the direct peer's waker (its app pair's daemon end)
	MsgSpares   = 17 // spare socketpair ends for OpSocket and OpAccept (count in Family)
)

// Spare pairs: at most SparesMax a message, SparesHeld a session.
const (
	SparesMax  = 16
	SparesHeld = 64
)

// CtlHdr starts every control message.
type CtlHdr struct {
	Magic   uint32
	Version uint16
	Type    uint16
	Len     uint32
	Seq     uint32
}

type CtlHello struct {
	Hdr   CtlHdr
	Pid   uint32
	Flags uint32
	Comm  [CommLen]byte
}

type CtlHelloOK struct {
	Hdr       CtlHdr
	ArenaSize uint64
	SessionID uint32
	Pad       uint32
}

type CtlReq struct {
	Hdr      CtlHdr
	Family   int32
	Type     int32
	Protocol int32
	Sock     uint32
	Gen      uint32
	Pad      uint32
	Engine   [EngineLen]byte // MsgSocket: "" (all zero) is the default engine
}

type CtlReply struct {
	Hdr     CtlHdr
	Result  int32
	Sock    uint32
	Gen     uint32
	AddrLen uint32
	Addr    [AddrLen]byte
	Msg     [MsgLen]byte
}

// ArenaHdr is the first page of a session arena.
type ArenaHdr struct {
	Magic      uint32
	Version    uint32
	ArenaSize  uint64
	MaxSocks   uint32
	RingSize   uint32
	CmdOff     uint64
	SocksOff   uint64
	SockStride uint64
	SpinNs     uint64
	_          [CacheLine - 56]byte

	DSeq      uint32
	DSleeping uint32
	_         [CacheLine - 8]byte

	CmdPending uint64
	_          [CacheLine - 8]byte

	Attention [MaxSocksLimit / 64]uint64
}

// Command slot states.
const (
	CmdFree      = 0
	CmdClaimed   = 1
	CmdSubmitted = 2
	CmdDone      = 3
)

// Command flags (Cmd.Flags).
const (
	// CmdAsync: nobody waits; the daemon frees the slot (CLOSE and SETSOCKOPT) and
	// runs such commands first in a batch.
	CmdAsync = 1 << 0
)

// Command ops.
const (
	OpBind        = 1
	OpListen      = 2
	OpConnect     = 3
	OpShutdown    = 4
	OpClose       = 5
	OpGetsockname = 6
	OpGetpeername = 7
	OpSetsockopt  = 8
	OpGetsockopt  = 9
	OpSocket      = 10 // arg0 a spare's id, Opt an OpSocketReq; Addr out an OpBorn
	OpAccept      = 11 // Sock/Gen the listener, arg0 a spare's id; Opt out an OpBorn, Addr the peer
)

// OpSocketReq is OpSocket's Opt.
type OpSocketReq struct {
	Family, Type, Protocol int32
	Engine                 [EngineLen]byte
}

// OpBorn is what OpSocket and OpAccept give back in Opt.
type OpBorn struct {
	Sock, Gen uint32
}

// Cmd is one command slot: a request and, in place, its completion.
type Cmd struct {
	State   uint32
	Waiting uint32
	Op      uint16
	Flags   uint16
	Sock    uint32
	Gen     uint32
	Result  int32
	Arg0    uint32
	Arg1    uint32
	AddrLen uint32
	OptLen  uint32
	Addr    [AddrLen]byte
	Opt     [OptLen]byte
	_       [256 - 40 - AddrLen - OptLen]byte
}

// Socket state bits (daemon-written).
const (
	SSOpen       = 1 << 0
	SSConnecting = 1 << 1
	SSConnected  = 1 << 2
	SSListening  = 1 << 3
	SSAcceptQ    = 1 << 4
	SSRdEOF      = 1 << 5
	SSWrDead     = 1 << 6
	SSError      = 1 << 7
	SSReset      = 1 << 8
	SSTxStall    = 1 << 9
	SSRaw        = 1 << 10
	SSShared     = 1 << 11
	SSDirect     = 1 << 12
)

// Sock.Sig and Sock.Fill values.
const (
	SigNone  = 0
	SigSet   = 1
	FillNone = 0
	FillDone = 1
	FillBusy = 2
)

// Daemon wait bits.
const (
	DWaitRxSpace = 1 << 0
	DWaitTrimTx  = 1 << 1
)

// Ring is one direction of a socket's byte stream.
type Ring struct {
	Head uint64
	Skip uint64 // where the data resumes after a rewind (arena.SkipTo)
	_    [CacheLine - 16]byte
	Tail uint64
	_    [CacheLine - 8]byte
}

// Sock is the shared header of one socket slot.
// Sock.Lazy values (nuse_abi.h enum nuse_lazy).
const (
	LazyNone = 0
	LazyLT   = 1
	LazyET   = 2
)

type Sock struct {
	Gen        uint32
	State      uint32
	SoError    int32
	Sig        uint32
	Fill       uint32
	DaemonWait uint32
	FillBytes  uint64
	TxBytes    uint64
	RxBytes    uint64
	Lazy       uint32 // shim: the daemon may leave data's byte out while Watched is 0
	LazyOwed   uint32 // daemon: data waits without its byte
	Watched    uint32 // shim: its threads asleep in a wait for the socket's data
	_          [CacheLine - 60]byte
	Rx         Ring
	Tx         Ring
	Info       [InfoLen]byte
}

// DirectMagic marks a direct region (nuse_abi.h struct nuse_direct).
const (
	DirectMagic   = 0x54434944
	DirectHdrSize = 4096
)

// Direct is the header of a shm connection's direct region: Ring[i]
// carries the bytes side i writes (side 0 connected, side 1 accepted).
type Direct struct {
	Magic    uint32
	Version  uint32
	RingSize uint32
	_        uint32
	DataOff  uint64
	_        [CacheLine - 24]byte
	Ring     [2]Ring
	WWait    [2]uint32
	RSpin    [2]uint32
	_        [CacheLine - 16]byte
	PSig     [2]uint32 // readiness bytes the peer wrote into side i's app fd
	WakeOK   [2]uint32 // the daemon holds side i's waker (MsgWake)
	ET       [2]uint32 // side i's fd is in an EPOLLET set: each write is an edge
	_        [CacheLine - 24]byte
}
