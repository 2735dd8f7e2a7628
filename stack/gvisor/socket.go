package gvisor

import (
	"bytes"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/nuse-project/nuse/stack"
)

// socket is one netstack TCP endpoint behind stack.Socket.
//
// Calls are serialized by the caller (stack.Socket's contract), so the
// fields below that are not atomic need no lock.
type socket struct {
	family int
	ep     tcpip.Endpoint
	tep    *tcp.Endpoint // the same endpoint, for TCP-only calls
	wq     *waiter.Queue
	entry  waiter.Entry
	fn     atomic.Pointer[func(stack.Events)]

	rd       bytes.Reader      // reused by Write so that it does not allocate
	sw       tcpip.SliceWriter // reused by Read, likewise
	moderate bool              // receive-buffer auto-tuning is on
	connErr  error             // the outcome of a failed connect, once seen
	// connStarted: Connect was called; connDone: it was seen established.
	connStarted, connDone bool
	closed                bool
}

var _ stack.Socket = (*socket)(nil)

// Events the waiter entry listens for: everything that can change what
// Readiness reports.
const watched = waiter.ReadableEvents | waiter.WritableEvents | waiter.EventErr | waiter.EventHUp | waiter.EventRdHUp

func (so *socket) init(ep tcpip.Endpoint) {
	so.ep = ep
	so.tep = ep.(*tcp.Endpoint)
	// One entry for the socket's life; Notify only swaps the callback, so
	// it never takes the queue's lock and is safe to call from fn itself.
	so.entry = waiter.NewFunctionEntry(watched, so.notify)
	so.wq.EventRegister(&so.entry)
}

// notify runs on netstack's goroutines, with the endpoint's own lock (the
// one Read, Write, Connect... take) possibly held and the waiter queue
// read-locked. Hence fn may only call Readiness (which takes just netstack's
// leaf queue locks) or hand off to another goroutine.
func (so *socket) notify(waiter.EventMask) {
	if fn := so.fn.Load(); fn != nil {
		(*fn)(so.Readiness())
	}
}

// Notify implements stack.Socket. fn receives the readiness at the time of
// the call. It runs on netstack's goroutines, and also synchronously inside
// the Socket call that caused the change (Connect, Write, Read, Shutdown,
// Close, Accept...) on the caller's goroutine, with netstack's endpoint lock
// held. So fn must not call any Socket method other than Readiness and
// Notify, and must not take a lock that a caller of Socket methods may hold:
// it should set flags and wake a worker.
func (so *socket) Notify(fn func(stack.Events)) {
	if fn == nil {
		so.fn.Store(nil)
		return
	}
	so.fn.Store(&fn)
}

// Readiness implements stack.Socket.
func (so *socket) Readiness() stack.Events {
	m := so.ep.Readiness(waiter.ReadableEvents | waiter.WritableEvents | waiter.EventErr | waiter.EventHUp)
	var ev stack.Events
	if m&waiter.ReadableEvents != 0 {
		ev |= stack.EventIn
	}
	if m&waiter.WritableEvents != 0 {
		ev |= stack.EventOut
	}
	if m&waiter.EventErr != 0 {
		ev |= stack.EventErr
	}
	if m&waiter.EventHUp != 0 {
		ev |= stack.EventHup
	}
	if st := so.tep.EndpointState(); st == tcp.StateInitial || st == tcp.StateBound {
		// Linux polls a socket that never connected as POLLOUT|POLLHUP.
		ev |= stack.EventOut
	}
	return ev
}

// toFull converts an address from the caller into netstack's form for this
// socket's family. IPv4 addresses on IPv6 sockets become v4-mapped (netstack
// handles dual-stack from those); the unspecified address becomes netstack's
// empty "any" address.
func (so *socket) toFull(ap netip.AddrPort) (tcpip.FullAddress, error) {
	a := ap.Addr().WithZone("")
	switch so.family {
	case syscall.AF_INET:
		a = a.Unmap()
		if !a.Is4() {
			return tcpip.FullAddress{}, syscall.EAFNOSUPPORT
		}
	case syscall.AF_INET6:
		if a.Is4() {
			a = netip.AddrFrom16(a.As16())
		}
	}
	fa := tcpip.FullAddress{Port: ap.Port()}
	if a.IsValid() && !a.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	return fa, nil
}

// fromFull converts a netstack address to what Linux reports for this
// socket's family: IPv4 peers of IPv6 sockets as ::ffff:a.b.c.d, the "any"
// address as 0.0.0.0 or ::.
func (so *socket) fromFull(fa tcpip.FullAddress) netip.AddrPort {
	var a netip.Addr
	switch fa.Addr.Len() {
	case 4:
		a = netip.AddrFrom4(fa.Addr.As4())
		if so.family == syscall.AF_INET6 {
			a = netip.AddrFrom16(a.As16())
		}
	case 16:
		a = netip.AddrFrom16(fa.Addr.As16())
	default:
		if so.family == syscall.AF_INET6 {
			a = netip.IPv6Unspecified()
		} else {
			a = netip.IPv4Unspecified()
		}
	}
	return netip.AddrPortFrom(a, fa.Port)
}

