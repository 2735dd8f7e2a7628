package futex

import (
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestWaitvWakesOnAnyWord(t *testing.T) {
	if !HaveWaitv() {
		t.Skip("SKIPPED: this kernel has no futex_waitv (Linux < 5.16); the daemon falls back to a worker per session")
	}
	var a, b uint32
	var w Waitv
	w.Add(&a, 0)
	w.Add(&b, 0)
	go func() {
		time.Sleep(20 * time.Millisecond)
		atomic.AddUint32(&b, 1)
		Wake(&b, 1)
	}()
	if err := w.Wait(10 * time.Second); err != nil {
		t.Fatalf("woken with %v", err)
	}
	// A word that already differs returns at once.
	w.Reset()
	w.Add(&b, 0)
	if err := w.Wait(10 * time.Second); err != unix.EAGAIN {
		t.Fatalf("stale value: %v, want EAGAIN", err)
	}
	// Nothing happens: the timeout.
	w.Reset()
	w.Add(&a, 0)
	if err := w.Wait(30 * time.Millisecond); err != unix.ETIMEDOUT {
		t.Fatalf("timeout: %v, want ETIMEDOUT", err)
	}
}

func TestWaitTimesOut(t *testing.T) {
	var a uint32
	Wait(&a, 0, 10*time.Millisecond) // returns; a hang would fail the test run
	Wait(&a, 1, time.Hour)           // value differs: at once
}
