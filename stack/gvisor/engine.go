// Package gvisor is NUSE's default transport engine: gVisor's netstack
// (IPv4, IPv6, ARP, TCP, UDP, ICMP) behind the stack.Engine interface.
//
// The stack has up to two NICs: the netdev (a TAP, the kernel module, an
// RDMA UC channel...) carrying the stack's own addresses and a default route
// to the kernel side, and a loopback NIC with 127.0.0.1/8 and ::1 so that
// NUSE-to-NUSE loopback traffic never leaves the stack. Connections to the
// stack's own addresses are delivered locally.
package gvisor

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/link/delack"
	"github.com/nuse-project/nuse/stack/netdev"
)

// Default addressing of the stack on its netdev (the kernel side of a TAP
// is .1 / ::1 of the same prefixes).
var (
	DefaultStackAddrs = []netip.Prefix{
		netip.MustParsePrefix("10.77.0.2/16"),
		netip.MustParsePrefix("fd77::2/64"),
	}
	DefaultGateways = []netip.Addr{
		netip.MustParseAddr("10.77.0.1"),
		netip.MustParseAddr("fd77::1"),
	}
)

// Config says how to build the stack. The zero value is a valid
// configuration: no netdev, no loopback NIC, Linux-like TCP defaults.
type Config struct {
	// Netdev is the device that connects the stack to the outside, or nil
	// for a stack-internal engine. The engine owns it from New on: Close
	// detaches the NIC and closes the device.
	Netdev *netdev.Device
	// StackAddrs are the stack's addresses on the netdev NIC (on the
	// loopback NIC when there is no netdev). Empty means DefaultStackAddrs.
	StackAddrs []netip.Prefix
	// Gateways get a default route each (per family) through the netdev.
	// Empty means DefaultGateways; unused without a netdev.
	Gateways []netip.Addr
	// Loopback adds a loopback NIC with 127.0.0.1/8 and ::1/128.
	Loopback bool

	TCP TCPConfig
}

// TCPConfig holds the TCP knobs. Zero values mean the defaults named on each
// field; negative names ("No...") keep default-on features on in the zero
// value.
type TCPConfig struct {
	NoSACK bool // SACK is on unless set
	NoRACK bool // RACK loss detection is on unless set
	// CongestionControl is "reno" or "cubic" (default "cubic", as Linux).
	CongestionControl string
	// NoModerateRcvBuf turns off receive-buffer auto-tuning (on by default).
	NoModerateRcvBuf bool
	// Send/receive buffer sizes in bytes (0 = netstack's 1 MiB default
	// and 4 MiB maximum).
	SndBufDefault, SndBufMax int
	RcvBufDefault, RcvBufMax int
	// Nagle: NoDelay sets TCP_NODELAY on every new socket.
	NoDelay bool
	// NoDelayedACK sends every ACK at once. Netstack acknowledges each
	// batch of received segments at once; by default the engine's NICs
	// hold a pure ACK for ACKDelay (stack/link/delack) so that an answer
	// can carry it, as Linux's delayed ACKs do.
	NoDelayedACK bool
	// ACKDelay is how long an ACK may wait (default delack.DefaultDelay,
	// at most delack.MaxDelay); ACKDelayMax, how long it may wait on a
	// flow whose answers came after their ACK had gone (default
	// delack.DefaultMaxDelay; ACKDelay or less keeps the delay fixed).
	ACKDelay, ACKDelayMax time.Duration
	// MTU of the loopback NIC (default 65536). The netdev's MTU is the
	// device's own (netdev.Config.MTU), since the kernel side must agree.
	MTU uint32
}

