package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/internal/futex"
	"github.com/nuse-project/nuse/uc"
)

// rawClient speaks the proxy's wire protocol by hand, as a hostile program
// would: it keeps the memfds the daemon passes and does what it likes with
// them.
type rawClient struct {
	t   *testing.T
	c   *net.UnixConn
	seq uint32
}

// dialRaw opens a proxy session on the soft backend at 127.0.0.1:port.
func dialRaw(t *testing.T, path string, port int) *rawClient {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var o openReq
	copy(o.Backend[:], "soft")
	copy(o.LocalIP[:], "127.0.0.1")
	o.Port = int32(port)
	if _, err := c.Write(helloMsg(&o)); err != nil {
		t.Fatal(err)
	}
	r := &rawClient{t: t, c: c, seq: 1}
	if st, _, fd := r.recv(); st != 0 || fd >= 0 {
		t.Fatalf("hello answered %d (fd %d)", st, fd)
	}
	return r
}

// send writes request op with body, and passes fd along with it if fd >= 0.
func (r *rawClient) send(op uint32, body []byte, fd int) {
	r.t.Helper()
	r.seq++
	b := make([]byte, msgHdr+len(body))
	binary.LittleEndian.PutUint32(b, op)
	binary.LittleEndian.PutUint32(b[4:], r.seq)
	copy(b[msgHdr:], body)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if _, _, err := r.c.WriteMsgUnix(b, oob, nil); err != nil {
		r.t.Fatal(err)
	}
}

// recv reads one answer: its status, body and passed fd (or -1).
func (r *rawClient) recv() (int32, []byte, int) {
	r.t.Helper()
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(4))
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := r.c.ReadMsgUnix(buf, oob)
	if err != nil || n < msgHdr {
		r.t.Fatalf("no answer to request %d: %v", r.seq, err)
	}
	fd := -1
	if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cms) == 1 {
		if fds, err := unix.ParseUnixRights(&cms[0]); err == nil && len(fds) == 1 {
			fd = fds[0]
			r.t.Cleanup(func() { unix.Close(fd) })
		}
	}
	if got := binary.LittleEndian.Uint32(buf[4:]); got != r.seq {
		r.t.Fatalf("answer %d to request %d", got, r.seq)
	}
	return int32(binary.LittleEndian.Uint32(buf)), buf[msgHdr:n], fd
}

func (r *rawClient) call(op uint32, body []byte) (int32, []byte, int) {
	r.t.Helper()
	r.send(op, body, -1)
	return r.recv()
}

func le32s(v ...uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// procFDs lists this process's open fds (what each names).
func procFDs(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+" -> "+l)
	}
	return out
}

