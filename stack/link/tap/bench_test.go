package tap

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/gvisor"
)

// TestTAPBench compares, in one run, a kernel TCP client talking to a
// netstack server over the TAP with the same client talking to a kernel
// server across a veth pair between two namespaces: 64-byte ping-pong RTT
// and bulk throughput, and prints the ratios. It is a measurement, not a
// check: it runs only with NUSE_TAP_BENCH=1 (scripts/bench-tap.sh).
func TestTAPBench(t *testing.T) {
	if childNetnsSet() {
		t.Skip("parent only")
	}
	if os.Getenv("NUSE_TAP_BENCH") == "" {
		t.Skip("SKIPPED: a benchmark; run with NUSE_TAP_BENCH=1 (scripts/bench-tap.sh)")
	}
	inNetns(t, "TestTAPBenchChild", 2, 300*time.Second)
}

type benchResult struct {
	p50, p99 time.Duration
	gbits    float64
}

func TestTAPBenchChild(t *testing.T) {
	names := childNetns(t)
	if len(names) < 2 || os.Getenv("NUSE_TAP_BENCH") == "" {
		t.Skip("benchmark child needs two namespaces and NUSE_TAP_BENCH")
	}
	rounds := 5000
	bulkFor := 3 * time.Second
	e, _ := openTAPEngine(t, "nuse0")

	// The veth pair: 10.78.0.1 here, 10.78.0.2 in the second namespace,
	// with the TAP's MTU so the two links differ only in what is behind
	// them.
	mtu := fmt.Sprint(DefaultMTU)
	run(t, "ip", "link", "add", "nusev0", "mtu", mtu, "type", "veth", "peer", "name", "nusev1", "mtu", mtu, "netns", names[1])
	run(t, "ip", "addr", "add", "10.78.0.1/24", "dev", "nusev0")
	run(t, "ip", "link", "set", "nusev0", "up")
	run(t, "ip", "-n", names[1], "addr", "add", "10.78.0.2/24", "dev", "nusev1")
	run(t, "ip", "-n", names[1], "link", "set", "nusev1", "up")

	// Servers: an echo and a sink on each side.
	stackEcho := stackListener(t, e, "10.77.0.2:7001", stackEchoConn)
	stackSink := stackListener(t, e, "10.77.0.2:7002", stackSinkConn)
	var kEcho, kSink net.Listener
	inOtherNetns(t, names[1], func() {
		var err error
		if kEcho, err = net.Listen("tcp", "10.78.0.2:7001"); err != nil {
			t.Error(err)
			return
		}
		if kSink, err = net.Listen("tcp", "10.78.0.2:7002"); err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	defer kEcho.Close()
	defer kSink.Close()
	go serveKernel(kEcho, func(c net.Conn) { io.Copy(c, c) })
	go serveKernel(kSink, func(c net.Conn) { io.Copy(io.Discard, c) })
	_, _ = stackEcho, stackSink

	var tapR, vethR benchResult
	// Interleave, so a noisy neighbour on the shared cores hits both.
	for i := 0; i < 2; i++ {
		r := pingPong(t, "10.77.0.2:7001", rounds)
		tapR.p50, tapR.p99 = minDur(tapR.p50, r.p50), minDur(tapR.p99, r.p99)
		r = pingPong(t, "10.78.0.2:7001", rounds)
		vethR.p50, vethR.p99 = minDur(vethR.p50, r.p50), minDur(vethR.p99, r.p99)
		tapR.gbits = max(tapR.gbits, bulk(t, "10.77.0.2:7002", bulkFor))
		vethR.gbits = max(vethR.gbits, bulk(t, "10.78.0.2:7002", bulkFor))
	}
	stackOut := stackBulk(t, e, "10.77.0.1:7003", bulkFor)

	var b strings.Builder
	fmt.Fprintf(&b, "\n64-byte TCP ping-pong (%d rounds, best of 2 runs) and bulk (%v, best of 2), MTU %d:\n", rounds, bulkFor, DefaultMTU)
	fmt.Fprintf(&b, "  %-40s %10s %10s %12s\n", "path", "p50 RTT", "p99 RTT", "bulk Gbit/s")
	fmt.Fprintf(&b, "  %-40s %10v %10v %12.2f\n", "kernel client -> TAP -> gVisor server", tapR.p50.Round(100*time.Nanosecond), tapR.p99.Round(100*time.Nanosecond), tapR.gbits)
	fmt.Fprintf(&b, "  %-40s %10v %10v %12.2f\n", "kernel client -> veth -> kernel server", vethR.p50.Round(100*time.Nanosecond), vethR.p99.Round(100*time.Nanosecond), vethR.gbits)
	fmt.Fprintf(&b, "  %-40s %10.2f %10.2f %12.2f\n", "ratio TAP/veth", float64(tapR.p50)/float64(vethR.p50), float64(tapR.p99)/float64(vethR.p99), tapR.gbits/vethR.gbits)
	fmt.Fprintf(&b, "  %-40s %10s %10s %12.2f\n", "gVisor client -> TAP -> kernel server", "", "", stackOut)
	t.Log(b.String())
}

func minDur(a, b time.Duration) time.Duration {
	if a == 0 || b < a {
		return b
	}
	return a
}

func serveKernel(ln net.Listener, f func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * testTimeout))
			f(c)
		}()
	}
}

