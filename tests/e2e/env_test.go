// Package e2e runs real programs through NUSE inside network namespaces
// that each test creates (no default route: nothing can leave the machine).
// The tests need root; without it they skip, saying so.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/daemon/ctlclient"
	"github.com/nuse-project/nuse/daemon/usock"
)

// repo is the repository root; binaries are under repo/bin (make build).
var repo = func() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(f), "..", ".."))
}()

func bin(name string) string { return filepath.Join(repo, "bin", name) }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root (network namespaces, TAP devices); CI runs as root")
	}
	for _, b := range []string{"nuse", "libnuse.so"} {
		if _, err := os.Stat(bin(b)); err != nil {
			t.Fatalf("%s missing: run 'make build' first", bin(b))
		}
	}
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed (.ci/run installs it)", name)
	}
	return p
}

// netns is a network namespace owned by one test.
type netns struct {
	t    *testing.T
	name string
	dir  string // scratch directory
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("nuset-%x", rnd)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	ns := &netns{t: t, name: name, dir: t.TempDir()}
	t.Cleanup(func() {
		// The processes a test started are stopped by their own cleanups,
		// which run before this one (LIFO).
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
		os.RemoveAll(filepath.Join("/etc/netns", name))
	})
	ns.mustRun("ip", "link", "set", "lo", "up")
	return ns
}

// cmd makes a command that runs inside the namespace.
func (ns *netns) cmd(ctx context.Context, argv ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name}, argv...)...)
	c.Dir = ns.dir
	c.Env = append(os.Environ(), "NUSE_SOCK="+ns.sock())
	c.WaitDelay = 5 * time.Second
	return c
}

// run runs a command to completion (bounded by timeout) and returns its
// combined output.
func (ns *netns) run(timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out bytes.Buffer
	c := ns.cmd(ctx, argv...)
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return out.String(), err
}

func (ns *netns) mustRun(argv ...string) string {
	ns.t.Helper()
	out, err := ns.run(60*time.Second, argv...)
	if err != nil {
		ns.t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

func (ns *netns) sock() string { return filepath.Join(ns.dir, "nused.sock") }

// proc is a background process a test started; the test's cleanup stops it
// by its PID.
type proc struct {
	cmd  *exec.Cmd
	out  *lockedBuf
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed
}

func (ns *netns) start(argv ...string) *proc {
	ns.t.Helper()
	out := &lockedBuf{}
	c := ns.cmd(context.Background(), argv...)
	c.Stdout, c.Stderr = out, out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		ns.t.Fatalf("starting %v: %v", argv, err)
	}
	p := &proc{cmd: c, out: out, done: make(chan struct{})}
	go func() { p.err = c.Wait(); close(p.done) }()
	ns.t.Cleanup(func() { p.stop(ns.t) })
	return p
}

// stop ends the process group it leads (ip netns exec execs the program, so
// the group is the program and its children), politely first.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		var logf string
		for i, a := range p.cmd.Args {
			if a == "-c" && i+1 < len(p.cmd.Args) {
				logf = filepath.Join(filepath.Dir(p.cmd.Args[i+1]), "error.log")
			}
		}
		b, _ := os.ReadFile(logf)
		fmt.Printf("STUCK %v:\n%s\n", p.cmd.Args, b)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) output() string { return p.out.String() }