// waitBaseline waits until the process has no more fds and goroutines than
// it had before an attack, and fails if that takes longer than within.
func waitBaseline(t *testing.T, what string, fds, gs int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		nf, ng := len(procFDs(t)), runtime.NumGoroutine()
		if nf <= fds && ng <= gs {
			return
		}
		if time.Now().After(deadline) {
			var memfds []string
			for _, f := range procFDs(t) {
				if strings.Contains(f, "memfd:") {
					memfds = append(memfds, f)
				}
			}
			t.Fatalf("%s: %d fds (baseline %d), %d goroutines (baseline %d) after %v; memfds open: %q",
				what, nf, fds, ng, gs, within, memfds)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitRecvErr waits for one receive completion on q and reposts the receive.
func waitRecvErr(q uc.QP, within time.Duration) (uc.WC, error) {
	var wc [1]uc.WC
	for deadline := time.Now().Add(within); time.Now().Before(deadline); {
		n, err := q.PollRecv(wc[:])
		if err != nil {
			return uc.WC{}, err
		}
		if n == 1 {
			return wc[0], q.PostRecv(wc[0].WRID)
		}
		q.WaitRecv(10 * time.Millisecond)
	}
	return uc.WC{}, fmt.Errorf("no receive completion within %v", within)
}

// exchange moves one checksummed payload from a to b: random bytes, their
// CRC as the immediate, checked against what landed in b's memory.
func exchange(a, b end, rnd *rand.Rand) error {
	size := 1 + rnd.Intn(8000)
	rnd.Read(a.mr.Buf()[:size])
	sum := crc32.ChecksumIEEE(a.mr.Buf()[:size])
	if err := a.qp.PostWrite(&uc.WriteWR{Local: a.mr, Length: size, RemoteAddr: b.mr.Addr(), RKey: b.mr.RKey(), HasImm: true, Imm: sum}); err != nil {
		return err
	}
	wc, err := waitRecvErr(b.qp, 5*time.Second)
	if err != nil {
		return err
	}
	if got := crc32.ChecksumIEEE(b.mr.Buf()[:size]); wc.Status != uc.WCSuccess || wc.ByteLen != uint32(size) || wc.Imm != sum || got != sum {
		return fmt.Errorf("%d bytes with crc %#x arrived as %+v, crc %#x", size, sum, wc, got)
	}
	return nil
}

// A hostile program tries to resize, or re-seal, every memfd the daemon
// handed it (a QP's rings and an allocation), which before the seals
// killed the daemon with SIGBUS in the QP's pump. Every attempt must fail
// with EPERM, the daemon (this process) must live on, and an honest
// session on the same daemon keeps moving checksummed data both ways.
func TestProxyHostileResizeOfMemfds(t *testing.T) {
	needRoot(t)
	path := startDaemon(t, -1)
	p := mkEnd(t, "daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24810})
	n := mkEnd(t, "soft", uc.Options{LocalIP: "127.0.0.2", Port: 24810})
	connectPair(t, p, n)
	if err := exchange(p, n, rand.New(rand.NewSource(0))); err != nil {
		t.Fatal(err)
	}
	fds0, gs0 := len(procFDs(t)), runtime.NumGoroutine()

	// The honest session moves data the whole time.
	type progress struct {
		rounds int
		err    error
	}
	var done atomic.Int64 // rounds so far
	stop, prog := make(chan struct{}), make(chan progress, 1)
	go func() {
		rnd := rand.New(rand.NewSource(1))
		var pr progress
		defer func() { prog <- pr }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if pr.err = exchange(p, n, rnd); pr.err == nil {
				pr.err = exchange(n, p, rnd)
			}
			if pr.err != nil {
				return
			}
			pr.rounds++
			done.Add(1)
		}
	}()
	stopHonest := func() progress {
		close(stop)
		return <-prog
	}
	defer func() {
		select {
		case <-stop:
		default:
			stopHonest()
		}
	}()

	for deadline := time.Now().Add(10 * time.Second); done.Load() < 5; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			pr := stopHonest()
			t.Fatalf("the honest session did %d rounds in 10 s: %v", pr.rounds, pr.err)
		}
	}

	h := dialRaw(t, path, 24811)
	st, out, ringFD := h.call(opCreateQP, le32s(16, 16, 1024))
	if st != 0 || ringFD < 0 || len(out) < 32 {
		t.Fatalf("create QP: status %d fd %d", st, ringFD)
	}
	qpID, ringSize := binary.LittleEndian.Uint32(out), int64(binary.LittleEndian.Uint64(out[24:]))
	st, out, memFD := h.call(opAlloc, le64(1<<16))
	if st != 0 || memFD < 0 || len(out) < 16 {
		t.Fatalf("alloc: status %d fd %d", st, memFD)
	}
	before := int(done.Load())
	for _, f := range []struct {
		name string
		fd   int
		size int64
	}{{"QP ring memfd", ringFD, ringSize}, {"allocation memfd", memFD, 1 << 16}} {
		var stat unix.Stat_t
		if err := unix.Fstat(f.fd, &stat); err != nil || stat.Size != f.size {
			t.Errorf("%s: %d bytes, want %d (%v)", f.name, stat.Size, f.size, err)
		}
		want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
		if seals, err := unix.FcntlInt(uintptr(f.fd), unix.F_GET_SEALS, 0); err != nil || seals&want != want {
			t.Errorf("%s: seals %#x (%v), want at least %#x", f.name, seals, err, want)
		}
		for _, a := range []struct {
			what string
			do   func() error
		}{
			// Re-sealing first, then growing, then shrinking: on a file
			// that could be resized, the last attempt leaves it empty
			// under the daemon's mapping.
			{"add F_SEAL_WRITE", func() error {
				_, err := unix.FcntlInt(uintptr(f.fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE)
				return err
			}},
			{"grow by fallocate", func() error { return unix.Fallocate(f.fd, 0, f.size, 4096) }},
			{"grow by ftruncate", func() error { return unix.Ftruncate(f.fd, f.size+4096) }},
			{"shrink by a page", func() error { return unix.Ftruncate(f.fd, f.size-4096) }},
			{"truncate to 0", func() error { return unix.Ftruncate(f.fd, 0) }},
		} {
			if err := a.do(); !errors.Is(err, syscall.EPERM) {
				t.Errorf("%s: %s: %v, want EPERM", f.name, a.what, err)
			}
		}
	}
	// The hostile QP's pump and waiters touch its rings at least every
	// 250 ms; give them time to, while the honest session goes on.
	for deadline, since := time.Now().Add(10*time.Second), time.Now(); int(done.Load()) < before+20 || time.Since(since) < time.Second; {
		if time.Now().After(deadline) {
			pr := stopHonest()
			t.Fatalf("the honest session did %d rounds in 10 s after the attack (%d before): %v", pr.rounds-before, before, pr.err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	pr := stopHonest()
	if pr.err != nil {
		t.Fatalf("honest session after %d rounds: %v", pr.rounds, pr.err)
	}
	t.Logf("honest session: %d checksummed rounds each way, %d of them after the attack", pr.rounds, pr.rounds-before)
	// The hostile session itself is still served, and ending it leaves
	// nothing behind.
	if st, _, _ := h.call(opCloseQP, le32s(qpID)); st != 0 {
		t.Errorf("closing the hostile QP: status %d", st)
	}
	h.c.Close()
	unix.Close(ringFD)
	unix.Close(memFD)
	waitBaseline(t, "after the hostile session ended", fds0, gs0, 10*time.Second)
	if err := exchange(p, n, rand.New(rand.NewSource(2))); err != nil {
		t.Fatalf("honest session at the end: %v", err)
	}
}

// Sessions that send a request whose answer carries a memfd (alloc,
// create QP) and hang up without reading it leave no fd and no goroutine
// in the daemon. Some also pass an fd of their own with the request, which
// the daemon must not keep either.
func TestProxyFailedAnswerLeaksNothing(t *testing.T) {
	needRoot(t)
	path := startDaemon(t, -1)
	fds0, gs0 := len(procFDs(t)), runtime.NumGoroutine()
	const sessions = 10
	for i := 0; i < sessions; i++ {
		h := dialRaw(t, path, 24820+i)
		// Hang up the reading side first, so that the answer surely fails
		// (EPIPE) however fast the daemon is.
		if err := h.c.CloseRead(); err != nil {
			t.Fatal(err)
		}
		passed := -1
		if i%3 == 2 {
			fd, err := unix.MemfdCreate("hostile-extra", unix.MFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			passed = fd
		}
		if i%2 == 0 {
			h.send(opAlloc, le64(8192), passed)
		} else {
			h.send(opCreateQP, le32s(16, 16, 1024), passed)
		}
		if passed >= 0 {
			unix.Close(passed)
		}
		h.c.Close()
	}
	waitBaseline(t, fmt.Sprintf("after %d sessions sent a request and hung up", sessions), fds0, gs0, 10*time.Second)
}

// cpuTime is the CPU this process has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A program that posts receives without end and never reads its
// completions must not make the daemon hold ever more completions for it
// (memory), nor spin the daemon's CPU while its completion ring is full:
// the daemon stops taking its requests, as a device whose queues are full,
// and sleeps. Once the program reads its completions it is served again.
func TestProxyUnreadCompletionsAreBounded(t *testing.T) {
	needRoot(t)
	path := startDaemon(t, -1)
	p := mkEnd(t, "daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24835})
	n := mkEnd(t, "soft", uc.Options{LocalIP: "127.0.0.2", Port: 24835})
	connectPair(t, p, n)

	h := dialRaw(t, path, 24836)
	st, out, fd := h.call(opCreateQP, le32s(16, 16, 1024))
	if st != 0 || fd < 0 || len(out) < 32 {
		t.Fatalf("create QP: status %d fd %d", st, fd)
	}
	q := &qp{lay: layout{sqSlots: binary.LittleEndian.Uint32(out[16:]), cqSlots: binary.LittleEndian.Uint32(out[20:])}}
	mem, err := unix.Mmap(fd, 0, int(binary.LittleEndian.Uint64(out[24:])), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	q.mem = mem
	ring := func() {
		atomic.AddUint32(q.u32(offDSeq), 1)
		futex.Wake(q.u32(offDSeq), 1)
	}
	// Post receives as fast as the ring takes them, reading nothing.
	const flood = 200000
	taken := func() uint64 { return atomic.LoadUint64(q.u64(offSQTail)) }
	var head uint64
	lastMove, lastTaken := time.Now(), uint64(0)
	for deadline := time.Now().Add(10 * time.Second); head < flood && time.Since(lastMove) < 500*time.Millisecond; {
		if time.Now().After(deadline) {
			break
		}
		for head-taken() < uint64(q.lay.sqSlots) && head < flood {
			(&req{op: reqRecv, wrid: head}).put(mem[q.lay.sqOff()+int(head%uint64(q.lay.sqSlots))*reqSize:])
			head++
		}
		ringSync.Release()
		atomic.StoreUint64(q.u64(offSQHead), head)
		ring()
		if tk := taken(); tk != lastTaken {
			lastMove, lastTaken = time.Now(), tk
		}
		time.Sleep(100 * time.Microsecond)
	}
	// The daemon may hold what fits in the ring, the real receive queue and
	// a bounded backlog; a daemon that took everything holds ~200000.
	if tk := taken(); tk > 4096 {
		t.Errorf("the daemon took %d of %d receive posts from a program that reads no completions: it holds their error completions", tk, head)
	}
	t.Logf("the daemon took %d of %d posts", taken(), head)
	// While the program does nothing, neither does the daemon.
	cpu0, wall0 := cpuTime(t), time.Now()
	time.Sleep(time.Second)
	if cpu, wall := cpuTime(t)-cpu0, time.Since(wall0); cpu > wall/4 {
		t.Errorf("the daemon used %v of CPU in %v for a program that reads no completions", cpu, wall)
	}
	// The program reads its completions: the daemon serves it again.
	tail, before := uint64(0), taken()
	for deadline := time.Now().Add(5 * time.Second); taken() < min(before+64, head); {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon took %d more requests in 5 s after the program read its completions", taken()-before)
		}
		if h := atomic.LoadUint64(q.u64(offRCQHead)); h != tail {
			tail = h
			atomic.StoreUint64(q.u64(offRCQTail), tail)
			ring()
		}
		time.Sleep(time.Millisecond)
	}
	if err := exchange(p, n, rand.New(rand.NewSource(3))); err != nil {
		t.Fatalf("honest session: %v", err)
	}
	h.c.Close()
	unix.Munmap(mem)
}
