package testlog

import (
	"sync"
	"testing"
)

// A goroutine that outlives its test logs without touching the test: run
// with -race, this reports a race (and panics) if lines still reach tb.
func TestNoLogAfterTest(t *testing.T) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	t.Run("inner", func(t *testing.T) {
		logf := Logf(t)
		logf("while running: %d", 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < 100; i++ {
				logf("after the test: %d", i)
			}
		}()
	})
	close(start)
	wg.Wait()
}

// A fuzz test's server logs from its own goroutines while the fuzz target
// runs, which f.Logf forbids; the lines are held instead.
func FuzzServerLogs(f *testing.F) {
	logf := Logf(f)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				logf("server line")
			}
		}
	}()
	f.Cleanup(func() { close(stop); wg.Wait() })
	f.Add([]byte("x"))
	f.Fuzz(func(t *testing.T, b []byte) { logf("in the target: %d bytes", len(b)) })
}

func TestHeldIsBounded(t *testing.T) {
	l := &logger{tb: &testing.F{}}
	for i := 0; i < maxHeld+10; i++ {
		l.logf("%d", i)
	}
	if len(l.held) != maxHeld || l.lost != 10 || l.held[0][13:] != "10" {
		t.Fatalf("held %d lost %d first %q", len(l.held), l.lost, l.held[0])
	}
}
