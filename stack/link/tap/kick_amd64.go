//go:build linux && amd64

package tap

import (
	_ "unsafe" // go:linkname

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/rawfile"
)

// pollKick is ppoll(fds, nfds) between entersyscallblock and exitsyscall,
// as rawfile.BlockingPoll, and when fds[0] (the device) is ready it also
// adds one to *word and wakes its futex waiters (the sleeping workers)
// before exitsyscall: the thread needs a P to go on running Go code, and
// on a daemon with one P a sleeping worker holds it; woken here, the
// worker takes the packet itself (poll) instead of waiting for Go's
// monitor to hand the P to this reader. kick_amd64.s.
//
//go:noescape
func pollKick(fds *rawfile.PollEvent, nfds int, word *uint32) (n int, errno unix.Errno)

// The runtime lets these be linked to (gVisor's rawfile does the same).

//go:linkname entersyscallblock runtime.entersyscallblock
func entersyscallblock()

//go:linkname exitsyscall runtime.exitsyscall
func exitsyscall()

// Nosplit: nothing may preempt or move the stack between the two.

//lint:ignore U1000 called from kick_amd64.s
//go:nosplit
func callEntersyscallblock() { entersyscallblock() }

//lint:ignore U1000 called from kick_amd64.s
//go:nosplit
func callExitsyscall() { exitsyscall() }
