package usock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
)

// Everything here parses bytes an application process wrote into shared
// memory or the control socket: nothing is trusted, everything is checked.

const (
	sizeofSockaddrIn  = 16
	sizeofSockaddrIn6 = 28
)

// parseSockaddr decodes a sockaddr_in or sockaddr_in6 for a socket of the
// given family. AF_INET addresses given to an AF_INET6 socket are not
// accepted (Linux says EAFNOSUPPORT... for connect it says EAFNOSUPPORT too).
func parseSockaddr(b []byte, family int) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, syscall.EINVAL
	}
	fam := int(binary.LittleEndian.Uint16(b))
	switch fam {
	case syscall.AF_INET:
		if len(b) < sizeofSockaddrIn {
			return netip.AddrPort{}, syscall.EINVAL
		}
		if family != syscall.AF_INET {
			return netip.AddrPort{}, syscall.EAFNOSUPPORT
		}
		port := binary.BigEndian.Uint16(b[2:])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
	case syscall.AF_INET6:
		if len(b) < sizeofSockaddrIn6 {
			return netip.AddrPort{}, syscall.EINVAL
		}
		if family != syscall.AF_INET6 {
			return netip.AddrPort{}, syscall.EAFNOSUPPORT
		}
		port := binary.BigEndian.Uint16(b[2:])
		a := netip.AddrFrom16([16]byte(b[8:24]))
		if scope := binary.LittleEndian.Uint32(b[24:]); scope != 0 && a.IsLinkLocalUnicast() {
			return netip.AddrPort{}, syscall.EINVAL // no link-local scopes in NUSE (yet)
		}
		return netip.AddrPortFrom(a, port), nil
	default:
		return netip.AddrPort{}, syscall.EAFNOSUPPORT
	}
}

// putSockaddr encodes ap as the family's sockaddr into dst (AddrLen bytes)
// and returns its length. IPv4 addresses on AF_INET6 sockets become
// IPv4-mapped, as Linux reports them.
func putSockaddr(dst []byte, family int, ap netip.AddrPort) uint32 {
	clear(dst)
	if family == syscall.AF_INET {
		binary.LittleEndian.PutUint16(dst, syscall.AF_INET)
		binary.BigEndian.PutUint16(dst[2:], ap.Port())
		a := ap.Addr().Unmap()
		if a.Is4() {
			v := a.As4()
			copy(dst[4:8], v[:])
		}
		return sizeofSockaddrIn
	}
	binary.LittleEndian.PutUint16(dst, syscall.AF_INET6)
	binary.BigEndian.PutUint16(dst[2:], ap.Port())
	a := ap.Addr()
	if a.IsValid() {
		v := a.As16()
		copy(dst[8:24], v[:])
	}
	return sizeofSockaddrIn6
}

// request is a decoded command slot.
type request struct {
	op     uint16
	sock   uint32
	gen    uint32
	arg0   uint32
	arg1   uint32
	addr   []byte // addrlen bytes of the slot's addr
	opt    []byte // optlen bytes of the slot's opt
	optcap uint32 // for GETSOCKOPT: the caller's buffer size
}

var errBadCmd = errors.New("malformed command")

// decodeCmd checks a copy of a command slot. The caller copied the slot out
// of shared memory first, so nothing changes under the checks.
func decodeCmd(c *abi.Cmd, maxSocks uint32) (request, error) {
	r := request{op: c.Op, sock: c.Sock, gen: c.Gen, arg0: c.Arg0, arg1: c.Arg1}
	if c.Op < abi.OpBind || c.Op > abi.OpAccept {
		return r, errBadCmd
	}
	if c.Sock >= maxSocks {
		return r, errBadCmd
	}
	if c.AddrLen > abi.AddrLen || c.OptLen > abi.OptLen {
		return r, errBadCmd
	}
	r.addr = c.Addr[:c.AddrLen]
	if c.Op == abi.OpGetsockopt {
		r.optcap = c.OptLen
	} else {
		r.opt = c.Opt[:c.OptLen]
	}
	return r, nil
}

// Socket option levels and names (Linux values).
const (
	solSocket   = 1
	ipprotoTCP  = 6
	ipprotoIPv6 = 41

	soReuseAddr  = 2
	soType       = 3
	soError      = 4
	soSndBuf     = 7
	soRcvBuf     = 8
	soKeepAlive  = 9
	soLinger     = 13
	soReusePort  = 15
	soRcvLowat   = 18
	soAcceptConn = 30
	soProtocol   = 38
	soDomain     = 39

	tcpNoDelay    = 1
	tcpMaxSeg     = 2
	tcpCork       = 3
	tcpKeepIdle   = 4
	tcpKeepIntvl  = 5
	tcpKeepCnt    = 6
	tcpInfo       = 11
	tcpQuickAck   = 12
	tcpCongestion = 13

	ipv6V6Only = 26
)

// sockOption maps (level, name) to an engine option.
func sockOption(level, name uint32) (stack.Option, bool) {
	switch level {
	case solSocket:
		switch name {
		case soReuseAddr:
			return stack.OptReuseAddr, true
		case soReusePort:
			return stack.OptReusePort, true
		case soKeepAlive:
			return stack.OptKeepAlive, true
		case soRcvBuf:
			return stack.OptRcvBuf, true
		case soSndBuf:
			return stack.OptSndBuf, true
		case soLinger:
			return stack.OptLinger, true
		}
	case ipprotoTCP:
		switch name {
		case tcpNoDelay:
			return stack.OptNoDelay, true
		case tcpMaxSeg:
			return stack.OptMaxSeg, true
		case tcpCork:
			return stack.OptCork, true
		case tcpKeepIdle:
			return stack.OptKeepIdle, true
		case tcpKeepIntvl:
			return stack.OptKeepIntvl, true
		case tcpKeepCnt:
			return stack.OptKeepCnt, true
		case tcpQuickAck:
			return stack.OptQuickAck, true
		}
	case ipprotoIPv6:
		if name == ipv6V6Only {
			return stack.OptV6Only, true
		}
	}
	return 0, false
}