// Bind implements stack.Socket.
func (so *socket) Bind(ap netip.AddrPort) error {
	fa, err := so.toFull(ap)
	if err != nil {
		return err
	}
	return errno(so.ep.Bind(fa))
}

// Listen implements stack.Socket. An unbound socket gets an ephemeral port,
// as on Linux.
func (so *socket) Listen(backlog int) error {
	if backlog <= 0 {
		backlog = 1
	}
	return errno(so.ep.Listen(backlog))
}

// Connect implements stack.Socket.
func (so *socket) Connect(ap netip.AddrPort) error {
	fa, err := so.toFull(ap)
	if err != nil {
		return err
	}
	if fa.Addr.Len() == 0 {
		// Linux connects to the unspecified address as to loopback.
		if so.family == syscall.AF_INET6 && !ap.Addr().Unmap().Is4() {
			fa.Addr = tcpip.AddrFrom16(netip.IPv6Loopback().As16())
		} else {
			lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
			if so.family == syscall.AF_INET6 {
				lo = netip.AddrFrom16(lo.As16())
			}
			fa.Addr = tcpip.AddrFromSlice(lo.AsSlice())
		}
	}
	// Netstack answers a repeated connect to the same peer with success;
	// Linux says EISCONN (connected) or EALREADY (handshake under way).
	if st := so.tep.EndpointState(); connected(st) {
		return syscall.EISCONN
	} else if connecting(st) {
		return syscall.EALREADY
	}
	so.connErr = nil
	so.connStarted = true
	if e := so.ep.Connect(fa); e != nil {
		if _, started := e.(*tcpip.ErrConnectStarted); started {
			return syscall.EINPROGRESS
		}
		return errno(e)
	}
	return nil
}

func connected(s tcp.EndpointState) bool {
	switch s {
	case tcp.StateEstablished, tcp.StateFinWait1, tcp.StateFinWait2, tcp.StateTimeWait,
		tcp.StateCloseWait, tcp.StateLastAck, tcp.StateClosing:
		return true
	}
	return false
}

func connecting(s tcp.EndpointState) bool {
	switch s {
	case tcp.StateConnecting, tcp.StateSynSent, tcp.StateSynRecv:
		return true
	}
	return false
}

// ConnectResult implements stack.Socket, with SO_ERROR's meaning: nil once
// connected and for sockets that never connected (listeners, fresh ones);
// the connect's error once it failed (kept, so asking twice gives the same
// answer); EINPROGRESS while the handshake runs.
func (so *socket) ConnectResult() error {
	if so.connErr != nil {
		return so.connErr
	}
	if e := so.ep.LastError(); e != nil {
		so.connErr = errno(e)
		return so.connErr
	}
	st := so.tep.EndpointState()
	switch {
	case connected(st):
		so.connDone = true
		return nil
	case connecting(st):
		return syscall.EINPROGRESS
	case st == tcp.StateError && so.connStarted && !so.connDone:
		// Failed before establishing, with the error already taken by
		// someone else: say it was refused rather than claim success.
		so.connErr = syscall.ECONNREFUSED
		return so.connErr
	}
	return nil
}

// Accept implements stack.Socket.
func (so *socket) Accept() (stack.Socket, netip.AddrPort, error) {
	var peer tcpip.FullAddress
	ep, wq, e := so.ep.Accept(&peer)
	if e != nil {
		return nil, netip.AddrPort{}, errno(e)
	}
	ns := &socket{family: so.family, wq: wq, moderate: so.moderate}
	ns.init(ep)
	return ns, ns.fromFull(peer), nil
}

// Read implements stack.Socket. Netstack copies straight from its segments
// into p: a SliceWriter takes what fits and reports a short write, and
// netstack keeps the rest of the segment queued for the next Read.
func (so *socket) Read(p []byte) (int, bool, error) {
	if len(p) == 0 {
		return 0, false, nil
	}
	so.sw = p
	res, e := so.ep.Read(&so.sw, tcpip.ReadOptions{})
	so.sw = nil // drop the reference to p (the shared ring)
	if e != nil {
		switch e.(type) {
		case *tcpip.ErrClosedForReceive:
			return 0, true, nil
		case *tcpip.ErrNotConnected:
			// Linux makes a reader of a socket whose connect is still
			// under way wait (EAGAIN), like SYN-SENT in netstack.
			if connecting(so.tep.EndpointState()) {
				return 0, false, syscall.EAGAIN
			}
		}
		return 0, false, errno(e)
	}
	if so.moderate && res.Count > 0 {
		// Drives receive-buffer auto-tuning, which counts bytes the
		// application consumed.
		so.tep.ModerateRecvBuf(res.Count)
	}
	return res.Count, false, nil
}

