package usock

import (
	"context"
	"fmt"
	"runtime/pprof"
	"strconv"
)

// profLabels labels a worker's CPU profile samples (Config.ProfileLabels):
// "worker" on all of them, "program" (session id, name and pid) on those
// of a session's turn. `go tool pprof -tags` then gives each worker's and
// each program's share of the daemon's CPU: how the work would spread on a
// machine with a core per worker. gVisor's own goroutines (its TCP
// processors, timers) carry no label. Off (nil), it costs a nil check.
type profLabels struct {
	worker context.Context
	ver    uint64
	sess   map[*Session]context.Context
}

func newProfLabels(on bool, worker int) *profLabels {
	if !on {
		return nil
	}
	p := &profLabels{worker: pprof.WithLabels(context.Background(), pprof.Labels("worker", strconv.Itoa(worker)))}
	pprof.SetGoroutineLabels(p.worker)
	return p
}

// session labels what follows as s's turn; ver is the worker's session
// list version (a new list drops the labels of sessions gone).
func (p *profLabels) session(s *Session, ver uint64) {
	if p == nil {
		return
	}
	if p.sess == nil || p.ver != ver {
		p.sess, p.ver = make(map[*Session]context.Context), ver
	}
	ctx := p.sess[s]
	if ctx == nil {
		ctx = pprof.WithLabels(p.worker, pprof.Labels("program", fmt.Sprintf("%d %s[%d]", s.ID, s.Comm, s.Pid)))
		p.sess[s] = ctx
	}
	pprof.SetGoroutineLabels(ctx)
}

// done ends a session's turn.
func (p *profLabels) done() {
	if p != nil {
		pprof.SetGoroutineLabels(p.worker)
	}
}
