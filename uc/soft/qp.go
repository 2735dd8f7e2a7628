package soft

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"github.com/nuse-project/nuse/uc"
)

// QP is a soft UC queue pair.
type QP struct {
	d   *Device
	qpn uint32
	psn uint32 // initial send PSN
	cfg uc.QPConfig

	// Send side: the caller's goroutine builds and sends the packets.
	sendMu   sync.Mutex
	txPSN    uint32
	txBufs   [txBatch][]byte
	tx       *batch
	sendCQ   []uc.WC
	txSent   []uc.WC // scratch: completions of writes built, not yet sent
	sendNote chan struct{}

	mu        sync.Mutex
	connected bool
	closed    bool
	destQP    uint32
	remoteIP  [4]byte
	mtu       int

	// Receive side (under mu): the responder state of the message in
	// progress, as UC defines it.
	expPSN   uint32
	inMsg    bool
	isWrite  bool
	mr       *memRegion
	off      uint64 // next byte of the current write, into mr.buf
	resid    uint32 // bytes still expected
	total    uint32
	recvWRs  []uint64
	recvCQ   []uc.WC
	recvNote chan struct{}

	notifyMu sync.RWMutex // held (read) while notify runs: SetNotify waits it out
	notify   func()
}

// SetNotify implements uc.Notifier.
func (q *QP) SetNotify(f func()) {
	q.notifyMu.Lock()
	q.notify = f
	q.notifyMu.Unlock()
}

// notified runs the notify function after a receive completion.
func (q *QP) notified() {
	q.notifyMu.RLock()
	if q.notify != nil {
		q.notify()
	}
	q.notifyMu.RUnlock()
}

// QPN implements uc.QP.
func (q *QP) QPN() uint32 { return q.qpn }

// PathMTU implements uc.QP.
func (q *QP) PathMTU() int { return q.cfg.PathMTU }

// PSN is the first PSN this QP sends.
func (q *QP) PSN() uint32 { return q.psn }

// Connect implements uc.QP.
func (q *QP) Connect(r uc.ConnParams) error {
	ip := netip.AddrFrom16(r.GID).Unmap()
	if !ip.Is4() {
		return fmt.Errorf("soft: peer GID %v is not IPv4-mapped", netip.AddrFrom16(r.GID))
	}
	mtu := q.cfg.PathMTU
	if r.MTU != 0 && int(r.MTU) < mtu {
		mtu = int(r.MTU)
	}
	if !uc.ValidMTU(mtu) {
		return fmt.Errorf("soft: bad path MTU %d", mtu)
	}
	q.sendMu.Lock()
	q.txPSN = q.psn
	q.sendMu.Unlock()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return uc.ErrClosed
	}
	q.destQP, q.remoteIP, q.mtu = r.QPN&psnMask, ip.As4(), mtu
	q.expPSN = r.PSN & psnMask
	q.connected = true
	return nil
}

// PostWrite segments the write into path-MTU packets and sends them now;
// UC has no acknowledgements, so the WR completes once sent.
func (q *QP) PostWrite(wr *uc.WriteWR) error {
	_, err := q.PostWrites(unsafe.Slice(wr, 1))
	return err
}

