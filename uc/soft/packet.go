package soft

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Header sizes (InfiniBand Architecture Spec vol. 1, ch. 9; RoCEv2 annex A17).
const (
	BTHLen   = 12
	RETHLen  = 16
	ImmLen   = 4
	ICRCLen  = 4
	IPv4Len  = 20
	UDPLen   = 8
	RoCEPort = 4791
	// DefaultPKey is the full-membership default partition key.
	DefaultPKey = 0xffff
)

// UC opcodes (transport prefix 001b).
const (
	OpUCSendFirst           = 0x20
	OpUCSendMiddle          = 0x21
	OpUCSendLast            = 0x22
	OpUCSendLastImm         = 0x23
	OpUCSendOnly            = 0x24
	OpUCSendOnlyImm         = 0x25
	OpUCWriteFirst          = 0x26
	OpUCWriteMiddle         = 0x27
	OpUCWriteLast           = 0x28
	OpUCWriteLastImm        = 0x29
	OpUCWriteOnly           = 0x2a
	OpUCWriteOnlyImm        = 0x2b
	opUCLast                = OpUCWriteOnlyImm
	psnMask          uint32 = 0xffffff
)

// opInfo says which extension headers an opcode carries and where it sits in
// a message.
type opInfo struct {
	reth, imm, first, last, write bool
}

var ucOps = [...]opInfo{
	OpUCSendFirst - 0x20:    {first: true},
	OpUCSendMiddle - 0x20:   {},
	OpUCSendLast - 0x20:     {last: true},
	OpUCSendLastImm - 0x20:  {last: true, imm: true},
	OpUCSendOnly - 0x20:     {first: true, last: true},
	OpUCSendOnlyImm - 0x20:  {first: true, last: true, imm: true},
	OpUCWriteFirst - 0x20:   {first: true, reth: true, write: true},
	OpUCWriteMiddle - 0x20:  {write: true},
	OpUCWriteLast - 0x20:    {last: true, write: true},
	OpUCWriteLastImm - 0x20: {last: true, imm: true, write: true},
	OpUCWriteOnly - 0x20:    {first: true, last: true, reth: true, write: true},
	OpUCWriteOnlyImm - 0x20: {first: true, last: true, reth: true, imm: true, write: true},
}

func lookupOp(op uint8) (opInfo, bool) {
	if op < OpUCSendFirst || op > opUCLast {
		return opInfo{}, false
	}
	return ucOps[op-0x20], true
}

// BTH is the Base Transport Header.
type BTH struct {
	Opcode uint8
	SE     bool // solicited event
	M      bool // migration state
	PadCnt uint8
	TVer   uint8
	PKey   uint16
	FECN   bool
	BECN   bool
	DestQP uint32
	AckReq bool
	PSN    uint32
}

func (h *BTH) put(b []byte) {
	b[0] = h.Opcode
	b[1] = h.PadCnt<<4 | h.TVer&0xf
	if h.SE {
		b[1] |= 0x80
	}
	if h.M {
		b[1] |= 0x40
	}
	binary.BigEndian.PutUint16(b[2:], h.PKey)
	binary.BigEndian.PutUint32(b[4:], h.DestQP&psnMask)
	if h.FECN {
		b[4] |= 0x80
	}
	if h.BECN {
		b[4] |= 0x40
	}
	binary.BigEndian.PutUint32(b[8:], h.PSN&psnMask)
	if h.AckReq {
		b[8] |= 0x80
	}
}

func parseBTH(b []byte) BTH {
	return BTH{
		Opcode: b[0],
		SE:     b[1]&0x80 != 0,
		M:      b[1]&0x40 != 0,
		PadCnt: b[1] >> 4 & 3,
		TVer:   b[1] & 0xf,
		PKey:   binary.BigEndian.Uint16(b[2:]),
		FECN:   b[4]&0x80 != 0,
		BECN:   b[4]&0x40 != 0,
		DestQP: binary.BigEndian.Uint32(b[4:]) & psnMask,
		AckReq: b[8]&0x80 != 0,
		PSN:    binary.BigEndian.Uint32(b[8:]) & psnMask,
	}
}

