package enginetest

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/stack"
)

// Bench runs the engine benchmarks, driven only through the stack.Engine
// interface and Notify, as the daemon drives an engine (no shim, no rings:
// this is the engine's own cost):
//
//	pingpong-64B: one 64-byte message each way per iteration, IPv4 loopback
//	bulk-64KiB:   one 64 KiB write per iteration, read by the peer (B/s)
func Bench(b *testing.B, newEngine NewEngine) {
	b.Run("pingpong-64B", func(b *testing.B) { benchPingPong(b, newEngine, 64) })
	b.Run("bulk-64KiB", func(b *testing.B) { benchBulk(b, newEngine, 64<<10) })
}

func benchPair(b *testing.B, newEngine NewEngine) (*H, *Sock, *Sock) {
	e := newEngine(b)
	b.Cleanup(func() { e.Close() })
	h := &H{TB: b, E: e, Family: syscall.AF_INET, Lo: netip.MustParseAddr("127.0.0.1")}
	c, s := h.Pair()
	for _, so := range []*Sock{c, s} {
		_ = so.SetOption(stack.OptNoDelay, 1)
	}
	return h, c, s
}

func benchPingPong(b *testing.B, newEngine NewEngine, size int) {
	_, c, s := benchPair(b, newEngine)
	msg := make([]byte, size)
	done := make(chan error, 1)
	go func() { // the echo side; it owns s from here on
		buf := make([]byte, size)
		for i := 0; i < b.N; i++ {
			if err := readFull(s, buf); err != nil {
				done <- err
				return
			}
			if err := writeFull(s, buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := writeFull(c, msg); err != nil {
			b.Fatal(err)
		}
		if err := readFull(c, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

func benchBulk(b *testing.B, newEngine NewEngine, size int) {
	_, c, s := benchPair(b, newEngine)
	b.SetBytes(int64(size))
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		left := b.N * size
		for left > 0 {
			if err := readFull(s, buf[:min(len(buf), left)]); err != nil {
				done <- err
				return
			}
			left -= min(len(buf), left)
		}
		done <- nil
	}()
	msg := make([]byte, size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := writeFull(c, msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// readFull and writeFull may run off the test goroutine: they return
// errors instead of failing.
func readFull(s *Sock, p []byte) error {
	for len(p) > 0 {
		n, eof, err := s.Read(p)
		p = p[n:]
		switch {
		case eof:
			return errors.New("unexpected EOF")
		case errors.Is(err, stack.ErrWouldBlock):
			if err := wait(s, stack.EventIn|stack.EventErr|stack.EventHup); err != nil {
				return err
			}
		case err != nil:
			return err
		}
	}
	return nil
}

func writeFull(s *Sock, p []byte) error {
	for len(p) > 0 {
		n, err := s.Write(p)
		p = p[n:]
		if errors.Is(err, stack.ErrWouldBlock) {
			if err := wait(s, stack.EventOut|stack.EventErr); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func wait(s *Sock, want stack.Events) error {
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for s.Readiness()&want == 0 {
		select {
		case <-s.ch:
		case <-deadline.C:
			return errors.New("timed out waiting for readiness")
		}
	}
	return nil
}