// startDaemon runs `nuse daemon` in the namespace and waits until it answers.
func (ns *netns) startDaemon(args ...string) *proc {
	ns.t.Helper()
	p := ns.start(append([]string{bin("nuse"), "daemon", "--sock", ns.sock()}, args...)...)
	deadline := time.Now().Add(20 * time.Second)
	for !ctlclient.Ping(ns.sock()) {
		select {
		case <-p.done:
			ns.t.Fatalf("daemon exited: %v\n%s", p.err, p.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			ns.t.Fatalf("daemon did not come up:\n%s", p.output())
		}
	}
	ns.t.Cleanup(func() {
		if ns.t.Failed() {
			ns.t.Logf("daemon log:\n%s", p.output())
		}
	})
	return p
}

// requireASanShim fails the test unless bin/libnuse-asan.so is there and
// newer than every shim source (the Makefile's SHIM_SRCS): `make build`
// leaves it as it was, so a test run straight with `go test` after a shim
// change would otherwise check the old shim under the sanitizer.
func requireASanShim(t *testing.T) {
	t.Helper()
	lib := bin("libnuse-asan.so")
	st, err := os.Stat(lib)
	if err != nil {
		t.Fatalf("%s missing: run 'make bin/libnuse-asan.so'", lib)
	}
	srcs, _ := filepath.Glob(filepath.Join(repo, "shim", "*.[ch]"))
	gos, _ := filepath.Glob(filepath.Join(repo, "shim", "*.go"))
	for _, src := range append(append(srcs, gos...), filepath.Join(repo, "shim", "abi", "nuse_abi.h")) {
		if s, err := os.Stat(src); err == nil && s.ModTime().After(st.ModTime()) {
			t.Fatalf("%s is older than %s: run 'make bin/libnuse-asan.so'", lib, src)
		}
	}
}

// nuseRun returns the argv that runs argv under `nuse run` with rules.
func (ns *netns) nuseRun(rules string, argv ...string) []string {
	return append([]string{bin("nuse"), "run", "--sock", ns.sock(), "--rules", rules, "--"}, argv...)
}

// runProgram runs a test program to completion: on the kernel when rules is
// empty, else under nuse run with those rules (and the ASan shim if asan).
// It fails the test unless the output contains want and, under NUSE, the
// program opened a NUSE session.
func (ns *netns) runProgram(t *testing.T, rules string, asan bool, want string, argv ...string) string {
	t.Helper()
	if rules != "" {
		pre := []string{bin("nuse"), "run", "--sock", ns.sock(), "--rules", rules}
		if asan {
			requireASanShim(t)
			pre = append(pre, "--asan")
		}
		argv = append(append(pre, "--"), argv...)
	}
	out, err := ns.run(3*time.Minute, argv...)
	t.Logf("\n%s", strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("%v", err)
	}
	if !strings.Contains(out, want) {
		t.Fatalf("output lacks %q", want)
	}
	if rules == "" {
		return out
	}
	prog := ""
	for i, a := range argv {
		if a == "--" && i+1 < len(argv) {
			prog = filepath.Base(argv[i+1])
			break
		}
	}
	if len(sessionsOf(ns.stats(), prog)) == 0 {
		t.Fatalf("%s never opened a NUSE session", prog)
	}
	return out
}

func (ns *netns) stats() *usock.Stats {
	ns.t.Helper()
	st, err := ctlclient.Stats(ns.sock())
	if err != nil {
		ns.t.Fatal(err)
	}
	return st
}

// waitFor polls cond until it holds.
func (ns *netns) waitFor(what string, timeout time.Duration, cond func() bool) {
	ns.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			ns.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitOutput waits until p has printed want, failing at once if p ends
// first.
func (ns *netns) waitOutput(p *proc, what, want string, timeout time.Duration) {
	ns.t.Helper()
	ns.waitFor(what, timeout, func() bool {
		select {
		case <-p.done:
			ns.t.Fatalf("waiting for %s: the program exited: %v\n%s", what, p.err, p.output())
		default:
		}
		return strings.Contains(p.output(), want)
	})
}

// sessionsOf returns the live and ended sessions of a program.
func sessionsOf(st *usock.Stats, comm string) []usock.SessionStats {
	var out []usock.SessionStats
	for _, s := range append(append([]usock.SessionStats{}, st.Sessions...), st.Ended...) {
		if s.Comm == comm {
			out = append(out, s)
		}
	}
	return out
}

// lockedBuf collects a process's stdout and stderr.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
