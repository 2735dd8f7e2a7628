package kernel

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/stack"
)

// socket is one kernel TCP socket behind stack.Socket.
type socket struct {
	e      *Engine
	id     uint64
	family int
	fn     atomic.Pointer[func(stack.Events)]

	// life guards fd against being closed while the poller asks it for
	// readiness (the fd number could be reused by then); fd is -1 once
	// closed. Callers' calls are serialized by them and take only a read
	// lock.
	life sync.RWMutex
	fd   int

	// connStarted: Connect was called (or an adopted socket is
	// connected); connErr: the connect's error once seen, kept as
	// ConnectResult's contract asks.
	connStarted bool
	connErr     error

	// final are the counters as they were at Close, for stats of a
	// closed socket (set under life's write lock).
	final *stack.SockStats

	// rx says whether a read(2) can find anything (rxMaybe), so that
	// Read skips the system call when it cannot: epoll (edge-triggered)
	// reports every arrival after a read that found the socket empty
	// (EAGAIN) or emptied it (a short read). rxAlways: the peer's end, an
	// error or urgent data was reported; a short read may then stop
	// before what is left (at the urgent mark; before the EOF), so every
	// Read reads.
	rx atomic.Uint32
}

const (
	rxMaybe  = 1
	rxAlways = 2
)

var _ stack.Socket = (*socket)(nil)

// notify runs on the poller's goroutine or a worker's (Poll), with the
// events epoll reported: the socket's poll mask when epoll looked
// (edge-triggered epoll reports the whole mask, not only what changed),
// so no poll(2) of its own -- that was a system call per event, 5% of the
// daemon's CPU under redis GET.
func (so *socket) notify(mask uint32) {
	// Before the callback (and whether or not there is one yet): the
	// reads it leads to must look. A hang-up alone is not the peer's end
	// (that is RDHUP; a reset is ERR): a socket not yet connected has it
	// (TCP_CLOSE), from the moment it joins the epoll set. Taken for one,
	// it made every connecting socket read twice per message for good.
	switch {
	case mask&(unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLPRI) != 0:
		so.rx.Or(rxMaybe | rxAlways)
	case mask&(unix.EPOLLIN|unix.EPOLLHUP) != 0:
		so.rx.Or(rxMaybe)
	}
	fn := so.fn.Load()
	if fn == nil {
		return
	}
	so.life.RLock()
	open := so.fd >= 0
	so.life.RUnlock()
	if open {
		(*fn)(events(int16(mask)))
	}
}

// Notify implements stack.Socket. fn runs on the engine's poller goroutine,
// never inside a Socket call; it may call Readiness.
func (so *socket) Notify(fn func(stack.Events)) {
	if fn == nil {
		so.fn.Store(nil)
		return
	}
	so.fn.Store(&fn)
}

// Readiness implements stack.Socket with poll(2)'s view of the socket.
func (so *socket) Readiness() stack.Events {
	ev, _ := so.readiness()
	return ev
}

func (so *socket) readiness() (stack.Events, bool) {
	so.life.RLock()
	defer so.life.RUnlock()
	if so.fd < 0 {
		return 0, false
	}
	pfd := []unix.PollFd{{Fd: int32(so.fd), Events: unix.POLLIN | unix.POLLOUT | unix.POLLRDHUP}}
	for {
		_, err := unix.Poll(pfd, 0)
		if err != unix.EINTR {
			break
		}
	}
	return events(pfd[0].Revents), true
}

// events converts a poll(2) or epoll mask (their bits agree) to the
// engine's events.
func events(r int16) stack.Events {
	var ev stack.Events
	if r&(unix.POLLIN|unix.POLLRDHUP) != 0 {
		ev |= stack.EventIn
	}
	if r&unix.POLLOUT != 0 {
		ev |= stack.EventOut
	}
	if r&unix.POLLERR != 0 {
		ev |= stack.EventErr
	}
	if r&unix.POLLHUP != 0 {
		ev |= stack.EventHup
	}
	return ev
}

