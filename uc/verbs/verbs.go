// Package verbs is the libibverbs backend of uc: real RDMA devices and
// rdma_rxe. Memory that a device may write must stay put and outside the Go
// heap (cgo forbids C keeping Go pointers), so buffers come from Alloc
// (anonymous mmap); RegMR refuses anything else.
package verbs

/*
#cgo LDFLAGS: -libverbs
#include <infiniband/verbs.h>
#include <rdma/ib_user_verbs.h>
#include <arpa/inet.h>
#include <poll.h>
#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

static struct ibv_context *nuse_open(const char *name, int *err) {
	int n = 0;
	struct ibv_device **l = ibv_get_device_list(&n);
	struct ibv_context *ctx = NULL;
	if (!l) { *err = errno; return NULL; }
	*err = ENODEV;
	for (int i = 0; i < n; i++) {
		if (name[0] == 0 || strcmp(ibv_get_device_name(l[i]), name) == 0) {
			ctx = ibv_open_device(l[i]);
			*err = ctx ? 0 : errno;
			break;
		}
	}
	ibv_free_device_list(l);
	return ctx;
}

static struct ibv_qp *nuse_create_qp(struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq,
		int sdepth, int rdepth, int *inl) {
	struct ibv_qp_init_attr a;
	memset(&a, 0, sizeof a);
	a.send_cq = scq; a.recv_cq = rcq; a.qp_type = IBV_QPT_UC;
	a.cap.max_send_wr = sdepth; a.cap.max_recv_wr = rdepth;
	a.cap.max_send_sge = 1; a.cap.max_recv_sge = 1; a.cap.max_inline_data = 64;
	struct ibv_qp *qp = ibv_create_qp(pd, &a);
	if (!qp) {
		a.cap.max_inline_data = 0;
		qp = ibv_create_qp(pd, &a);
	}
	*inl = qp ? (int)a.cap.max_inline_data : 0;
	if (!qp) return NULL;
	struct ibv_qp_attr m;
	memset(&m, 0, sizeof m);
	m.qp_state = IBV_QPS_INIT; m.pkey_index = 0; m.port_num = 1;
	m.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	if (ibv_modify_qp(qp, &m, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) {
		ibv_destroy_qp(qp);
		return NULL;
	}
	return qp;
}

static int nuse_connect(struct ibv_qp *qp, int mtu, unsigned dqpn, unsigned rpsn, unsigned spsn,
		const unsigned char *dgid, int sgid_index) {
	struct ibv_qp_attr m;
	memset(&m, 0, sizeof m);
	m.qp_state = IBV_QPS_RTR;
	m.path_mtu = mtu;
	m.dest_qp_num = dqpn;
	m.rq_psn = rpsn;
	m.ah_attr.is_global = 1;
	memcpy(m.ah_attr.grh.dgid.raw, dgid, 16);
	m.ah_attr.grh.sgid_index = sgid_index;
	m.ah_attr.grh.hop_limit = 64;
	m.ah_attr.port_num = 1;
	int r = ibv_modify_qp(qp, &m, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN);
	if (r) return r;
	memset(&m, 0, sizeof m);
	m.qp_state = IBV_QPS_RTS;
	m.sq_psn = spsn;
	return ibv_modify_qp(qp, &m, IBV_QP_STATE | IBV_QP_SQ_PSN);
}

static int nuse_post_write(struct ibv_qp *qp, unsigned long long wrid, unsigned long long laddr, unsigned len,
		unsigned lkey, unsigned long long raddr, unsigned rkey, int has_imm, unsigned imm, int signaled, int inl) {
	struct ibv_sge sge = { .addr = laddr, .length = len, .lkey = lkey };
	struct ibv_send_wr wr, *bad;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = wrid;
	wr.sg_list = &sge;
	wr.num_sge = len ? 1 : 0;
	wr.opcode = has_imm ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE;
	wr.imm_data = htonl(imm);
	wr.send_flags = (signaled ? IBV_SEND_SIGNALED : 0) | (len && len <= (unsigned)inl ? IBV_SEND_INLINE : 0);
	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = rkey;
	return ibv_post_send(qp, &wr, &bad);
}

static int nuse_post_recv(struct ibv_qp *qp, unsigned long long wrid) {
	struct ibv_recv_wr wr, *bad;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = wrid;
	return ibv_post_recv(qp, &wr, &bad);
}

// nuse_doorbell writes an empty post-send command (no work requests) to the
// device: rxe answers it by running the QP's requester, which is how
// rdma-core's rxe provider rings after every post, without posting.
static int nuse_doorbell(struct ibv_qp *qp) {
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_post_send cmd;
	} c;
	struct ib_uverbs_post_send_resp resp;
	memset(&c, 0, sizeof c);
	c.hdr.command = IB_USER_VERBS_CMD_POST_SEND;
	c.hdr.in_words = sizeof c / 4;
	c.hdr.out_words = sizeof resp / 4;
	c.cmd.response = (unsigned long)&resp;
	c.cmd.qp_handle = qp->handle;
	c.cmd.wqe_size = sizeof(struct ib_uverbs_send_wr);
	if (write(qp->context->cmd_fd, &c, sizeof c) != (ssize_t)sizeof c) return errno;
	return 0;
}

static unsigned nuse_vendor(struct ibv_context *ctx) {
	struct ibv_device_attr a;
	if (ibv_query_device(ctx, &a)) return 0;
	return a.vendor_id;
}

// ibv_query_port is a macro over a compat struct in these headers.
static int nuse_port_mtu(struct ibv_context *ctx) {
	struct ibv_port_attr pa;
	if (ibv_query_port(ctx, 1, &pa)) return 0;
	return 128 << pa.active_mtu;
}

// One completion, flattened for Go.
struct nuse_wc { unsigned long long wrid; unsigned status, opcode, byte_len, imm; };

static int nuse_poll(struct ibv_cq *cq, struct nuse_wc *out, int n) {
	struct ibv_wc wc[64];
	if (n > 64) n = 64;
	int k = ibv_poll_cq(cq, n, wc);
	for (int i = 0; i < k; i++) {
		out[i].wrid = wc[i].wr_id; out[i].status = wc[i].status; out[i].opcode = wc[i].opcode;
		out[i].byte_len = wc[i].byte_len;
		out[i].imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? ntohl(wc[i].imm_data) : 0;
	}
	return k;
}

// nuse_wait arms the CQ, polls once more (a completion that arrived before
// arming raises no event), then sleeps on the channel or the wake pipe for
// at most ms milliseconds. Returns k > 0 completions polled into out, 0 for
// an event, -1 on timeout, -2 on error.
static int nuse_wait(struct ibv_cq *cq, struct ibv_comp_channel *ch, int wakefd, int ms,
		struct nuse_wc *out, int n) {
	if (ibv_req_notify_cq(cq, 0)) return -2;
	int k = nuse_poll(cq, out, n);
	if (k != 0) return k < 0 ? -2 : k;
	struct pollfd p[2] = {{ .fd = ch->fd, .events = POLLIN }, { .fd = wakefd, .events = POLLIN }};
	int r = poll(p, 2, ms);
	if (r <= 0) return -1;
	if (p[0].revents & POLLIN) {
		struct ibv_cq *ecq; void *ctx;
		if (ibv_get_cq_event(ch, &ecq, &ctx) == 0) ibv_ack_cq_events(ecq, 1);
		return 0;
	}
	return -1;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nuse-project/nuse/uc"
	"golang.org/x/sys/unix"
)

func init() {
	uc.Register("verbs", func(o uc.Options) (uc.Device, error) { return Open(o.Dev, o.GIDIndex) })
}

// Device is an opened verbs device with one protection domain.
type Device struct {
	name   string
	ctx    *C.struct_ibv_context
	pd     *C.struct_ibv_pd
	gid    [16]byte
	gidIdx int
	mtu    int // port's active MTU in bytes
	rxe    bool

	mu     sync.Mutex
	allocs map[uintptr][]byte
}

// Open opens device name ("" for the first) and reads GID gidIndex of port 1.
func Open(name string, gidIndex int) (*Device, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var cerr C.int
	ctx := C.nuse_open(cname, &cerr)
	if ctx == nil {
		return nil, fmt.Errorf("verbs: open device %q: %w", name, unix.Errno(cerr))
	}
	d := &Device{ctx: ctx, gidIdx: gidIndex, allocs: map[uintptr][]byte{}}
	d.name = C.GoString(C.ibv_get_device_name(ctx.device))
	if d.pd = C.ibv_alloc_pd(ctx); d.pd == nil {
		C.ibv_close_device(ctx)
		return nil, errors.New("verbs: ibv_alloc_pd failed")
	}
	var gid C.union_ibv_gid
	if r := C.ibv_query_gid(ctx, 1, C.int(gidIndex), &gid); r != 0 {
		d.Close()
		return nil, fmt.Errorf("verbs: query GID %d: %w", gidIndex, unix.Errno(r))
	}
	copy(d.gid[:], C.GoBytes(unsafe.Pointer(&gid), 16))
	d.mtu = int(C.nuse_port_mtu(ctx))
	d.rxe = C.nuse_vendor(ctx) == rxeVendorID
	return d, nil
}

// Name implements uc.Device.
func (d *Device) Name() string { return d.name }

// GID implements uc.Device.
func (d *Device) GID() [16]byte { return d.gid }

// PortMTU is the port's active MTU in bytes.
func (d *Device) PortMTU() int { return d.mtu }

// Alloc returns n bytes of page-aligned memory outside the Go heap, for
// RegMR. It is never freed before Close.
func (d *Device) Alloc(n int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.allocs[uintptr(unsafe.Pointer(&b[0]))] = b
	d.mu.Unlock()
	return b, nil
}

// Adopt lets RegMR register b, memory the caller mapped outside the Go heap
// (the uc proxy's shared memfds); the device unmaps it at Close.
func (d *Device) Adopt(b []byte) {
	if len(b) == 0 {
		return
	}
	d.mu.Lock()
	d.allocs[uintptr(unsafe.Pointer(&b[0]))] = b
	d.mu.Unlock()
}

type memRegion struct {
	mr  *C.struct_ibv_mr
	buf []byte
}

func (m *memRegion) Buf() []byte  { return m.buf }
func (m *memRegion) Addr() uint64 { return uint64(uintptr(m.mr.addr)) }
func (m *memRegion) LKey() uint32 { return uint32(m.mr.lkey) }
func (m *memRegion) RKey() uint32 { return uint32(m.mr.rkey) }
func (m *memRegion) Dereg() error {
	if r := C.ibv_dereg_mr(m.mr); r != 0 {
		return fmt.Errorf("verbs: dereg: %w", unix.Errno(r))
	}
	return nil
}

// RegMR registers buf, which must lie inside memory from Alloc.
func (d *Device) RegMR(buf []byte, access uc.Access) (uc.MR, error) {
	if len(buf) == 0 {
		return nil, errors.New("verbs: empty memory region")
	}
	p := uintptr(unsafe.Pointer(&buf[0]))
	d.mu.Lock()
	ok := false
	for base, b := range d.allocs {
		if p >= base && p+uintptr(len(buf)) <= base+uintptr(len(b)) {
			ok = true
			break
		}
	}
	d.mu.Unlock()
	if !ok {
		return nil, errors.New("verbs: RegMR needs memory from Alloc (uc.Alloc)")
	}
	var acc C.int = C.IBV_ACCESS_LOCAL_WRITE
	if access&uc.AccessRemoteWrite != 0 {
		acc |= C.IBV_ACCESS_REMOTE_WRITE
	}
	mr := C.ibv_reg_mr(d.pd, unsafe.Pointer(&buf[0]), C.size_t(len(buf)), acc)
	if mr == nil {
		return nil, errors.New("verbs: ibv_reg_mr failed")
	}
	return &memRegion{mr: mr, buf: buf}, nil
}

// Close releases the device; QPs and MRs must be gone.
func (d *Device) Close() error {
	if d.pd != nil {
		C.ibv_dealloc_pd(d.pd)
		d.pd = nil
	}
	if d.ctx != nil {
		C.ibv_close_device(d.ctx)
		d.ctx = nil
	}
	d.mu.Lock()
	for _, b := range d.allocs {
		unix.Munmap(b)
	}
	d.allocs = map[uintptr][]byte{}
	d.mu.Unlock()
	return nil
}

// QP is a verbs UC QP with a send CQ and a receive CQ, each with its own
// completion channel.
type QP struct {
	d      *Device
	qp     *C.struct_ibv_qp
	sc, rc cqState
	psn    uint32
	mtu    int
	inline int
	wakeR  *os.File
	wakeW  *os.File

	// The send watch (kept on rxe only, see stallCheck).
	sigOut   atomic.Int64 // signaled writes posted, not yet completed
	lastDone atomic.Int64 // when a send last completed (or the first was posted), unix ns
	empties  atomic.Uint32
	kicks    atomic.Uint64

	// lifetime: every call holds rw for reading; Close takes it for writing
	rw     sync.RWMutex
	closed bool
}

func mtuEnum(m int) C.enum_ibv_mtu {
	switch m {
	case 256:
		return C.IBV_MTU_256
	case 512:
		return C.IBV_MTU_512
	case 1024:
		return C.IBV_MTU_1024
	case 2048:
		return C.IBV_MTU_2048
	}
	return C.IBV_MTU_4096
}

// CreateQP implements uc.Device.
func (d *Device) CreateQP(cfg uc.QPConfig) (uc.QP, error) {
	if cfg.SendDepth <= 0 {
		cfg.SendDepth = 128
	}
	if cfg.RecvDepth <= 0 {
		cfg.RecvDepth = 128
	}
	if cfg.PathMTU == 0 {
		cfg.PathMTU = 1024
	}
	if !uc.ValidMTU(cfg.PathMTU) {
		return nil, fmt.Errorf("verbs: bad path MTU %d", cfg.PathMTU)
	}
	if d.mtu != 0 && cfg.PathMTU > d.mtu {
		cfg.PathMTU = d.mtu
	}
	q := &QP{d: d, mtu: cfg.PathMTU}
	var err error
	if q.wakeR, q.wakeW, err = os.Pipe(); err != nil {
		return nil, err
	}
	fail := func(what string) (uc.QP, error) {
		q.destroy()
		return nil, fmt.Errorf("verbs: %s failed", what)
	}
	if q.sc.ch = C.ibv_create_comp_channel(d.ctx); q.sc.ch == nil {
		return fail("ibv_create_comp_channel")
	}
	if q.rc.ch = C.ibv_create_comp_channel(d.ctx); q.rc.ch == nil {
		return fail("ibv_create_comp_channel")
	}
	if q.sc.cq = C.ibv_create_cq(d.ctx, C.int(cfg.SendDepth), nil, q.sc.ch, 0); q.sc.cq == nil {
		return fail("ibv_create_cq")
	}
	if q.rc.cq = C.ibv_create_cq(d.ctx, C.int(cfg.RecvDepth), nil, q.rc.ch, 0); q.rc.cq == nil {
		return fail("ibv_create_cq")
	}
	var inl C.int
	if q.qp = C.nuse_create_qp(d.pd, q.sc.cq, q.rc.cq, C.int(cfg.SendDepth), C.int(cfg.RecvDepth), &inl); q.qp == nil {
		return fail("ibv_create_qp(UC)")
	}
	q.inline = int(inl)
	var b [4]byte
	if _, err := unix.Getrandom(b[:], 0); err == nil {
		q.psn = (uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16) & 0xffffff
	}
	return q, nil
}

func (q *QP) destroy() {
	if q.qp != nil {
		C.ibv_destroy_qp(q.qp)
	}
	for _, c := range []*cqState{&q.sc, &q.rc} {
		if c.cq != nil {
			C.ibv_destroy_cq(c.cq)
		}
		if c.ch != nil {
			C.ibv_destroy_comp_channel(c.ch)
		}
	}
	q.wakeR.Close()
	q.wakeW.Close()
}

// QPN implements uc.QP.
func (q *QP) QPN() uint32 { return uint32(q.qp.qp_num) }

// PathMTU implements uc.QP.
func (q *QP) PathMTU() int { return q.mtu }

// PSN implements uc.QP.
func (q *QP) PSN() uint32 { return q.psn }

// Connect implements uc.QP: INIT -> RTR -> RTS toward the peer.
func (q *QP) Connect(r uc.ConnParams) error {
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed {
		return uc.ErrClosed
	}
	mtu := q.mtu
	if r.MTU != 0 && int(r.MTU) < mtu {
		mtu = int(r.MTU)
	}
	gid := r.GID
	if rc := C.nuse_connect(q.qp, C.int(mtuEnum(mtu)), C.uint(r.QPN), C.uint(r.PSN), C.uint(q.psn),
		(*C.uchar)(unsafe.Pointer(&gid[0])), C.int(q.d.gidIdx)); rc != 0 {
		return fmt.Errorf("verbs: connect: %w", unix.Errno(rc))
	}
	return nil
}

// PostWrite implements uc.QP.
func (q *QP) PostWrite(wr *uc.WriteWR) error {
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed {
		return uc.ErrClosed
	}
	m, ok := wr.Local.(*memRegion)
	if !ok {
		return errors.New("verbs: local MR is not a verbs MR")
	}
	if wr.Offset < 0 || wr.Length < 0 || wr.Offset+wr.Length > len(m.buf) {
		return errors.New("verbs: write outside the local memory region")
	}
	imm := 0
	if wr.HasImm {
		imm = 1
	}
	sig := 0
	if wr.Signaled {
		sig = 1
	}
	if rc := C.nuse_post_write(q.qp, C.ulonglong(wr.WRID), C.ulonglong(m.Addr()+uint64(wr.Offset)), C.uint(wr.Length),
		C.uint(m.LKey()), C.ulonglong(wr.RemoteAddr), C.uint(wr.RKey), C.int(imm), C.uint(wr.Imm), C.int(sig), C.int(q.inline)); rc != 0 {
		return fmt.Errorf("verbs: post send: %w", unix.Errno(rc))
	}
	if q.d.rxe && wr.Signaled && q.sigOut.Add(1) == 1 {
		q.lastDone.Store(time.Now().UnixNano())
	}
	return nil
}

// rxeVendorID is what rdma_rxe reports as its vendor.
const rxeVendorID = 0xffffff

// kickAfter is how long signaled sends may go without a completion before
// the watch rings the doorbell again. A 100 KB write takes about 5 ms on rxe
// in a TCG guest; a wrongful ring costs one system call.
const kickAfter = 20 * time.Millisecond

// sendsDone notes k send completions taken off the CQ.
func (q *QP) sendsDone(k int) {
	for {
		v := q.sigOut.Load()
		if q.sigOut.CompareAndSwap(v, max(v-int64(k), 0)) {
			break
		}
	}
	q.lastDone.Store(time.Now().UnixNano())
}

// stallCheck works around rdma_rxe losing the wakeup of a QP's requester
// (seen on Debian's 6.1): the requester parks when too many of its packets
// are in flight, and if they are all freed before it has marked itself as
// waiting, nothing restarts it and posted writes stay unsent until the next
// post. When signaled writes have gone kickAfter without a completion, ring
// the doorbell: the requester runs again, and finding nothing, costs nothing.
// Callers hold q.rw.
func (q *QP) stallCheck() {
	if q.sigOut.Load() <= 0 {
		return
	}
	now := time.Now().UnixNano()
	if last := q.lastDone.Load(); now-last < int64(kickAfter) || !q.lastDone.CompareAndSwap(last, now) {
		return
	}
	q.kicks.Add(1)
	C.nuse_doorbell(q.qp)
}

// Kicks counts the doorbells stallCheck rang.
func (q *QP) Kicks() uint64 { return q.kicks.Load() }

// Doorbell rings the send doorbell now, posting nothing (tests use it to
// show that a ring the watch did not need is harmless).
func (q *QP) Doorbell() error {
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed {
		return uc.ErrClosed
	}
	if rc := C.nuse_doorbell(q.qp); rc != 0 {
		return fmt.Errorf("verbs: doorbell: %w", unix.Errno(rc))
	}
	return nil
}

// PostRecv implements uc.QP.
func (q *QP) PostRecv(wrid uint64) error {
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed {
		return uc.ErrClosed
	}
	if rc := C.nuse_post_recv(q.qp, C.ulonglong(wrid)); rc != 0 {
		return fmt.Errorf("verbs: post recv: %w", unix.Errno(rc))
	}
	return nil
}

func convert(w *C.struct_nuse_wc) uc.WC {
	wc := uc.WC{WRID: uint64(w.wrid), ByteLen: uint32(w.byte_len), Imm: uint32(w.imm)}
	switch w.status {
	case C.IBV_WC_SUCCESS:
	case C.IBV_WC_WR_FLUSH_ERR:
		wc.Status = uc.WCFlushErr
	default:
		wc.Status = uc.WCLocalError
	}
	switch w.opcode {
	case C.IBV_WC_RDMA_WRITE:
		wc.Opcode = uc.WCWrite
	case C.IBV_WC_RECV_RDMA_WITH_IMM:
		wc.Opcode = uc.WCRecvRDMAWithImm
	case C.IBV_WC_RECV:
		wc.Opcode = uc.WCRecv
	}
	return wc
}

// cqState is one CQ with the completions a wait polled early.
type cqState struct {
	cq    *C.struct_ibv_cq
	ch    *C.struct_ibv_comp_channel
	mu    sync.Mutex
	stash []uc.WC
}

func (q *QP) poll(c *cqState, wcs []uc.WC) (int, error) {
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed {
		return 0, uc.ErrClosed
	}
	c.mu.Lock()
	if len(c.stash) > 0 {
		n := copy(wcs, c.stash)
		c.stash = c.stash[:copy(c.stash, c.stash[n:])]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	var buf [64]C.struct_nuse_wc
	n := min(len(wcs), 64)
	k := int(C.nuse_poll(c.cq, &buf[0], C.int(n)))
	if k < 0 {
		return 0, errors.New("verbs: poll CQ failed")
	}
	if c == &q.sc && q.d.rxe {
		if k > 0 {
			q.sendsDone(k)
		} else if q.empties.Add(1)%64 == 0 {
			q.stallCheck() // spinning pollers: a clock read every 64 empty polls
		}
	}
	for i := 0; i < k; i++ {
		wcs[i] = convert(&buf[i])
	}
	return k, nil
}

func (q *QP) wait(c *cqState, timeout time.Duration) error {
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed {
		return uc.ErrClosed
	}
	c.mu.Lock()
	if len(c.stash) > 0 {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	ms := max(int(timeout/time.Millisecond), 1)
	var buf [64]C.struct_nuse_wc
	k := int(C.nuse_wait(c.cq, c.ch, C.int(q.wakeR.Fd()), C.int(ms), &buf[0], 64))
	if c == &q.sc && q.d.rxe {
		if k > 0 {
			q.sendsDone(k)
		} else {
			q.stallCheck()
		}
	}
	switch {
	case k > 0:
		c.mu.Lock()
		for i := 0; i < k; i++ {
			c.stash = append(c.stash, convert(&buf[i]))
		}
		c.mu.Unlock()
		return nil
	case k == 0:
		return nil
	case k == -1:
		return uc.ErrTimeout
	}
	return errors.New("verbs: arming the CQ failed")
}

// PollSend implements uc.QP.
func (q *QP) PollSend(wcs []uc.WC) (int, error) { return q.poll(&q.sc, wcs) }

// PollRecv implements uc.QP.
func (q *QP) PollRecv(wcs []uc.WC) (int, error) { return q.poll(&q.rc, wcs) }

// WaitRecv implements uc.QP.
func (q *QP) WaitRecv(timeout time.Duration) error { return q.wait(&q.rc, timeout) }

// WaitSend implements uc.QP.
func (q *QP) WaitSend(timeout time.Duration) error { return q.wait(&q.sc, timeout) }

// Close implements uc.QP: it wakes a waiter, then destroys the QP.
func (q *QP) Close() error {
	q.wakeW.Write([]byte{1})
	q.rw.Lock()
	defer q.rw.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	q.destroy()
	return nil
}

var (
	_ uc.Device = (*Device)(nil)
	_ uc.QP     = (*QP)(nil)
)
