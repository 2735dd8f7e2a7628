package daemon

// The transport engines the daemon can run (--engine). Each package
// registers itself with stack's registry in its init.
import (
	_ "github.com/nuse-project/nuse/stack/gvisor" // gvisor: gVisor's netstack, the default
	_ "github.com/nuse-project/nuse/stack/kernel" // kernel: daemon-held kernel sockets
	_ "github.com/nuse-project/nuse/stack/shm"    // shm: same-host, shared memory between the two ends, no protocol stack
)