// Write implements stack.Socket. It takes as much of p as the send buffer
// has room for.
func (so *socket) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	so.rd.Reset(p)
	n, e := so.ep.Write(&so.rd, tcpip.WriteOptions{})
	so.rd.Reset(nil) // drop the reference to p (the shared ring)
	if e != nil {
		return 0, errno(e)
	}
	return int(n), nil
}

// Shutdown implements stack.Socket (how is SHUT_RD, SHUT_WR or SHUT_RDWR).
func (so *socket) Shutdown(how int) error {
	var f tcpip.ShutdownFlags
	switch how {
	case syscall.SHUT_RD:
		f = tcpip.ShutdownRead
	case syscall.SHUT_WR:
		f = tcpip.ShutdownWrite
	case syscall.SHUT_RDWR:
		f = tcpip.ShutdownRead | tcpip.ShutdownWrite
	default:
		return syscall.EINVAL
	}
	return errno(so.ep.Shutdown(f))
}

// Close implements stack.Socket: data already written is still sent, then
// FIN (unread received data makes it a RST, as on Linux). The callback is
// dropped first: nothing is reported about a closed socket.
func (so *socket) Close() {
	if so.closed {
		return
	}
	so.closed = true
	so.fn.Store(nil)
	so.ep.Close()
	so.wq.EventUnregister(&so.entry)
}

// Abort implements stack.Socket: RST at once, as close() with SO_LINGER 0.
func (so *socket) Abort() {
	if so.closed {
		return
	}
	so.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	so.Close()
}

// LocalAddr implements stack.Socket.
func (so *socket) LocalAddr() (netip.AddrPort, error) {
	fa, e := so.ep.GetLocalAddress()
	if e != nil {
		return netip.AddrPort{}, errno(e)
	}
	return so.fromFull(fa), nil
}

