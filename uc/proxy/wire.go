// Package proxy carries uc verbs through the NUSE daemon: a program opens
// the uc backend "daemon", and nused opens the real device (verbs or soft)
// and posts to the real QP on its behalf. This is the seed design's
// experiment: work requests travel over a shared-memory queue to a
// forwarder that owns the device.
//
// Control calls (alloc, register memory, create and connect a QP) are
// request/answer messages on the daemon's control socket, after a
// NUSE_CTL_UC hello. The data path is a memfd per QP, mapped by both: a
// request ring the program fills (WRITE, WRITE WITH IMMEDIATE, receive
// posts) and two completion rings the daemon fills, with futex doorbells
// for whichever side sleeps. Payloads never move: the program's memory is
// a memfd the daemon maps and registers, so the device reads and writes it
// in place.
//
// The daemon trusts nothing the program writes: every ring index, memory
// region id, offset and length is checked, and a bad one ends that
// program's proxy session and nothing else.
package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/nuse-project/nuse/internal/racesync"
)

// ringSync stands for the rings' memory, which the race detector does not
// see as synchronization (a program and the daemon in one test process).
var ringSync racesync.Token

// Control operations after the hello (little-endian, fixed layouts).
const (
	opAlloc    = 1 // {size u64} -> {id u32, _ u32, size u64} + memfd
	opRegMR    = 2 // {alloc u32, access u32, off u64, len u64} -> {mr u32, lkey u32, rkey u32, _ u32, addr u64}
	opDereg    = 3 // {mr u32}
	opCreateQP = 4 // {send u32, recv u32, pmtu u32} -> {qp, qpn, psn, pmtu, sqSlots, cqSlots u32, size u64} + memfd
	opConnect  = 5 // {qp u32, params [uc.ConnParams wire]}
	opCloseQP  = 6 // {qp u32}
)

// Message framing: requests are {op u32, seq u32, body}, answers
// {status i32 (0 or -errno), seq u32, body}; an error answer's body is a
// message.
const (
	msgHdr   = 8
	maxMsg   = 512
	maxAlloc = 1 << 30 // bytes per session, all allocations together
	maxMRs   = 256
	maxQPs   = 16
	maxSlots = 32768
)

// The hello body (after the NUSE control header).
type openReq struct {
	Backend  [16]byte
	Dev      [32]byte
	LocalIP  [40]byte
	GIDIndex int32
	Port     int32
}

const openReqLen = 16 + 32 + 40 + 4 + 4