// Set applies one "key=value" setting as a command line or config file
// gives it: sack, rack, moderate-rcvbuf, nodelay, delayed-ack (on/off),
// cc (reno/cubic), sndbuf, sndbuf-max, rcvbuf, rcvbuf-max (bytes, k/m
// suffixes), mtu, ack-delay and ack-delay-max (durations such as 500us).
func (c *TCPConfig) Set(key, value string) error {
	onoff := func() (bool, error) {
		switch strings.ToLower(value) {
		case "1", "on", "true", "yes":
			return true, nil
		case "0", "off", "false", "no":
			return false, nil
		}
		return false, fmt.Errorf("tcp setting %s: want on or off, got %q", key, value)
	}
	size := func() (int, error) {
		v, mul := strings.ToLower(value), 1
		switch {
		case strings.HasSuffix(v, "k"):
			v, mul = v[:len(v)-1], 1<<10
		case strings.HasSuffix(v, "m"):
			v, mul = v[:len(v)-1], 1<<20
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > (1<<30)/mul {
			return 0, fmt.Errorf("tcp setting %s: bad size %q", key, value)
		}
		return n * mul, nil
	}
	var err error
	var b bool
	switch key {
	case "sack":
		b, err = onoff()
		c.NoSACK = !b
	case "rack":
		b, err = onoff()
		c.NoRACK = !b
	case "moderate-rcvbuf":
		b, err = onoff()
		c.NoModerateRcvBuf = !b
	case "nodelay":
		c.NoDelay, err = onoff()
	case "delayed-ack":
		b, err = onoff()
		c.NoDelayedACK = !b
	case "ack-delay", "ack-delay-max":
		var d time.Duration
		d, err = time.ParseDuration(value)
		if err == nil && (d <= 0 || d > delack.MaxDelay) {
			err = fmt.Errorf("out of range")
		}
		if err != nil {
			return fmt.Errorf("tcp setting %s: want a duration from 1us to %v, got %q", key, delack.MaxDelay, value)
		}
		if key == "ack-delay" {
			c.ACKDelay = d
		} else {
			c.ACKDelayMax = d
		}
	case "cc":
		c.CongestionControl = value
	case "sndbuf":
		c.SndBufDefault, err = size()
	case "sndbuf-max":
		c.SndBufMax, err = size()
	case "rcvbuf":
		c.RcvBufDefault, err = size()
	case "rcvbuf-max":
		c.RcvBufMax, err = size()
	case "mtu":
		var n int
		n, err = size()
		c.MTU = uint32(n)
	default:
		return fmt.Errorf("unknown tcp setting %q (known: sack, rack, cc, moderate-rcvbuf, sndbuf, sndbuf-max, rcvbuf, rcvbuf-max, nodelay, delayed-ack, ack-delay, ack-delay-max, mtu)", key)
	}
	return err
}

// NIC ids inside the stack.
const (
	nicNetdev   tcpip.NICID = 1
	nicLoopback tcpip.NICID = 2
)

// Engine is the gVisor transport engine.
type Engine struct {
	s        *gstack.Stack
	dev      *netdev.Device
	noDelay  bool
	moderate bool
	// delack holds the NICs' delayed-ACK wrappers (none with
	// delayed-ack=off), by NIC id.
	delack map[tcpip.NICID]*delack.Endpoint
}

var _ stack.Engine = (*Engine)(nil)

// New builds a netstack as cfg says. On error nothing is left running, but
// cfg.Netdev is not closed (the caller still owns it then).
func New(cfg Config) (*Engine, error) {
	if cfg.Netdev != nil && cfg.Netdev.Link == nil {
		// Kind "none": a device with no link is the same as no device.
		cfg.Netdev = nil
	}
	if len(cfg.StackAddrs) == 0 {
		cfg.StackAddrs = DefaultStackAddrs
	}
	if len(cfg.Gateways) == 0 {
		cfg.Gateways = DefaultGateways
	}
	s := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		// Connections to the stack's own addresses are delivered inside it.
		HandleLocal: true,
		// The real clock: a cached one (the workers' pass starts, tried
		// in 1abad4f) froze time within a pass for the TCP processors too,
		// so RTT samples near 0 gave tail loss probes of a few
		// microseconds (gVisor's PTO is 2 x SRTT, no floor): half of a
		// bulk transfer through the TAP was retransmitted. Read more
		// cheaply (clock.go).
		Clock: newClock(),
	})
	e := &Engine{s: s, noDelay: cfg.TCP.NoDelay, moderate: !cfg.TCP.NoModerateRcvBuf}
	if err := e.setup(cfg); err != nil {
		// Detach the netdev before tearing down so the caller may close it.
		if cfg.Netdev != nil {
			s.RemoveNIC(nicNetdev)
		}
		s.Destroy()
		return nil, err
	}
	e.dev = cfg.Netdev
	return e, nil
}