// optValue reads setsockopt's value: an int, or struct linger for SO_LINGER
// (returned as seconds, -1 when off).
func optValue(o stack.Option, b []byte) (int, error) {
	if o == stack.OptLinger {
		if len(b) < 8 {
			return 0, syscall.EINVAL
		}
		on := int32(binary.LittleEndian.Uint32(b))
		secs := int32(binary.LittleEndian.Uint32(b[4:]))
		if on == 0 {
			return -1, nil
		}
		if secs < 0 {
			secs = 0
		}
		return int(secs), nil
	}
	if len(b) < 4 {
		return 0, syscall.EINVAL
	}
	return int(int32(binary.LittleEndian.Uint32(b))), nil
}

// putOptValue encodes getsockopt's value into dst and returns its length.
func putOptValue(dst []byte, o stack.Option, v int) uint32 {
	if o == stack.OptLinger {
		on, secs := int32(1), int32(v)
		if v < 0 {
			on, secs = 0, 0
		}
		binary.LittleEndian.PutUint32(dst, uint32(on))
		binary.LittleEndian.PutUint32(dst[4:], uint32(secs))
		return 8
	}
	binary.LittleEndian.PutUint32(dst, uint32(int32(v)))
	return 4
}

// ctlMsg is a decoded control-socket message.
type ctlMsg struct {
	typ   uint16
	seq   uint32
	hello abi.CtlHello
	req   abi.CtlReq
	// engine is req.Engine checked (MsgSocket: "" is the default engine).
	engine string
	body   []byte // MsgUC: the rest of the message, for its handler
}

var errBadCtl = errors.New("malformed control message")

// errVersion says the peer speaks another ABI version.
type errVersion struct{ got uint16 }

func (e errVersion) Error() string {
	return fmt.Sprintf("ABI version %d not supported (this daemon speaks %d); use the libnuse.so that came with this nuse", e.got, abi.Version)
}

// decodeCtl parses one control message.
func decodeCtl(b []byte) (ctlMsg, error) {
	var m ctlMsg
	if len(b) < 16 {
		return m, errBadCtl
	}
	if binary.LittleEndian.Uint32(b) != abi.Magic {
		return m, errBadCtl
	}
	ver := binary.LittleEndian.Uint16(b[4:])
	m.typ = binary.LittleEndian.Uint16(b[6:])
	ln := binary.LittleEndian.Uint32(b[8:])
	m.seq = binary.LittleEndian.Uint32(b[12:])
	if ver != abi.Version {
		return m, errVersion{ver}
	}
	if int(ln) != len(b) {
		return m, errBadCtl
	}
	switch m.typ {
	case abi.MsgHello:
		if len(b) != 16+8+abi.CommLen {
			return m, errBadCtl
		}
		m.hello.Pid = binary.LittleEndian.Uint32(b[16:])
		m.hello.Flags = binary.LittleEndian.Uint32(b[20:])
		copy(m.hello.Comm[:], b[24:])
	case abi.MsgSocket, abi.MsgAccept, abi.MsgRelay, abi.MsgIdent, abi.MsgKeep, abi.MsgAdopt, abi.MsgRepair, abi.MsgPortFree, abi.MsgDirect, abi.MsgWake, abi.MsgSpares:
		if len(b) != 16+24+abi.EngineLen {
			return m, errBadCtl
		}
		m.req.Family = int32(binary.LittleEndian.Uint32(b[16:]))
		m.req.Type = int32(binary.LittleEndian.Uint32(b[20:]))
		m.req.Protocol = int32(binary.LittleEndian.Uint32(b[24:]))
		m.req.Sock = binary.LittleEndian.Uint32(b[28:])
		m.req.Gen = binary.LittleEndian.Uint32(b[32:])
		copy(m.req.Engine[:], b[40:])
		var err error
		if m.engine, err = engineName(m.req.Engine); err != nil {
			return m, err
		}
	case abi.MsgStats:
	case abi.MsgUC:
		m.body = append([]byte(nil), b[16:]...)
	default:
		return m, errBadCtl
	}
	return m, nil
}

// engineName checks an engine name from a client: NUL-terminated within
// the field, NUL-padded after it, and [a-z0-9_-] before it (what the rules
// parser admits). "" is the default engine.
func engineName(f [abi.EngineLen]byte) (string, error) {
	n := bytes.IndexByte(f[:], 0)
	if n < 0 {
		return "", fmt.Errorf("%w: engine name not NUL-terminated", errBadCtl)
	}
	for _, c := range f[n:] {
		if c != 0 {
			return "", fmt.Errorf("%w: bytes after the engine name's NUL", errBadCtl)
		}
	}
	for _, c := range f[:n] {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "", fmt.Errorf("%w: engine name has a byte %#x outside [a-z0-9_-]", errBadCtl, c)
		}
	}
	return string(f[:n]), nil
}

// commString returns the NUL-terminated program name, printable only.
func commString(c [abi.CommLen]byte) string {
	var out []byte
	for _, ch := range c {
		if ch == 0 {
			break
		}
		if ch < 0x20 || ch > 0x7e {
			ch = '?'
		}
		out = append(out, ch)
	}
	return string(out)
}