// PostWrites implements uc.BatchPoster: the packets of consecutive writes
// share system calls (sendmmsg of up to txBatch packets).
func (q *QP) PostWrites(wrs []uc.WriteWR) (int, error) {
	q.mu.Lock()
	ok, closed, dqp, dip, mtu := q.connected, q.closed, q.destQP, q.remoteIP, q.mtu
	q.mu.Unlock()
	if closed {
		return 0, uc.ErrClosed
	}
	if !ok {
		return 0, errors.New("soft: QP not connected")
	}
	q.sendMu.Lock()
	defer q.sendMu.Unlock()
	const hdroom = IPv4Len + UDPLen
	nb := 0              // packets built in q.txBufs, not yet sent
	inBatch := 0         // the first write with packets among them
	sent := q.txSent[:0] // completions of writes built whole, not yet sent
	flush := func() error {
		if nb > 0 {
			if err := q.d.sendBatch(q.tx, nb); err != nil {
				return fmt.Errorf("soft: send: %w", err)
			}
			nb = 0
		}
		q.sendCQ = append(q.sendCQ, sent...)
		sent = sent[:0]
		return nil
	}
	for i := range wrs {
		wr := &wrs[i]
		buf := wr.Local.Buf()
		if wr.Offset < 0 || wr.Length < 0 || wr.Offset+wr.Length > len(buf) {
			if err := flush(); err != nil {
				return inBatch, err
			}
			return i, errors.New("soft: write outside the local memory region")
		}
		if wr.Signaled && len(q.sendCQ)+len(sent) >= q.cfg.SendDepth {
			if err := flush(); err != nil {
				return inBatch, err
			}
			return i, errors.New("soft: send queue full (poll the send CQ)")
		}
		data := buf[wr.Offset : wr.Offset+wr.Length]
		for first := true; first || len(data) > 0; first = false {
			n := min(len(data), mtu)
			last := n == len(data)
			p := Packet{BTH: BTH{PKey: DefaultPKey, DestQP: dqp, PSN: q.txPSN}}
			switch {
			case first && last && wr.HasImm:
				p.Opcode = OpUCWriteOnlyImm
			case first && last:
				p.Opcode = OpUCWriteOnly
			case first:
				p.Opcode = OpUCWriteFirst
			case last && wr.HasImm:
				p.Opcode = OpUCWriteLastImm
			case last:
				p.Opcode = OpUCWriteLast
			default:
				p.Opcode = OpUCWriteMiddle
			}
			if first {
				p.RETH = RETH{VA: wr.RemoteAddr, RKey: wr.RKey, DMALen: uint32(wr.Length)}
			}
			// Solicit an event on the message that consumes a receive.
			p.SE = last && wr.HasImm
			p.Imm = wr.Imm
			p.Payload = data[:n]
			data = data[n:]
			if nb == 0 {
				inBatch = i
			}
			pkt := AppendPacket(q.txBufs[nb][:hdroom], &p)
			q.txBufs[nb] = pkt
			ib := pkt[hdroom:]
			IPv4Header(pkt[:IPv4Len], q.d.local, dip, len(ib))
			UDPHeader(pkt[IPv4Len:hdroom], uint16(q.d.port), uint16(q.d.port), len(ib))
			PutICRC(pkt[:IPv4Len], pkt[IPv4Len:hdroom], ib)
			q.tx.set(nb, ib, dip, q.d.port)
			nb++
			q.txPSN = (q.txPSN + 1) & psnMask
			if last && wr.Signaled {
				sent = append(sent, uc.WC{WRID: wr.WRID, Opcode: uc.WCWrite, ByteLen: uint32(wr.Length)})
			}
			// The packets leave in batches, one system call each.
			if nb == len(q.txBufs) {
				if err := flush(); err != nil {
					return inBatch, err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return inBatch, err
	}
	q.txSent = sent
	if len(q.sendCQ) > 0 {
		select {
		case q.sendNote <- struct{}{}:
		default:
		}
	}
	return len(wrs), nil
}

// PostRecv implements uc.QP.
func (q *QP) PostRecv(wrid uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return uc.ErrClosed
	}
	if len(q.recvWRs) >= q.cfg.RecvDepth {
		return errors.New("soft: receive queue full")
	}
	q.recvWRs = append(q.recvWRs, wrid)
	return nil
}

// PollSend implements uc.QP.
func (q *QP) PollSend(wcs []uc.WC) (int, error) {
	q.sendMu.Lock()
	n := copy(wcs, q.sendCQ)
	q.sendCQ = q.sendCQ[:copy(q.sendCQ, q.sendCQ[n:])]
	q.sendMu.Unlock()
	return n, nil
}

// PollRecv implements uc.QP.
func (q *QP) PollRecv(wcs []uc.WC) (int, error) {
	q.mu.Lock()
	n := copy(wcs, q.recvCQ)
	q.recvCQ = q.recvCQ[:copy(q.recvCQ, q.recvCQ[n:])]
	closed := q.closed
	q.mu.Unlock()
	if n == 0 && closed {
		return 0, uc.ErrClosed
	}
	return n, nil
}

func wait(note chan struct{}, ready func() bool, timeout time.Duration) error {
	if ready() {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		// A note may be stale (left by a completion already polled).
		select {
		case <-note:
			if ready() {
				return nil
			}
		case <-t.C:
			if ready() {
				return nil
			}
			return uc.ErrTimeout
		}
	}
}

// WaitRecv implements uc.QP.
func (q *QP) WaitRecv(timeout time.Duration) error {
	return wait(q.recvNote, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.recvCQ) > 0 || q.closed
	}, timeout)
}

