package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nuse-project/nuse/daemon/usock"
)

// Issue 11, "What must be shown": real programs for the cases they stand
// for. Each runs twice, in a namespace of its own each time: over the
// kernel, where it must pass, and under NUSE (claimed loopback, every
// process of it under nuse run). A program that fails under NUSE today is
// marked with the issue 11 case that breaks it: the NUSE run must still
// fail and is then skipped, loudly ("KNOWN FAILURE ..."); once it passes the
// test fails until the mark is removed.

// appCheck runs the program in ns (under NUSE when rules is set) on port
// and says what went wrong.
type appCheck func(t *testing.T, ns *netns, rules string, port int) error

func realProgram(t *testing.T, port int, knownFailure string, comms []string, check appCheck) {
	requireRoot(t)
	for i, mode := range []struct{ name, rules string }{{"kernel", ""}, {"nuse", loopRules}} {
		t.Run(mode.name, func(t *testing.T) {
			ns := newNetns(t)
			if mode.rules != "" {
				ns.startDaemon()
			}
			err := check(t, ns, mode.rules, port+i)
			if err == nil && mode.rules != "" {
				st := ns.stats()
				for _, c := range comms {
					if len(sessionsOf(st, c)) == 0 {
						err = fmt.Errorf("%s opened no NUSE session: the test did not go through NUSE", c)
					}
				}
			}
			switch {
			case mode.rules == "" && err != nil:
				t.Fatalf("over the kernel (the test itself is wrong): %v", err)
			case mode.rules == "":
			case knownFailure != "" && err != nil:
				t.Skipf("KNOWN FAILURE %s\n    (fails under NUSE as expected: %v)", knownFailure, err)
			case knownFailure != "":
				t.Fatalf("marked KNOWN FAILURE %s, but it passes under NUSE now: remove the mark", knownFailure)
			case err != nil:
				t.Fatalf("under NUSE: %v", err)
			}
		})
	}
}

// under wraps argv in nuse run when rules is set.
func (ns *netns) under(rules string, argv ...string) []string {
	if rules == "" {
		return argv
	}
	return ns.nuseRun(rules, argv...)
}

// startServer starts a server and waits for "listening" in its output.
func (ns *netns) startServer(rules string, argv ...string) (*proc, error) {
	p := ns.start(ns.under(rules, argv...)...)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.output(), "listening") {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited: %v\n%s", argv[0], p.err, p.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not listen in 20 s:\n%s", argv[0], p.output())
		}
	}
	return p, nil
}

// wantRelayed checks, under NUSE, that at least n sockets were handed to
// the daemon's relay (issue 11 cases 2 and 3: a socket passed to code the
// shim does not see): the sessions' sockets in state "relayed".
func (ns *netns) wantRelayed(rules string, n int) error {
	if rules == "" {
		return nil
	}
	st := ns.stats()
	got := 0
	for _, ss := range [][]usock.SessionStats{st.Sessions, st.Ended} {
		for _, s := range ss {
			for _, so := range s.Sockets {
				if so.State == "relayed" {
					got++
				}
			}
		}
	}
	if got < n {
		return fmt.Errorf("%d sockets relayed, want at least %d: the program did not hand them on through NUSE", got, n)
	}
	return nil
}

// lineClient is a python3 -c program that sends "world\n" to
// 127.0.0.1:port and prints "reply: " and all it reads until EOF.
func lineClient(port int) string {
	return fmt.Sprintf(`import socket
s = socket.create_connection(("127.0.0.1", %d), timeout=5)
s.sendall(b"world\n")
b = b""
while True:
    d = s.recv(100)
    if not d: break
    b += d
print("reply:", b.decode(errors="replace").strip())`, port)
}

func testdata(name string) string { return filepath.Join(repo, "tests", "e2e", "testdata", name) }