// openRep is the hello's answer body.
type openRep struct {
	Name [32]byte
	GID  [16]byte
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func putStr(dst []byte, s string) error {
	if len(s) >= len(dst) {
		return fmt.Errorf("%q is longer than %d bytes", s, len(dst)-1)
	}
	copy(dst, s)
	return nil
}

func (o *openReq) marshal() []byte {
	b := make([]byte, openReqLen)
	copy(b[0:16], o.Backend[:])
	copy(b[16:48], o.Dev[:])
	copy(b[48:88], o.LocalIP[:])
	binary.LittleEndian.PutUint32(b[88:], uint32(o.GIDIndex))
	binary.LittleEndian.PutUint32(b[92:], uint32(o.Port))
	return b
}

func parseOpen(b []byte) (openReq, error) {
	var o openReq
	if len(b) != openReqLen {
		return o, errors.New("malformed uc hello")
	}
	copy(o.Backend[:], b[0:16])
	copy(o.Dev[:], b[16:48])
	copy(o.LocalIP[:], b[48:88])
	o.GIDIndex = int32(binary.LittleEndian.Uint32(b[88:]))
	o.Port = int32(binary.LittleEndian.Uint32(b[92:]))
	return o, nil
}

// QP ring memfd: a header page, then the request ring, then the send and
// the receive completion rings. Counters are free-running; each has its own
// cache line.
const (
	offSQHead  = 0   // program: requests posted
	offSQTail  = 64  // daemon: requests taken
	offSCQHead = 128 // daemon: send completions written
	offSCQTail = 192 // program: send completions read
	offRCQHead = 256 // daemon: receive completions written
	offRCQTail = 320 // program: receive completions read
	offDSeq    = 384 // u32: the program rings the daemon here
	offDSleep  = 388 // u32: the daemon sleeps on DSeq
	offCSeq    = 448 // u32: the daemon rings the program here
	offCSleep  = 452 // u32: the program sleeps on CSeq
	hdrSize    = 4096
	reqSize    = 64
	wcSize     = 32
)

type layout struct {
	sqSlots, cqSlots uint32
}

func (l layout) sqOff() int  { return hdrSize }
func (l layout) scqOff() int { return hdrSize + int(l.sqSlots)*reqSize }
func (l layout) rcqOff() int { return l.scqOff() + int(l.cqSlots)*wcSize }
func (l layout) size() int {
	n := l.rcqOff() + int(l.cqSlots)*wcSize
	return (n + 4095) &^ 4095
}

// Request opcodes and flags.
const (
	reqWrite = 1
	reqRecv  = 2

	flagImm      = 1
	flagSignaled = 2
)

// req is one request descriptor (64 bytes):
// op u8, flags u8, _ u16, mr u32, wrid u64, off u64, len u32, imm u32,
// raddr u64, rkey u32, then padding.
type req struct {
	op, flags uint8
	mr        uint32
	wrid      uint64
	off       uint64
	length    uint32
	imm       uint32
	raddr     uint64
	rkey      uint32
}

func (r *req) put(b []byte) {
	clear(b[:reqSize])
	b[0], b[1] = r.op, r.flags
	le := binary.LittleEndian
	le.PutUint32(b[4:], r.mr)
	le.PutUint64(b[8:], r.wrid)
	le.PutUint64(b[16:], r.off)
	le.PutUint32(b[24:], r.length)
	le.PutUint32(b[28:], r.imm)
	le.PutUint64(b[32:], r.raddr)
	le.PutUint32(b[40:], r.rkey)
}

// parseReq decodes a descriptor the program wrote. It checks only what
// needs no context; the server checks memory regions.
func parseReq(b []byte) (req, error) {
	if len(b) < reqSize {
		return req{}, errors.New("short request")
	}
	le := binary.LittleEndian
	r := req{op: b[0], flags: b[1], mr: le.Uint32(b[4:]), wrid: le.Uint64(b[8:]), off: le.Uint64(b[16:]),
		length: le.Uint32(b[24:]), imm: le.Uint32(b[28:]), raddr: le.Uint64(b[32:]), rkey: le.Uint32(b[40:])}
	switch {
	case r.op != reqWrite && r.op != reqRecv:
		return r, fmt.Errorf("request opcode %d", r.op)
	case r.flags&^(flagImm|flagSignaled) != 0:
		return r, fmt.Errorf("request flags %#x", r.flags)
	case r.length > 1<<31:
		return r, fmt.Errorf("request length %d", r.length)
	}
	return r, nil
}

// putWC encodes a work completion (32 bytes): wrid u64, status u8,
// opcode u8, _ u16, bytelen u32, imm u32.
func putWC(b []byte, wc *wcRec) {
	clear(b[:wcSize])
	le := binary.LittleEndian
	le.PutUint64(b[0:], wc.wrid)
	b[8], b[9] = wc.status, wc.opcode
	le.PutUint32(b[12:], wc.byteLen)
	le.PutUint32(b[16:], wc.imm)
}

func getWC(b []byte) wcRec {
	le := binary.LittleEndian
	return wcRec{wrid: le.Uint64(b[0:]), status: b[8], opcode: b[9], byteLen: le.Uint32(b[12:]), imm: le.Uint32(b[16:])}
}

type wcRec struct {
	wrid           uint64
	status, opcode uint8
	byteLen, imm   uint32
}
