package usock

// Raw writes. A program that writes to its NUSE fd past the shim (a raw
// syscall(SYS_write), io_uring, a static helper) puts its bytes into the
// socketpair, where the daemon finds only the shim's junk (the fill that
// makes the fd poll unwritable). Those bytes cannot be carried: the shim's
// ring holds the program's other bytes, and nothing says which came first.
// So the daemon resets the connection, loudly, rather than lose them
// silently: the peer gets an RST (not a FIN after a short stream), the
// program ECONNRESET on its next call, the log and the stats say why.
//
// The shim counts its junk in Sock.FillBytes before it writes it, so the
// junk at the daemon's end (drained, plus queued) never exceeds that count;
// any excess is the program's own.

import (
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/shim/abi"
)

// rawQueued returns how many bytes at the daemon's end of so's pair the
// shim did not write (0 if none or unknown). The queue is read before the
// count: junk queued at that moment was counted before it was written.
func (s *Session) rawQueued(so *sock) uint64 {
	q, err := unix.IoctlGetInt(so.pair, unix.SIOCINQ)
	if err != nil || q <= 0 {
		return 0
	}
	filled := atomic.LoadUint64(&s.a.Sock(so.slot).FillBytes)
	if so.drained+uint64(q) <= filled {
		return 0
	}
	return so.drained + uint64(q) - filled
}

// rawRead reports whether a readiness byte the daemon queued in the
// program's end was read past the shim: the shim takes sig down before it
// takes the bytes, so none queued while sig counts some means another
// reader (a raw read(2) that got the byte as data). SIOCOUTQ of a unix
// socket counts buffer memory, not bytes: only "none" is exact. Called with
// mu held (no byte of ours in flight).
//
// On a direct socket the peer's program writes readiness bytes too, each
// counted before it is written (shim/wake.h), and the reader may take our
// byte for one of those still in flight: the test then holds for an
// instant. So there it must hold, with the same count, for rawReadHold.
func (s *Session) rawRead(so *sock) bool {
	sig := atomic.LoadUint32(&s.a.Sock(so.slot).Sig)
	if sig == abi.SigNone {
		so.rawSince = time.Time{}
		return false
	}
	q, err := unix.IoctlGetInt(so.pair, unix.SIOCOUTQ)
	if err != nil || q != 0 || atomic.LoadUint32(&s.a.Sock(so.slot).Sig) != sig {
		so.rawSince = time.Time{}
		return false
	}
	if !so.direct {
		return true
	}
	now := time.Now()
	if so.rawSince.IsZero() || so.rawSig != sig {
		so.rawSince, so.rawSig = now, sig
		return false
	}
	return now.Sub(so.rawSince) >= rawReadHold
}

// rawReadHold is how long a direct socket's raw-read test must hold: far
// beyond a writer's count-to-write gap, short against a program that reads
// its fd past the shim.
const rawReadHold = time.Second

// rawReset resets so because n bytes came past the shim (n == 0: a
// readiness byte was read past it). Called with mu held.
func (s *Session) rawReset(so *sock, n uint64) {
	if so.state&abi.SSRaw != 0 {
		return
	}
	if n == 0 {
		s.logf("socket %d (%v -> %v): its fd was read past the preload (a raw syscall or io_uring), "+
			"which got a readiness byte as data; the connection is reset", so.slot, so.local, so.remote)
	} else {
		s.logf("socket %d (%v -> %v): %d bytes were written to its fd past the preload "+
			"(a raw syscall or io_uring); NUSE cannot carry them in order, so the connection is reset",
			so.slot, so.local, so.remote, n)
	}
	so.es.Abort()
	so.state |= abi.SSRaw | abi.SSReset | abi.SSWrDead | abi.SSError
	so.soErr = int32(syscall.ECONNRESET)
}
