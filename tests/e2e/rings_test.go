package e2e

import (
	"fmt"
	"testing"
	"time"
)

// ringClient has echoserver.py echo five 600 kB lines (too large for a
// rewind to keep them in a 1 MiB ring's first pages: they cycle through
// all of it), waits 2 s, has one more line echoed, and stays connected
// without a word.
const ringClient = `
import socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = c.makefile("rb")
def echo(line):
    c.sendall(line)
    if f.readline() != b"echo: " + line:
        sys.exit("echo %r came back different" % line[:10])
for i in range(5):
    echo(b"%d " % i + b"x" * 600000 + b"\n")
time.sleep(2)
echo(b"after the pause\n")
print("idle", flush=True)
time.sleep(5)
`

// An idle connection's rings keep no more pages than it uses, as a kernel
// socket's buffers: 3 MB each way through 1 MiB rings, then a pause, in
// which the daemon gives back the rx rings' pages and asks the shims to
// give back the tx rings' at their next write. Without that, each of the
// two sessions would hold both rings, 2 MiB.
func TestRingPagesGoBack(t *testing.T) {
	requireRoot(t)
	requireTool(t, "python3")
	ns := newNetns(t)
	ns.startDaemon("--ring", "1048576")
	rules := "tcp 127.0.0.0/8"
	port := 17360
	if _, err := ns.startServer(rules, "python3", "-u", testdata("echoserver.py"), "127.0.0.1", fmt.Sprint(port)); err != nil {
		t.Fatal(err)
	}
	cli := ns.start(ns.nuseRun(rules, "python3", "-c", ringClient, fmt.Sprint(port))...)
	ns.waitOutput(cli, "the client's bursts", "idle", time.Minute)
	// The last line's rx pages go on the daemon's next idle sweeps (every
	// half second).
	time.Sleep(1500 * time.Millisecond)
	sessions := sessionsOf(ns.stats(), "python3")
	if len(sessions) != 2 {
		t.Fatalf("%d python3 sessions, want the server's and the client's", len(sessions))
	}
	for _, s := range sessions {
		t.Logf("session %d (pid %d): %d sockets, sent %d B, received %d B, shared memory %d KiB", s.ID, s.Pid, len(s.Sockets), s.TxBytes, s.RxBytes, s.Shm>>10)
		if s.TxBytes < 3e6 || s.RxBytes < 3e6 {
			t.Errorf("session %d moved %d/%d bytes, not 3 MB each way", s.ID, s.TxBytes, s.RxBytes)
		}
		if s.Shm == 0 || s.Shm > 256<<10 {
			t.Errorf("session %d holds %d KiB of shared memory", s.ID, s.Shm>>10)
		}
	}
}