// stackListener serves each connection of a stack listener with f on its
// own goroutine, for the life of the test.
func stackListener(t *testing.T, e *gvisor.Engine, addr string, f func(stack.Socket)) stack.Socket {
	ln, err := e.Socket(syscall.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Bind(netip.MustParseAddrPort(addr)); err != nil {
		t.Fatal(err)
	}
	if err := ln.Listen(16); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); ln.Close() })
	go func() {
		w := watch(ln)
		for {
			so, _, err := ln.Accept()
			if err == syscall.EAGAIN {
				select {
				case <-stop:
					return
				case <-w.ch:
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			if err != nil {
				return
			}
			go func() {
				defer so.Close()
				f(so)
			}()
		}
	}()
	return ln
}

func stackEchoConn(so stack.Socket) {
	w := watch(so)
	buf := make([]byte, 64<<10)
	for {
		n, eof, err := so.Read(buf)
		if err == syscall.EAGAIN {
			if w.wait(so, stack.EventIn|stack.EventErr|stack.EventHup) != nil {
				return
			}
			continue
		}
		if err != nil || eof {
			return
		}
		if writeSock(so, w, buf[:n]) != nil {
			return
		}
	}
}

func stackSinkConn(so stack.Socket) {
	w := watch(so)
	buf := make([]byte, 1<<20)
	for {
		_, eof, err := so.Read(buf)
		if err == syscall.EAGAIN {
			if w.wait(so, stack.EventIn|stack.EventErr|stack.EventHup) != nil {
				return
			}
			continue
		}
		if err != nil || eof {
			return
		}
	}
}

// pingPong measures 64-byte round trips from a kernel client.
func pingPong(t *testing.T, addr string, rounds int) benchResult {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * testTimeout))
	msg := make([]byte, 64)
	rtts := make([]time.Duration, 0, rounds)
	for i := 0; i < rounds+200; i++ {
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			t.Fatal(err)
		}
		if i >= 200 { // warm-up excluded
			rtts = append(rtts, time.Since(t0))
		}
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	return benchResult{p50: rtts[len(rtts)/2], p99: rtts[len(rtts)*99/100]}
}

// bulk sends from a kernel client for d and returns Gbit/s as the sender
// saw it once the receiver has taken everything (close waits for the FIN's
// ACK is not guaranteed, so it reads the sink's EOF reply instead: the sink
// closes after draining).
func bulk(t *testing.T, addr string, d time.Duration) float64 {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d + testTimeout))
	buf := make([]byte, 256<<10)
	var total int64
	t0 := time.Now()
	for time.Since(t0) < d {
		n, err := c.Write(buf)
		total += int64(n)
		if err != nil {
			t.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	// The sink closes when it has read everything: wait for that EOF.
	io.Copy(io.Discard, c)
	el := time.Since(t0)
	return float64(total) * 8 / el.Seconds() / 1e9
}

// stackBulk sends from a stack socket to a kernel sink on addr.
func stackBulk(t *testing.T, e *gvisor.Engine, addr string, d time.Duration) float64 {
	kl, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := kl.Accept()
		if err != nil {
			done <- -1
			return
		}
		c.SetDeadline(time.Now().Add(d + testTimeout))
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		done <- n
	}()
	so, _ := e.Socket(syscall.AF_INET)
	defer so.Close()
	w := watch(so)
	if err := so.Connect(netip.MustParseAddrPort(addr)); err != nil && err != syscall.EINPROGRESS {
		t.Fatal(err)
	}
	if err := w.wait(so, stack.EventOut|stack.EventErr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	t0 := time.Now()
	for time.Since(t0) < d {
		if err := writeSock(so, w, buf); err != nil {
			t.Fatal(err)
		}
	}
	so.Shutdown(syscall.SHUT_WR)
	var n int64
	select {
	case n = <-done:
	case <-time.After(testTimeout):
		t.Fatal("kernel sink did not finish")
	}
	return float64(n) * 8 / time.Since(t0).Seconds() / 1e9
}
