package usock

import (
	"sync/atomic"
	"testing"

	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/gvisor"
)

// pollCounter is an engine with a device for the workers to read: it
// counts their turns.
type pollCounter struct {
	stack.Engine
	turns atomic.Int64
}

func (p *pollCounter) Poll() bool {
	p.turns.Add(1)
	return false
}

// Workers read the devices of engines that offer it (stack.Poller, the
// gvisor engine on a TAP) in their passes, so that frames arriving while
// they run reach the stack with no reader thread to wake.
func TestWorkersPollDevices(t *testing.T) {
	eng, err := gvisor.New(gvisor.Config{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	pc := &pollCounter{Engine: eng}
	_, path := startServerWith(t, 64<<10, func(c *Config) {
		c.Engines = map[string]stack.Engine{"polled": pc, c.Engine.Name(): c.Engine}
	})
	t.Cleanup(func() { eng.Close() })
	transferBothWays(t, path, 7036)
	if pc.turns.Load() == 0 {
		t.Fatal("no worker read the device in a transfer")
	}
}
