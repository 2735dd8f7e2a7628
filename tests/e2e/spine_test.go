package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/daemon/usock"
	"github.com/nuse-project/nuse/stack"
)

const subnetRules = "tcp 10.77.0.0/16; tcp [fd77::]/64"

// writeRandomFile makes a file of n random bytes and returns its sha256.
func writeRandomFile(t *testing.T, path string, n int) [32]byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// startHTTP serves dir with python's http.server on addr:port, under NUSE
// when rules is not empty, and waits until it listens.
func (ns *netns) startHTTP(rules, addr string, port int, dir string) *proc {
	ns.t.Helper()
	argv := []string{"python3", "-u", "-m", "http.server", "--bind", addr, "--directory", dir, fmt.Sprint(port)}
	if rules != "" {
		argv = ns.nuseRun(rules, argv...)
	}
	p := ns.start(argv...)
	ns.waitFor("http.server on "+addr, 20*time.Second, func() bool {
		select {
		case <-p.done:
			ns.t.Fatalf("http.server exited: %v\n%s", p.err, p.output())
		default:
		}
		// curl from the kernel side sees a NUSE server through the TAP,
		// and a kernel server directly.
		out, err := ns.run(5*time.Second, "curl", "-sS", "-o", "/dev/null", "--max-time", "2", fmt.Sprintf("http://%s:%d/", addr, port))
		_ = out
		return err == nil
	})
	return p
}

func totalRx(ss []usock.SessionStats) (n uint64) {
	for _, s := range ss {
		n += s.RxBytes
	}
	return
}

func totalTx(ss []usock.SessionStats) (n uint64) {
	for _, s := range ss {
		n += s.TxBytes
	}
	return
}

// Issue 2, tests 1 and 2: an unmodified python http.server and curl move a
// 20 MB file through NUSE, both NUSE↔NUSE and across the TAP to and from the
// kernel.
func TestHTTPFileThroughNUSE(t *testing.T) {
	requireRoot(t)
	requireTool(t, "curl")
	requireTool(t, "python3")
	ns := newNetns(t)
	ns.startDaemon()
	www := filepath.Join(ns.dir, "www")
	os.Mkdir(www, 0o755)
	const size = 20 << 20
	want := writeRandomFile(t, filepath.Join(www, "big.bin"), size)
	ns.startHTTP(subnetRules, "10.77.0.2", 8080, www)

	t.Run("nuse-curl-to-nuse-server", func(t *testing.T) {
		dst := filepath.Join(ns.dir, "got1.bin")
		out, err := ns.run(3*time.Minute, ns.nuseRun(subnetRules, "curl", "-sS", "--fail", "-o", dst, "http://10.77.0.2:8080/big.bin")...)
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		if fileSum(t, dst) != want {
			t.Fatal("sha256 of the fetched file differs")
		}
		st := ns.stats()
		curl := sessionsOf(st, "curl")
		if len(curl) != 1 || totalRx(curl) < size {
			t.Fatalf("stats do not show curl's %d bytes on NUSE: %+v", size, curl)
		}
		py := sessionsOf(st, "python3")
		if totalTx(py) < size {
			t.Fatalf("stats do not show python's %d bytes on NUSE: %+v", size, py)
		}
		t.Logf("nuse stats: curl received %d bytes, python3 sent %d bytes through NUSE", totalRx(curl), totalTx(py))
		// The engine's own TCP counters (`nuse stats --json`) saw the
		// connection from both ends.
		var tcp *stack.TCPStats
		for _, e := range ns.statsJSON().Engines {
			if e.Name == "gvisor" {
				tcp = e.TCP
			}
		}
		if tcp == nil || tcp.ActiveOpens < 1 || tcp.PassiveOpens < 1 || tcp.SegsIn < size/65536 {
			t.Fatalf("gvisor's TCP counters %+v: want the connection opened both ways and its segments", tcp)
		}
	})

	t.Run("kernel-curl-to-nuse-server", func(t *testing.T) {
		before := totalTx(sessionsOf(ns.stats(), "python3"))
		dst := filepath.Join(ns.dir, "got2.bin")
		out, err := ns.run(3*time.Minute, "curl", "-sS", "--fail", "-o", dst, "http://10.77.0.2:8080/big.bin")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		if fileSum(t, dst) != want {
			t.Fatal("sha256 of the fetched file differs")
		}
		if after := totalTx(sessionsOf(ns.stats(), "python3")); after-before < size {
			t.Fatalf("python3 sent %d bytes through NUSE for this fetch, want >= %d", after-before, size)
		}
	})

	t.Run("nuse-curl-to-kernel-server", func(t *testing.T) {
		ns.startHTTP("", "10.77.0.1", 8081, www) // the kernel's side of nuse0
		before := totalRx(sessionsOf(ns.stats(), "curl"))
		dst := filepath.Join(ns.dir, "got3.bin")
		out, err := ns.run(3*time.Minute, ns.nuseRun(subnetRules, "curl", "-sS", "--fail", "-o", dst, "http://10.77.0.1:8081/big.bin")...)
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		if fileSum(t, dst) != want {
			t.Fatal("sha256 of the fetched file differs")
		}
		if after := totalRx(sessionsOf(ns.stats(), "curl")); after-before < size {
			t.Fatalf("curl received %d bytes through NUSE, want >= %d", after-before, size)
		}
	})
}

