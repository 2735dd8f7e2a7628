package usock

import (
	"testing"
	"time"

	"github.com/nuse-project/nuse/internal/passclock"
)

// While workers run, the gVisor stack reads their pass starts instead of
// the clock (passclock). A worker that went to sleep without saying so
// would freeze the stack's time, and with it every TCP timer of an idle
// daemon: after a transfer, with both sessions still open, the clock must
// be a real one again.
func TestSleepingWorkerLetsTheClockRun(t *testing.T) {
	_, path := startServer(t, 64<<10)
	transferBothWays(t, path, 7035)
	clk := passclock.Default
	deadline := time.Now().Add(5 * time.Second)
	for clk.Running() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d worker(s) still hold the clock, idle", clk.Running())
		}
		time.Sleep(5 * time.Millisecond)
	}
	a := clk.NowMonotonic()
	time.Sleep(3 * time.Millisecond)
	if d := clk.NowMonotonic().Sub(a); d < 3*time.Millisecond {
		t.Fatalf("the stack's clock moved %v in 3ms of idle", d)
	}
}
