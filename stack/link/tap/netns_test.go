package tap

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/stack"
)

// The tests that need a TAP run in network namespaces they create: a parent
// test (needs root) makes the namespaces, re-executes this test binary inside
// the first with `ip netns exec`, and removes the namespaces afterwards,
// whatever happens. The child finds the namespace names in envChild.
const envChild = "NUSE_TAP_NETNS"

// Every wait is bounded by this.
const testTimeout = 30 * time.Second

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 || !hasNetAdmin() {
		t.Skip("SKIPPED: this test creates network namespaces and TAP devices and needs root (CAP_NET_ADMIN); run `go test` as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("SKIPPED: no /dev/net/tun on this machine (%v)", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("SKIPPED: iproute2's ip is not installed")
	}
}

func run(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs the test named child inside nsCount fresh namespaces
// (nuseg-*), passing their names, and reports its output.
func inNetns(t *testing.T, child string, nsCount int, timeout time.Duration, extraEnv ...string) {
	needRoot(t)
	var b [4]byte
	rand.Read(b[:])
	var names []string
	for i := 0; i < nsCount; i++ {
		name := fmt.Sprintf("nuseg-%d-%s-%d", os.Getpid(), hex.EncodeToString(b[:]), i)
		// Cleanup is registered before creation so a half-made namespace
		// goes too.
		t.Cleanup(func() {
			out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
			if err != nil && !strings.Contains(string(out), "No such file") {
				t.Errorf("removing netns %s: %v %s", name, err, out)
			}
		})
		run(t, "ip", "netns", "add", name)
		names = append(names, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := []string{"netns", "exec", names[0], os.Args[0], "-test.run=^" + child + "$", "-test.v", "-test.count=1",
		fmt.Sprintf("-test.timeout=%s", timeout-5*time.Second)}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = append(append(os.Environ(), envChild+"="+strings.Join(names, ",")), extraEnv...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("child %s in netns %s:\n%s", child, names[0], out)
	if err != nil {
		t.Fatalf("child %s failed: %v", child, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+child) {
		t.Fatalf("child %s did not pass (skipped?)", child)
	}
}

// childNetns returns the namespace names when running as a child, and
// skips otherwise.
func childNetns(t *testing.T) []string {
	v := os.Getenv(envChild)
	if v == "" {
		t.Skip("runs only inside the namespace its parent test creates")
	}
	return strings.Split(v, ",")
}

// inOtherNetns runs f on a thread switched into the named namespace, so the
// sockets f creates live there.
func inOtherNetns(t testing.TB, name string, f func()) {
	t.Helper()
	done := make(chan struct{})
	var ferr error
	go func() {
		defer close(done)
		// The thread is never unlocked: after a failed switch back it must
		// not be reused, and exiting the goroutine then retires it.
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ferr = err
			return
		}
		defer self.Close()
		other, err := os.Open("/run/netns/" + name)
		if err != nil {
			ferr = err
			return
		}
		defer other.Close()
		if err := unix.Setns(int(other.Fd()), unix.CLONE_NEWNET); err != nil {
			ferr = err
			return
		}
		f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			ferr = err
			return
		}
		runtime.UnlockOSThread()
	}()
	<-done
	if ferr != nil {
		t.Fatal(ferr)
	}
}

// notifier turns Notify into something a test can block on, bounded.
type notifier struct{ ch chan struct{} }

func watch(so stack.Socket) *notifier {
	n := &notifier{ch: make(chan struct{}, 1)}
	so.Notify(func(stack.Events) {
		select {
		case n.ch <- struct{}{}:
		default:
		}
	})
	return n
}

func (n *notifier) wait(so stack.Socket, want stack.Events) error {
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		if ev := so.Readiness(); ev&want != 0 {
			return nil
		}
		select {
		case <-n.ch:
		case <-deadline.C:
			return fmt.Errorf("timed out waiting for events %b (have %b)", want, so.Readiness())
		}
	}
}

// readAll reads until EOF or until len(buf) bytes when stopAtFull.
func readSock(so stack.Socket, n *notifier, buf []byte, stopAtFull bool) (int, error) {
	off := 0
	for off < len(buf) || !stopAtFull {
		if off == len(buf) {
			var one [1]byte
			k, eof, err := so.Read(one[:])
			if err == syscall.EAGAIN {
				if err := n.wait(so, stack.EventIn|stack.EventErr|stack.EventHup); err != nil {
					return off, err
				}
				continue
			}
			if err != nil {
				return off, err
			}
			if eof {
				return off, nil
			}
			return off + k, fmt.Errorf("more data than expected")
		}
		k, eof, err := so.Read(buf[off:])
		if err == syscall.EAGAIN {
			if err := n.wait(so, stack.EventIn|stack.EventErr|stack.EventHup); err != nil {
				return off, err
			}
			continue
		}
		if err != nil {
			return off, err
		}
		off += k
		if eof {
			return off, nil
		}
	}
	return off, nil
}

func writeSock(so stack.Socket, n *notifier, data []byte) error {
	for off := 0; off < len(data); {
		k, err := so.Write(data[off:])
		if err == syscall.EAGAIN {
			if err := n.wait(so, stack.EventOut|stack.EventErr); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		off += k
	}
	return nil
}