// Issue 2, test 3: the C semantics program, IPv4 and IPv6, under the preload
// (and its ASan build), through the TAP subnet and through claimed loopback.
func TestTCPSemantics(t *testing.T) {
	requireRoot(t)
	prog := bin("tcp_semantics")
	if _, err := os.Stat(prog); err != nil {
		t.Fatalf("%s missing: run 'make build'", prog)
	}
	ns := newNetns(t)
	ns.startDaemon()
	cases := []struct {
		name, rules string
		args        []string
		asan        bool
	}{
		{"kernel-baseline", "", []string{"-4", "127.0.0.1", "-6", "::1", "-p", "17300"}, false},
		{"nuse-subnet", subnetRules, []string{"-4", "10.77.0.2", "-6", "fd77::2", "-p", "17400"}, false},
		{"nuse-loopback", "tcp 127.0.0.0/8; tcp [::1]", []string{"-4", "127.0.0.1", "-6", "::1", "-p", "17500"}, false},
		{"nuse-subnet-asan", subnetRules, []string{"-4", "10.77.0.2", "-6", "fd77::2", "-p", "17600"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns.runProgram(t, c.rules, c.asan, " 0 failed", append([]string{prog}, c.args...)...)
		})
	}
}

// Issue 2, test 4: a preloaded program's unix sockets, pipes and DNS stay in
// the kernel.
func TestKernelPathsStayInKernel(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	ns.startDaemon()
	// ip netns exec bind-mounts /etc/netns/NAME/resolv.conf over the real one.
	etc := filepath.Join("/etc/netns", ns.name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n"), 0o644)
	dns := ns.start("python3", "-u", filepath.Join(repo, "tests/e2e/testdata/fakedns.py"), "127.0.0.1", "10.77.0.2")
	ns.waitFor("fake DNS", 10*time.Second, func() bool { return strings.Contains(dns.output(), "ready") })
	www := filepath.Join(ns.dir, "www")
	os.Mkdir(www, 0o755)
	ns.startHTTP(subnetRules, "10.77.0.2", 8080, www)
	script := filepath.Join(repo, "tests/e2e/testdata/kernelpaths.py")

	// Without any NUSE socket, no session is even opened.
	before := len(sessionsOf(ns.stats(), "python3"))
	if out, err := ns.run(time.Minute, ns.nuseRun(subnetRules, "python3", script)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if n := len(sessionsOf(ns.stats(), "python3")); n != before {
		t.Fatalf("a program with only unix sockets, pipes and DNS opened %d NUSE sessions", n-before)
	}
	// With one NUSE connection: exactly that socket is in NUSE.
	if out, err := ns.run(time.Minute, ns.nuseRun(subnetRules, "python3", script, "10.77.0.2:8080")...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var found bool
	for _, s := range sessionsOf(ns.stats(), "python3") {
		for _, so := range s.Sockets {
			if so.Remote == "10.77.0.2:8080" {
				found = true
				if len(s.Sockets) != 1 {
					t.Fatalf("the probe's session has %d NUSE sockets, want 1: %+v", len(s.Sockets), s.Sockets)
				}
			}
		}
	}
	if !found {
		t.Fatal("the probe's NUSE connection is not in the stats")
	}
}

// Issue 2, test 6: killing the daemon while a preloaded client is blocked in
// recv makes that recv fail promptly.
func TestDaemonDeathUnblocksRecv(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	d := ns.startDaemon()
	script := filepath.Join(repo, "tests/e2e/testdata/blockedrecv.py")
	srv := ns.start(ns.nuseRun(subnetRules, "python3", "-u", script, "server", "10.77.0.2", "9000")...)
	ns.waitFor("server", 20*time.Second, func() bool { return strings.Contains(srv.output(), "listening") })
	cli := ns.start(ns.nuseRun(subnetRules, "python3", "-u", script, "client", "10.77.0.2", "9000")...)
	ns.waitFor("client", 20*time.Second, func() bool { return strings.Contains(cli.output(), "connected") })
	time.Sleep(300 * time.Millisecond) // let it block in recv
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	select {
	case <-cli.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("recv still blocked 20 s after the daemon died:\n%s", cli.output())
	}
	t.Logf("client ended %.2fs after the kill: %s", time.Since(killed).Seconds(), strings.TrimSpace(cli.output()))
	if !strings.Contains(cli.output(), "recv failed: ECONNRESET") {
		t.Fatalf("recv did not fail with ECONNRESET:\n%s", cli.output())
	}
}

// A non-blocking client that polls and reads, whose daemon dies: its fd
// polls ready (the daemon's end is gone), and a read fails with ECONNRESET
// at the latest on the second try (the shim looks for the hang-up at the
// second EAGAIN in a row, not the first): it never spins on EAGAIN.
func TestDaemonDeathFailsPollingRecv(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	d := ns.startDaemon()
	script := filepath.Join(repo, "tests/e2e/testdata/blockedrecv.py")
	marker := filepath.Join(ns.dir, "daemon-killed")
	srv := ns.start(ns.nuseRun(subnetRules, "python3", "-u", script, "server", "10.77.0.2", "9003")...)
	ns.waitFor("server", 20*time.Second, func() bool { return strings.Contains(srv.output(), "listening") })
	cli := ns.start(ns.nuseRun(subnetRules, "python3", "-u", script, "pollclient", "10.77.0.2", "9003", marker)...)
	ns.waitFor("client", 20*time.Second, func() bool { return strings.Contains(cli.output(), "connected") })
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	os.WriteFile(marker, nil, 0o644)
	select {
	case <-cli.done:
	case <-time.After(40 * time.Second):
		t.Fatalf("client still running 40 s after the daemon died:\n%s", cli.output())
	}
	out := cli.output()
	t.Logf("%s", strings.TrimSpace(out))
	m := regexp.MustCompile(`recv failed: ECONNRESET after (\d+) EAGAIN`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("want recv to fail with ECONNRESET:\n%s", out)
	}
	if n, _ := strconv.Atoi(m[1]); n > 1 {
		t.Fatalf("recv said EAGAIN %d times before it failed (at most once):\n%s", n, out)
	}
}

// A preloaded epoll server whose daemon dies: accept fails and the listener
// stops polling ready, so the event loop idles instead of spinning.
func TestDaemonDeathQuietsListener(t *testing.T) {
	requireRoot(t)
	// SIGKILL: the daemon vanishes; SIGTERM: it shuts down and resets
	// every socket first (the listener then says RESET, not gone).
	for i, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			ns := newNetns(t)
			d := ns.startDaemon()
			script := filepath.Join(repo, "tests/e2e/testdata/deadlistener.py")
			marker := filepath.Join(ns.dir, "daemon-killed")
			port := fmt.Sprint(9001 + i)
			srv := ns.start(ns.nuseRun(subnetRules, "python3", "-u", script, "10.77.0.2", port, marker)...)
			ns.waitFor("server", 20*time.Second, func() bool { return strings.Contains(srv.output(), "listening") })
			// A connection first, so the listener has really served.
			if out, err := ns.run(20*time.Second, "python3", "-c", "import socket; socket.create_connection(('10.77.0.2', "+port+"), timeout=5)"); err != nil {
				t.Fatalf("connect: %v\n%s", err, out)
			}
			if err := d.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			<-d.done
			os.WriteFile(marker, nil, 0o644)
			select {
			case <-srv.done:
			case <-time.After(40 * time.Second):
				t.Fatalf("server still running 40 s after the daemon died:\n%s", srv.output())
			}
			out := srv.output()
			t.Logf("%s", strings.TrimSpace(out))
			if srv.err != nil || !strings.Contains(out, "quiet after") || !strings.Contains(out, "accept failed: ECONNABORTED") {
				t.Fatalf("want ECONNABORTED, then a quiet listener (exit %v):\n%s", srv.err, out)
			}
		})
	}
}

