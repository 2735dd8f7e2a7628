package gvisor

import (
	"net/netip"
	"runtime"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/stack"
)

// pingPong sends msg-sized messages back and forth between two sockets of
// one engine for b.N round trips, driven only through the Socket interface
// and Notify, as the daemon drives it: each side waits for EventIn on its
// notifier, then reads and answers.
func pingPong(b *testing.B, dial string, size int) {
	e := newTestEngine(b, true)
	ap := netip.MustParseAddr(dial)
	fam := syscall.AF_INET
	if ap.Is6() {
		fam = syscall.AF_INET6
	}
	_, cl, sv := connPair(b, e, fam, netip.AddrPortFrom(ap, 0), fam, ap)
	for _, so := range []stack.Socket{cl, sv} {
		so.SetOption(stack.OptNoDelay, 1)
	}
	done := make(chan error, 1)
	echo := func(so stack.Socket, n int) {
		w := watch(so)
		buf := make([]byte, size)
		for i := 0; i < n; i++ {
			if err := readFull(b, so, w, buf); err != nil {
				done <- err
				return
			}
			if _, err := so.Write(buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}
	msg := make([]byte, size)
	cw := watch(cl)
	rtts := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	go echo(sv, b.N)
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := cl.Write(msg); err != nil {
			b.Fatal(err)
		}
		if err := readFull(b, cl, cw, msg); err != nil {
			b.Fatal(err)
		}
		rtts = append(rtts, time.Since(t0))
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	b.ReportMetric(float64(rtts[len(rtts)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(rtts[len(rtts)*99/100].Nanoseconds()), "p99-ns")
}

func readFull(b *testing.B, so stack.Socket, w *notifier, buf []byte) error {
	for off := 0; off < len(buf); {
		n, eof, err := so.Read(buf[off:])
		if err == syscall.EAGAIN {
			w.wait(b, so, stack.EventIn|stack.EventErr|stack.EventHup)
			continue
		}
		if err != nil {
			return err
		}
		if eof {
			return syscall.ECONNRESET
		}
		off += n
	}
	return nil
}

// BenchmarkPingPong64 is a 64-byte round trip between two sockets of one
// engine over its loopback NIC.
func BenchmarkPingPong64(b *testing.B) { pingPong(b, "127.0.0.1", 64) }

// BenchmarkPingPong64Own is the same through the stack's own netdev address
// (local delivery).
func BenchmarkPingPong64Own(b *testing.B) { pingPong(b, "10.77.0.2", 64) }

// BenchmarkPingPong64Worker is the same round trip driven the way the
// daemon's worker drives the engine: one goroutine plays both ends and,
// when a read finds nothing yet, yields to gVisor's TCP processors (which
// share its thread at GOMAXPROCS=1, as on the daemon's small-machine
// default). No rings, sessions or readiness: what gVisor itself costs per
// request/response with both ends in the stack, the floor of the
// daemon's CPU per request on this engine. README "Where NUSE stands"
// compares it with the daemon's (-cpu 1; under callgrind for a count of
// instructions).
func BenchmarkPingPong64Worker(b *testing.B) {
	e := newTestEngine(b, false)
	lo := netip.MustParseAddr("127.0.0.1")
	_, cl, sv := connPair(b, e, syscall.AF_INET, netip.AddrPortFrom(lo, 0), syscall.AF_INET, lo)
	for _, so := range []stack.Socket{cl, sv} {
		so.SetOption(stack.OptNoDelay, 1)
	}
	buf := make([]byte, 64)
	read := func(so stack.Socket) {
		for off := 0; off < len(buf); {
			n, eof, err := so.Read(buf[off:])
			switch {
			case err == syscall.EAGAIN:
				runtime.Gosched()
				continue
			case err != nil:
				b.Fatal(err)
			case eof:
				b.Fatal("EOF")
			}
			off += n
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, w := range [][2]stack.Socket{{cl, sv}, {sv, cl}} {
			if _, err := w[0].Write(buf); err != nil {
				b.Fatal(err)
			}
			read(w[1])
		}
	}
}

// BenchmarkBulk moves 1 MiB chunks one way over the loopback NIC.
func BenchmarkBulk(b *testing.B) {
	e := newTestEngine(b, false)
	_, cl, sv := connPair(b, e, syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:0"), syscall.AF_INET, netip.MustParseAddr("127.0.0.1"))
	const chunk = 1 << 20
	b.SetBytes(chunk)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, chunk)
		w := watch(sv)
		for i := 0; i < b.N; i++ {
			if err := readFull(b, sv, w, buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	data := make([]byte, chunk)
	w := watch(cl)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := 0; off < chunk; {
			n, err := cl.Write(data[off:])
			if err == syscall.EAGAIN {
				w.wait(b, cl, stack.EventOut|stack.EventErr)
				continue
			}
			if err != nil {
				b.Fatal(err)
			}
			off += n
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
