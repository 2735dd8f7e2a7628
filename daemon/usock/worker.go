package usock

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/internal/futex"
)

// A worker serves sessions from one goroutine: it serves commands, moves
// data between the rings and the engine, and mirrors readiness, session
// after session. It spins while any of them has work, then sleeps on all
// of their doorbells at once (futex_waitv). One worker for all sessions is
// what keeps NUSE-to-NUSE latency low: the answer from another local
// program arrives while the worker still spins, where a worker per session
// would have to be woken (tens of microseconds on these VMs) for each hop.
// Without futex_waitv (Linux < 5.16) each session gets a worker of its own.
// A session's turn is bounded (Limits.PassSockets, PassBytes), so one that
// always has work cannot keep the others waiting.
type worker struct {
	srv *Server
	id  int // the workers' count when it started (profile labels)

	mu   sync.Mutex
	sess []*Session
	ver  atomic.Uint64 // bumped when sess changes

	// word is the worker's own futex word: bumped to wake it when a
	// session is added.
	word     uint32
	sleeping atomic.Uint32
}

// assign hands a new session to a worker with room, starting one if needed.
func (srv *Server) assign(s *Session) {
	srv.mu.Lock()
	held, live := make([]int, len(srv.workers)), make([]int, len(srv.workers))
	for i, c := range srv.workers {
		c.mu.Lock() // a worker drops its sessions alone
		held[i] = len(c.sess)
		for _, o := range c.sess {
			if !o.gone.Load() {
				live[i]++
			}
		}
		c.mu.Unlock()
	}
	var w *worker
	if i, start := pickWorker(held, live, srv.perWork, srv.cfg.Workers); !start {
		w = srv.workers[i]
	}
	if w == nil {
		// A new worker starts with its session (it retires when empty).
		w = &worker{srv: srv, id: srv.started, sess: []*Session{s}}
		srv.started++
		srv.workers = append(srv.workers, w)
		srv.wg.Add(1)
		srv.mu.Unlock()
		go w.run()
		return
	}
	w.mu.Lock()
	w.sess = append(w.sess, s)
	w.mu.Unlock()
	w.ver.Add(1)
	srv.mu.Unlock()
	w.wake()
}

// pickWorker chooses the worker for a new session from what each holds
// (held, its room is perWork) and how many of those are live (a session
// whose process is gone stays until its sockets linger out, and costs
// nothing): the one with the fewest live sessions among those with room,
// or a new one (start) when there are fewer than max and every worker
// serves a live session -- a short-lived program that just ended (a
// readiness probe) must not make the next program share a worker.
func pickWorker(held, live []int, perWork, max int) (i int, start bool) {
	i = -1
	for j := range held {
		if held[j] < perWork && (i < 0 || live[j] < live[i]) {
			i = j
		}
	}
	if i < 0 || (live[i] > 0 && len(held) < max) {
		return -1, true
	}
	return i, false
}

// workerAwake counts a worker waking (+1) or going to sleep or away (-1)
// and tells the pollers whether a worker now reads their devices every
// pass: only with the workers holding every P (Server.alone) is a
// device's own reader better parked meanwhile; with a P to spare it reads
// beside the workers. An eager poller's reader (stack.EagerPoller) parks
// whenever a worker is awake.
func (srv *Server) workerAwake(delta int) {
	srv.pollMu.Lock()
	defer srv.pollMu.Unlock()
	srv.awake += delta
	on := [2]bool{srv.awake > 0 && srv.alone(), srv.awake > 0}
	for i, p := range srv.pollers {
		k := 0
		if srv.eager[i] {
			k = 1
		}
		if on[k] != srv.pollOn[k] {
			p.Polled(on[k])
		}
	}
	srv.pollOn = on
}

// alone: the workers hold every P (--procs no more than --workers, the
// default on small machines): the engine's goroutines run only when a
// worker yields.
func (srv *Server) alone() bool { return runtime.GOMAXPROCS(0) <= srv.cfg.Workers }

func (w *worker) wake() {
	atomic.AddUint32(&w.word, 1)
	if w.sleeping.Load() != 0 {
		futex.Wake(&w.word, 1)
	}
}

// retire ends the worker if it has no sessions left.
func (w *worker) retire() bool {
	srv := w.srv
	srv.mu.Lock()
	defer srv.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.sess) > 0 {
		return false
	}
	for i, c := range srv.workers {
		if c == w {
			srv.workers = append(srv.workers[:i], srv.workers[i+1:]...)
			break
		}
	}
	return true
}

// drop removes a finished session and releases it.
func (w *worker) drop(s *Session) {
	w.mu.Lock()
	for i, c := range w.sess {
		if c == s {
			w.sess = append(w.sess[:i], w.sess[i+1:]...)
			break
		}
	}
	w.mu.Unlock()
	w.ver.Add(1)
	s.mu.Lock()
	s.dropSpares()
	s.mu.Unlock()
	s.finished = true
	s.srv.ended(s)
	s.amu.Lock()
	s.aclosed = true
	s.a.Close()
	s.amu.Unlock()
	close(s.done)
}

