package arena

import (
	"sync/atomic"

	"github.com/nuse-project/nuse/internal/futex"
)

// Doorbell wakes the daemon's worker for this arena if it sleeps.
func (a *Arena) Doorbell() {
	h := a.hdr
	atomic.AddUint32(&h.DSeq, 1)
	if atomic.LoadUint32(&h.DSleeping) != 0 {
		futex.Wake(&h.DSeq, 1)
	}
}
