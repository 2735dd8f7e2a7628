//go:build linux && !amd64

package tap

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/rawfile"

	"github.com/nuse-project/nuse/internal/futex"
)

// pollKick is rawfile.BlockingPoll, then the kick from Go (see
// kick_amd64.go): here the kick comes only once this thread has a P.
func pollKick(fds *rawfile.PollEvent, nfds int, word *uint32) (int, unix.Errno) {
	n, e := rawfile.BlockingPoll(fds, nfds, nil)
	if e == 0 && fds.Revents != 0 {
		atomic.AddUint32(word, 1)
		futex.Wake(word, 1<<30)
	}
	return n, e
}
