package usock

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/gvisor"
)

// pollCounter is an engine with a device for the workers to read: it
// counts their turns.
type pollCounter struct {
	stack.Engine
	turns atomic.Int64

	mu     sync.Mutex
	polled []bool // what Polled was told, in order
}

// eagerCounter is a pollCounter that asks to be told whenever a worker
// is awake (stack.EagerPoller).
type eagerCounter struct{ *pollCounter }

func (eagerCounter) PollEagerly() {}

// pollServer serves a daemon with a pollCounter engine beside the default
// one (an eagerCounter if eager); workers > 0 sets Config.Workers.
func pollServer(t *testing.T, workers int, eager bool) (*pollCounter, string) {
	eng, err := gvisor.New(gvisor.Config{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	pc := &pollCounter{Engine: eng}
	var as stack.Engine = pc
	if eager {
		as = eagerCounter{pc}
	}
	_, path := startServerWith(t, 64<<10, func(c *Config) {
		c.Engines = map[string]stack.Engine{"polled": as, c.Engine.Name(): c.Engine}
		if workers > 0 {
			c.Workers = workers
		}
	})
	t.Cleanup(func() { eng.Close() })
	return pc, path
}

func (p *pollCounter) Poll() bool {
	p.turns.Add(1)
	return false
}

func (p *pollCounter) Polled(on bool) {
	p.mu.Lock()
	p.polled = append(p.polled, on)
	p.mu.Unlock()
}

func (p *pollCounter) told() []bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]bool(nil), p.polled...)
}

// With the workers holding every P (GOMAXPROCS no more than --workers) an
// engine hears Polled(true) while a worker is awake and Polled(false)
// once they all sleep, alternating (its device's reader then parks while
// a worker polls, stack/link/tap rx.go); with a P to spare it hears
// nothing (its reader watches all along), unless it is eager
// (stack.EagerPoller, the kernel engine): that one hears it either way.
func TestPolledFollowsWorkers(t *testing.T) {
	for _, c := range []struct{ alone, eager bool }{{true, false}, {false, false}, {false, true}} {
		alone := c.alone
		workers := runtime.GOMAXPROCS(0)
		if !alone {
			workers = max(1, workers-1)
		}
		pc, path := pollServer(t, workers, c.eager)
		if !alone && runtime.GOMAXPROCS(0) == 1 {
			t.Log("GOMAXPROCS is 1: no spare P to test")
			continue
		}
		transferBothWays(t, path, 7036)
		// Idle now: the worker spins (20us here), then sleeps.
		deadline := time.Now().Add(10 * time.Second)
		for {
			told := pc.told()
			if !alone && !c.eager {
				if len(told) != 0 {
					t.Fatalf("with a spare P the engine was told %v", told)
				}
				break
			}
			if len(told) >= 2 && !told[len(told)-1] {
				for i, on := range told {
					if on != (i%2 == 0) {
						t.Fatalf("told %v: want true, false, true, ... from the first worker on", told)
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("told %v: the idle workers never said they sleep", told)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// Workers read the devices of engines that offer it (stack.Poller, the
// gvisor engine on a TAP) in their passes, so that frames arriving while
// they run reach the stack with no reader thread to wake.
func TestWorkersPollDevices(t *testing.T) {
	pc, path := pollServer(t, 0, false)
	transferBothWays(t, path, 7036)
	if pc.turns.Load() == 0 {
		t.Fatal("no worker read the device in a transfer")
	}
}