// nuse run starts a daemon for the program's lifetime when none runs.
func TestRunStartsItsOwnDaemon(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	script := fmt.Sprintf("%s server -b 127.0.0.1 -p 18600 & sleep 0.5; %s lat -n 200 -p 18600 127.0.0.1; rc=$?; kill %%1; exit $rc", bin("tcpperf"), bin("tcpperf"))
	out, err := ns.run(2*time.Minute, bin("nuse"), "run", "--sock", ns.sock(), "--rules", "tcp 127.0.0.0/8", "--", "bash", "-c", script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "started a daemon") || !strings.Contains(out, "t_typical") {
		t.Fatalf("unexpected output:\n%s", out)
	}
	ns.waitFor("the daemon to go away", 10*time.Second, func() bool { _, err := os.Stat(ns.sock()); return err != nil })
}

// Rules that do not parse stop nuse run with a clear error before anything
// starts (the shim would otherwise leave every socket in the kernel).
func TestRunRefusesBadRules(t *testing.T) {
	if _, err := os.Stat(bin("nuse")); err != nil {
		t.Fatalf("%s missing: run 'make build' first", bin("nuse"))
	}
	out, err := exec.Command(bin("nuse"), "run", "--sock", filepath.Join(t.TempDir(), "s"), "--rules", "tcp 10.0.0.0/99", "--", "true").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "bad prefix length 99") {
		t.Fatalf("want exit 2 naming the bad rule, got %v:\n%s", err, out)
	}
	if strings.Contains(string(out), "started a daemon") {
		t.Fatalf("a daemon was started for bad rules:\n%s", out)
	}
}
