package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/internal/futex"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/uc"
)

// The backend is "daemon": uc.Options.Daemon names the daemon's control
// socket (default $NUSE_SOCK, else the default path) and Options.Via the
// backend the daemon opens (verbs or soft); Dev, GIDIndex, LocalIP and Port
// are passed on.
func init() { uc.Register("daemon", open) }

// spinWait is how long a program spins on its completion ring in
// WaitRecv/WaitSend before it sleeps.
const spinWait = 20 * time.Microsecond

type device struct {
	c    *net.UnixConn
	mu   sync.Mutex // one request at a time
	seq  uint32
	name string
	gid  [16]byte

	amu    sync.Mutex
	allocs [][]byte
}

func open(o uc.Options) (uc.Device, error) {
	path := o.Daemon
	if path == "" {
		path = os.Getenv("NUSE_SOCK")
	}
	if path == "" {
		path = abi.DefaultSockPath
	}
	via := o.Via
	if via == "" {
		via = "verbs"
	}
	var req openReq
	if err := errors.Join(putStr(req.Backend[:], via), putStr(req.Dev[:], o.Dev), putStr(req.LocalIP[:], o.LocalIP)); err != nil {
		return nil, fmt.Errorf("uc daemon: %w", err)
	}
	req.GIDIndex, req.Port = int32(o.GIDIndex), int32(o.Port)
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("uc daemon: no NUSE daemon at %s: %w", path, err)
	}
	d := &device{c: c, seq: 1}
	if _, err := c.Write(helloMsg(&req)); err != nil {
		c.Close()
		return nil, fmt.Errorf("uc daemon: %w", err)
	}
	out, _, err := d.answer(1)
	if err != nil {
		c.Close()
		return nil, err
	}
	if len(out) < 48 {
		c.Close()
		return nil, errors.New("uc daemon: short answer to the hello")
	}
	d.name = "daemon:" + cstr(out[:32])
	copy(d.gid[:], out[32:48])
	return d, nil
}

// helloMsg is the first message of a session: a NUSE control header of
// type MsgUC (request 1) and the hello body.
func helloMsg(o *openReq) []byte {
	body := o.marshal()
	hello := make([]byte, 16+len(body))
	le := binary.LittleEndian
	le.PutUint32(hello, abi.Magic)
	le.PutUint16(hello[4:], abi.Version)
	le.PutUint16(hello[6:], abi.MsgUC)
	le.PutUint32(hello[8:], uint32(len(hello)))
	le.PutUint32(hello[12:], 1)
	copy(hello[16:], body)
	return hello
}

// answer reads the answer to request seq: its body and a passed fd (or -1).
func (d *device) answer(seq uint32) ([]byte, int, error) {
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := d.c.ReadMsgUnix(buf, oob)
	if err != nil || n < msgHdr {
		return nil, -1, fmt.Errorf("uc daemon: the daemon closed the session (%v)", err)
	}
	fd := -1
	if oobn > 0 {
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cms) == 1 {
			if fds, err := unix.ParseUnixRights(&cms[0]); err == nil && len(fds) == 1 {
				fd = fds[0]
			}
		}
	}
	status := int32(binary.LittleEndian.Uint32(buf))
	if got := binary.LittleEndian.Uint32(buf[4:]); got != seq {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, -1, fmt.Errorf("uc daemon: answer %d to request %d", got, seq)
	}
	if status < 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, -1, fmt.Errorf("uc daemon: %s: %w", cstr(buf[msgHdr:n]), syscall.Errno(-status))
	}
	return buf[msgHdr:n], fd, nil
}

func (d *device) call(op uint32, body []byte) ([]byte, int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	b := make([]byte, msgHdr+len(body))
	binary.LittleEndian.PutUint32(b, op)
	binary.LittleEndian.PutUint32(b[4:], d.seq)
	copy(b[msgHdr:], body)
	if _, err := d.c.Write(b); err != nil {
		return nil, -1, fmt.Errorf("uc daemon: %w", err)
	}
	return d.answer(d.seq)
}

func (d *device) Name() string   { return d.name }
func (d *device) GID() [16]byte  { return d.gid }
func (d *device) Close() error   { return d.c.Close() }
func (d *device) String() string { return d.name }

// Alloc implements uc.Allocator: memory the daemon maps too.
func (d *device) Alloc(n int) ([]byte, error) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(n))
	out, fd, err := d.call(opAlloc, b[:])
	if err != nil {
		return nil, err
	}
	if fd < 0 || len(out) < 16 {
		return nil, errors.New("uc daemon: alloc answer without memory")
	}
	defer unix.Close(fd)
	size := int(binary.LittleEndian.Uint64(out[8:]))
	mem, err := unix.Mmap(fd, 0, (size+4095)&^4095, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	d.amu.Lock()
	if int(binary.LittleEndian.Uint32(out)) != len(d.allocs) {
		d.amu.Unlock()
		unix.Munmap(mem)
		return nil, errors.New("uc daemon: allocation ids out of step")
	}
	d.allocs = append(d.allocs, mem)
	d.amu.Unlock()
	return mem[:size], nil
}