// RemoteAddr implements stack.Socket.
func (so *socket) RemoteAddr() (netip.AddrPort, error) {
	fa, e := so.ep.GetRemoteAddress()
	if e != nil {
		return netip.AddrPort{}, errno(e)
	}
	return so.fromFull(fa), nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// SetOption implements stack.Socket.
func (so *socket) SetOption(o stack.Option, v int) error {
	ops := so.ep.SocketOptions()
	switch o {
	case stack.OptReuseAddr:
		ops.SetReuseAddress(v != 0)
	case stack.OptReusePort:
		ops.SetReusePort(v != 0)
	case stack.OptKeepAlive:
		ops.SetKeepAlive(v != 0)
	case stack.OptRcvBuf:
		if v < 0 {
			return syscall.EINVAL
		}
		ops.SetReceiveBufferSize(int64(v), true)
	case stack.OptSndBuf:
		if v < 0 {
			return syscall.EINVAL
		}
		ops.SetSendBufferSize(int64(v), true)
	case stack.OptNoDelay:
		ops.SetDelayOption(v == 0)
	case stack.OptKeepIdle:
		if v < 1 || v > 32767 {
			return syscall.EINVAL
		}
		opt := tcpip.KeepaliveIdleOption(time.Duration(v) * time.Second)
		return errno(so.ep.SetSockOpt(&opt))
	case stack.OptKeepIntvl:
		if v < 1 || v > 32767 {
			return syscall.EINVAL
		}
		opt := tcpip.KeepaliveIntervalOption(time.Duration(v) * time.Second)
		return errno(so.ep.SetSockOpt(&opt))
	case stack.OptKeepCnt:
		if v < 1 || v > 127 {
			return syscall.EINVAL
		}
		return errno(so.ep.SetSockOptInt(tcpip.KeepaliveCountOption, v))
	case stack.OptLinger:
		ops.SetLinger(tcpip.LingerOption{Enabled: v >= 0, Timeout: time.Duration(max(v, 0)) * time.Second})
	case stack.OptV6Only:
		if so.family != syscall.AF_INET6 {
			return syscall.ENOPROTOOPT
		}
		if st := so.tep.EndpointState(); st != tcp.StateInitial {
			// Linux refuses to change it once bound.
			return syscall.EINVAL
		}
		ops.SetV6Only(v != 0)
	case stack.OptCork:
		ops.SetCorkOption(v != 0)
	case stack.OptMaxSeg:
		return errno(so.ep.SetSockOptInt(tcpip.MaxSegOption, v))
	case stack.OptQuickAck:
		ops.SetQuickAck(v != 0)
	default:
		return syscall.ENOPROTOOPT
	}
	return nil
}

// GetOption implements stack.Socket.
func (so *socket) GetOption(o stack.Option) (int, error) {
	ops := so.ep.SocketOptions()
	switch o {
	case stack.OptReuseAddr:
		return b2i(ops.GetReuseAddress()), nil
	case stack.OptReusePort:
		return b2i(ops.GetReusePort()), nil
	case stack.OptKeepAlive:
		return b2i(ops.GetKeepAlive()), nil
	case stack.OptRcvBuf:
		return int(ops.GetReceiveBufferSize()), nil
	case stack.OptSndBuf:
		return int(ops.GetSendBufferSize()), nil
	case stack.OptNoDelay:
		return b2i(!ops.GetDelayOption()), nil
	case stack.OptKeepIdle:
		var opt tcpip.KeepaliveIdleOption
		if e := so.ep.GetSockOpt(&opt); e != nil {
			return 0, errno(e)
		}
		return int(time.Duration(opt) / time.Second), nil
	case stack.OptKeepIntvl:
		var opt tcpip.KeepaliveIntervalOption
		if e := so.ep.GetSockOpt(&opt); e != nil {
			return 0, errno(e)
		}
		return int(time.Duration(opt) / time.Second), nil
	case stack.OptKeepCnt:
		v, e := so.ep.GetSockOptInt(tcpip.KeepaliveCountOption)
		return v, errno(e)
	case stack.OptLinger:
		l := ops.GetLinger()
		if !l.Enabled {
			return -1, nil
		}
		return int(l.Timeout / time.Second), nil
	case stack.OptV6Only:
		if so.family != syscall.AF_INET6 {
			return 0, syscall.ENOPROTOOPT
		}
		return b2i(ops.GetV6Only()), nil
	case stack.OptCork:
		return b2i(ops.GetCorkOption()), nil
	case stack.OptMaxSeg:
		v, e := so.ep.GetSockOptInt(tcpip.MaxSegOption)
		return v, errno(e)
	case stack.OptQuickAck:
		return b2i(ops.GetQuickAck()), nil
	}
	return 0, syscall.ENOPROTOOPT
}

// Stats implements stack.Socket with the endpoint's own counters.
func (so *socket) Stats() stack.SockStats {
	st, ok := so.ep.Stats().(*tcp.Stats)
	if !ok {
		return stack.SockStats{}
	}
	return stack.SockStats{
		SegsIn:      st.SegmentsReceived.Value(),
		SegsOut:     st.SegmentsSent.Value(),
		Retransmits: st.SendErrors.Retransmits.Value(),
	}
}

// Info implements stack.Socket from the endpoint's TCP_INFO.
func (so *socket) Info() stack.TCPInfo {
	var ti tcpip.TCPInfoOption
	if e := so.ep.GetSockOpt(&ti); e != nil {
		return stack.TCPInfo{}
	}
	info := stack.TCPInfo{
		State: uint8(ti.State), RTO: ti.RTO, RTT: ti.RTT, RTTVar: ti.RTTVar,
		SndCwnd: ti.SndCwnd, SndSsthresh: ti.SndSsthresh, Reordering: ti.ReorderSeen,
	}
	switch ti.CcState {
	case tcpip.Disorder:
		info.CAState = 1
	case tcpip.FastRecovery, tcpip.SACKRecovery:
		info.CAState = 3
	case tcpip.RTORecovery:
		info.CAState = 4
	}
	if mss, e := so.ep.GetSockOptInt(tcpip.MaxSegOption); e == nil && mss > 0 {
		info.SndMSS = uint32(mss)
	}
	st := so.Stats()
	info.TotalRetrans = uint32(st.Retransmits)
	info.SegsOut, info.SegsIn = uint32(st.SegsOut), uint32(st.SegsIn)
	return info
}

// Congestion implements stack.Socket.
func (so *socket) Congestion() (string, error) {
	var cc tcpip.CongestionControlOption
	if e := so.ep.GetSockOpt(&cc); e != nil {
		return "", errno(e)
	}
	return string(cc), nil
}

// SetCongestion implements stack.Socket; gVisor has "reno" and "cubic".
func (so *socket) SetCongestion(name string) error {
	cc := tcpip.CongestionControlOption(name)
	if e := so.ep.SetSockOpt(&cc); e != nil {
		if _, ok := e.(*tcpip.ErrNoSuchFile); ok {
			return syscall.ENOENT
		}
		return errno(e)
	}
	return nil
}

// RxQueued is how many received bytes the endpoint holds (FIONREAD).
func (s *socket) RxQueued() int {
	n, err := s.ep.GetSockOptInt(tcpip.ReceiveQueueSizeOption)
	if err != nil {
		return 0
	}
	return n
}