// RETH is the RDMA Extended Transport Header.
type RETH struct {
	VA     uint64
	RKey   uint32
	DMALen uint32
}

// Packet is one parsed UC packet (the UDP payload of a RoCEv2 datagram).
type Packet struct {
	BTH
	RETH    RETH // valid if the opcode carries one
	Imm     uint32
	Payload []byte // without pad
	info    opInfo
}

// Errors of ParsePacket.
var (
	ErrShort    = errors.New("roce: packet too short")
	ErrOpcode   = errors.New("roce: not a UC opcode")
	ErrPad      = errors.New("roce: bad pad count")
	ErrTVer     = errors.New("roce: unknown transport version")
	ErrICRC     = errors.New("roce: ICRC mismatch")
	ErrNotRoCE  = errors.New("roce: not an IPv4 UDP datagram to port 4791")
	ErrIPHeader = errors.New("roce: bad IPv4 header")
)

// ParsePacket parses a UC packet from a UDP payload (BTH through ICRC). It
// checks structure only; the ICRC is checked by VerifyICRC.
func ParsePacket(b []byte) (Packet, error) {
	var p Packet
	if len(b) < BTHLen+ICRCLen {
		return p, ErrShort
	}
	p.BTH = parseBTH(b)
	if p.TVer != 0 {
		return p, ErrTVer
	}
	info, ok := lookupOp(p.Opcode)
	if !ok {
		return p, ErrOpcode
	}
	p.info = info
	n := BTHLen
	if info.reth {
		if len(b) < n+RETHLen+ICRCLen {
			return p, ErrShort
		}
		p.RETH = RETH{
			VA:     binary.BigEndian.Uint64(b[n:]),
			RKey:   binary.BigEndian.Uint32(b[n+8:]),
			DMALen: binary.BigEndian.Uint32(b[n+12:]),
		}
		n += RETHLen
	}
	if info.imm {
		if len(b) < n+ImmLen+ICRCLen {
			return p, ErrShort
		}
		p.Imm = binary.BigEndian.Uint32(b[n:])
		n += ImmLen
	}
	body := len(b) - n - ICRCLen
	if int(p.PadCnt) > body {
		return p, ErrPad
	}
	// Padding makes the payload a multiple of 4 bytes.
	if body%4 != 0 {
		return p, ErrPad
	}
	p.Payload = b[n : n+body-int(p.PadCnt)]
	return p, nil
}

// HeaderLen is the length of BTH plus extension headers of an opcode.
func HeaderLen(op uint8) int {
	info, ok := lookupOp(op)
	if !ok {
		return 0
	}
	n := BTHLen
	if info.reth {
		n += RETHLen
	}
	if info.imm {
		n += ImmLen
	}
	return n
}

// AppendPacket appends the UDP payload of p (headers, payload, pad, and a
// zero ICRC the caller fills with PutICRC) to dst.
func AppendPacket(dst []byte, p *Packet) []byte {
	info, _ := lookupOp(p.Opcode)
	pad := (4 - len(p.Payload)%4) % 4
	h := p.BTH
	h.PadCnt = uint8(pad)
	start := len(dst)
	dst = append(dst, make([]byte, BTHLen)...)
	h.put(dst[start:])
	if info.reth {
		var r [RETHLen]byte
		binary.BigEndian.PutUint64(r[0:], p.RETH.VA)
		binary.BigEndian.PutUint32(r[8:], p.RETH.RKey)
		binary.BigEndian.PutUint32(r[12:], p.RETH.DMALen)
		dst = append(dst, r[:]...)
	}
	if info.imm {
		dst = binary.BigEndian.AppendUint32(dst, p.Imm)
	}
	dst = append(dst, p.Payload...)
	dst = append(dst, make([]byte, pad+ICRCLen)...)
	return dst
}

// icrcSeed is the CRC state after the 8 bytes of 0xff that stand for the
// masked LRH (as in the RoCEv2 annex; rxe starts from the same state).
var icrcSeed = crc32.Update(0, crc32.IEEETable, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})