func (e *Engine) setup(cfg Config) error {
	s := e.s
	if err := setTCP(s, cfg.TCP); err != nil {
		return err
	}
	// Ephemeral ports from Linux's range (gVisor's own starts at 16000):
	// a program's outgoing connections then never take a port that it, or
	// another program, will listen on, as on the kernel.
	if lo, hi, ok := linuxPortRange(); ok {
		if err := s.SetPortRange(lo, hi); err != nil {
			return fmt.Errorf("ephemeral port range %d-%d: %s", lo, hi, err)
		}
	}
	var routes []tcpip.Route
	addrNIC := nicLoopback
	if cfg.Netdev != nil {
		addrNIC = nicNetdev
		name := cfg.Netdev.Name
		if name == "" {
			name = cfg.Netdev.Kind
		}
		if err := s.CreateNICWithOptions(nicNetdev, e.wrap(nicNetdev, cfg.Netdev.Link, cfg.TCP), gstack.NICOptions{Name: name}); err != nil {
			return fmt.Errorf("gvisor engine: attaching netdev %s: %v", name, err)
		}
	}
	if cfg.Loopback || cfg.Netdev == nil {
		lo := loopback.New()
		if cfg.TCP.MTU != 0 {
			lo.SetMTU(cfg.TCP.MTU)
		}
		if err := s.CreateNICWithOptions(nicLoopback, e.wrap(nicLoopback, lo, cfg.TCP), gstack.NICOptions{Name: "lo"}); err != nil {
			return fmt.Errorf("gvisor engine: loopback NIC: %v", err)
		}
	}
	if cfg.Loopback {
		for _, p := range []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")} {
			if err := addAddr(s, nicLoopback, p); err != nil {
				return err
			}
			routes = append(routes, tcpip.Route{Destination: subnet(p), NIC: nicLoopback})
		}
	}
	for _, p := range cfg.StackAddrs {
		if err := addAddr(s, addrNIC, p); err != nil {
			return err
		}
		// Without a netdev the addresses only serve local delivery: no
		// on-link route, so other addresses of the prefix are unreachable
		// rather than silently looped back.
		if addrNIC == nicNetdev {
			routes = append(routes, tcpip.Route{Destination: subnet(p), NIC: nicNetdev})
		}
	}
	if cfg.Netdev != nil {
		for _, g := range cfg.Gateways {
			dst := netip.MustParsePrefix("0.0.0.0/0")
			if g.Is6() && !g.Is4In6() {
				dst = netip.MustParsePrefix("::/0")
			}
			routes = append(routes, tcpip.Route{Destination: subnet(dst), Gateway: tcpip.AddrFromSlice(g.Unmap().AsSlice()), NIC: nicNetdev})
		}
	}
	s.SetRouteTable(routes)
	return nil
}

// wrap gives a NIC's link delayed ACKs unless the settings turn them off.
func (e *Engine) wrap(id tcpip.NICID, l gstack.LinkEndpoint, c TCPConfig) gstack.LinkEndpoint {
	if c.NoDelayedACK {
		return l
	}
	d := delack.New(l, c.ACKDelay, c.ACKDelayMax)
	if e.delack == nil {
		e.delack = make(map[tcpip.NICID]*delack.Endpoint)
	}
	e.delack[id] = d
	return d
}

