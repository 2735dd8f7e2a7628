package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/daemon/arena"
	"github.com/nuse-project/nuse/internal/futex"
	"github.com/nuse-project/nuse/uc"
)

// ServerConfig configures the daemon side.
type ServerConfig struct {
	// Spin is how long a QP's pump spins for work before it sleeps (0: it
	// sleeps at once and is woken by doorbells).
	Spin time.Duration
	// AnswerWait is how long a hand-over, having given completions to a
	// program whose pump sleeps, waits for its answer (0: answerSpin).
	AnswerWait time.Duration
	Logf       func(format string, args ...any)
}

// Serve runs one proxy session on c, whose hello (body) has been read, for
// the process cred names. It returns when the program closes the
// connection or breaks the protocol; everything it made is released.
func Serve(c *net.UnixConn, cred *unix.Ucred, seq uint32, body []byte, cfg ServerConfig) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.AnswerWait == 0 {
		cfg.AnswerWait = answerSpin
	}
	who := fmt.Sprintf("uc proxy (pid %d)", cred.Pid)
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		// The daemon's device sends raw RoCE packets for whoever asks:
		// only root and the daemon's own user may.
		reply(c, seq, -int32(syscall.EPERM), []byte("uc proxy sessions need root or the daemon's user"), -1)
		cfg.Logf("%s: uid %d refused", who, cred.Uid)
		return
	}
	o, err := parseOpen(body)
	if err != nil {
		reply(c, seq, -int32(syscall.EINVAL), []byte(err.Error()), -1)
		return
	}
	backend := cstr(o.Backend[:])
	if backend == "daemon" {
		reply(c, seq, -int32(syscall.EINVAL), []byte("the daemon cannot proxy to itself"), -1)
		return
	}
	dev, err := uc.Open(backend, uc.Options{Dev: cstr(o.Dev[:]), GIDIndex: int(o.GIDIndex), LocalIP: cstr(o.LocalIP[:]), Port: int(o.Port)})
	if err != nil {
		reply(c, seq, -int32(syscall.ENODEV), []byte(err.Error()), -1)
		cfg.Logf("%s: %v", who, err)
		return
	}
	s := &session{pid: cred.Pid, since: time.Now(), c: c, dev: dev, cfg: cfg, who: who, mrs: map[uint32]*smr{}, qps: map[uint32]*sqp{}}
	liveMu.Lock()
	live[s] = struct{}{}
	liveMu.Unlock()
	defer func() {
		liveMu.Lock()
		delete(live, s)
		liveMu.Unlock()
		s.close()
	}()
	var rep openRep
	copy(rep.Name[:len(rep.Name)-1], dev.Name())
	rep.GID = dev.GID()
	out := make([]byte, 48)
	copy(out, rep.Name[:])
	copy(out[32:], rep.GID[:])
	if err := reply(c, seq, 0, out, -1); err != nil {
		return
	}
	cfg.Logf("%s: opened %s device %s", who, backend, dev.Name())
	buf := make([]byte, maxMsg)
	for {
		n, err := c.Read(buf)
		if err != nil || n == 0 {
			return // the program is gone
		}
		if n < msgHdr {
			cfg.Logf("%s: short message; ending the session", who)
			return
		}
		op := binary.LittleEndian.Uint32(buf)
		mseq := binary.LittleEndian.Uint32(buf[4:])
		res, out, fd, err := s.handle(op, buf[msgHdr:n])
		if err != nil {
			// A malformed request ends the session: the program is broken.
			reply(c, mseq, -int32(syscall.EINVAL), []byte(err.Error()), -1)
			cfg.Logf("%s: %v; ending the session", who, err)
			return
		}
		if res < 0 && len(out) == 0 {
			out = []byte(syscall.Errno(-res).Error())
		}
		err = reply(c, mseq, res, out, fd)
		if fd >= 0 {
			// The program has its own copy now, or never will (it hung
			// up): either way the daemon's is done; the daemon keeps only
			// the mapping.
			unix.Close(fd)
		}
		if err != nil {
			return
		}
		if s.killed.Load() {
			return
		}
	}
}

func reply(c *net.UnixConn, seq uint32, status int32, body []byte, fd int) error {
	b := make([]byte, msgHdr+len(body))
	binary.LittleEndian.PutUint32(b, uint32(status))
	binary.LittleEndian.PutUint32(b[4:], seq)
	copy(b[msgHdr:], body)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, err := c.WriteMsgUnix(b, oob, nil)
	return err
}