// sockaddr converts an address for this socket's family: IPv4 on an IPv6
// socket becomes v4-mapped, as the kernel wants it.
func (so *socket) sockaddr(ap netip.AddrPort) (unix.Sockaddr, error) {
	a := ap.Addr()
	if !a.IsValid() {
		return nil, syscall.EINVAL
	}
	switch so.family {
	case unix.AF_INET:
		a = a.Unmap()
		if !a.Is4() {
			return nil, syscall.EAFNOSUPPORT
		}
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}, nil
	default:
		sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
		if z := a.Zone(); z != "" {
			if ifi, err := netInterfaceIndex(z); err == nil {
				sa.ZoneId = uint32(ifi)
			}
		}
		return sa, nil
	}
}

// fromSockaddr converts what the kernel reports.
func fromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// Bind implements stack.Socket.
func (so *socket) Bind(ap netip.AddrPort) error {
	sa, err := so.sockaddr(ap)
	if err != nil {
		return err
	}
	return errnoOf(unix.Bind(so.fd, sa))
}

// Listen implements stack.Socket.
func (so *socket) Listen(backlog int) error {
	if backlog <= 0 {
		backlog = 1
	}
	return errnoOf(unix.Listen(so.fd, backlog))
}

// Connect implements stack.Socket: EINPROGRESS (stack.ErrInProgress) while
// the handshake runs, as a non-blocking connect(2) says.
func (so *socket) Connect(ap netip.AddrPort) error {
	sa, err := so.sockaddr(ap)
	if err != nil {
		return err
	}
	so.connStarted = true
	so.connErr = nil
	err = unix.Connect(so.fd, sa)
	for err == unix.EINTR {
		// An interrupted connect goes on in the background; asking again
		// says how it is doing (EALREADY: under way).
		err = unix.Connect(so.fd, sa)
		if err == unix.EALREADY {
			err = unix.EINPROGRESS
		}
	}
	if err != nil && err != unix.EINPROGRESS && err != unix.EALREADY && err != unix.EISCONN {
		so.connErr = errnoOf(err)
	}
	so.e.pollNow() // over loopback the handshake is often done already
	return errnoOf(err)
}

// ConnectResult implements stack.Socket, with SO_ERROR's meaning but kept:
// asking twice gives the same answer.
func (so *socket) ConnectResult() error {
	if so.connErr != nil {
		return so.connErr
	}
	if !so.connStarted {
		return nil
	}
	if v, err := unix.GetsockoptInt(so.fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && v != 0 {
		so.connErr = syscall.Errno(v)
		return so.connErr
	}
	ti, err := unix.GetsockoptTCPInfo(so.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return errnoOf(err)
	}
	switch ti.State {
	case tcpSynSent, tcpSynRecv:
		return syscall.EINPROGRESS
	case tcpClose:
		if _, err := unix.Getpeername(so.fd); err != nil {
			// Failed with the error taken by a read: say refused rather
			// than claim success.
			so.connErr = syscall.ECONNREFUSED
			return so.connErr
		}
	}
	return nil
}

// Linux TCP states (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpSynSent     = 2
	tcpSynRecv     = 3
	tcpClose       = 7
)

// Accept implements stack.Socket.
func (so *socket) Accept() (stack.Socket, netip.AddrPort, error) {
	for {
		nfd, sa, err := unix.Accept4(so.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, netip.AddrPort{}, errnoOf(err)
		}
		ns, err := so.e.add(nfd, so.family, true)
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		return ns, fromSockaddr(sa), nil
	}
}

// Read implements stack.Socket.
func (so *socket) Read(p []byte) (int, bool, error) {
	if len(p) == 0 {
		return 0, false, nil
	}
	// Cleared before the read: an arrival after it is reported (notify)
	// and sets it again. Over loopback most Reads found nothing: the
	// second of a pump's reads, and the one after every write (the
	// daemon pumps both ways), two system calls of five per delivery.
	if so.rx.And(^uint32(rxMaybe))&(rxMaybe|rxAlways) == 0 {
		return 0, false, stack.ErrWouldBlock
	}
	for {
		n, err := unix.Read(so.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, false, errnoOf(err)
		case n == 0:
			return 0, true, nil
		case n == len(p):
			so.rx.Or(rxMaybe) // more may wait
		}
		return n, false, nil
	}
}

