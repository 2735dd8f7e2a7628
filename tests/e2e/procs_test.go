package e2e

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestDaemonThreads: the daemon says how many threads run its Go code. By
// default a machine of up to 4 CPUs gets one per worker (--procs 0), a
// larger one Go's own; a daemon running the kernel engine gets one more;
// --procs and --workers set it.
func TestDaemonThreads(t *testing.T) {
	requireRoot(t)
	want := runtime.NumCPU()
	if want <= 4 {
		want = 1
	}
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("SKIPPED LOUDLY: $GOMAXPROCS is set in the test's environment; the default is the user's then")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, fmt.Sprintf("1 worker(s) on %d thread(s)", want)},
		{[]string{"--procs", "3"}, "1 worker(s) on 3 thread(s)"},
		{[]string{"--workers", "2"}, fmt.Sprintf("2 worker(s) on %d thread(s)", max(want, 2))},
		// The kernel engine's epoll waiter gets a thread of its own.
		{[]string{"--engine", "kernel"}, fmt.Sprintf("1 worker(s) on %d thread(s)", max(want, 2))},
		{[]string{"--engines", "kernel"}, fmt.Sprintf("1 worker(s) on %d thread(s)", max(want, 2))},
	} {
		ns := newNetns(t)
		p := ns.startDaemon(append([]string{"--netdev", "none"}, c.args...)...)
		ns.waitFor("the ready line", 10*time.Second, func() bool { return strings.Contains(p.output(), "nused ready") })
		if !strings.Contains(p.output(), c.want) {
			t.Errorf("daemon %v: want %q in its log:\n%s", c.args, c.want, p.output())
		}
		p.stop(t)
	}
}
