// Package shm is the `shm` transport engine: connections between two
// sockets of the same engine (both ends NUSE sockets of one daemon), with
// no protocol stack: no segments, no checksums, no retransmission timers.
// Each connection's bytes live in a region (region.go), one sealed memfd
// holding both directions' rings. The engine's own Read and Write move
// bytes through it; through stack.DirectSocket (direct.go) the daemon
// hands the region to the two ends' programs, which then move their bytes
// themselves while the engine keeps TCP's state and tells each end of what
// the other did (shim/PROTOCOL.md, "Direct connections").
//
// To the program it is TCP:
//
//   - A port table per engine, IPv4 and IPv6 sharing it as on Linux:
//     wildcard and specific binds, a wildcard listener catching connects
//     to any address, EADDRINUSE unless SO_REUSEADDR (neither listening)
//     or SO_REUSEPORT (both) allow it, ephemeral ports from the host's
//     net.ipv4.ip_local_port_range. Bind takes the unspecified address,
//     loopback, the host's interface addresses and the daemon's stack
//     addresses (Config.LocalAddrs); others are EADDRNOTAVAIL. Connect
//     takes any address: what a rule gives to shm is local to it.
//   - Connect where no shm listener waits: ECONNREFUSED at once. With a
//     listener whose accept queue has room (backlog+1, as Linux), the
//     connection is established at once, but Connect answers as Linux's
//     non-blocking connect over loopback does: ErrInProgress, EventOut
//     already there, the next Connect nil (programs test for it). Beyond
//     that the client waits (ErrInProgress, as a SYN that Linux drops and
//     retries): it gets in when the server, having emptied the queue,
//     calls Accept again (that Accept is EAGAIN and lets the waiting
//     clients in; the listener stays readable while clients wait, so an
//     event loop does call it).
//   - Each direction is a ring of at least SO_SNDBUF (writer) + SO_RCVBUF
//     (reader) as they are at connect, 256 KiB each by default, and at
//     least Config.Ring (1 MiB), a power of two; writes are partial or
//     EAGAIN when it is full; EventOut holds while at most 2/3 of it is
//     queued (as Linux's sk_stream_is_writeable).
//   - Shutdown(SHUT_WR) gives the peer EOF after the data; Close is
//     graceful, except with unread received data (or SO_LINGER 0) when it
//     resets; Abort resets. A reset peer reads what is left, then
//     ECONNRESET once, then EOF; its writes fail with ECONNRESET once, then
//     EPIPE. A write to a peer that has closed is taken and reset, as TCP
//     would (the peer's RST comes back).
//   - Info reports the TCP state emulated (established, FIN_WAIT2 after
//     SHUT_WR, CLOSE_WAIT after the peer's, LISTEN, SYN_SENT while waiting
//     for the backlog), a nominal MSS (65483, loopback's) and RTO (200 ms,
//     TCP_RTO_MIN: nothing is ever retransmitted). Stats count "segments"
//     as the pipes see them: the handshake (SYN, SYN-ACK, ACK), one per
//     Write that carried data, one per FIN.
package shm

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/nuse-project/nuse/stack"
)

// Config is the engine's configuration; the zero value is fine.
type Config struct {
	// SndBuf, RcvBuf are every new socket's SO_SNDBUF and SO_RCVBUF
	// (bytes; 0: 256 KiB).
	SndBuf, RcvBuf int
	// Ring is the least capacity of each direction of a connection's
	// region (bytes, rounded up to a power of two; 0: 1 MiB). A
	// direction holds at least the writer's SO_SNDBUF plus the reader's
	// SO_RCVBUF as they were at connect.
	Ring int
	// LocalAddrs are addresses Bind accepts besides the unspecified
	// address, loopback and the host's interface addresses (the daemon's
	// stack addresses).
	LocalAddrs []netip.Prefix
	// DaemonWakes makes every wake-up of a direct reader go through the
	// daemon (its readiness byte), as before writers woke their readers
	// themselves (stack.DirectSocket's SetWaker): for comparison.
	DaemonWakes bool
}

const (
	defaultBuf  = 256 << 10
	defaultRing = 1 << 20
	minBuf      = 4608    // SOCK_MIN_SNDBUF
	maxBuf      = 8 << 20 // the largest buffer a socket may ask for
	nominalMSS  = 65483   // loopback's
)

var settings = []stack.Setting{
	{Key: "sndbuf", Default: "256k", Help: "SO_SNDBUF of every new socket (bytes, k/m suffixes)"},
	{Key: "ring", Default: "1m", Help: "least bytes per direction of a connection's shared region (power of two; bulk transfers run without a wake-up while the reader keeps up)"},
	{Key: "rcvbuf", Default: "256k", Help: "SO_RCVBUF of every new socket (bytes, k/m suffixes)"},
	{Key: "wake", Default: "peer", Help: "who wakes a sleeping reader: peer (the writer's program, through a copy of the reader's fd pair) or daemon (the writer tells the daemon, which does)"},
}