func addAddr(s *gstack.Stack, nic tcpip.NICID, p netip.Prefix) error {
	a := p.Addr().Unmap()
	proto := ipv4.ProtocolNumber
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(a.AsSlice()), PrefixLen: p.Bits()},
	}
	if err := s.AddProtocolAddress(nic, pa, gstack.AddressProperties{}); err != nil {
		return fmt.Errorf("gvisor engine: adding address %s: %v", p, err)
	}
	return nil
}

func subnet(p netip.Prefix) tcpip.Subnet {
	bits := p.Bits()
	if p.Addr().Is4In6() {
		bits -= 96
	}
	a := netip.PrefixFrom(p.Addr().Unmap(), bits).Masked().Addr()
	m := make([]byte, a.BitLen()/8)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	sn, err := tcpip.NewSubnet(tcpip.AddrFromSlice(a.AsSlice()), tcpip.MaskFromBytes(m))
	if err != nil {
		panic(err) // a masked prefix is always a valid subnet
	}
	return sn
}

func setTCP(s *gstack.Stack, c TCPConfig) error {
	set := func(what string, o tcpip.SettableTransportProtocolOption) error {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("gvisor engine: tcp %s: %v", what, err)
		}
		return nil
	}
	sack := tcpip.TCPSACKEnabled(!c.NoSACK)
	if err := set("sack", &sack); err != nil {
		return err
	}
	var rec tcpip.TCPRecovery
	if !c.NoRACK {
		rec = tcpip.TCPRACKLossDetection
	}
	if err := set("rack", &rec); err != nil {
		return err
	}
	cc := c.CongestionControl
	if cc == "" {
		cc = "cubic"
	}
	if cc != "reno" && cc != "cubic" {
		return fmt.Errorf("gvisor engine: congestion control %q: want reno or cubic", cc)
	}
	cco := tcpip.CongestionControlOption(cc)
	if err := set("congestion control", &cco); err != nil {
		return err
	}
	mod := tcpip.TCPModerateReceiveBufferOption(!c.NoModerateRcvBuf)
	if err := set("moderate receive buffer", &mod); err != nil {
		return err
	}
	bufRange := func(def, mx, dDef, dMax int) (int, int, error) {
		if def == 0 {
			def = dDef
		}
		if mx == 0 {
			mx = max(dMax, def)
		}
		if def < tcp.MinBufferSize || mx < def {
			return 0, 0, fmt.Errorf("gvisor engine: buffer sizes default %d max %d: want %d <= default <= max", def, mx, tcp.MinBufferSize)
		}
		return def, mx, nil
	}
	sd, sm, err := bufRange(c.SndBufDefault, c.SndBufMax, tcp.DefaultSendBufferSize, tcp.MaxBufferSize)
	if err != nil {
		return err
	}
	if err := set("send buffer", &tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: sd, Max: sm}); err != nil {
		return err
	}
	rd, rm, err := bufRange(c.RcvBufDefault, c.RcvBufMax, tcp.DefaultReceiveBufferSize, tcp.MaxBufferSize)
	if err != nil {
		return err
	}
	if err := set("receive buffer", &tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: rd, Max: rm}); err != nil {
		return err
	}
	return nil
}

// Name implements stack.Engine.
func (e *Engine) Name() string { return "gvisor" }

// Stack gives the underlying netstack, for tests and tools that need more
// than the engine interface (routes, extra addresses).
func (e *Engine) Stack() *gstack.Stack { return e.s }

// Socket implements stack.Engine: a non-blocking TCP socket.
func (e *Engine) Socket(family int) (stack.Socket, error) {
	var proto tcpip.NetworkProtocolNumber
	switch family {
	case syscall.AF_INET:
		proto = ipv4.ProtocolNumber
	case syscall.AF_INET6:
		proto = ipv6.ProtocolNumber
	default:
		return nil, syscall.EAFNOSUPPORT
	}
	so := &socket{family: family, wq: new(waiter.Queue), moderate: e.moderate}
	ep, err := e.s.NewEndpoint(tcp.ProtocolNumber, proto, so.wq)
	if err != nil {
		return nil, errno(err)
	}
	if e.noDelay {
		ep.SocketOptions().SetDelayOption(false)
	}
	so.init(ep)
	return so, nil
}

