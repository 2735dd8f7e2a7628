package e2e

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 11 case 2, listeners: a listening socket handed to another program
// image or process is shared by everyone who holds its fd, as in Linux.
// Before, the new holder got the raw channel (nginx's upgraded master
// served nothing once the old one quit).

// nginx's binary upgrade: USR2 makes the master fork and exec a new master
// that inherits the listeners; QUIT ends the old one; the new one serves.
func TestConformNginxUpgrade(t *testing.T) {
	nginx := requireTool(t, "nginx")
	realProgram(t, 18600, "", []string{"nginx"}, func(t *testing.T, ns *netns, rules string, port int) error {
		www := filepath.Join(ns.dir, "www")
		os.Mkdir(www, 0o755)
		want := writeRandomFile(t, filepath.Join(www, "big.bin"), 4<<20)
		conf := filepath.Join(ns.dir, "nginx.conf")
		pidf := filepath.Join(ns.dir, "nginx.pid")
		// Only a daemon master can be upgraded (nginx ignores USR2 while
		// its parent is the one it started with).
		os.WriteFile(conf, []byte(fmt.Sprintf(`daemon on;
user root;
worker_processes 2;
pid %[1]s;
error_log %[2]s/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[2]s;
	proxy_temp_path %[2]s;
	fastcgi_temp_path %[2]s;
	uwsgi_temp_path %[2]s;
	scgi_temp_path %[2]s;
	server { listen 127.0.0.1:%[3]d; root %[4]s; }
}
`, pidf, ns.dir, port, www)), 0o644)
		pidOf := func(f string) int {
			b, _ := os.ReadFile(f)
			n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return n
		}
		// The masters leave our process group (nginx's own group, their
		// workers in it): end them by their pids, whatever happens.
		t.Cleanup(func() { stopPids(pidOf(pidf+".oldbin"), pidOf(pidf)) })
		// nginx execs itself by the path it was started with.
		if out, err := ns.run(20*time.Second, ns.under(rules, nginx, "-c", conf)...); err != nil {
			return fmt.Errorf("nginx: %v %s", err, out)
		}
		fetch := func() error {
			out, err := ns.run(20*time.Second, ns.under(rules, "curl", "-sf", "--max-time", "10", "-o",
				filepath.Join(ns.dir, "got"), fmt.Sprintf("http://127.0.0.1:%d/big.bin", port))...)
			if err != nil {
				return fmt.Errorf("curl: %v %s", err, out)
			}
			b, _ := os.ReadFile(filepath.Join(ns.dir, "got"))
			if sha256.Sum256(b) != want {
				return fmt.Errorf("curl got %d bytes, not the file", len(b))
			}
			return nil
		}
		errlog := func() string { b, _ := os.ReadFile(filepath.Join(ns.dir, "error.log")); return string(b) }
		deadline := time.Now().Add(20 * time.Second)
		for pidOf(pidf) == 0 || fetch() != nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("nginx did not serve:\n%s", errlog())
			}
			time.Sleep(100 * time.Millisecond)
		}
		oldPid := pidOf(pidf)
		if err := syscall.Kill(oldPid, syscall.SIGUSR2); err != nil {
			return err
		}
		deadline = time.Now().Add(20 * time.Second)
		for pidOf(pidf+".oldbin") != oldPid || pidOf(pidf) == 0 || pidOf(pidf) == oldPid {
			if time.Now().After(deadline) {
				return fmt.Errorf("no new master after USR2:\n%s", errlog())
			}
			time.Sleep(100 * time.Millisecond)
		}
		newPid := pidOf(pidf)
		for i := 0; i < 3; i++ {
			if err := fetch(); err != nil {
				return fmt.Errorf("with both masters: %v\n%s", err, errlog())
			}
		}
		if err := syscall.Kill(oldPid, syscall.SIGQUIT); err != nil {
			return err
		}
		deadline = time.Now().Add(20 * time.Second)
		for syscall.Kill(oldPid, 0) == nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("the old master did not quit")
			}
			time.Sleep(50 * time.Millisecond)
		}
		for i := 0; i < 5; i++ {
			if err := fetch(); err != nil {
				return fmt.Errorf("after the old master quit: %v\n%s", err, errlog())
			}
		}
		if rules != "" {
			listening := 0
			for _, s := range ns.stats().Sessions {
				for _, so := range s.Sockets {
					if int(s.Pid) == newPid && so.State == "listen" {
						listening++
					}
				}
			}
			if listening == 0 {
				return fmt.Errorf("the new master (pid %d) holds no NUSE listener", newPid)
			}
		}
		return nil
	})
}

