// Package stack defines the transport-engine interface that nused's
// user-socket engine drives. An engine owns the protocol state of NUSE
// sockets; gVisor's netstack (stack/gvisor) is the default one. Engines
// report errors as syscall.Errno values with Linux semantics, so the shim
// can hand them to applications unchanged.
package stack

import (
	"net/netip"
	"syscall"
	"time"
)

// Events is a readiness mask, as poll(2) understands it.
type Events uint32

const (
	EventIn  Events = 1 << 0 // readable, a connection to accept, or EOF
	EventOut Events = 1 << 1 // writable, or connect finished
	EventErr Events = 1 << 2 // an error is pending (SO_ERROR)
	EventHup Events = 1 << 3 // both directions closed
)

// Option names a socket option the engine understands. Values are ints
// with setsockopt's meaning (booleans are 0/1, sizes in bytes).
type Option int

const (
	OptReuseAddr Option = iota + 1
	OptReusePort
	OptKeepAlive
	OptRcvBuf
	OptSndBuf
	OptNoDelay
	OptKeepIdle
	OptKeepIntvl
	OptKeepCnt
	OptLinger // seconds; -1 = off
	OptV6Only
	OptCork
	OptMaxSeg
	OptQuickAck
)

// Common errors (Linux values).
var (
	ErrWouldBlock = syscall.EAGAIN
	ErrInProgress = syscall.EINPROGRESS
)

// SockStats are a socket's counters, as far as the engine keeps them.
type SockStats struct {
	SegsIn, SegsOut uint64
	Retransmits     uint64
}

// TCPStats are an engine's TCP counters over all its sockets, closed ones
// included (Linux's /proc/net/snmp and netstat -s), for `nuse stats`.
type TCPStats struct {
	ActiveOpens    uint64 `json:"active_opens"`  // connects that sent a SYN
	PassiveOpens   uint64 `json:"passive_opens"` // connections a listener accepted
	Established    uint64 `json:"established"`   // connections established now
	ListenDrops    uint64 `json:"listen_drops"`  // SYNs and handshake ACKs dropped: an accept queue was full
	SynCookies     uint64 `json:"syn_cookies"`   // SYN cookies sent: the SYN queue was full
	ResetsSent     uint64 `json:"resets_sent"`
	ResetsReceived uint64 `json:"resets_received"`
	SegsOut        uint64 `json:"segs_out"`
	SegsIn         uint64 `json:"segs_in"`
	BadSegs        uint64 `json:"bad_segs"`    // malformed or with a bad checksum
	Retransmits    uint64 `json:"retransmits"` // segments sent again
	TailProbes     uint64 `json:"tail_probes"` // tail loss probes (RACK's TLP)
	Timeouts       uint64 `json:"timeouts"`    // retransmission timer expiries
	Spurious       uint64 `json:"spurious"`    // recoveries found needless afterwards (the segment had arrived)
}

// TCPCounter is implemented by an engine that runs a TCP stack of its own
// (gvisor); the kernel engine's are the daemon namespace's (nstat).
type TCPCounter interface {
	TCPStats() TCPStats
}

// TCPInfo is what getsockopt(TCP_INFO) reports, as far as the engine knows
// it; zero means unknown.
type TCPInfo struct {
	State        uint8 // Linux TCP_* state (1 established ... 10 listen, 11 closing; 7 close)
	CAState      uint8 // Linux TCP_CA_*: 0 open, 1 disorder, 3 recovery, 4 loss
	RTO          time.Duration
	RTT, RTTVar  time.Duration
	SndMSS       uint32
	SndCwnd      uint32 // segments
	SndSsthresh  uint32
	TotalRetrans uint32
	SegsOut      uint32
	SegsIn       uint32
	Reordering   bool
}

// Engine creates sockets.
type Engine interface {
	// Name is the engine's name as rules and `nuse stats` show it.
	Name() string
	// Socket creates a stream socket of family AF_INET or AF_INET6.
	Socket(family int) (Socket, error)
	// Close tears the engine down, aborting all sockets.
	Close() error
}

// FDCost is implemented by an engine whose sockets each hold file
// descriptors of the process that runs it (the kernel engine: a real
// kernel socket per NUSE socket). The daemon counts them against its fd
// limit, so that no client can make it run out.
type FDCost interface {
	FDsPerSocket() int
}

// RxQueuer is a Socket that can say how many received bytes it holds, so
// that the daemon can rewind an empty ring (daemon/arena.RewindAt) when
// they fit. Engines without it never rewind their sockets' rx rings.
type RxQueuer interface {
	RxQueued() int
}

// Poller is implemented by an engine whose device the daemon's workers can
// read in their passes (the gvisor engine on a TAP): frames that arrive
// while a worker runs then reach the stack on the worker's thread, with no
// reader thread to wake and no goroutine to schedule. Poll delivers what
// is waiting, without blocking, and says whether there was any.
//
// Polled tells the engine whether a worker is awake, and so reads the
// device every pass (true), or all are asleep or gone (false): only then
// must the device's own reader watch it, and a reader that woke for every
// frame while a worker polled anyway would cost a thread wake-up per frame.
// The daemon calls it on every change, one call at a time.
type Poller interface {
	Poll() bool
	Polled(on bool)
}