// Poll implements stack.Poller: a worker's turn at reading the netdev.
func (e *Engine) Poll() bool {
	if d := e.dev; d != nil && d.Poll != nil {
		return d.Poll()
	}
	return false
}

// Polled implements stack.Poller.
func (e *Engine) Polled(on bool) {
	if d := e.dev; d != nil && d.Polled != nil {
		d.Polled(on)
	}
}

// Close implements stack.Engine: every socket is reset, the NICs are
// removed and the netdev is closed.
func (e *Engine) Close() error {
	e.s.Destroy()
	if e.dev != nil && e.dev.Close != nil {
		return e.dev.Close()
	}
	return nil
}

// TCPStats are the stack's TCP counters (stack.TCPCounter).
func (e *Engine) TCPStats() stack.TCPStats {
	t := e.s.Stats().TCP
	return stack.TCPStats{
		ActiveOpens:    t.ActiveConnectionOpenings.Value(),
		PassiveOpens:   t.PassiveConnectionOpenings.Value(),
		Established:    t.CurrentEstablished.Value(),
		ListenDrops:    t.ListenOverflowSynDrop.Value() + t.ListenOverflowAckDrop.Value(),
		SynCookies:     t.ListenOverflowSynCookieSent.Value(),
		ResetsSent:     t.ResetsSent.Value(),
		ResetsReceived: t.ResetsReceived.Value(),
		SegsOut:        t.SegmentsSent.Value(),
		SegsIn:         t.ValidSegmentsReceived.Value(),
		BadSegs:        t.InvalidSegmentsReceived.Value() + t.ChecksumErrors.Value(),
		Retransmits:    t.Retransmits.Value(),
		TailProbes:     t.TLPRecovery.Value(),
		Timeouts:       t.Timeouts.Value(),
		Spurious:       t.SpuriousRecovery.Value() + t.SpuriousRTORecovery.Value(),
	}
}

// NICStats are one NIC's counters (for `nuse stats`).
type NICStats struct {
	ID                 int
	Name               string
	RxPackets, RxBytes uint64
	TxPackets, TxBytes uint64
	// RxMalformed counts received packets dropped as malformed at the
	// transport layer; TxDropped, packets dropped for lack of buffer space
	// in the device.
	RxMalformed, TxDropped uint64
	// DelayedACK counts what the NIC's delayed ACKs did (zero with
	// delayed-ack=off).
	DelayedACK delack.Stats
}

// Stats returns the counters of each NIC, by id.
func (e *Engine) Stats() []NICStats {
	var out []NICStats
	for id, info := range e.s.NICInfo() {
		st := info.Stats
		n := NICStats{
			ID: int(id), Name: info.Name,
			RxPackets: st.Rx.Packets.Value(), RxBytes: st.Rx.Bytes.Value(),
			TxPackets: st.Tx.Packets.Value(), TxBytes: st.Tx.Bytes.Value(),
		}
		if st.TxPacketsDroppedNoBufferSpace != nil {
			n.TxDropped = st.TxPacketsDroppedNoBufferSpace.Value()
		}
		if st.MalformedL4RcvdPackets != nil {
			n.RxMalformed = st.MalformedL4RcvdPackets.Value()
		}
		if d := e.delack[id]; d != nil {
			n.DelayedACK = d.Stats()
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// linuxPortRange reads net.ipv4.ip_local_port_range (32768 60999 where it
// cannot be read).
func linuxPortRange() (uint16, uint16, bool) {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if n, _ := fmt.Sscan(string(b), &lo, &hi); n != 2 {
			lo, hi = 32768, 60999
		}
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, false
	}
	return uint16(lo), uint16(hi), true
}
