package soft

import (
	"bytes"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nuse-project/nuse/uc"
)

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the raw socket")
	}
}

type side struct {
	d  *Device
	qp uc.QP
	mr uc.MR
}

// pair connects two soft devices on 127.0.0.1 and 127.0.0.2 (loopback).
func pair(t *testing.T, mtu int) (a, b side) {
	needRoot(t)
	mk := func(ip string) side {
		d, err := Open(ip, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		q, err := d.CreateQP(uc.QPConfig{PathMTU: mtu})
		if err != nil {
			t.Fatal(err)
		}
		mr, err := d.RegMR(make([]byte, 1<<16), uc.AccessLocalWrite|uc.AccessRemoteWrite)
		if err != nil {
			t.Fatal(err)
		}
		return side{d, q, mr}
	}
	a, b = mk("127.0.0.1"), mk("127.0.0.2")
	params := func(s side) uc.ConnParams {
		return uc.ConnParams{QPN: s.qp.QPN(), PSN: s.qp.PSN(), GID: s.d.GID(), RKey: s.mr.RKey(), Addr: s.mr.Addr(), Len: 1 << 16, MTU: uint32(mtu)}
	}
	if err := a.qp.Connect(params(b)); err != nil {
		t.Fatal(err)
	}
	if err := b.qp.Connect(params(a)); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestWriteWithImm(t *testing.T) {
	a, b := pair(t, 1024)
	for i := range a.mr.Buf() {
		a.mr.Buf()[i] = byte(i * 7)
	}
	for _, n := range []int{0, 1, 1023, 1024, 1025, 5000, 60000} {
		if err := b.qp.PostRecv(uint64(n)); err != nil {
			t.Fatal(err)
		}
		// A plain write first, then one with immediate, to another offset.
		if err := a.qp.PostWrite(&uc.WriteWR{Local: a.mr, Length: n, RemoteAddr: b.mr.Addr(), RKey: b.mr.RKey()}); err != nil {
			t.Fatal(err)
		}
		if err := a.qp.PostWrite(&uc.WriteWR{WRID: 7, Local: a.mr, Offset: 3, Length: n - min(n, 3), RemoteAddr: b.mr.Addr() + 2, RKey: b.mr.RKey(),
			HasImm: true, Imm: uint32(n) ^ 0xabcd, Signaled: true}); err != nil {
			t.Fatal(err)
		}
		var wc [4]uc.WC
		if k, _ := a.qp.PollSend(wc[:]); k != 1 || wc[0].WRID != 7 || wc[0].Opcode != uc.WCWrite {
			t.Fatalf("send completion %d %+v", k, wc[0])
		}
		if err := b.qp.WaitRecv(2 * time.Second); err != nil {
			t.Fatalf("n=%d: %v (stats %+v)", n, err, &b.d.Stats)
		}
		k, _ := b.qp.PollRecv(wc[:])
		if k != 1 || wc[0].WRID != uint64(n) || wc[0].Opcode != uc.WCRecvRDMAWithImm || wc[0].Imm != uint32(n)^0xabcd || int(wc[0].ByteLen) != n-min(n, 3) {
			t.Fatalf("n=%d: recv completion %d %+v", n, k, wc[0])
		}
		if n >= 3 {
			want := append(append([]byte(nil), a.mr.Buf()[:2]...), a.mr.Buf()[3:n]...)
			if !bytes.Equal(b.mr.Buf()[:n-1], want) {
				t.Fatalf("n=%d: payload differs", n)
			}
		}
	}
	if b.d.Stats.BadICRC.Load() != 0 {
		t.Fatal("ICRC errors on loopback")
	}
}

// TestUCDropsWholeMessage feeds the responder directly: a message missing
// a middle packet must not complete, and the next message must.
func TestUCDropsWholeMessage(t *testing.T) {
	a, b := pair(t, 256)
	bq := b.qp.(*QP)
	_ = a
	_ = bq.PostRecv(1)
	_ = bq.PostRecv(2)
	src := bq.remoteIP
	psn := bq.expPSN
	va, rkey := b.mr.Addr(), b.mr.RKey()
	pl := bytes.Repeat([]byte{1}, 256)
	mk := func(op uint8, psn uint32, data []byte, dmalen uint32) *Packet {
		p := &Packet{BTH: BTH{Opcode: op, PKey: DefaultPKey, PSN: psn & psnMask}, RETH: RETH{VA: va, RKey: rkey, DMALen: dmalen}, Imm: 99, Payload: data}
		p.info, _ = lookupOp(op)
		return p
	}
	bq.receive(mk(OpUCWriteFirst, psn, pl, 768), src)
	// psn+1 lost
	bq.receive(mk(OpUCWriteLastImm, psn+2, pl, 0), src)
	var wc [2]uc.WC
	if k, _ := bq.PollRecv(wc[:]); k != 0 {
		t.Fatal("a message with a lost packet completed")
	}
	bq.receive(mk(OpUCWriteOnlyImm, psn+3, pl[:10], 10), src)
	if k, _ := bq.PollRecv(wc[:]); k != 1 || wc[0].WRID != 1 || wc[0].ByteLen != 10 {
		t.Fatalf("next message: %d %+v", k, wc[0])
	}
	// Out of order: last before middle.
	bq.receive(mk(OpUCWriteFirst, psn+4, pl, 768), src)
	bq.receive(mk(OpUCWriteLastImm, psn+6, pl, 0), src)
	bq.receive(mk(OpUCWriteMiddle, psn+5, pl, 0), src)
	if k, _ := bq.PollRecv(wc[:]); k != 0 {
		t.Fatal("reordered message completed")
	}
	if bq.d.Stats.PSNDrops.Load() == 0 {
		t.Fatal("no PSN drops counted")
	}
}

// The notify function runs after receive completions, on the device's
// receive path, and may poll them there; SetNotify(nil) waits for a call
// in progress, and none follows.
func TestNotify(t *testing.T) {
	a, b := pair(t, 1024)
	got := make(chan uc.WC, 64)
	inside := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	b.qp.(uc.Notifier).SetNotify(func() {
		var wc [8]uc.WC
		n, _ := b.qp.PollRecv(wc[:]) // polling from here must not deadlock
		for _, w := range wc[:n] {
			got <- w
		}
		if calls.Add(1) == 3 {
			close(inside)
			<-release
		}
	})
	write := func(i int) {
		t.Helper()
		if err := b.qp.PostRecv(uint64(i)); err != nil {
			t.Fatal(err)
		}
		if err := a.qp.PostWrite(&uc.WriteWR{Local: a.mr, Length: 100, RemoteAddr: b.mr.Addr(), RKey: b.mr.RKey(), HasImm: true, Imm: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		write(i)
		select {
		case w := <-got:
			if w.WRID != uint64(i) || w.Imm != uint32(i) {
				t.Fatalf("message %d: completion %+v", i, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d: the notify function did not hand its completion over", i)
		}
	}
	<-inside // the third call holds on
	cleared := make(chan struct{})
	go func() { b.qp.(uc.Notifier).SetNotify(nil); close(cleared) }()
	select {
	case <-cleared:
		close(release) // else the device's Close would wait for it
		t.Fatal("SetNotify(nil) returned while the notify function ran")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-cleared
	write(3)
	if err := b.qp.WaitRecv(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if c := calls.Load(); c != 3 {
		t.Fatalf("notify ran %d times, want 3 (none after SetNotify(nil))", c)
	}
}

// PostWrites posts a list in order, sharing system calls, and stops at
// the first write it refuses, as ibv_post_send's bad_wr: the writes
// before it arrive whole and complete; none after it is sent.
func TestPostWrites(t *testing.T) {
	a, b := pair(t, 1024)
	for i := range a.mr.Buf() {
		a.mr.Buf()[i] = byte(i * 13)
	}
	// Sizes whose packets (at 1 KiB) cross the 16-packet batches.
	sizes := []int{64, 5000, 0, 9000, 1024, 3000, 1}
	var wrs []uc.WriteWR
	off := 0
	for i, n := range sizes {
		if err := b.qp.PostRecv(uint64(i)); err != nil {
			t.Fatal(err)
		}
		wrs = append(wrs, uc.WriteWR{WRID: uint64(i), Local: a.mr, Offset: off, Length: n, RemoteAddr: b.mr.Addr() + uint64(off),
			RKey: b.mr.RKey(), HasImm: true, Imm: uint32(n), Signaled: i%2 == 0})
		off += n
	}
	bad := len(wrs)
	wrs = append(wrs, uc.WriteWR{WRID: 99, Local: a.mr, Offset: 1 << 16, Length: 1, HasImm: true, Signaled: true},
		uc.WriteWR{WRID: 100, Local: a.mr, Length: 8, RemoteAddr: b.mr.Addr(), RKey: b.mr.RKey(), HasImm: true, Signaled: true})
	n, err := a.qp.(uc.BatchPoster).PostWrites(wrs)
	if n != bad || err == nil {
		t.Fatalf("PostWrites = %d, %v; want %d and the bad write's error", n, err, bad)
	}
	var wc [16]uc.WC
	k, _ := a.qp.PollSend(wc[:])
	if k != (len(sizes)+1)/2 {
		t.Fatalf("%d send completions, want %d: %+v", k, (len(sizes)+1)/2, wc[:k])
	}
	for j := 0; j < k; j++ {
		if wc[j].WRID != uint64(2*j) || wc[j].ByteLen != uint32(sizes[2*j]) {
			t.Fatalf("send completion %d: %+v", j, wc[j])
		}
	}
	got := 0
	for deadline := time.Now().Add(5 * time.Second); got < len(sizes) && time.Now().Before(deadline); {
		m, _ := b.qp.PollRecv(wc[:])
		for _, w := range wc[:m] {
			if w.WRID != uint64(got) || w.Imm != uint32(sizes[got]) || w.ByteLen != uint32(sizes[got]) {
				t.Fatalf("receive %d: %+v", got, w)
			}
			got++
		}
		if m == 0 {
			b.qp.WaitRecv(10 * time.Millisecond)
		}
	}
	if got != len(sizes) {
		t.Fatalf("%d of %d writes arrived (stats %+v)", got, len(sizes), &b.d.Stats)
	}
	if !bytes.Equal(b.mr.Buf()[:off], a.mr.Buf()[:off]) {
		t.Fatal("payloads differ")
	}
	// Nothing after the refused write went out.
	time.Sleep(20 * time.Millisecond)
	if m, _ := b.qp.PollRecv(wc[:]); m != 0 || b.d.Stats.NoRecvWQE.Load() != 0 {
		t.Fatalf("a write after the refused one arrived (%d completions, %d without a receive)", m, b.d.Stats.NoRecvWQE.Load())
	}
}