// Info describes a live proxy session, for nuse stats.
type Info struct {
	Pid               int32
	Device            string
	QPs               int
	Posted, Completed uint64
	// Direct counts completions handed to the program while the pump
	// slept, by the device's receive path (uc.Notifier) or the waiter
	// watching the CQ, without waking the pump; Answered the writes taken
	// there while waiting for the program's answer.
	Direct, Answered uint64
	Since            time.Time
}

var (
	liveMu sync.Mutex
	live   = map[*session]struct{}{}
)

// Sessions lists the live proxy sessions of this process.
func Sessions() []Info {
	liveMu.Lock()
	defer liveMu.Unlock()
	var out []Info
	for s := range live {
		s.mu.Lock()
		out = append(out, Info{Pid: s.pid, Device: s.dev.Name(), QPs: len(s.qps), Posted: s.posted.Load(),
			Completed: s.completed.Load(), Direct: s.direct.Load(), Answered: s.answered.Load(), Since: s.since})
		s.mu.Unlock()
	}
	return out
}

type session struct {
	pid               int32
	since             time.Time
	posted, completed atomic.Uint64
	direct, answered  atomic.Uint64
	waits             atomic.Uint64 // times a hand-over waited for an answer
	c                 *net.UnixConn
	dev               uc.Device
	cfg               ServerConfig
	who               string
	killed            atomic.Bool

	mu     sync.Mutex // mrs and qps: the pumps look MRs up
	allocs []salloc
	total  int
	mrs    map[uint32]*smr
	qps    map[uint32]*sqp
	nextID uint32
}

type salloc struct {
	mem   []byte
	owned bool // unmapped by us (not adopted by the device)
}

type smr struct {
	mr  uc.MR
	len uint64
}

func (s *session) id() uint32 { s.nextID++; return s.nextID }

// kill ends the session from a pump: the program broke the ring protocol.
func (s *session) kill(why string) {
	if s.killed.CompareAndSwap(false, true) {
		s.cfg.Logf("%s: %s; ending the session", s.who, why)
		s.c.Close()
	}
}

func (s *session) close() {
	s.killed.Store(true)
	s.mu.Lock()
	qps := s.qps
	s.qps = map[uint32]*sqp{}
	s.mu.Unlock()
	for _, q := range qps {
		q.stop()
	}
	s.mu.Lock()
	for _, m := range s.mrs {
		m.mr.Dereg()
	}
	s.mrs = map[uint32]*smr{}
	s.mu.Unlock()
	s.dev.Close()
	for _, a := range s.allocs {
		if a.owned {
			unix.Munmap(a.mem)
		}
	}
	s.cfg.Logf("%s: ended", s.who)
}

// reqLen is each control request's body length.
var reqLen = map[uint32]int{opAlloc: 8, opRegMR: 24, opDereg: 4, opCreateQP: 12, opConnect: 4 + uc.ParamsLen, opCloseQP: 4}

// take removes and returns m[id] (nil if absent) under mu.
func take[T any](mu *sync.Mutex, m map[uint32]*T, id uint32) *T {
	mu.Lock()
	defer mu.Unlock()
	v := m[id]
	delete(m, id)
	return v
}

