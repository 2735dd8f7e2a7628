package gvisor

import (
	"math/rand"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// The cast in fromNanos must give what netstack's own constructor gives:
// a changed MonotonicTime (another field order, a scaled unit) fails here
// before it misleads the stack's timers.
func TestClockLayout(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	vals := []int64{0, 1, 999, 1e9, 1<<62 - 1}
	for range 1000 {
		vals = append(vals, r.Int63())
	}
	for _, ns := range vals {
		want := tcpip.MonotonicTime{}.Add(time.Duration(ns))
		got := fromNanos(ns)
		if got != want {
			t.Fatalf("fromNanos(%d) = %v, netstack's Add gives %v", ns, got, want)
		}
		if got.Milliseconds() != ns/1e6 {
			t.Fatalf("fromNanos(%d).Milliseconds() = %d, want %d", ns, got.Milliseconds(), ns/1e6)
		}
	}
}

// The clock moves forward with real time, never back, and agrees with
// the standard clock about how much time passed.
func TestClockMonotonic(t *testing.T) {
	c := newClock()
	std := tcpip.NewStdClock()
	// Each reading of ours between two of the standard clock's: both count
	// the same monotonic time, so the elapsed times must nest exactly (no
	// tolerance that a loaded machine could exceed).
	sa1, a, sa2 := std.NowMonotonic(), c.NowMonotonic(), std.NowMonotonic()
	prev := a
	for range 10000 {
		now := c.NowMonotonic()
		if now.Before(prev) {
			t.Fatalf("clock went back: %v after %v", now, prev)
		}
		prev = now
	}
	time.Sleep(20 * time.Millisecond)
	sb1, b, sb2 := std.NowMonotonic(), c.NowMonotonic(), std.NowMonotonic()
	d := b.Sub(a)
	if d < 20*time.Millisecond {
		t.Fatalf("20 ms sleep: clock moved %v", d)
	}
	if lo, hi := sb1.Sub(sa2), sb2.Sub(sa1); d < lo || d > hi {
		t.Fatalf("clock moved %v, the standard clock between %v and %v", d, lo, hi)
	}
	fired := make(chan struct{})
	tm := c.AfterFunc(time.Millisecond, func() { close(fired) })
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
		tm.Stop()
		t.Fatal("AfterFunc never fired")
	}
}

func BenchmarkNowMonotonic(b *testing.B) {
	for _, k := range []struct {
		name string
		c    tcpip.Clock
	}{{"std", tcpip.NewStdClock()}, {"nuse", newClock()}} {
		b.Run(k.name, func(b *testing.B) {
			for b.Loop() {
				_ = k.c.NowMonotonic()
			}
		})
	}
}