// EagerPoller is a Poller whose own reader adds nothing beside an awake
// worker even on a thread of its own: it only relays events that the
// workers' polls take anyway, each one a thread wake-up (the kernel
// engine's readiness waiter, woken by every segment over loopback). The
// daemon tells it Polled(true) whenever a worker is awake, not only when
// the workers hold every thread.
type EagerPoller interface {
	Poller
	PollEagerly()
}

// FDsPerSocket is what one socket of e costs in file descriptors: none for
// an engine that does not say (gVisor's sockets are memory).
func FDsPerSocket(e Engine) int {
	if c, ok := e.(FDCost); ok {
		return c.FDsPerSocket()
	}
	return 0
}

// Socket is one stream socket in an engine. All calls are non-blocking;
// blocking is the shim's business. Calls on one socket are serialized by
// the caller; Notify's callback may run on any goroutine, concurrently.
type Socket interface {
	Bind(addr netip.AddrPort) error
	Listen(backlog int) error
	// Connect starts a connection: nil if it is established at once,
	// ErrInProgress if it is under way (EventOut tells when it is done and
	// ConnectResult what came of it).
	Connect(addr netip.AddrPort) error
	ConnectResult() error
	// Accept returns a pending connection or ErrWouldBlock.
	Accept() (Socket, netip.AddrPort, error)
	// Read fills p; (0, nil) with EOF true means the peer shut down its
	// side; ErrWouldBlock means nothing is there yet.
	Read(p []byte) (n int, eof bool, err error)
	// Write sends from p; ErrWouldBlock when the send buffer is full.
	Write(p []byte) (int, error)
	Shutdown(how int) error
	// Close closes gracefully: data already written is still delivered.
	Close()
	// Abort resets the connection.
	Abort()
	LocalAddr() (netip.AddrPort, error)
	RemoteAddr() (netip.AddrPort, error)
	SetOption(o Option, v int) error
	GetOption(o Option) (int, error)
	// Readiness returns the events that hold now.
	Readiness() Events
	// Notify arranges for fn to be called when readiness may have
	// changed. Only one callback is kept; nil removes it.
	Notify(fn func(Events))
	Stats() SockStats
	// Info reports TCP state for TCP_INFO.
	Info() TCPInfo
	// Congestion names the congestion control in use (TCP_CONGESTION);
	// SetCongestion picks one by name (ENOENT if the engine lacks it).
	Congestion() (string, error)
	SetCongestion(name string) error
}

// DirectSocket is a Socket whose connection's bytes can travel in memory
// the two ends' programs map themselves (stack/shm): the daemon hands the
// region to the end's program and no longer moves that end's bytes; it
// only keeps the connection's state and wakes a side that sleeps.
type DirectSocket interface {
	Socket
	// Attach gives the connection's region once the socket is
	// established: a memfd (the engine keeps it open while the
	// connection lives; the caller must not close it) and this end's
	// side (0: the connecting end). From then on this end's program
	// produces into ring[side] and consumes ring[1-side] itself; Read
	// and Write move no bytes for it (Read still reports EOF and
	// errors). ok is false when the socket has no region.
	Attach() (fd, side int, ok bool)
	// Detach ends Attach: the program let go of the region, and Read
	// and Write serve it again (a relay takes over in order).
	Detach()
	// Moved is called after the attached end's program may have moved
	// its counters: the engine re-reads them, tells the peer of news
	// (data, room), and resets the connection if they are out of range.
	// It returns the counters as checked.
	Moved() (DirectCounts, error)
	// WaitSpace marks this end's writer as waiting for room (the
	// reader's program then flags its socket for the daemon when it
	// frees some) and returns the counters as read after the mark.
	WaitSpace() DirectCounts
	// RingSize is the capacity of each direction of the region.
	RingSize() uint64
	// SetWaker gives the attached end's waker: the fd whose peer its
	// program polls (the daemon's end of its app pair), so that the other
	// end's program can wake it itself, without the daemon (-1: forget
	// it). The engine never closes it; the caller forgets it, or closes
	// the socket, before it closes the fd. An engine may ignore it.
	SetWaker(fd int)
	// PeerWaker returns a copy (close-on-exec, the caller's to close) of
	// the other end's waker, or an error when it has none (yet).
	PeerWaker() (int, error)
	// Unread is what the end has to read as the region says now (its
	// program may have read more than the last Moved saw).
	Unread() uint64
}

// DirectCounts are an attached end's ring counters as the engine checked
// them: Rx is what it reads (RxHead-RxTail unread), Tx what it writes
// (TxHead-TxTail not yet read by the peer). Heads only grow while the
// connection is sane, so they also count the bytes moved.
type DirectCounts struct {
	RxHead, RxTail, TxHead, TxTail uint64
}

// Unread is what the end has to read.
func (d DirectCounts) Unread() uint64 { return d.RxHead - d.RxTail }

// Unsent is what the end wrote that its peer has not read.
func (d DirectCounts) Unsent() uint64 { return d.TxHead - d.TxTail }