// WaitSend implements uc.QP.
func (q *QP) WaitSend(timeout time.Duration) error {
	return wait(q.sendNote, func() bool {
		q.sendMu.Lock()
		defer q.sendMu.Unlock()
		return len(q.sendCQ) > 0
	}, timeout)
}

func (q *QP) markClosed() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.recvNote <- struct{}{}:
	default:
	}
}

// Close implements uc.QP.
func (q *QP) Close() error {
	q.d.mu.Lock()
	delete(q.d.qps, q.qpn)
	q.d.mu.Unlock()
	q.markClosed()
	return nil
}

// receive runs the UC responder for one packet (the device's receive
// goroutine calls it) and says whether it queued a completion. A message
// that loses any packet is dropped whole: a PSN gap or a broken opcode
// sequence aborts the message in progress, and only the first packet of a
// new message resynchronises.
func (q *QP) receive(p *Packet, src [4]byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := &q.d.Stats
	if !q.connected || q.closed {
		st.NoQP.Add(1)
		return false
	}
	if src != q.remoteIP {
		st.BadSrc.Add(1)
		return false
	}
	if p.PKey&0x7fff != DefaultPKey&0x7fff {
		st.BadHeader.Add(1)
		return false
	}
	info := p.info
	if p.PSN != q.expPSN || (q.inMsg && info.first) {
		if q.inMsg {
			q.inMsg = false
			st.MsgsDropped.Add(1)
		}
		if !info.first {
			st.PSNDrops.Add(1)
			q.expPSN = (p.PSN + 1) & psnMask
			return false
		}
	}
	if !q.inMsg && !info.first {
		// Middle or last of a message whose start was dropped.
		st.SeqDrops.Add(1)
		q.expPSN = (p.PSN + 1) & psnMask
		return false
	}
	q.expPSN = (p.PSN + 1) & psnMask
	if !info.write {
		// SENDs are not used by NUSE; count and drop them.
		st.SeqDrops.Add(1)
		q.inMsg = false
		return false
	}
	if info.first {
		m := q.d.lookupMR(p.RETH.RKey)
		if m == nil || m.access&uc.AccessRemoteWrite == 0 || p.RETH.VA < m.va ||
			p.RETH.VA-m.va > uint64(len(m.buf)) || uint64(p.RETH.DMALen) > uint64(len(m.buf))-(p.RETH.VA-m.va) {
			st.AccessDrops.Add(1)
			st.MsgsDropped.Add(1)
			q.inMsg = false
			return false
		}
		q.inMsg, q.isWrite, q.mr = true, true, m
		q.off, q.resid, q.total = p.RETH.VA-m.va, p.RETH.DMALen, p.RETH.DMALen
	}
	// Every packet but the last carries exactly one path MTU.
	n := uint32(len(p.Payload))
	if n > q.resid || (!info.last && int(n) != q.mtu) || (info.last && n != q.resid) {
		st.SeqDrops.Add(1)
		st.MsgsDropped.Add(1)
		q.inMsg = false
		return false
	}
	copy(q.mr.buf[q.off:], p.Payload)
	q.off += uint64(n)
	q.resid -= n
	if !info.last {
		return false
	}
	q.inMsg = false
	if !info.imm {
		return false
	}
	if len(q.recvWRs) == 0 {
		// UC has no RNR retry: the data landed but no completion is made.
		st.NoRecvWQE.Add(1)
		return false
	}
	wrid := q.recvWRs[0]
	q.recvWRs = q.recvWRs[:copy(q.recvWRs, q.recvWRs[1:])]
	q.recvCQ = append(q.recvCQ, uc.WC{WRID: wrid, Opcode: uc.WCRecvRDMAWithImm, ByteLen: q.total, Imm: p.Imm})
	select {
	case q.recvNote <- struct{}{}:
	default:
	}
	return true
}

var (
	_ uc.QP          = (*QP)(nil)
	_ uc.Notifier    = (*QP)(nil)
	_ uc.BatchPoster = (*QP)(nil)
)