// RxQueued implements stack.RxQueuer: the bytes the kernel socket holds
// for reading (SIOCINQ), 0 when it cannot say.
func (so *socket) RxQueued() int {
	n, err := unix.IoctlGetInt(so.fd, unix.SIOCINQ)
	if err != nil {
		return 0
	}
	return n
}

// Write implements stack.Socket (MSG_NOSIGNAL: a dead peer is EPIPE, never
// a signal to the daemon).
func (so *socket) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.SendmsgN(so.fd, p, nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, errnoOf(err)
		}
		so.e.pollNow()
		return n, nil
	}
}

// Shutdown implements stack.Socket.
func (so *socket) Shutdown(how int) error {
	err := unix.Shutdown(so.fd, how)
	so.e.pollNow() // the peer's EOF, over loopback
	return errnoOf(err)
}

// Close implements stack.Socket: close(2); the kernel still delivers what
// was written (and resets, as Linux does, if received data was unread).
func (so *socket) Close() {
	so.fn.Store(nil)
	so.life.Lock()
	if so.fd < 0 {
		so.life.Unlock()
		return
	}
	so.e.remove(so)
	if ti, err := unix.GetsockoptTCPInfo(so.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
		so.final = statsOf(ti)
	}
	unix.Close(so.fd)
	so.fd = -1
	so.life.Unlock()
	so.e.pollNow() // the peer's EOF or reset, over loopback
}