func init() {
	stack.Register(stack.Registration{
		Name:     "shm",
		Summary:  "same-host connections, no protocol stack: both ends NUSE sockets of this daemon, bytes moved by the two programs in memory only they share; the daemon brokers setup and state; a writer wakes a sleeping reader itself",
		Settings: settings,
		New: func(env stack.Env) (stack.Engine, error) {
			cfg := Config{LocalAddrs: env.StackAddrs}
			if len(cfg.LocalAddrs) == 0 {
				// The daemon's default stack addresses (gvisor.DefaultStackAddrs).
				cfg.LocalAddrs = []netip.Prefix{netip.MustParsePrefix("10.77.0.2/16"), netip.MustParsePrefix("fd77::2/64")}
			}
			for k, v := range env.Settings {
				if err := cfg.Set(k, v); err != nil {
					return nil, err
				}
			}
			return New(cfg)
		},
	})
}

// Set applies one key=value setting.
func (c *Config) Set(key, val string) error {
	if key == "wake" {
		switch val {
		case "peer":
			c.DaemonWakes = false
		case "daemon":
			c.DaemonWakes = true
		default:
			return fmt.Errorf("shm.wake: %q is neither peer nor daemon", val)
		}
		return nil
	}
	n, err := parseSize(val)
	if key == "ring" {
		if err != nil || n < 4096 || n > 64<<20 || n&(n-1) != 0 {
			return fmt.Errorf("shm.ring: %q is not a power of two between 4k and 64m", val)
		}
		c.Ring = n
		return nil
	}
	if err != nil || n < minBuf/2 || n > maxBuf/2 {
		return fmt.Errorf("shm.%s: %q is not a buffer size between %d and %d bytes", key, val, minBuf/2, maxBuf/2)
	}
	switch key {
	case "sndbuf":
		c.SndBuf = n
	case "rcvbuf":
		c.RcvBuf = n
	default:
		return fmt.Errorf("shm: unknown setting %q", key)
	}
	return nil
}

func parseSize(s string) (int, error) {
	mul := 1
	switch {
	case strings.HasSuffix(s, "k"):
		mul, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mul, s = 1<<20, strings.TrimSuffix(s, "m")
	}
	n, err := strconv.Atoi(s)
	return n * mul, err
}

// Engine is the shm engine: a port table and the sockets in it.
type Engine struct {
	cfg       Config
	lo, hi    uint16 // ephemeral ports
	somaxconn int

	mu     sync.Mutex
	closed bool
	ports  map[uint16][]*socket // every socket holding a port, by port
	socks  map[*socket]struct{}
	rr     uint32 // SO_REUSEPORT's rotation
}

// New starts an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.SndBuf == 0 {
		cfg.SndBuf = defaultBuf
	}
	if cfg.RcvBuf == 0 {
		cfg.RcvBuf = defaultBuf
	}
	if cfg.Ring == 0 {
		cfg.Ring = defaultRing
	}
	lo, hi := portRange()
	return &Engine{cfg: cfg, lo: lo, hi: hi, somaxconn: somaxconn(),
		ports: map[uint16][]*socket{}, socks: map[*socket]struct{}{}}, nil
}

// Name implements stack.Engine.
func (e *Engine) Name() string { return "shm" }

// Socket implements stack.Engine.
func (e *Engine) Socket(family int) (stack.Socket, error) {
	if family != syscall.AF_INET && family != syscall.AF_INET6 {
		return nil, syscall.EAFNOSUPPORT
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, syscall.ENETDOWN
	}
	s := e.newSocket(family)
	s.sndBuf.Store(int64(e.cfg.SndBuf))
	s.rcvBuf.Store(int64(e.cfg.RcvBuf))
	return s, nil
}

// Close implements stack.Engine: every socket is reset.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	socks := make([]*socket, 0, len(e.socks))
	for s := range e.socks {
		socks = append(socks, s)
	}
	e.mu.Unlock()
	for _, s := range socks {
		s.Abort()
	}
	return nil
}

// newSocket makes a socket and counts it. Called with e.mu held.
func (e *Engine) newSocket(family int) *socket {
	s := &socket{e: e, family: family, linger: -1, keepIdle: 7200, keepIntvl: 75, keepCnt: 9, cc: "cubic"}
	e.socks[s] = struct{}{}
	return s
}

// ---- the port table (all called with e.mu held) ----

// addrSet is the part of one family's address space a bound socket
// covers.
type addrSet struct {
	none, any bool
	one       netip.Addr
}

func (a addrSet) overlaps(b addrSet) bool {
	return !a.none && !b.none && (a.any || b.any || a.one == b.one)
}

