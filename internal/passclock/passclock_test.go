package passclock

import (
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

func TestRealWhileNoWorkerRuns(t *testing.T) {
	c := New()
	a := c.NowMonotonic()
	time.Sleep(2 * time.Millisecond)
	b := c.NowMonotonic()
	if d := b.Sub(a); d < 2*time.Millisecond {
		t.Fatalf("two real readings 2ms apart differ by %v", d)
	}
	if n := c.RealReadings(); n != 2 {
		t.Fatalf("%d real readings, want 2", n)
	}
}

func TestPassStartWhileRunning(t *testing.T) {
	c := New()
	start := time.Now()
	c.Run(start)
	a := c.NowMonotonic()
	time.Sleep(2 * time.Millisecond)
	if b := c.NowMonotonic(); b != a {
		t.Fatalf("no tick, yet the reading moved by %v", b.Sub(a))
	}
	c.Tick(start.Add(5 * time.Millisecond))
	if d := c.NowMonotonic().Sub(a); d != 5*time.Millisecond {
		t.Fatalf("a tick 5ms later moved the reading by %v", d)
	}
	if n := c.RealReadings(); n != 0 {
		t.Fatalf("%d real readings while a worker runs", n)
	}
	c.Stop()
	if c.Running() != 0 {
		t.Fatalf("Running() = %d after Stop", c.Running())
	}
	c.NowMonotonic()
	if n := c.RealReadings(); n != 1 {
		t.Fatalf("%d real readings after Stop, want 1", n)
	}
}

// A worker's pass start may be older than a reading already handed out (it
// read the time before another goroutine did): the clock must not go back.
func TestNeverBackwards(t *testing.T) {
	c := New()
	old := time.Now()
	time.Sleep(time.Millisecond)
	r := c.NowMonotonic() // real, later than old
	c.Run(old)
	if got := c.NowMonotonic(); got.Before(r) {
		t.Fatalf("went back by %v after Run with an older time", r.Sub(got))
	}
	c.Tick(old)
	if got := c.NowMonotonic(); got.Before(r) {
		t.Fatalf("went back by %v after an older Tick", r.Sub(got))
	}
	c.Stop()
}

func TestConcurrentMonotonic(t *testing.T) {
	c := New()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Two workers run, tick and sleep, as the daemon's do.
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c.Run(time.Now())
				for j := 0; j < 50; j++ {
					c.Tick(time.Now())
				}
				c.Stop()
			}
		}()
	}
	errs := make(chan string, 4)
	var readers sync.WaitGroup
	for r := 0; r < 4; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			var last tcpip.MonotonicTime
			for i := 0; i < 20000; i++ {
				now := c.NowMonotonic()
				if now.Before(last) {
					errs <- "a reading went back by " + last.Sub(now).String()
					return
				}
				last = now
			}
		}()
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if c.Running() != 0 {
		t.Fatalf("Running() = %d with every worker stopped", c.Running())
	}
}