// Issue 11 case 2: Node's cluster in round-robin mode passes every accepted
// connection from the primary to a worker over SCM_RIGHTS.
func TestConformNodeCluster(t *testing.T) {
	requireTool(t, "node")
	requireTool(t, "curl")
	realProgram(t, 18110, "", // issue 11 case 2: the primary passes accepted sockets to the workers over SCM_RIGHTS
		[]string{"node", "curl"}, func(t *testing.T, ns *netns, rules string, port int) error {
			srv, err := ns.startServer(rules, "node", testdata("cluster.js"), "127.0.0.1", fmt.Sprint(port))
			if err != nil {
				return err
			}
			argv := []string{"curl", "-sS", "--max-time", "3"}
			for i := 0; i < 10; i++ {
				argv = append(argv, fmt.Sprintf("http://127.0.0.1:%d/", port))
			}
			out, err := ns.run(time.Minute, ns.under(rules, argv...)...)
			workers := regexp.MustCompile(`(?m)^worker [0-9]+$`).FindAllString(out, -1)
			t.Logf("curl: %d answers: %q", len(workers), workers)
			if err != nil || len(workers) != 10 {
				return fmt.Errorf("10 requests, %d answered (%v):\n%s\nserver:\n%s", len(workers), err, out, srv.output())
			}
			seen := map[string]bool{}
			for _, w := range workers {
				seen[w] = true
			}
			if len(seen) != 2 {
				return fmt.Errorf("round-robin served by %d workers, want 2: %q", len(seen), workers)
			}
			return ns.wantRelayed(rules, 10)
		})
}

// Issue 11 case 1: an Asio program (async_accept, async_connect) whose
// sockets are registered with epoll right after socket().
func TestConformAsio(t *testing.T) {
	gxx := requireTool(t, "g++")
	if _, err := os.Stat("/usr/include/asio.hpp"); err != nil {
		t.Fatal("libasio-dev not installed (.ci/run installs it)")
	}
	prog := filepath.Join(t.TempDir(), "asio_echo")
	if out, err := exec.Command(gxx, "-std=c++17", "-O1", "-pthread", "-o", prog, testdata("asio_echo.cpp")).CombinedOutput(); err != nil {
		t.Fatalf("building asio_echo: %v\n%s", err, out)
	}
	realProgram(t, 18120, "", // issue 11 case 1: Asio registers each socket with epoll right after socket()
		[]string{"asio_echo"}, func(t *testing.T, ns *netns, rules string, port int) error {
			out, err := ns.run(time.Minute, ns.under(rules, prog, "127.0.0.1", fmt.Sprint(port))...)
			t.Logf("asio_echo: %s", strings.TrimSpace(out))
			if err != nil || !strings.Contains(out, "asio echo ok") {
				return fmt.Errorf("asio_echo: %v\n%s", err, out)
			}
			return nil
		})
}

// Issue 11 case 2: an inetd-style server: fork, dup2 onto stdin/stdout,
// exec a handler (sh) that knows nothing of sockets.
func TestConformInetd(t *testing.T) {
	requireTool(t, "python3")
	realProgram(t, 18130, "", // issue 11 case 2: the exec'd handler's stdin/stdout are the socket
		[]string{"python3"}, func(t *testing.T, ns *netns, rules string, port int) error {
			srv, err := ns.startServer(rules, "python3", "-u", testdata("minetd.py"), "127.0.0.1", fmt.Sprint(port))
			if err != nil {
				return err
			}
			client := lineClient(port)
			for i := 0; i < 3; i++ {
				out, err := ns.run(time.Minute, ns.under(rules, "python3", "-c", client)...)
				if err != nil || !strings.Contains(out, "reply: hello world") {
					return fmt.Errorf("connection %d: %v\n%s\nserver:\n%s", i+1, err, out, srv.output())
				}
			}
			return ns.wantRelayed(rules, 3)
		})
}