// handle runs one control request. An error means the request was
// malformed; a negative result is an answer (-errno).
func (s *session) handle(op uint32, b []byte) (int32, []byte, int, error) {
	le := binary.LittleEndian
	need := reqLen[op]
	if need == 0 {
		return 0, nil, -1, fmt.Errorf("unknown request %d", op)
	}
	if len(b) != need {
		return 0, nil, -1, fmt.Errorf("request %d: %d bytes, want %d", op, len(b), need)
	}
	switch op {
	case opAlloc:
		n := le.Uint64(b)
		if n == 0 || n > maxAlloc || s.total+int(n) > maxAlloc || len(s.allocs) >= 64 {
			return -int32(syscall.ENOMEM), nil, -1, nil
		}
		fd, mem, err := memfd("nuse-uc-mem", int(n))
		if err != nil {
			return -int32(syscall.ENOMEM), []byte(err.Error()), -1, nil
		}
		a := salloc{mem: mem, owned: true}
		if ad, ok := s.dev.(interface{ Adopt([]byte) }); ok {
			ad.Adopt(mem) // verbs registers only memory it knows; it unmaps it at Close
			a.owned = false
		}
		s.allocs = append(s.allocs, a)
		s.total += int(n)
		out := make([]byte, 16)
		le.PutUint32(out, uint32(len(s.allocs)-1))
		le.PutUint64(out[8:], n)
		return 0, out, fd, nil
	case opRegMR:
		ai, access, off, ln := le.Uint32(b), le.Uint32(b[4:]), le.Uint64(b[8:]), le.Uint64(b[16:])
		if int(ai) >= len(s.allocs) || ln == 0 || off > uint64(len(s.allocs[ai].mem)) || ln > uint64(len(s.allocs[ai].mem))-off {
			return -int32(syscall.EINVAL), nil, -1, nil
		}
		if len(s.mrs) >= maxMRs {
			return -int32(syscall.ENOMEM), nil, -1, nil
		}
		mr, err := s.dev.RegMR(s.allocs[ai].mem[off:off+ln], uc.Access(access)&(uc.AccessLocalWrite|uc.AccessRemoteWrite))
		if err != nil {
			return -int32(syscall.EINVAL), []byte(err.Error()), -1, nil
		}
		s.mu.Lock()
		id := s.id()
		s.mrs[id] = &smr{mr: mr, len: ln}
		s.mu.Unlock()
		out := make([]byte, 24)
		le.PutUint32(out, id)
		le.PutUint32(out[4:], mr.LKey())
		le.PutUint32(out[8:], mr.RKey())
		le.PutUint64(out[16:], mr.Addr())
		return 0, out, -1, nil
	case opDereg:
		m := take(&s.mu, s.mrs, le.Uint32(b))
		if m == nil {
			return -int32(syscall.EINVAL), nil, -1, nil
		}
		// A pump that looked it up before the delete may still post from
		// it; a dereg'd MR then fails that post, which is the program's
		// own doing, as with verbs.
		if err := m.mr.Dereg(); err != nil {
			return -int32(syscall.EIO), []byte(err.Error()), -1, nil
		}
		return 0, nil, -1, nil
	case opCreateQP:
		sd, rd, pmtu := le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:])
		if sd == 0 || rd == 0 || sd > maxSlots/2 || rd > maxSlots/2 || !uc.ValidMTU(int(pmtu)) {
			return -int32(syscall.EINVAL), nil, -1, nil
		}
		if len(s.qps) >= maxQPs {
			return -int32(syscall.ENOMEM), nil, -1, nil
		}
		q, fd, err := s.newQP(uc.QPConfig{SendDepth: int(sd), RecvDepth: int(rd), PathMTU: int(pmtu)})
		if err != nil {
			return -int32(syscall.EINVAL), []byte(err.Error()), -1, nil
		}
		out := make([]byte, 32)
		le.PutUint32(out, q.id)
		le.PutUint32(out[4:], q.real.QPN())
		le.PutUint32(out[8:], q.real.PSN())
		le.PutUint32(out[12:], uint32(q.real.PathMTU()))
		le.PutUint32(out[16:], q.lay.sqSlots)
		le.PutUint32(out[20:], q.lay.cqSlots)
		le.PutUint64(out[24:], uint64(q.lay.size()))
		return 0, out, fd, nil
	case opConnect:
		s.mu.Lock()
		q := s.qps[le.Uint32(b)]
		s.mu.Unlock()
		var p uc.ConnParams
		if q == nil || p.UnmarshalBinary(b[4:]) != nil {
			return -int32(syscall.EINVAL), nil, -1, nil
		}
		if err := q.real.Connect(p); err != nil {
			return -int32(syscall.EINVAL), []byte(err.Error()), -1, nil
		}
		return 0, nil, -1, nil
	case opCloseQP:
		q := take(&s.mu, s.qps, le.Uint32(b))
		if q == nil {
			return -int32(syscall.EINVAL), nil, -1, nil
		}
		q.stop()
		return 0, nil, -1, nil
	}
	return 0, nil, -1, fmt.Errorf("unknown request %d", op)
}

