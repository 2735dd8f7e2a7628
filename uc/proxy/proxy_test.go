package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/internal/futex"
	"github.com/nuse-project/nuse/internal/testlog"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/uc"
	_ "github.com/nuse-project/nuse/uc/soft"
)

// startDaemon serves proxy sessions on a fresh socket the way nused does:
// the first message is a NUSE control header of type MsgUC. uid overrides
// the peer's uid when not negative.
func startDaemon(t testing.TB, uid int) string {
	t.Helper()
	return startDaemonCfg(t, uid, ServerConfig{Spin: testSpin})
}

// startDaemonCfg is startDaemon with the given configuration (its Logf is
// the test's).
func startDaemonCfg(t testing.TB, uid int, cfg ServerConfig) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nused.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	logf := testlog.Logf(t) // shuts after the cleanup below has joined the sessions
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []*net.UnixConn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait() // no session may log after the test
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 512)
				n, err := c.Read(buf)
				if err != nil || n < 16 || binary.LittleEndian.Uint16(buf[6:]) != abi.MsgUC {
					return
				}
				cred := &unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid())}
				if uid >= 0 {
					cred.Uid = uint32(uid)
				}
				cfg := cfg
				cfg.Logf = logf
				Serve(c, cred, binary.LittleEndian.Uint32(buf[12:]), buf[16:n], cfg)
			}()
		}
	}()
	return path
}

type end struct {
	d  uc.Device
	qp uc.QP
	mr uc.MR
}

func mkEnd(t testing.TB, backend string, o uc.Options) end {
	t.Helper()
	d, err := uc.Open(backend, o)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := uc.Alloc(d, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	mr, err := d.RegMR(buf, uc.AccessLocalWrite|uc.AccessRemoteWrite)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := d.CreateQP(uc.QPConfig{SendDepth: 16, RecvDepth: 16, PathMTU: 1024})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 16; i++ {
		if err := qp.PostRecv(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if q, ok := qp.(interface{ settled() bool }); ok {
		// UC drops a message that finds no receive posted: the daemon
		// must have taken these before the peer writes.
		for deadline := time.Now().Add(5 * time.Second); !q.settled(); {
			if time.Now().After(deadline) {
				t.Fatal("the daemon did not take the receives in 5 s")
			}
			time.Sleep(time.Millisecond)
		}
	}
	e := end{d, qp, mr}
	t.Cleanup(func() { qp.Close(); mr.Dereg(); d.Close() })
	return e
}

func (e end) params() uc.ConnParams {
	return uc.ConnParams{QPN: e.qp.QPN(), PSN: e.qp.PSN(), GID: e.d.GID(), RKey: e.mr.RKey(), Addr: e.mr.Addr(), Len: 1 << 16, MTU: 1024}
}

func connectPair(t testing.TB, a, b end) {
	t.Helper()
	if err := a.qp.Connect(b.params()); err != nil {
		t.Fatal(err)
	}
	if err := b.qp.Connect(a.params()); err != nil {
		t.Fatal(err)
	}
}

func needRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: the soft backend needs root for its raw socket")
	}
}

// recvOne waits for one receive completion and reposts the receive.
func recvOne(t *testing.T, q uc.QP) uc.WC {
	t.Helper()
	var wc [1]uc.WC
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, err := q.PollRecv(wc[:])
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			if err := q.PostRecv(wc[0].WRID); err != nil {
				t.Fatal(err)
			}
			return wc[0]
		}
		q.WaitRecv(10 * time.Millisecond)
	}
	t.Fatal("no receive completion within 5 s")
	return uc.WC{}
}