// spans gives what s's local address covers in IPv4 and IPv6.
func (s *socket) spans() (v4, v6 addrSet) {
	la := s.local.Addr()
	if s.family == syscall.AF_INET {
		return addrSet{any: la.IsUnspecified(), one: la}, addrSet{none: true}
	}
	switch {
	case la.IsUnspecified():
		return addrSet{any: true, none: s.v6only.Load()}, addrSet{any: true}
	case la.Is4In6():
		return addrSet{one: la.Unmap(), any: la.Unmap().IsUnspecified()}, addrSet{none: true}
	default:
		return addrSet{none: true}, addrSet{one: la}
	}
}

func overlap(a, b *socket) bool {
	a4, a6 := a.spans()
	b4, b6 := b.spans()
	return a4.overlaps(b4) || a6.overlaps(b6)
}

// conflicts reports whether s may not hold its local address next to the
// sockets already there (Linux's inet_csk_bind_conflict, one user).
func (e *Engine) conflicts(s *socket) bool {
	for _, x := range e.ports[s.local.Port()] {
		if x == s || !overlap(x, s) {
			continue
		}
		if x.reuseAddr.Load() && s.reuseAddr.Load() && x.st() != stListen {
			continue
		}
		if x.reusePort.Load() && s.reusePort.Load() {
			continue
		}
		return true
	}
	return false
}

// take puts s in the table at its local address; port 0 picks an
// ephemeral port (for a connect, fresh: one no socket holds).
func (e *Engine) take(s *socket, addr netip.Addr, port uint16, fresh bool) error {
	if port != 0 {
		s.local = netip.AddrPortFrom(addr, port)
		if e.conflicts(s) {
			s.local = netip.AddrPortFrom(addr, 0)
			return syscall.EADDRINUSE
		}
		e.ports[port] = append(e.ports[port], s)
		return nil
	}
	n := uint32(e.hi-e.lo) + 1
	start := rand.Uint32N(n)
	for i := uint32(0); i < n; i++ {
		p := e.lo + uint16((start+i)%n)
		if fresh && len(e.ports[p]) > 0 {
			continue
		}
		s.local = netip.AddrPortFrom(addr, p)
		if !e.conflicts(s) {
			e.ports[p] = append(e.ports[p], s)
			return nil
		}
	}
	s.local = netip.AddrPortFrom(addr, 0)
	return syscall.EADDRINUSE
}

// drop takes s out of the table.
func (e *Engine) drop(s *socket) {
	p := s.local.Port()
	l := e.ports[p]
	for i, x := range l {
		if x == s {
			l = append(l[:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(e.ports, p)
	} else {
		e.ports[p] = l
	}
}

// listener finds the listener for a connection to a:port (a unmapped):
// a specific address before a wildcard, its own family before IPv6's
// wildcard, SO_REUSEPORT groups in turn.
func (e *Engine) listener(a netip.Addr, port uint16) *socket {
	var best []*socket
	bestScore := 0
	for _, x := range e.ports[port] {
		if x.st() != stListen {
			continue
		}
		v4, v6 := x.spans()
		set := v6
		if a.Is4() {
			set = v4
		}
		if set.none || (!set.any && set.one != a) {
			continue
		}
		score := 1
		if !set.any {
			score += 2
		}
		if (x.family == syscall.AF_INET) == a.Is4() {
			score++
		}
		switch {
		case score > bestScore:
			best, bestScore = []*socket{x}, score
		case score == bestScore:
			best = append(best, x)
		}
	}
	switch len(best) {
	case 0:
		return nil
	case 1:
		return best[0]
	}
	e.rr++
	return best[int(e.rr)%len(best)]
}

// isLocal reports whether Bind may take a (unmapped).
func (e *Engine) isLocal(a netip.Addr) bool {
	if a.IsUnspecified() || a.IsLoopback() {
		return true
	}
	for _, p := range e.cfg.LocalAddrs {
		if p.Addr().Unmap() == a {
			return true
		}
	}
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ifa := range ifas {
		if n, ok := ifa.(*net.IPNet); ok {
			if x, ok := netip.AddrFromSlice(n.IP); ok && x.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// portRange reads net.ipv4.ip_local_port_range (32768 60999 where it
// cannot be read), as stack/gvisor does.
func portRange() (uint16, uint16) {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if n, _ := fmt.Sscan(string(b), &lo, &hi); n != 2 {
			lo, hi = 32768, 60999
		}
	}
	if lo < 1 || hi > 65535 || lo > hi {
		lo, hi = 32768, 60999
	}
	return uint16(lo), uint16(hi)
}

// somaxconn reads net.core.somaxconn (4096 where it cannot be read).
func somaxconn() int {
	n := 4096
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			n = v
		}
	}
	return n
}
