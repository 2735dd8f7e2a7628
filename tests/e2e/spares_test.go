package e2e

import (
	"strings"
	"testing"
	"time"
)

// Sockets born and accepted on spare pairs (shim/spare.h, PROTOCOL.md
// "Spare pairs"), with a real program: python's sockets through NUSE, many
// connections each way. The script checks what the program can see: the
// pool's ends are sockets at high numbers (3/8 to 1/2 of the fd limit) and
// a birth or an accept takes one; accept still returns the lowest free fd
// and the peer's address; a fork child starts without the parent's spares
// and makes its own; a closerange sweep leaves them (the connections go on);
// a dup2 onto one takes the number from the pool and nothing is written
// into the program's file; an exec starts with none.
func TestSparePairs(t *testing.T) {
	requireRoot(t)
	requireTool(t, "python3")
	ns := newNetns(t)
	ns.startDaemon("--netdev", "none")
	for _, asan := range []bool{false, true} {
		argv := ns.nuseRun("tcp 127.0.0.1", "python3", "-c", sparesScript, "first")
		if asan { // the sanitizer build of the shim (the spares' C)
			requireASanShim(t)
			argv = append(argv[:6], append([]string{"--asan"}, argv[6:]...)...)
		}
		out, err := ns.run(2*time.Minute, argv...)
		t.Logf("script (asan %v):\n%s", asan, out)
		for _, want := range []string{"pool ok", "used ok", "emfile ok", "queued ok", "child starts with 0", "child ok", "child exit 0",
			"swept ok", "dup2 ok", "junk 0", "exec starts with 0", "exec ok"} {
			if err != nil || !strings.Contains(out, want+"\n") {
				t.Fatalf("asan %v: want %q: %v", asan, want, err)
			}
		}
	}
}

const sparesScript = `
import errno, os, resource, socket, stat, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
LO, HI = 4096 * 3 // 8, 4096 // 2
def spares():
    n = []
    for f in os.listdir("/proc/self/fd"):
        fd = int(f)
        try:
            if LO <= fd < HI and stat.S_ISSOCK(os.fstat(fd).st_mode):
                n.append(fd)
        except OSError:
            pass
    return n
phase = sys.argv[1]
if phase == "exec":
    print("exec starts with", len(spares()), flush=True)
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 18591))
l.listen(64)
def rounds(tag, n):
    for i in range(n):
        c = socket.create_connection(("127.0.0.1", 18591))
        probe = os.open("/dev/null", os.O_RDONLY)
        os.close(probe)
        a, peer = l.accept()
        assert a.fileno() == probe, ("accept gave", a.fileno(), "lowest free", probe)
        assert peer == c.getsockname(), (peer, c.getsockname())
        msg = b"%s %d" % (tag, i)
        c.sendall(msg)
        assert a.recv(100) == msg
        a.sendall(msg[::-1])
        assert c.recv(100) == msg[::-1]
        a.close()
        c.close()
if phase == "exec":
    rounds(b"exec", 20)
    print("exec ok", flush=True)
    sys.exit(0)
rounds(b"parent", 30)
s0 = len(spares())
print("pool", "ok" if s0 > 0 else "EMPTY", flush=True)
c = socket.create_connection(("127.0.0.1", 18591))
s1 = len(spares())
a, _ = l.accept()
s2 = len(spares())
print("used", "ok" if s0 >= 2 and s1 == s0 - 1 and s2 == s1 - 1 else "NOT %d %d %d" % (s0, s1, s2), flush=True)
a.close()
c.close()
# Out of fds: accept fails with EMFILE, and the connection stays queued.
rounds(b"refill", 3)
c = socket.create_connection(("127.0.0.1", 18591))
had = len(spares())
hog = []
try:
    while True:
        hog.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    assert e.errno == errno.EMFILE, e
try:
    l.accept()
    print("emfile NOT", flush=True)
except OSError as e:
    print("emfile", "ok" if e.errno == errno.EMFILE and had > 0 else "NOT %d %d" % (e.errno, had), flush=True)
os.close(hog.pop())
l.settimeout(10) # a lost connection fails here, not at the test's timeout
a, _ = l.accept()
l.settimeout(None)
for fd in hog:
    os.close(fd)
c.sendall(b"queued")
assert a.recv(100) == b"queued"
a.close()
c.close()
print("queued ok", flush=True)
pid = os.fork()
if pid == 0:
    print("child starts with", len(spares()), flush=True)
    rounds(b"child", 30)
    print("child", "ok" if spares() else "NO POOL", flush=True)
    os._exit(0)
_, st = os.waitpid(pid, 0)
print("child exit", st, flush=True)
os.closerange(3, l.fileno())
os.closerange(l.fileno() + 1, 4096)
rounds(b"swept", 30)
print("swept", "ok" if spares() else "LOST", flush=True)
j0, j1 = socket.socketpair()
taken = spares()
for fd in taken:
    os.dup2(j0.fileno(), fd)
rounds(b"dup2", 40)
print("dup2 ok", flush=True)
j1.setblocking(False)
try:
    junk = len(j1.recv(4096))
except BlockingIOError:
    junk = 0
print("junk", junk, flush=True)
for fd in taken:
    os.close(fd)
l.close()
script = open("/proc/self/cmdline").read().split("\0")[2]
os.execv(sys.executable, [sys.executable, "-c", script, "exec"])
`
