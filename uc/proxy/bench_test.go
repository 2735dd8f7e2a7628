package proxy

import (
	"runtime"
	"testing"
	"time"

	"github.com/nuse-project/nuse/uc"
)

// pingPong measures WRITE WITH IMMEDIATE round trips between a and b; b
// answers each write with its own.
func pingPong(b *testing.B, a, n end) {
	var wc [1]uc.WC
	poll := func(q uc.QP) {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			if k, _ := q.PollRecv(wc[:]); k == 1 {
				q.PostRecv(wc[0].WRID)
				return
			}
			runtime.Gosched() // the soft backend's goroutines need the Ps too
		}
		b.Fatal("lost")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < b.N; i++ {
			poll(n.qp)
			n.qp.PostWrite(&uc.WriteWR{Local: n.mr, Length: 64, RemoteAddr: a.mr.Addr(), RKey: a.mr.RKey(), HasImm: true})
			n.qp.PollSend(wc[:])
		}
	}()
	var sc [16]uc.WC
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.qp.PostWrite(&uc.WriteWR{Local: a.mr, Length: 64, RemoteAddr: n.mr.Addr(), RKey: n.mr.RKey(), HasImm: true})
		poll(a.qp)
		a.qp.PollSend(sc[:])
	}
	<-done
}

// BenchmarkPingPongNative is the soft backend on both sides (loopback).
func BenchmarkPingPongNative(b *testing.B) {
	needRoot(b)
	a := mkEnd(b, "soft", uc.Options{LocalIP: "127.0.0.1", Port: 24800})
	n := mkEnd(b, "soft", uc.Options{LocalIP: "127.0.0.2", Port: 24800})
	connectPair(b, a, n)
	pingPong(b, a, n)
}

// BenchmarkPingPongViaDaemon puts a behind an in-process proxy server.
func BenchmarkPingPongViaDaemon(b *testing.B) {
	needRoot(b)
	path := startDaemon(b, -1)
	a := mkEnd(b, "daemon", uc.Options{Daemon: path, Via: "soft", LocalIP: "127.0.0.1", Port: 24801})
	n := mkEnd(b, "soft", uc.Options{LocalIP: "127.0.0.2", Port: 24801})
	connectPair(b, a, n)
	pingPong(b, a, n)
}