type mr struct {
	d          *device
	id         uint32
	buf        []byte
	addr       uint64
	lkey, rkey uint32
}

func (m *mr) Buf() []byte  { return m.buf }
func (m *mr) Addr() uint64 { return m.addr }
func (m *mr) LKey() uint32 { return m.lkey }
func (m *mr) RKey() uint32 { return m.rkey }
func (m *mr) Dereg() error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], m.id)
	_, _, err := m.d.call(opDereg, b[:])
	return err
}

// RegMR registers buf, which must lie in memory from Alloc.
func (d *device) RegMR(buf []byte, access uc.Access) (uc.MR, error) {
	if len(buf) == 0 {
		return nil, errors.New("uc daemon: empty memory region")
	}
	p := uintptr(unsafe.Pointer(&buf[0]))
	d.amu.Lock()
	ai, off := -1, uintptr(0)
	for i, a := range d.allocs {
		base := uintptr(unsafe.Pointer(&a[0]))
		if p >= base && p+uintptr(len(buf)) <= base+uintptr(len(a)) {
			ai, off = i, p-base
			break
		}
	}
	d.amu.Unlock()
	if ai < 0 {
		return nil, errors.New("uc daemon: RegMR needs memory from Alloc (uc.Alloc)")
	}
	b := make([]byte, 24)
	le := binary.LittleEndian
	le.PutUint32(b, uint32(ai))
	le.PutUint32(b[4:], uint32(access))
	le.PutUint64(b[8:], uint64(off))
	le.PutUint64(b[16:], uint64(len(buf)))
	out, _, err := d.call(opRegMR, b)
	if err != nil {
		return nil, err
	}
	if len(out) < 24 {
		return nil, errors.New("uc daemon: short answer")
	}
	return &mr{d: d, id: le.Uint32(out), lkey: le.Uint32(out[4:]), rkey: le.Uint32(out[8:]), addr: le.Uint64(out[16:]), buf: buf}, nil
}

// qp is the program's side of a proxied QP.
type qp struct {
	d              *device
	id             uint32
	qpn, psn, pmtu uint32
	lay            layout
	mem            []byte

	postMu       sync.Mutex
	sqHead       uint64
	sMu, rMu     sync.Mutex
	scqTl, rcqTl uint64
	closed       atomic.Bool
}

func (d *device) CreateQP(cfg uc.QPConfig) (uc.QP, error) {
	b := make([]byte, 12)
	le := binary.LittleEndian
	le.PutUint32(b, uint32(cfg.SendDepth))
	le.PutUint32(b[4:], uint32(cfg.RecvDepth))
	le.PutUint32(b[8:], uint32(cfg.PathMTU))
	out, fd, err := d.call(opCreateQP, b)
	if err != nil {
		return nil, err
	}
	if fd < 0 || len(out) < 32 {
		return nil, errors.New("uc daemon: create QP answer without rings")
	}
	defer unix.Close(fd)
	q := &qp{d: d, id: le.Uint32(out), qpn: le.Uint32(out[4:]), psn: le.Uint32(out[8:]), pmtu: le.Uint32(out[12:]),
		lay: layout{sqSlots: le.Uint32(out[16:]), cqSlots: le.Uint32(out[20:])}}
	size := int(le.Uint64(out[24:]))
	if size != q.lay.size() {
		return nil, errors.New("uc daemon: ring geometry disagrees")
	}
	if q.mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *qp) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&q.mem[off])) }
func (q *qp) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&q.mem[off])) }

func (q *qp) QPN() uint32  { return q.qpn }
func (q *qp) PSN() uint32  { return q.psn }
func (q *qp) PathMTU() int { return int(q.pmtu) }

func (q *qp) Connect(r uc.ConnParams) error {
	p, _ := r.MarshalBinary()
	b := make([]byte, 4+len(p))
	binary.LittleEndian.PutUint32(b, q.id)
	copy(b[4:], p)
	_, _, err := q.d.call(opConnect, b)
	return err
}

// ErrQueueFull is returned when the request ring has no free slot (the
// send or receive queue is full, as ENOMEM from ibv_post_send).
var ErrQueueFull = errors.New("uc daemon: request queue full")

func (q *qp) post(r *req) error {
	q.postMu.Lock()
	defer q.postMu.Unlock()
	if q.closed.Load() {
		return uc.ErrClosed
	}
	if q.sqHead-atomic.LoadUint64(q.u64(offSQTail)) >= uint64(q.lay.sqSlots) {
		return ErrQueueFull
	}
	off := q.lay.sqOff() + int(q.sqHead%uint64(q.lay.sqSlots))*reqSize
	r.put(q.mem[off:])
	ringSync.Release()
	q.sqHead++
	atomic.StoreUint64(q.u64(offSQHead), q.sqHead)
	atomic.AddUint32(q.u32(offDSeq), 1)
	if atomic.LoadUint32(q.u32(offDSleep)) != 0 {
		futex.Wake(q.u32(offDSeq), 1)
	}
	return nil
}