// memfd makes a shared memory file of n bytes (rounded up to pages) and
// maps it. Its size is sealed: the program, which gets the fd, could
// otherwise truncate it under the pump's or the device's accesses and kill
// the daemon with SIGBUS.
func memfd(name string, n int) (int, []byte, error) {
	n = (n + 4095) &^ 4095
	fd, err := arena.SealedMemfd(name, int64(n))
	if err != nil {
		return -1, nil, err
	}
	mem, err := unix.Mmap(fd, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, mem, nil
}

// sqp is the daemon's side of one proxied QP.
type sqp struct {
	s    *session
	id   uint32
	real uc.QP
	lay  layout
	mem  []byte
	done chan struct{}
	wg   sync.WaitGroup
	// kicks ask the CQ waiters to watch the real CQs while the pump sleeps
	// (a real QP that is no uc.Notifier; nil otherwise).
	kickS, kickR chan struct{}

	// pmu is held by the pump through each pass, and by hand-overs (the
	// real QP's notify function, or a waiter) while the pump is away:
	// whoever holds it owns the fields below.
	pmu                      sync.Mutex
	asleep                   bool   // the pump sleeps (or is about to) on the bell
	writes                   uint64 // writes posted
	handed                   uint64 // hand-overs that found completions while the pump slept
	missed                   int    // waits in a row the program left unanswered
	sqTail, scqHead, rcqHead uint64
	pendS, pendR             []uc.WC
	wbatch                   []uc.WriteWR // writes taken, not yet posted
}

// answerSpin is how long a hand-over, having given completions to a
// program whose pump sleeps, waits for the program's answer (a
// request-response program posts it within microseconds): taking it there
// spares a wake-up of the pump's thread per message.
const answerSpin = 20 * time.Microsecond

// A program that left missesToStop waits in a row unanswered is waited
// for again only every probeEvery hand-overs.
const (
	missesToStop = 2
	probeEvery   = 16
)

func (s *session) newQP(cfg uc.QPConfig) (*sqp, int, error) {
	real, err := s.dev.CreateQP(cfg)
	if err != nil {
		return nil, -1, err
	}
	lay := layout{sqSlots: pow2(uint32(cfg.SendDepth + cfg.RecvDepth)), cqSlots: pow2(uint32(max(cfg.SendDepth, cfg.RecvDepth)))}
	fd, mem, err := memfd("nuse-uc-qp", lay.size())
	if err != nil {
		real.Close()
		return nil, -1, err
	}
	s.mu.Lock()
	q := &sqp{s: s, id: s.id(), real: real, lay: lay, mem: mem, done: make(chan struct{})}
	s.qps[q.id] = q
	s.mu.Unlock()
	if n, ok := real.(uc.Notifier); ok {
		// The device hands over receive completions on its own receive
		// path; send completions come from the pump's own posts.
		n.SetNotify(q.completed)
		q.wg.Add(1)
		go q.pump()
		return q, fd, nil
	}
	q.kickS, q.kickR = make(chan struct{}, 1), make(chan struct{}, 1)
	q.wg.Add(3)
	go q.pump()
	go q.waiter(q.kickS, q.real.WaitSend, func() bool { return q.wouldPoll(q.pendS, offSCQTail, q.scqHead) })
	go q.waiter(q.kickR, q.real.WaitRecv, func() bool { return q.wouldPoll(q.pendR, offRCQTail, q.rcqHead) })
	return q, fd, nil
}

// completed runs on the real QP's receive path after it queued a
// completion (uc.Notifier).
func (q *sqp) completed() {
	// The device's receive path must not wait for a pass to end.
	if !q.pmu.TryLock() {
		q.ring()
		return
	}
	q.handOver(nil)
}

// handOver runs, with pmu held, where completions may have arrived while
// the pump is away: on the real QP's receive path, or in a waiter. It
// moves the completions into the program's rings itself: the pump would be
// one more thread to wake before the program sees them. It says whether a
// waiter should go on watching its CQ: the pump still sleeps and watch
// says the pump would poll that CQ. It unlocks pmu.
func (q *sqp) handOver(watch func() bool) bool {
	defer q.pmu.Unlock()
	n, err := q.moveAll()
	q.s.direct.Add(uint64(n))
	if err == nil && n > 0 && q.asleep {
		// Wait for an answer unless the program let the last two waits
		// pass unanswered (then only now and then): a receiver that never
		// writes back would otherwise hold the device's receive path up,
		// while one answer missed now and then (the program was not on a
		// CPU) is no pattern.
		if q.missed < missesToStop || q.handed%probeEvery == 0 {
			var answered bool
			answered, err = q.awaitAnswer()
			if answered {
				q.missed = 0
			} else {
				q.missed++
			}
		}
		q.handed++
	}
	if err == nil && atomic.LoadUint64(q.u64(offSQHead)) != q.sqTail {
		// Take what the program has posted meanwhile (the receives it
		// re-posts as it reads): with the pump short of CPU, the receive
		// queue would run dry while completions keep being handed over.
		_, err = q.pass()
	}
	if err != nil {
		q.s.kill(fmt.Sprintf("QP %d: %v", q.id, err))
		return false
	}
	return q.asleep && watch != nil && watch()
}

// awaitAnswer stands in for the sleeping pump for up to AnswerWait, on the
// thread that just delivered completions, taking the program's requests
// until it posts a write; it says whether one came. With pmu held and the
// pump asleep.
func (q *sqp) awaitAnswer() (bool, error) {
	// The program need not ring while someone watches its ring.
	atomic.StoreUint32(q.u32(offDSleep), 0)
	// The answer is a write: receives the program posts first (to take
	// the next message) do not end the wait.
	writes := q.writes
	q.s.waits.Add(1)
	for end := time.Now().Add(q.s.cfg.AnswerWait); q.writes == writes && time.Now().Before(end); {
		if atomic.LoadUint64(q.u64(offSQHead)) != q.sqTail {
			if _, err := q.pass(); err != nil {
				return false, err
			}
		}
	}
	atomic.StoreUint32(q.u32(offDSleep), 1)
	// A request posted after the last look, while DSleep was 0, rang no
	// one: the pump takes it.
	if !q.idle() {
		q.ring()
	}
	q.s.answered.Add(q.writes - writes)
	return q.writes != writes, nil
}

// ring wakes the pump (or makes its next sleep return at once).
func (q *sqp) ring() {
	atomic.AddUint32(q.u32(offDSeq), 1)
	if atomic.LoadUint32(q.u32(offDSleep)) != 0 {
		futex.Wake(q.u32(offDSeq), 1)
	}
}

func pow2(n uint32) uint32 {
	p := uint32(16)
	for p < n {
		p <<= 1
	}
	return p
}

func (q *sqp) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&q.mem[off])) }
func (q *sqp) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&q.mem[off])) }

