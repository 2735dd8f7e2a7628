package e2e

import (
	"strings"
	"testing"
	"time"
)

// A program's bind to port 0 on the wildcard gets the kernel's pick, as in
// Linux; NUSE's engines take ports from the same range for their own
// connections, so the kernel may pick one an engine holds (in TIME_WAIT),
// and the listen that takes the socket to NUSE failed with EADDRINUSE (a
// flaky conformance case, i07_bind_any_port0). With the range cut to two
// ports and one of them in TIME_WAIT in the engine, every such listen must
// work.
func TestBindPort0AvoidsEnginePorts(t *testing.T) {
	requireRoot(t)
	requireTool(t, "python3")
	ns := newNetns(t)
	ns.mustRun("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40001")
	ns.startDaemon("--netdev", "none") // its engine takes the same range
	out, err := ns.run(time.Minute, ns.nuseRun("tcp 127.0.0.0/8", "python3", "-c", `
import socket
l = socket.socket()
l.bind(("127.0.0.1", 18630))
l.listen(4)
c = socket.create_connection(("127.0.0.1", 18630))
a, _ = l.accept()
tw = c.getsockname()[1]
c.close()  # the client closes first: its port stays in TIME_WAIT
a.recv(1)
a.close()
got = set()
for i in range(8):
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    got.add(s.getsockname()[1])
    s.listen(4)  # NUSE's: EADDRINUSE if the engine holds the port
    s.close()
print("time-wait port", tw, "ports given", sorted(got), "listens ok", flush=True)
`)...)
	t.Logf("%s", out)
	if err != nil || !strings.Contains(out, "listens ok") {
		t.Fatalf("%v", err)
	}
	if !strings.Contains(out, "time-wait port 4000") {
		t.Fatalf("the engine's connection did not take a port from the namespace's range: the test proves nothing")
	}
}