// Abort implements stack.Socket: SO_LINGER 0 and close, which sends RST.
func (so *socket) Abort() {
	so.life.RLock()
	if so.fd >= 0 {
		_ = unix.SetsockoptLinger(so.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	so.life.RUnlock()
	so.Close()
}

// LocalAddr implements stack.Socket.
func (so *socket) LocalAddr() (netip.AddrPort, error) {
	sa, err := unix.Getsockname(so.fd)
	if err != nil {
		return netip.AddrPort{}, errnoOf(err)
	}
	return fromSockaddr(sa), nil
}

// RemoteAddr implements stack.Socket.
func (so *socket) RemoteAddr() (netip.AddrPort, error) {
	sa, err := unix.Getpeername(so.fd)
	if err != nil {
		return netip.AddrPort{}, errnoOf(err)
	}
	return fromSockaddr(sa), nil
}

// optLevel maps an option to its setsockopt level and name.
func optLevel(o stack.Option) (level, name int, ok bool) {
	switch o {
	case stack.OptReuseAddr:
		return unix.SOL_SOCKET, unix.SO_REUSEADDR, true
	case stack.OptReusePort:
		return unix.SOL_SOCKET, unix.SO_REUSEPORT, true
	case stack.OptKeepAlive:
		return unix.SOL_SOCKET, unix.SO_KEEPALIVE, true
	case stack.OptRcvBuf:
		return unix.SOL_SOCKET, unix.SO_RCVBUF, true
	case stack.OptSndBuf:
		return unix.SOL_SOCKET, unix.SO_SNDBUF, true
	case stack.OptNoDelay:
		return unix.IPPROTO_TCP, unix.TCP_NODELAY, true
	case stack.OptKeepIdle:
		return unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, true
	case stack.OptKeepIntvl:
		return unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, true
	case stack.OptKeepCnt:
		return unix.IPPROTO_TCP, unix.TCP_KEEPCNT, true
	case stack.OptV6Only:
		return unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, true
	case stack.OptCork:
		return unix.IPPROTO_TCP, unix.TCP_CORK, true
	case stack.OptMaxSeg:
		return unix.IPPROTO_TCP, unix.TCP_MAXSEG, true
	case stack.OptQuickAck:
		return unix.IPPROTO_TCP, unix.TCP_QUICKACK, true
	}
	return 0, 0, false
}

// SetOption implements stack.Socket: setsockopt(2), the kernel's answer
// unchanged.
func (so *socket) SetOption(o stack.Option, v int) error {
	if o == stack.OptLinger {
		l := unix.Linger{}
		if v >= 0 {
			l = unix.Linger{Onoff: 1, Linger: int32(v)}
		}
		return errnoOf(unix.SetsockoptLinger(so.fd, unix.SOL_SOCKET, unix.SO_LINGER, &l))
	}
	level, name, ok := optLevel(o)
	if !ok {
		return syscall.ENOPROTOOPT
	}
	return errnoOf(unix.SetsockoptInt(so.fd, level, name, v))
}

// GetOption implements stack.Socket: getsockopt(2). (SO_RCVBUF and
// SO_SNDBUF read back doubled, as on Linux.)
func (so *socket) GetOption(o stack.Option) (int, error) {
	if o == stack.OptLinger {
		l, err := unix.GetsockoptLinger(so.fd, unix.SOL_SOCKET, unix.SO_LINGER)
		if err != nil {
			return 0, errnoOf(err)
		}
		if l.Onoff == 0 {
			return -1, nil
		}
		return int(l.Linger), nil
	}
	level, name, ok := optLevel(o)
	if !ok {
		return 0, syscall.ENOPROTOOPT
	}
	v, err := unix.GetsockoptInt(so.fd, level, name)
	return v, errnoOf(err)
}

// Stats implements stack.Socket from TCP_INFO (of a closed socket: as it
// was at Close).
func (so *socket) Stats() stack.SockStats {
	so.life.RLock()
	defer so.life.RUnlock()
	if so.fd < 0 {
		if so.final != nil {
			return *so.final
		}
		return stack.SockStats{}
	}
	ti, err := unix.GetsockoptTCPInfo(so.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return stack.SockStats{}
	}
	return *statsOf(ti)
}

func statsOf(ti *unix.TCPInfo) *stack.SockStats {
	return &stack.SockStats{SegsIn: uint64(ti.Segs_in), SegsOut: uint64(ti.Segs_out), Retransmits: uint64(ti.Total_retrans)}
}

func (so *socket) tcpInfo() (*unix.TCPInfo, error) {
	so.life.RLock()
	defer so.life.RUnlock()
	if so.fd < 0 {
		return nil, syscall.EBADF
	}
	return unix.GetsockoptTCPInfo(so.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
}

// Info implements stack.Socket with the kernel's TCP_INFO.
func (so *socket) Info() stack.TCPInfo {
	ti, err := so.tcpInfo()
	if err != nil {
		return stack.TCPInfo{}
	}
	us := func(v uint32) time.Duration { return time.Duration(v) * time.Microsecond }
	return stack.TCPInfo{
		State: ti.State, CAState: ti.Ca_state,
		RTO: us(ti.Rto), RTT: us(ti.Rtt), RTTVar: us(ti.Rttvar),
		SndMSS: ti.Snd_mss, SndCwnd: ti.Snd_cwnd, SndSsthresh: ti.Snd_ssthresh,
		TotalRetrans: ti.Total_retrans, SegsOut: ti.Segs_out, SegsIn: ti.Segs_in,
		Reordering: ti.Reord_seen > 0,
	}
}

// Congestion implements stack.Socket (TCP_CONGESTION).
func (so *socket) Congestion() (string, error) {
	s, err := unix.GetsockoptString(so.fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	return s, errnoOf(err)
}

// SetCongestion implements stack.Socket: any algorithm the kernel has
// (ENOENT if it lacks it, EPERM if it is not allowed to this user).
func (so *socket) SetCongestion(name string) error {
	return errnoOf(unix.SetsockoptString(so.fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, name))
}

// netInterfaceIndex is the index of a zone's interface (fe80::1%eth0), or
// the zone itself when it is a number.
func netInterfaceIndex(zone string) (int, error) {
	if n, err := strconv.Atoi(zone); err == nil {
		return n, nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, err
	}
	return ifi.Index, nil
}