func (q *sqp) stop() {
	select {
	case <-q.done:
		return
	default:
	}
	close(q.done)
	futex.Wake(q.u32(offDSeq), 1)
	if n, ok := q.real.(uc.Notifier); ok {
		n.SetNotify(nil) // none runs past this: the rings are unmapped below
	}
	q.real.Close() // also wakes a waiter inside WaitRecv/WaitSend
	q.wg.Wait()
	unix.Munmap(q.mem)
}

// waiter watches one real CQ while the pump sleeps (a real QP that is no
// uc.Notifier) and hands over what arrives, as the receive path of one
// that is does; it watches until the pump wakes or would not poll the CQ.
func (q *sqp) waiter(kick chan struct{}, wait func(time.Duration) error, watch func() bool) {
	defer q.wg.Done()
	for {
		select {
		case <-q.done:
			return
		case <-kick:
		}
		for {
			if err := wait(250 * time.Millisecond); errors.Is(err, uc.ErrClosed) {
				return
			}
			// Wait out a pass rather than ring: a pump woken for what it
			// already took would pass for nothing.
			q.pmu.Lock()
			if !q.handOver(watch) {
				break
			}
		}
	}
}

// pump moves requests to the real QP and completions back, spinning while
// there is work, then sleeping on the doorbell.
func (q *sqp) pump() {
	defer q.wg.Done()
	last := time.Now()
	for {
		select {
		case <-q.done:
			return
		default:
		}
		// Read the bell before the pass: one rung during it (a post, a
		// completion the notify function left to the pump) makes the
		// sleep below return at once.
		seq := atomic.LoadUint32(q.u32(offDSeq))
		q.pmu.Lock()
		did, err := q.pass()
		q.pmu.Unlock()
		if err != nil {
			select {
			case <-q.done: // closing: the real QP is gone
			default:
				q.s.kill(fmt.Sprintf("QP %d: %v", q.id, err))
				<-q.done
			}
			return
		}
		if did {
			last = time.Now()
			continue
		}
		if time.Since(last) < q.s.cfg.Spin {
			runtime.Gosched()
			continue
		}
		// Sleep while nothing can move, even if the program holds the pump
		// up (requests it may not take yet, completions it has no room
		// for): it rings when it posts or reads.
		q.pmu.Lock()
		atomic.StoreUint32(q.u32(offDSleep), 1)
		idle := q.idle()
		q.asleep = idle
		if idle && q.kickS != nil {
			// The waiters watch a real CQ only where the pump would poll
			// it: one with completions it cannot take would wake it at
			// once, again and again.
			if q.wouldPoll(q.pendS, offSCQTail, q.scqHead) {
				kick(q.kickS)
			}
			if q.wouldPoll(q.pendR, offRCQTail, q.rcqHead) {
				kick(q.kickR)
			}
		}
		q.pmu.Unlock()
		if idle {
			futex.Wait(q.u32(offDSeq), seq, 250*time.Millisecond)
		}
		q.pmu.Lock()
		q.asleep = false
		atomic.StoreUint32(q.u32(offDSleep), 0)
		q.pmu.Unlock()
		last = time.Time{}
	}
}