func (w *worker) run() {
	defer w.srv.wg.Done()
	w.srv.workerAwake(1)
	defer w.srv.workerAwake(-1)
	spin := newSpinWindow(w.srv.cfg.Spin, w.srv.cfg.SpinMax)
	var (
		list []*Session
		ver  = ^uint64(0)
		wv   futex.Waitv
		last = time.Now()
		// slept: the last pass found no work and the worker slept since
		// (last is then the time of that work): the next work tells the
		// spin window how long the gap was.
		slept bool
		// alone (Server.alone): the engine's goroutines run when a
		// worker yields, and the control socket is served through
		// nudges (nudge.go).
		alone = w.srv.alone()
		prof  = newProfLabels(w.srv.cfg.ProfileLabels, w.id)
	)
	for {
		now := time.Now()
		if v := w.ver.Load(); v != ver {
			w.mu.Lock()
			list = append(list[:0], w.sess...)
			w.mu.Unlock()
			ver = v
			last = now
		}
		if len(list) == 0 {
			if w.retire() {
				return
			}
			continue
		}
		did := false
		// Frames waiting on a device first: what they bring is pumped
		// to the programs in this pass.
		for _, p := range w.srv.pollers {
			if p.Poll() {
				did = true
			}
		}
		for _, s := range list {
			if s.finished {
				continue
			}
			prof.session(s, ver)
			s.mu.Lock()
			d := s.pass()
			finished := s.dead && s.lingering() == 0
			s.mu.Unlock()
			prof.done()
			if finished {
				w.drop(s)
				d = true
			}
			did = did || d
		}
		if alone {
			w.srv.nudge.nudge(now)
		}
		if did {
			if slept {
				spin.gap(now.Sub(last))
				slept = false
			}
			last = now
			if alone {
				// The engine's goroutines (gVisor's TCP processors and
				// timers) run only when a worker yields: let them take
				// what this pass handed them.
				runtime.Gosched()
			}
			continue
		}
		if spun := now.Sub(last); spun < spin.next() {
			runtime.Gosched()
			if spin.yield(spun) {
				// a program's thread runnable on this CPU goes first
				_, _, _ = unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			}
			continue
		}
		for _, s := range list {
			if !s.finished && now.Sub(s.reaped) > 500*time.Millisecond {
				s.reaped = now
				prof.session(s, ver)
				s.mu.Lock()
				s.reapHangups()
				s.lateBytes(now)
				s.reclaim(now)
				s.recheckDirect()
				s.mu.Unlock()
				prof.done()
			}
		}
		w.sleep(list, &wv, sleepFor(now.Sub(last), alone))
		slept = true
		if q := time.Since(last); q > spin.max {
			spin.gap(q) // quiet: no reason to spin long
		}
		// The thread count may have changed meanwhile (uc proxy
		// sessions raise it while they run).
		alone = w.srv.alone()
	}
}

// Sleeping: at most sleepIdle (closing sockets have deadlines), and
// sleepBusy within busyFor of the last work when the workers hold every
// thread that runs Go code (alone): a worker asleep in futex_waitv holds
// that thread's P, so what the Go scheduler would run meanwhile (the
// engine's timers and goroutines, the control socket's reader) waits
// until sysmon takes the P back, up to 10 ms later. Woken early, the
// worker yields once and sleeps again; idle, it wakes 4 times a second.
const (
	sleepIdle = 250 * time.Millisecond
	sleepBusy = time.Millisecond
	busyFor   = 100 * time.Millisecond
)

// sleepFor is how long a worker that last worked idle ago may sleep.
func sleepFor(idle time.Duration, alone bool) time.Duration {
	if alone && idle < busyFor {
		return sleepBusy
	}
	return sleepIdle
}

// sleep waits until a session's doorbell rings, the worker is woken, or d
// passes.
func (w *worker) sleep(list []*Session, wv *futex.Waitv, d time.Duration) {
	// The devices' readers watch while we sleep: let a parked one get to
	// its poll before this thread blocks with the P (rx.go in
	// stack/link/tap).
	w.srv.workerAwake(-1)
	defer w.srv.workerAwake(1)
	if w.srv.alone() {
		runtime.Gosched()
	}
	w.sleeping.Store(1)
	wv.Reset()
	wv.Add(&w.word, atomic.LoadUint32(&w.word))
	// A device reader's kick (futex.Kick): a packet came in. A frame that
	// came before this load and after our pass's poll kicked too early
	// to wake us: the devices are read once more below.
	wv.Add(&futex.Kick, atomic.LoadUint32(&futex.Kick))
	var seq uint32 // of the last session, for the one-session fallback
	var live *Session
	n := 0
	for _, s := range list {
		if s.finished {
			continue
		}
		h := s.a.Hdr()
		atomic.StoreUint32(&h.DSleeping, 1)
		seq = atomic.LoadUint32(&h.DSeq)
		wv.Add(&h.DSeq, seq)
		live, n = s, n+1
	}
	// Recheck after announcing sleep (the shim rings only if it sees
	// d_sleeping): work that came in between is served at once.
	pending := false
	for _, p := range w.srv.pollers {
		if p.Poll() {
			pending = true
		}
	}
	for _, s := range list {
		if !s.finished && s.pending() {
			pending = true
			break
		}
	}
	switch {
	case pending || n == 0:
	case w.srv.perWork > 1:
		_ = wv.Wait(d)
	default: // no futex_waitv: this worker has exactly one session
		futex.Wait(&live.a.Hdr().DSeq, seq, d)
	}
	for _, s := range list {
		if !s.finished {
			atomic.StoreUint32(&s.a.Hdr().DSleeping, 0)
		}
	}
	w.sleeping.Store(0)
}