// ICRC computes the invariant CRC of a RoCEv2 packet over IPv4: ip is the
// 20-byte IPv4 header as sent, udp the 8-byte UDP header, ib the UDP payload
// without its trailing 4-byte ICRC. The variant fields (TOS, TTL, IP and UDP
// checksums, BTH resv8a/FECN/BECN byte) count as all ones.
func ICRC(ip, udp, ib []byte) uint32 {
	var ps [IPv4Len + UDPLen + BTHLen]byte
	copy(ps[:], ip[:IPv4Len])
	copy(ps[IPv4Len:], udp[:UDPLen])
	copy(ps[IPv4Len+UDPLen:], ib[:BTHLen])
	ps[1] = 0xff                // TOS (DSCP, ECN)
	ps[8] = 0xff                // TTL
	ps[10], ps[11] = 0xff, 0xff // header checksum
	ps[26], ps[27] = 0xff, 0xff // UDP checksum
	ps[IPv4Len+UDPLen+4] = 0xff // BTH resv8a (FECN, BECN)
	c := crc32.Update(icrcSeed, crc32.IEEETable, ps[:])
	return crc32.Update(c, crc32.IEEETable, ib[BTHLen:])
}

// PutICRC fills the last 4 bytes of the UDP payload ib with its ICRC. The
// ICRC goes on the wire least significant byte first, as rxe and NICs do.
func PutICRC(ip, udp, ib []byte) {
	n := len(ib) - ICRCLen
	binary.LittleEndian.PutUint32(ib[n:], ICRC(ip, udp, ib[:n]))
}

// VerifyICRC checks the ICRC of a received packet.
func VerifyICRC(ip, udp, ib []byte) bool {
	if len(ib) < BTHLen+ICRCLen {
		return false
	}
	n := len(ib) - ICRCLen
	return binary.LittleEndian.Uint32(ib[n:]) == ICRC(ip, udp, ib[:n])
}

// IPv4Header builds the header the kernel sends for an unconnected UDP
// socket with DF set: IHL 5, ID 0 (Linux uses 0 for DF datagrams of
// unconnected sockets), no options. TOS, TTL and checksum are masked by
// the ICRC, so their values here do not matter.
func IPv4Header(dst []byte, src, dstIP [4]byte, udpPayloadLen int) {
	dst[0] = 0x45
	dst[1] = 0
	binary.BigEndian.PutUint16(dst[2:], uint16(IPv4Len+UDPLen+udpPayloadLen))
	dst[4], dst[5] = 0, 0
	dst[6], dst[7] = 0x40, 0 // DF
	dst[8] = 64
	dst[9] = 17
	dst[10], dst[11] = 0, 0
	copy(dst[12:16], src[:])
	copy(dst[16:20], dstIP[:])
}

// UDPHeader builds a UDP header (checksum left 0: it is masked).
func UDPHeader(dst []byte, sport, dport uint16, udpPayloadLen int) {
	binary.BigEndian.PutUint16(dst[0:], sport)
	binary.BigEndian.PutUint16(dst[2:], dport)
	binary.BigEndian.PutUint16(dst[4:], uint16(UDPLen+udpPayloadLen))
	dst[6], dst[7] = 0, 0
}

// SplitIPv4UDP splits a raw IPv4 datagram (as a raw socket reads it) into
// its IPv4 header, UDP header and UDP payload. It rejects anything that is
// not a whole, unfragmented IPv4/UDP datagram.
func SplitIPv4UDP(b []byte) (ip, udp, payload []byte, err error) {
	if len(b) < IPv4Len+UDPLen || b[0]>>4 != 4 {
		return nil, nil, nil, ErrIPHeader
	}
	ihl := int(b[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < IPv4Len || tot < ihl+UDPLen || tot > len(b) {
		return nil, nil, nil, ErrIPHeader
	}
	if b[9] != 17 || binary.BigEndian.Uint16(b[6:])&0x3fff != 0 {
		return nil, nil, nil, ErrNotRoCE
	}
	ulen := int(binary.BigEndian.Uint16(b[ihl+4:]))
	if ulen < UDPLen || ihl+ulen > tot {
		return nil, nil, nil, ErrIPHeader
	}
	return b[:ihl], b[ihl : ihl+UDPLen], b[ihl+UDPLen : ihl+ulen], nil
}