func kick(k chan struct{}) {
	select {
	case k <- struct{}{}:
	default:
	}
}

// backlogged says whether the pump holds as many completions as the
// program's ring has slots, for want of room in the ring: it then takes no
// more requests (the program's request ring fills and its posts fail with
// ErrQueueFull, as with a device whose queues are full) rather than hold
// ever more for a program that reads none.
func (q *sqp) backlogged() bool {
	return len(q.pendS)+len(q.pendR) >= int(q.lay.cqSlots)
}

// idle says whether a pass would find nothing to do but poll the real CQs,
// which the waiters watch: no request it may take, no held completion the
// program has made room for. The pump calls it with DSleep set, so a
// program that posts or reads after this look rings the bell.
func (q *sqp) idle() bool {
	if atomic.LoadUint64(q.u64(offSQHead)) != q.sqTail && !q.backlogged() {
		return false
	}
	return (len(q.pendS) == 0 || q.ringFull(offSCQTail, q.scqHead)) && (len(q.pendR) == 0 || q.ringFull(offRCQTail, q.rcqHead))
}

// ringFull says whether a completion ring has no free slot. A tail no
// program could have written counts as room: the next pass reports it.
func (q *sqp) ringFull(tailOff int, head uint64) bool {
	return head-atomic.LoadUint64(q.u64(tailOff)) == uint64(q.lay.cqSlots)
}

// wouldPoll says whether a pass would poll the real CQ that feeds a ring:
// only with nothing held for it and room in the ring.
func (q *sqp) wouldPoll(pend []uc.WC, tailOff int, head uint64) bool {
	return len(pend) == 0 && !q.ringFull(tailOff, head)
}

// pass does one round; an error is a protocol violation by the program.
func (q *sqp) pass() (bool, error) {
	did := false
	head := atomic.LoadUint64(q.u64(offSQHead))
	ringSync.Acquire()
	if head < q.sqTail || head-q.sqTail > uint64(q.lay.sqSlots) {
		return false, fmt.Errorf("request ring head %d tail %d size %d", head, q.sqTail, q.lay.sqSlots)
	}
	for ; q.sqTail != head && !q.backlogged(); q.sqTail++ {
		off := q.lay.sqOff() + int(q.sqTail%uint64(q.lay.sqSlots))*reqSize
		var raw [reqSize]byte
		copy(raw[:], q.mem[off:off+reqSize]) // copy first: the program may scribble on it
		r, err := parseReq(raw[:])
		if err != nil {
			return false, err
		}
		if err := q.post(&r); err != nil {
			return false, err
		}
		q.s.posted.Add(1)
		did = true
	}
	if err := q.flushWrites(); err != nil {
		return false, err
	}
	atomic.StoreUint64(q.u64(offSQTail), q.sqTail)
	n, err := q.moveAll()
	return did || n > 0, err
}

// moveAll moves what both real CQs have into the program's rings, and
// wakes the program if it sleeps on them.
func (q *sqp) moveAll() (int, error) {
	n1, err := q.moveWCs(&q.pendS, q.real.PollSend, offSCQHead, offSCQTail, q.lay.scqOff(), &q.scqHead)
	if err != nil {
		return 0, err
	}
	n2, err := q.moveWCs(&q.pendR, q.real.PollRecv, offRCQHead, offRCQTail, q.lay.rcqOff(), &q.rcqHead)
	if err != nil {
		return 0, err
	}
	if n1+n2 > 0 {
		q.s.completed.Add(uint64(n1 + n2))
		atomic.AddUint32(q.u32(offCSeq), 1)
		if atomic.LoadUint32(q.u32(offCSleep)) != 0 {
			futex.Wake(q.u32(offCSeq), 1<<30)
		}
	}
	return n1 + n2, nil
}