// A program on the daemon backend and a native soft peer exchange WRITE
// WITH IMMEDIATE both ways, many times (the rings wrap), payloads checked.
func TestProxyPingPong(t *testing.T) {
	needRoot(t)
	path := startDaemon(t, -1)
	p := mkEnd(t, "daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24791})
	n := mkEnd(t, "soft", uc.Options{LocalIP: "127.0.0.2", Port: 24791})
	if p.d.GID() == ([16]byte{}) || p.d.Name() == "" {
		t.Fatalf("device name %q gid %x", p.d.Name(), p.d.GID())
	}
	connectPair(t, p, n)
	var wcs [16]uc.WC
	sends := 0
	for i := 0; i < 300; i++ {
		size := 1 + (i*97)%5000
		for k := 0; k < size; k++ {
			p.mr.Buf()[k] = byte(i + k)
		}
		if err := p.qp.PostWrite(&uc.WriteWR{WRID: uint64(i), Local: p.mr, Length: size, RemoteAddr: n.mr.Addr(), RKey: n.mr.RKey(),
			HasImm: true, Imm: uint32(i), Signaled: true}); err != nil {
			t.Fatal(err)
		}
		wc := recvOne(t, n.qp)
		if wc.Status != uc.WCSuccess || wc.Imm != uint32(i) || wc.ByteLen != uint32(size) {
			t.Fatalf("native side, round %d: %+v", i, wc)
		}
		if !bytes.Equal(n.mr.Buf()[:size], p.mr.Buf()[:size]) {
			t.Fatalf("round %d: payload differs at the native side", i)
		}
		// And back: the native side writes into the program's memory.
		for k := 0; k < size; k++ {
			n.mr.Buf()[k] = byte(3*i + k)
		}
		if err := n.qp.PostWrite(&uc.WriteWR{WRID: uint64(i), Local: n.mr, Length: size, RemoteAddr: p.mr.Addr(), RKey: p.mr.RKey(),
			HasImm: true, Imm: uint32(i) | 1<<31}); err != nil {
			t.Fatal(err)
		}
		wc = recvOne(t, p.qp)
		if wc.Status != uc.WCSuccess || wc.Imm != uint32(i)|1<<31 || wc.Opcode != uc.WCRecvRDMAWithImm {
			t.Fatalf("program side, round %d: %+v", i, wc)
		}
		if !bytes.Equal(n.mr.Buf()[:size], p.mr.Buf()[:size]) {
			t.Fatalf("round %d: payload differs at the program side", i)
		}
		k, err := p.qp.PollSend(wcs[:])
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range wcs[:k] {
			if w.Status != uc.WCSuccess || w.Opcode != uc.WCWrite {
				t.Fatalf("send completion %+v", w)
			}
		}
		sends += k
	}
	for deadline := time.Now().Add(5 * time.Second); sends < 300 && time.Now().Before(deadline); {
		k, _ := p.qp.PollSend(wcs[:])
		sends += k
		if k == 0 {
			p.qp.WaitSend(10 * time.Millisecond)
		}
	}
	if sends != 300 {
		t.Fatalf("%d send completions for 300 signaled writes", sends)
	}
	// nuse stats sees the session and what it carried.
	var found bool
	for _, i := range Sessions() {
		if i.Pid == int32(os.Getpid()) && i.QPs == 1 && i.Posted >= 300+16 && i.Completed >= 600 {
			found = true
		}
	}
	if !found {
		t.Fatalf("Sessions() = %+v: no session with 1 QP, 316 posts, 600 completions", Sessions())
	}
}

// A program that writes a bad descriptor into its request ring loses its
// proxy session; the daemon and other sessions go on.
func TestProxyBadDescriptorEndsOnlyThatSession(t *testing.T) {
	needRoot(t)
	path := startDaemon(t, -1)
	bad := mkEnd(t, "daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24792})
	// A write from a memory region that does not exist.
	forgeAndExpectEnd(t, bad, req{op: reqWrite, mr: 999, length: 10})
	// The daemon still serves others.
	good := mkEnd(t, "daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24793})
	n := mkEnd(t, "soft", uc.Options{LocalIP: "127.0.0.2", Port: 24793})
	connectPair(t, good, n)
	copy(good.mr.Buf(), "still fine")
	if err := good.qp.PostWrite(&uc.WriteWR{Local: good.mr, Length: 10, RemoteAddr: n.mr.Addr(), RKey: n.mr.RKey(), HasImm: true, Imm: 7}); err != nil {
		t.Fatal(err)
	}
	if wc := recvOne(t, n.qp); wc.Imm != 7 || string(n.mr.Buf()[:10]) != "still fine" {
		t.Fatalf("after the bad session: %+v %q", wc, n.mr.Buf()[:10])
	}
}

// Writes that name memory beyond the region are refused in the program
// (clear error), and a forged one is refused by the daemon.
func TestProxyChecksBounds(t *testing.T) {
	needRoot(t)
	path := startDaemon(t, -1)
	p := mkEnd(t, "daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24794})
	err := p.qp.PostWrite(&uc.WriteWR{Local: p.mr, Offset: 1 << 16, Length: 1})
	if err == nil {
		t.Fatal("a write past the region was accepted")
	}
	forgeAndExpectEnd(t, p, req{op: reqWrite, mr: p.mr.(*mr).id, off: 1<<16 - 4, length: 8})
}

// forgeAndExpectEnd writes r into e's request ring by hand, past the
// client's checks, and waits for the daemon to end the session.
func forgeAndExpectEnd(t *testing.T, e end, r req) {
	t.Helper()
	q := e.qp.(*qp)
	r.put(q.mem[q.lay.sqOff()+int(q.sqHead%uint64(q.lay.sqSlots))*reqSize:])
	q.sqHead++
	atomic.StoreUint64(q.u64(offSQHead), q.sqHead)
	atomic.AddUint32(q.u32(offDSeq), 1)
	futex.Wake(q.u32(offDSeq), 1)
	expectEnded(t, e)
}

// expectEnded waits until the daemon has ended e's session.
func expectEnded(t *testing.T, e end) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := e.d.(*device).Alloc(4096); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the session survived")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProxyRefusesOtherUsers(t *testing.T) {
	path := startDaemon(t, 4242)
	_, err := uc.Open("daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24795})
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("uid 4242: %v, want EPERM", err)
	}
}

func TestProxyNoDaemon(t *testing.T) {
	_, err := uc.Open("daemon", uc.Options{Daemon: filepath.Join(t.TempDir(), "none.sock")})
	if err == nil {
		t.Fatal("opened without a daemon")
	}
	t.Logf("%v", err)
}

// Everything the daemon parses from a program: descriptors and the hello.
func FuzzParseReq(f *testing.F) {
	var b [reqSize]byte
	(&req{op: reqWrite, flags: flagImm | flagSignaled, mr: 3, length: 100}).put(b[:])
	f.Add(b[:])
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := parseReq(in)
		if err == nil {
			if r.op != reqWrite && r.op != reqRecv || r.length > 1<<31 || r.flags&^(flagImm|flagSignaled) != 0 {
				t.Fatalf("accepted %+v", r)
			}
			var out [reqSize]byte
			r.put(out[:])
			if r2, err := parseReq(out[:]); err != nil || r2 != r {
				t.Fatalf("round trip %+v -> %+v (%v)", r, r2, err)
			}
		}
		o, err := parseOpen(in)
		if err == nil && len(in) != openReqLen {
			t.Fatalf("hello of %d bytes accepted", len(in))
		}
		_ = cstr(o.Backend[:])
	})
}

// Ring counters no well-behaved program writes end the session.
func TestProxyBadRingCounters(t *testing.T) {
	needRoot(t)
	path := startDaemon(t, -1)
	for i, bad := range []struct {
		name string
		off  int
		val  func(q *qp) uint64
	}{
		{"request head beyond the ring", offSQHead, func(q *qp) uint64 { return uint64(q.lay.sqSlots) + 5 }},
		{"completion tail past the head", offRCQTail, func(q *qp) uint64 { return 1 << 40 }},
	} {
		t.Run(bad.name, func(t *testing.T) {
			e := mkEnd(t, "daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24796 + i})
			q := e.qp.(*qp)
			atomic.StoreUint64(q.u64(bad.off), bad.val(q))
			atomic.AddUint32(q.u32(offDSeq), 1)
			futex.Wake(q.u32(offDSeq), 1)
			expectEnded(t, e)
		})
	}
}

var testSpin = 50 * time.Microsecond

// ownSession finds this process's proxy session in Sessions() (the test's
// only one).
func ownSession(t *testing.T) Info {
	t.Helper()
	for _, i := range Sessions() {
		if i.Pid == int32(os.Getpid()) {
			return i
		}
	}
	t.Fatalf("no proxy session of this process: %+v", Sessions())
	return Info{}
}

// liveSession is ownSession's internal record.
func liveSession(t *testing.T) *session {
	t.Helper()
	liveMu.Lock()
	defer liveMu.Unlock()
	for s := range live {
		if s.pid == int32(os.Getpid()) {
			return s
		}
	}
	t.Fatal("no live proxy session")
	return nil
}

// plain hides what the soft backend offers beyond uc.QP (a notify
// function, lists of writes), as the verbs backend lacks them: the daemon
// then watches the CQs with waiters and posts writes one by one.
type plainDev struct{ uc.Device }
type plainQP struct{ uc.QP }

func (d plainDev) CreateQP(cfg uc.QPConfig) (uc.QP, error) {
	q, err := d.Device.CreateQP(cfg)
	if err != nil {
		return nil, err
	}
	return plainQP{q}, nil
}

func init() {
	uc.Register("soft-plain", func(o uc.Options) (uc.Device, error) {
		d, err := uc.Open("soft", o)
		if err != nil {
			return nil, err
		}
		return plainDev{d}, nil
	})
}

// With the pump asleep between messages (no spinning), the device's
// receive path (soft) or the waiter on the receive CQ (soft-plain, as
// verbs) hands each message's completion to the program itself and takes
// the program's answer: payloads, immediates and send completions are all
// there, and the counters show the path was taken.
func TestProxyAnswerOnReceivePath(t *testing.T) {
	needRoot(t)
	for i, via := range []string{"soft", "soft-plain"} {
		t.Run(via, func(t *testing.T) { answerOnReceivePath(t, via, 24840+i) })
	}
}

func answerOnReceivePath(t *testing.T, via string, port int) {
	// A generous wait, so that a slow (race-detector) program still
	// answers within it.
	path := startDaemonCfg(t, -1, ServerConfig{AnswerWait: 200 * time.Millisecond})
	p := mkEnd(t, "daemon", uc.Options{Daemon: path, Via: via, LocalIP: "127.0.0.1", Port: port})
	n := mkEnd(t, "soft", uc.Options{LocalIP: "127.0.0.2", Port: port})
	connectPair(t, p, n)
	const rounds = 200
	sends := 0
	var wcs [16]uc.WC
	for i := 0; i < rounds; i++ {
		size := 1 + (i*131)%3000
		for k := 0; k < size; k++ {
			n.mr.Buf()[k] = byte(5*i + k)
		}
		if err := n.qp.PostWrite(&uc.WriteWR{Local: n.mr, Length: size, RemoteAddr: p.mr.Addr(), RKey: p.mr.RKey(),
			HasImm: true, Imm: uint32(i)}); err != nil {
			t.Fatal(err)
		}
		wc := recvOne(t, p.qp)
		if wc.Status != uc.WCSuccess || wc.Imm != uint32(i) || wc.ByteLen != uint32(size) {
			t.Fatalf("program side, round %d: %+v", i, wc)
		}
		// The answer: the program writes the message back at once.
		if err := p.qp.PostWrite(&uc.WriteWR{WRID: uint64(i), Local: p.mr, Length: size, RemoteAddr: n.mr.Addr() + 4096, RKey: n.mr.RKey(),
			HasImm: true, Imm: uint32(i) | 1<<30, Signaled: true}); err != nil {
			t.Fatal(err)
		}
		wc = recvOne(t, n.qp)
		if wc.Status != uc.WCSuccess || wc.Imm != uint32(i)|1<<30 || wc.ByteLen != uint32(size) {
			t.Fatalf("native side, round %d: %+v", i, wc)
		}
		if !bytes.Equal(n.mr.Buf()[4096:4096+size], n.mr.Buf()[:size]) {
			t.Fatalf("round %d: the answer's payload differs", i)
		}
		k, err := p.qp.PollSend(wcs[:])
		if err != nil {
			t.Fatal(err)
		}
		sends += k
	}
	for deadline := time.Now().Add(5 * time.Second); sends < rounds && time.Now().Before(deadline); {
		k, _ := p.qp.PollSend(wcs[:])
		sends += k
		if k == 0 {
			p.qp.WaitSend(10 * time.Millisecond)
		}
	}
	if sends != rounds {
		t.Fatalf("%d send completions for %d signaled writes", sends, rounds)
	}
	// The pump may be awake for some messages (woken by a post that came
	// after the wait, or by its sleep's timeout), not for all.
	if i := ownSession(t); i.Direct == 0 || i.Answered == 0 {
		t.Fatalf("of %d messages, %d completions handed over on the receive path and %d answers taken there", rounds, i.Direct, i.Answered)
	}
}

// A program that only receives is not waited for after every message:
// after unanswered waits the receive path waits again only now and then.
func TestProxyReceiverIsNotWaitedFor(t *testing.T) {
	needRoot(t)
	path := startDaemonCfg(t, -1, ServerConfig{AnswerWait: 5 * time.Millisecond})
	p := mkEnd(t, "daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24842})
	n := mkEnd(t, "soft", uc.Options{LocalIP: "127.0.0.2", Port: 24842})
	connectPair(t, p, n)
	const rounds = 160
	for i := 0; i < rounds; i++ {
		if err := n.qp.PostWrite(&uc.WriteWR{Local: n.mr, Length: 64, RemoteAddr: p.mr.Addr(), RKey: p.mr.RKey(), HasImm: true, Imm: uint32(i)}); err != nil {
			t.Fatal(err)
		}
		if wc := recvOne(t, p.qp); wc.Imm != uint32(i) {
			t.Fatalf("round %d: %+v", i, wc)
		}
	}
	i, s := ownSession(t), liveSession(t)
	if i.Answered != 0 {
		t.Fatalf("%d answers taken from a program that wrote nothing", i.Answered)
	}
	if w, most := s.waits.Load(), i.Direct/probeEvery+missesToStop+1; w == 0 || w > most {
		t.Fatalf("the receive path waited %d times for %d completions handed over (want 1..%d)", w, i.Direct, most)
	}
}

// A program rings a sleeping pump when it reads from a completion ring
// that was full (the pump may hold completions for want of room), and
// not otherwise (a wake-up for nothing).
func TestClientRingsOnlyAfterAFullRing(t *testing.T) {
	q := &qp{lay: layout{sqSlots: 16, cqSlots: 16}}
	q.mem = make([]byte, q.lay.size())
	var wcs [32]uc.WC
	for _, c := range []struct {
		queued uint64
		sleep  uint32
		rings  bool
	}{{1, 1, false}, {15, 1, false}, {16, 1, true}, {16, 0, false}} {
		atomic.StoreUint32(q.u32(offDSleep), c.sleep)
		atomic.StoreUint64(q.u64(offRCQHead), q.rcqTl+c.queued)
		seq := atomic.LoadUint32(q.u32(offDSeq))
		if n, err := q.PollRecv(wcs[:]); err != nil || uint64(n) != c.queued {
			t.Fatalf("%+v: read %d, %v", c, n, err)
		}
		if rang := atomic.LoadUint32(q.u32(offDSeq)) != seq; rang != c.rings {
			t.Errorf("%d of %d slots read, pump asleep %d: rang %v, want %v", c.queued, q.lay.cqSlots, c.sleep, rang, c.rings)
		}
	}
}

// settled says whether the daemon has taken every request posted.
func (q *qp) settled() bool {
	q.postMu.Lock()
	defer q.postMu.Unlock()
	return atomic.LoadUint64(q.u64(offSQTail)) == q.sqHead
}