func (q *qp) PostWrite(wr *uc.WriteWR) error {
	m, ok := wr.Local.(*mr)
	if !ok || m.d != q.d {
		return errors.New("uc daemon: the write's memory region is not from this device")
	}
	if wr.Offset < 0 || wr.Length < 0 || wr.Offset+wr.Length > len(m.buf) {
		return fmt.Errorf("uc daemon: write of %d bytes at %d beyond the %d-byte region", wr.Length, wr.Offset, len(m.buf))
	}
	r := req{op: reqWrite, mr: m.id, wrid: wr.WRID, off: uint64(wr.Offset), length: uint32(wr.Length), imm: wr.Imm,
		raddr: wr.RemoteAddr, rkey: wr.RKey}
	if wr.HasImm {
		r.flags |= flagImm
	}
	if wr.Signaled {
		r.flags |= flagSignaled
	}
	return q.post(&r)
}

func (q *qp) PostRecv(wrid uint64) error { return q.post(&req{op: reqRecv, wrid: wrid}) }

func (q *qp) poll(mu *sync.Mutex, tail *uint64, headOff, tailOff, ringOff int, wcs []uc.WC) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	if q.closed.Load() {
		return 0, uc.ErrClosed
	}
	head := atomic.LoadUint64(q.u64(headOff))
	ringSync.Acquire()
	old := *tail
	n := 0
	for ; n < len(wcs) && *tail != head; n++ {
		off := ringOff + int(*tail%uint64(q.lay.cqSlots))*wcSize
		w := getWC(q.mem[off:])
		wcs[n] = uc.WC{WRID: w.wrid, Status: uc.Status(w.status), Opcode: uc.Opcode(w.opcode), ByteLen: w.byteLen, Imm: w.imm}
		*tail++
	}
	if n > 0 {
		atomic.StoreUint64(q.u64(tailOff), *tail)
		// A pump that sleeps may be holding completions for want of
		// room in this ring: there is some now. It holds some only if it
		// filled the ring, so a read from a ring that was never full
		// before it wakes no one (the head is read after the tail is
		// stored: a pump that filled the ring and then looked at the old
		// tail is seen here).
		if atomic.LoadUint32(q.u32(offDSleep)) != 0 && atomic.LoadUint64(q.u64(headOff))-old >= uint64(q.lay.cqSlots) {
			atomic.AddUint32(q.u32(offDSeq), 1)
			futex.Wake(q.u32(offDSeq), 1)
		}
	}
	return n, nil
}

func (q *qp) PollSend(wcs []uc.WC) (int, error) {
	return q.poll(&q.sMu, &q.scqTl, offSCQHead, offSCQTail, q.lay.scqOff(), wcs)
}

func (q *qp) PollRecv(wcs []uc.WC) (int, error) {
	return q.poll(&q.rMu, &q.rcqTl, offRCQHead, offRCQTail, q.lay.rcqOff(), wcs)
}

// wait spins, then sleeps on the completion bell until the ring has
// something or the timeout passes.
func (q *qp) wait(headOff, tailOff int, timeout time.Duration) error {
	ready := func() bool { return atomic.LoadUint64(q.u64(headOff)) != atomic.LoadUint64(q.u64(tailOff)) }
	deadline := time.Now().Add(timeout)
	for spin := time.Now().Add(spinWait); time.Now().Before(spin); {
		if ready() {
			return nil
		}
	}
	for !ready() {
		if q.closed.Load() {
			return uc.ErrClosed
		}
		left := time.Until(deadline)
		if left <= 0 {
			return uc.ErrTimeout
		}
		atomic.StoreUint32(q.u32(offCSleep), 1)
		seq := atomic.LoadUint32(q.u32(offCSeq))
		if !ready() {
			futex.Wait(q.u32(offCSeq), seq, min(left, 50*time.Millisecond))
		}
		atomic.StoreUint32(q.u32(offCSleep), 0)
	}
	return nil
}

func (q *qp) WaitRecv(timeout time.Duration) error { return q.wait(offRCQHead, offRCQTail, timeout) }
func (q *qp) WaitSend(timeout time.Duration) error { return q.wait(offSCQHead, offSCQTail, timeout) }

func (q *qp) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], q.id)
	_, _, err := q.d.call(opCloseQP, b[:])
	q.postMu.Lock()
	q.sMu.Lock()
	q.rMu.Lock()
	unix.Munmap(q.mem)
	q.rMu.Unlock()
	q.sMu.Unlock()
	q.postMu.Unlock()
	return err
}