// stopPids ends daemons a test started that left its process group, each
// with the process group it leads (its workers), politely first. A pid of
// 0 (no pid file) is skipped.
func stopPids(pids ...int) {
	for _, p := range pids {
		if p > 0 {
			_ = syscall.Kill(-p, syscall.SIGTERM)
			_ = syscall.Kill(p, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range pids {
		if p <= 0 {
			continue
		}
		for syscall.Kill(p, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		_ = syscall.Kill(-p, syscall.SIGKILL)
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// A supervisor hands its listener to a worker program with subprocess
// pass_fds (CPython spawns it with vfork and exec) and closes its own copy;
// the worker accepts.
func TestConformPassFdsListener(t *testing.T) {
	requireTool(t, "python3")
	realProgram(t, 18610, "", []string{"python3"}, func(t *testing.T, ns *netns, rules string, port int) error {
		srv, err := ns.startServer(rules, "python3", "-c", fmt.Sprintf(`
import socket, subprocess, sys
l = socket.socket()
l.bind(("127.0.0.1", %d))
l.listen(8)
worker = """
import socket, sys
l = socket.socket(fileno=int(sys.argv[1]))
for i in range(3):
    c, _ = l.accept()
    c.sendall(b"worker: " + c.recv(100))
    c.close()
"""
w = subprocess.Popen([sys.executable, "-c", worker, str(l.fileno())], pass_fds=[l.fileno()])
l.close()
print("listening", flush=True)
sys.exit(w.wait())
`, port))
		if err != nil {
			return err
		}
		for i := 0; i < 3; i++ {
			out, err := ns.run(20*time.Second, ns.under(rules, "python3", "-c", lineClient(port))...)
			if err != nil || !strings.Contains(out, "reply: worker: world") {
				return fmt.Errorf("client %d: %v %s\nserver: %s", i, err, out, srv.output())
			}
		}
		select {
		case <-srv.done:
			if srv.err != nil {
				return fmt.Errorf("server: %v\n%s", srv.err, srv.output())
			}
		case <-time.After(20 * time.Second):
			return fmt.Errorf("the worker did not finish:\n%s", srv.output())
		}
		return nil
	})
}

// A listener shared by two sessions, one of which never accepts: its
// readiness bytes must not keep the other's level-triggered poller
// spinning on EAGAIN once the queue is empty (Linux: no readiness then).
func TestConformSharedListenerNoSpin(t *testing.T) {
	requireTool(t, "python3")
	realProgram(t, 18620, "", []string{"python3"}, func(t *testing.T, ns *netns, rules string, port int) error {
		srv, err := ns.startServer(rules, "python3", "-c", fmt.Sprintf(`
import socket, subprocess, sys
l = socket.socket()
l.bind(("127.0.0.1", %d))
l.listen(8)
worker = """
import selectors, socket, sys, time
l = socket.socket(fileno=int(sys.argv[1]))
l.setblocking(False)
sel = selectors.PollSelector()
sel.register(l, selectors.EVENT_READ)
print("ready", flush=True)
got = spins = 0
end = None
while end is None or time.time() < end:
    if not sel.select(timeout=0.2):
        continue
    try:
        c, _ = l.accept()
    except BlockingIOError:
        spins += 1
        continue
    got += 1
    c.setblocking(True)
    c.sendall(b"worker: " + c.recv(100))
    c.close()
    end = time.time() + 1.0
print("accepted", got, "spins", spins, flush=True)
"""
w = subprocess.Popen([sys.executable, "-c", worker, str(l.fileno())], pass_fds=[l.fileno()],
                     stdout=subprocess.PIPE, text=True)
assert w.stdout.readline().strip() == "ready"
print("listening", flush=True)
print(w.communicate()[0].strip(), flush=True)  # the parent keeps l and never accepts
`, port))
		if err != nil {
			return err
		}
		out, err := ns.run(20*time.Second, ns.under(rules, "python3", "-c", lineClient(port))...)
		if err != nil || !strings.Contains(out, "reply: worker: world") {
			return fmt.Errorf("client: %v %s\nserver: %s", err, out, srv.output())
		}
		select {
		case <-srv.done:
		case <-time.After(20 * time.Second):
			return fmt.Errorf("the worker did not finish:\n%s", srv.output())
		}
		var got, spins int
		if _, err := fmt.Sscanf(srv.output()[strings.Index(srv.output(), "accepted"):], "accepted %d spins %d", &got, &spins); err != nil {
			return fmt.Errorf("server output: %v\n%s", err, srv.output())
		}
		t.Logf("accepted %d, woken for nothing %d times", got, spins)
		if got != 1 || spins > 5 {
			return fmt.Errorf("accepted %d, and the poller woke %d times with nothing to accept", got, spins)
		}
		return nil
	})
}