// Issue 11 case 2: a server that hands each connection to a child program
// without fork: subprocess (vfork + exec inside CPython) and posix_spawn
// (the exec happens inside glibc), the socket dup2'd onto the child's
// stdin and stdout.
func TestConformSpawnHandler(t *testing.T) {
	requireTool(t, "python3")
	realProgram(t, 18170, "", []string{"python3"}, func(t *testing.T, ns *netns, rules string, port int) error {
		srv, err := ns.startServer(rules, "python3", "-u", testdata("spawnsrv.py"), "127.0.0.1", fmt.Sprint(port))
		if err != nil {
			return err
		}
		client := lineClient(port)
		for i, how := range []string{"subprocess", "posix_spawn", "subprocess", "posix_spawn"} {
			out, err := ns.run(time.Minute, ns.under(rules, "python3", "-c", client)...)
			if want := "reply: hello world from " + how; err != nil || !strings.Contains(out, want) {
				return fmt.Errorf("connection %d: want %q: %v\n%s\nserver:\n%s", i+1, want, err, out, srv.output())
			}
		}
		return ns.wantRelayed(rules, 4)
	})
}

// Issue 11 case 3: bash's /dev/tcp, against a line echo server.
func TestConformBashDevTCP(t *testing.T) {
	requireTool(t, "python3")
	requireTool(t, "bash")
	realProgram(t, 18140, "", // issue 11 case 3: bash writes to its /dev/tcp fd through stdio
		[]string{"bash", "python3"}, func(t *testing.T, ns *netns, rules string, port int) error {
			if _, err := ns.startServer(rules, "python3", "-u", testdata("echoserver.py"), "127.0.0.1", fmt.Sprint(port)); err != nil {
				return err
			}
			script := fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%d || exit 1
echo hello >&3
read -t 5 line <&3 || { echo "read failed: $?"; exit 1; }
echo "got: $line"`, port)
			out, err := ns.run(time.Minute, ns.under(rules, "bash", "-c", script)...)
			t.Logf("bash: %s", strings.TrimSpace(out))
			if err != nil || !strings.Contains(out, "got: echo: hello") {
				return fmt.Errorf("bash /dev/tcp: %v\n%s", err, out)
			}
			return ns.wantRelayed(rules, 1)
		})
}

// Issue 11 case 3: a stdio client (fdopen, fprintf, fgets).
func TestConformStdioClient(t *testing.T) {
	requireTool(t, "python3")
	realProgram(t, 18150, "", // issue 11 case 3: stdio (fdopen + fprintf, fgets) on a NUSE socket
		[]string{"conform", "python3"}, func(t *testing.T, ns *netns, rules string, port int) error {
			if _, err := ns.startServer(rules, "python3", "-u", testdata("echoserver.py"), "127.0.0.1", fmt.Sprint(port)); err != nil {
				return err
			}
			out, err := ns.run(time.Minute, ns.under(rules, bin("conform"), "--stdio-client", "127.0.0.1", fmt.Sprint(port))...)
			t.Logf("stdio client: %s", strings.TrimSpace(out))
			if err != nil || !strings.Contains(out, "stdio-client got: echo: hello from stdio") {
				return fmt.Errorf("stdio client: %v\n%s", err, out)
			}
			return ns.wantRelayed(rules, 1)
		})
}

// Issue 11 case 11: an edge-triggered epoll server that accepts one
// connection per event, under a burst of 200 connections.
func TestConformEdgeTriggeredBurst(t *testing.T) {
	requireTool(t, "python3")
	realProgram(t, 18160, "", // issue 11 case 11: with EPOLLET each new connection is an edge
		[]string{"python3"}, func(t *testing.T, ns *netns, rules string, port int) error {
			srv, err := ns.startServer(rules, "python3", "-u", testdata("etaccept.py"), "127.0.0.1", fmt.Sprint(port))
			if err != nil {
				return err
			}
			out, err := ns.run(time.Minute, ns.under(rules, "python3", "-u", testdata("etburst.py"), "127.0.0.1", fmt.Sprint(port), "200")...)
			t.Logf("burst: %s", strings.TrimSpace(out))
			if err != nil {
				return fmt.Errorf("burst: %v\n%s\nserver:\n%s", err, out, srv.output())
			}
			return nil
		})
}