// post takes one request: a receive is posted at once (after the writes
// before it), a write joins the batch that flushWrites posts.
func (q *sqp) post(r *req) error {
	if r.op == reqRecv {
		if err := q.flushWrites(); err != nil {
			return err
		}
		if err := q.real.PostRecv(r.wrid); err != nil {
			return q.failed(r, err)
		}
		return nil
	}
	q.s.mu.Lock()
	m := q.s.mrs[r.mr]
	q.s.mu.Unlock()
	if m == nil {
		return fmt.Errorf("write from unknown memory region %d", r.mr)
	}
	if r.off > m.len || uint64(r.length) > m.len-r.off {
		return fmt.Errorf("write of %d bytes at %d beyond memory region %d (%d bytes)", r.length, r.off, r.mr, m.len)
	}
	q.wbatch = append(q.wbatch, uc.WriteWR{WRID: r.wrid, Local: m.mr, Offset: int(r.off), Length: int(r.length), RemoteAddr: r.raddr,
		RKey: r.rkey, HasImm: r.flags&flagImm != 0, Imm: r.imm, Signaled: r.flags&flagSignaled != 0})
	q.writes++
	if len(q.wbatch) == writeBatch {
		return q.flushWrites()
	}
	return nil
}

// writeBatch is the most writes posted at once.
const writeBatch = 32

// flushWrites posts the batched writes, in one call where the real QP
// takes a list (their packets then share system calls); a write it
// refuses becomes an error completion and the rest are posted after it.
func (q *sqp) flushWrites() error {
	wrs := q.wbatch
	defer func() { clear(q.wbatch); q.wbatch = q.wbatch[:0] }()
	for len(wrs) > 0 {
		n := 0
		var err error
		if bp, ok := q.real.(uc.BatchPoster); ok {
			n, err = bp.PostWrites(wrs)
		} else {
			for ; n < len(wrs); n++ {
				if err = q.real.PostWrite(&wrs[n]); err != nil {
					break
				}
			}
		}
		if n >= len(wrs) {
			return nil
		}
		if err := q.failed(&req{op: reqWrite, wrid: wrs[n].WRID}, err); err != nil {
			return err
		}
		wrs = wrs[n+1:]
	}
	return nil
}

// failed turns a post the real QP refused (queue full, QP in error) into an
// error completion, as a device would report it: the program's bug, not a
// protocol violation.
func (q *sqp) failed(r *req, err error) error {
	if errors.Is(err, uc.ErrClosed) {
		return err
	}
	if r.op == reqRecv {
		q.pendR = append(q.pendR, uc.WC{WRID: r.wrid, Status: uc.WCLocalError, Opcode: uc.WCRecvRDMAWithImm})
	} else {
		q.pendS = append(q.pendS, uc.WC{WRID: r.wrid, Status: uc.WCLocalError, Opcode: uc.WCWrite})
	}
	return nil
}

// moveWCs copies completions into a completion ring: those held back
// first, then fresh ones from the real CQ, as far as the ring has room.
func (q *sqp) moveWCs(pend *[]uc.WC, poll func([]uc.WC) (int, error), headOff, tailOff, ringOff int, head *uint64) (int, error) {
	tail := atomic.LoadUint64(q.u64(tailOff))
	if tail > *head || *head-tail > uint64(q.lay.cqSlots) {
		return 0, fmt.Errorf("completion ring head %d tail %d size %d", *head, tail, q.lay.cqSlots)
	}
	room := int(uint64(q.lay.cqSlots) - (*head - tail))
	if len(*pend) == 0 && room > 0 {
		var buf [32]uc.WC
		n, err := poll(buf[:min(room, len(buf))])
		if err != nil {
			return 0, err
		}
		*pend = append(*pend, buf[:n]...)
	}
	n := min(room, len(*pend))
	for i := 0; i < n; i++ {
		w := (*pend)[i]
		off := ringOff + int(*head%uint64(q.lay.cqSlots))*wcSize
		putWC(q.mem[off:], &wcRec{wrid: w.WRID, status: uint8(w.Status), opcode: uint8(w.Opcode), byteLen: w.ByteLen, imm: w.Imm})
		*head++
	}
	*pend = (*pend)[:copy(*pend, (*pend)[n:])]
	if n > 0 {
		ringSync.Release()
		atomic.StoreUint64(q.u64(headOff), *head)
	}
	return n, nil
}
