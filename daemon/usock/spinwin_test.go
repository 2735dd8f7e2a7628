package usock

import (
	"net/netip"
	"syscall"
	"testing"
	"time"
)

func TestSpinWindow(t *testing.T) {
	const us = time.Microsecond
	w := newSpinWindow(50*us, 2000*us)
	if w.next() != 50*us {
		t.Fatalf("starts at %v, want the base 50µs", w.next())
	}
	steps := []struct {
		gap, want time.Duration
	}{
		{30 * us, 50 * us},     // caught by the spin: no change
		{80 * us, 100 * us},    // just missed: doubles
		{90 * us, 100 * us},    // caught
		{700 * us, 700 * us},   // far beyond double: grows to the gap
		{1500 * us, 1500 * us}, // ...
		{1900 * us, 2000 * us}, // capped at max
		{2000 * us, 2000 * us}, // within max, caught
		{2001 * us, 50 * us},   // quiet for longer than max: back to base
		{3 * time.Second, 50 * us},
	}
	for i, s := range steps {
		w.gap(s.gap)
		if w.next() != s.want {
			t.Fatalf("step %d: after a gap of %v the window is %v, want %v", i, s.gap, w.next(), s.want)
		}
	}
	if w.yield(40*us) || !w.yield(60*us) {
		t.Error("yield: only past the base spin")
	}
	// max below base (or 0): a fixed spin, as before the window adapted
	f := newSpinWindow(50*us, 0)
	f.gap(80 * us)
	if f.next() != 50*us || f.yield(60*us) {
		t.Errorf("without a max the spin stays %v (got %v) and never yields", 50*us, f.next())
	}
}

// TestSpinSettles: with a long spin bound, traffic whose gaps the window
// grows to cover is served, and once it stops the worker sleeps again (an
// idle daemon uses no CPU).
func TestSpinSettles(t *testing.T) {
	_, path := startServerWith(t, 64<<10, func(c *Config) { c.SpinMax = 20 * time.Millisecond })
	srvCl := dialClient(t, path)
	cliCl := dialClient(t, path)
	defer srvCl.close()
	defer cliCl.close()
	ls := srvCl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7361))
	cs := cliCl.socket(syscall.AF_INET)
	if err := cliCl.connect(cs, netip.AddrPortFrom(lo4, 7361)); err != nil {
		t.Fatal(err)
	}
	as, _ := srvCl.accept(ls)
	// Gaps of about a millisecond: past the base spin, within the bound.
	var buf [16]byte
	for i := 0; i < 100; i++ {
		if err := cliCl.send(cs, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if n, err := srvCl.recv(as, buf[:]); err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("exchange %d: recv %v %v", i, buf[:n], err)
		}
		time.Sleep(time.Millisecond)
	}
	// The window is at most 20 ms; the worker's first sleep after it
	// notes the quiet, so 1 s idle costs a spin or two, not a core.
	time.Sleep(50 * time.Millisecond)
	if spun := idleCPU(time.Second); spun > 300*time.Millisecond {
		t.Errorf("the daemon used %v of CPU in 1 s idle after the traffic: it still spins", spun)
	}
}

// A worker that holds the only Go thread sleeps short while work is
// recent (the Go runtime's timers and goroutines wait on its thread), and
// long once idle or when other threads run Go code.
func TestSleepFor(t *testing.T) {
	for _, c := range []struct {
		idle  time.Duration
		alone bool
		want  time.Duration
	}{
		{0, true, sleepBusy},
		{busyFor - time.Millisecond, true, sleepBusy},
		{busyFor, true, sleepIdle},
		{time.Hour, true, sleepIdle},
		{0, false, sleepIdle},
	} {
		if got := sleepFor(c.idle, c.alone); got != c.want {
			t.Errorf("sleepFor(%v, alone %v) = %v, want %v", c.idle, c.alone, got, c.want)
		}
	}
}
