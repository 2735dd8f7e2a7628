package usock

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/kernel"
)

const envFDChild = "NUSE_USOCK_FD_CHILD" // the control socket, in the child

// The fd reserve counts what each socket really costs the daemon: on the
// kernel engine a socket is its socketpair end and a kernel socket. A
// client in another process opens kernel sockets until refused: the
// refusal is ENFILE while the daemon still has its reserve free (counting
// one fd a socket, it used to run out first), the control socket still
// answers, and all is given back when the client goes.
func TestFDReserveCountsKernelSockets(t *testing.T) {
	if os.Getenv(envFDChild) != "" {
		t.Skip("parent only")
	}
	const room, reserve = 96, 32 // fds under the limit; of them, the reserve
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl) })
	keng, err := kernel.New(kernel.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keng.Close() }) // after the server's (last in, first out)
	var limit int
	srv, path := startServerWith(t, 16<<10, func(c *Config) {
		c.Engines = map[string]stack.Engine{c.Engine.Name(): c.Engine, "kernel": keng}
		c.Limits.FDReserve = reserve
		limit = openFDs() + room
		low := rl
		low.Cur = uint64(limit)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
			t.Fatal(err)
		}
	})
	base := snapshot()

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(self, "-test.run=^TestFDReserveCountsKernelSocketsChild$")
	child.Env = append(os.Environ(), envFDChild+"="+path)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	result := make(chan string, 1)
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		var line string
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
				line = v
				break
			}
		}
		result <- line
		_, _ = io.Copy(io.Discard, stdout) // until the child exits
	}()
	exited := false
	finish := func() { // the child exits when its stdin closes
		if exited {
			return
		}
		exited = true
		stdin.Close()
		select {
		case <-read:
		case <-time.After(20 * time.Second):
			_ = child.Process.Kill()
			<-read
		}
		_ = child.Wait()
	}
	t.Cleanup(finish)
	var got string
	select {
	case got = <-result:
	case <-time.After(20 * time.Second):
		t.Fatal("the client process said nothing in 20 s")
	}
	// The child's session holds 2 fds; each kernel socket 2 more. The room
	// is what the limit leaves over the fds the server found open (its
	// own included).
	want := fmt.Sprintf("%d %s", (srv.fdLimit-srv.baseFDs-reserve-2)/2, errName(syscall.ENFILE))
	if got != want {
		t.Errorf("kernel sockets until refused, and the refusal: %q, want %q", got, want)
	}
	if free := limit - openFDs(); free < reserve-4 {
		t.Errorf("with the client at its limit the daemon has %d fds free, of a reserve of %d", free, reserve)
	}
	c := dialRaw(t, path)
	writeHello(t, c)
	if msg := readError(t, c); !strings.Contains(msg, "short of file descriptors") {
		t.Errorf("a session while the fds are spent: %q", msg)
	}
	c.Close()

	finish()
	waitSessions(t, srv, 0)
	h := newHonest(t, path, 7161)
	h.exchange()
	h.srv.close()
	h.cli.close()
	waitSessions(t, srv, 0)
	backToBaseline(t, base, 4)
}

// TestFDReserveCountsKernelSocketsChild is the client process of
// TestFDReserveCountsKernelSockets: kernel sockets until one is refused,
// then it holds them until its stdin closes.
func TestFDReserveCountsKernelSocketsChild(t *testing.T) {
	path := os.Getenv(envFDChild)
	if path == "" {
		t.Skip("child only")
	}
	var rl unix.Rlimit // the parent's low limit is not the client's
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil {
		rl.Cur = rl.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
	cl := dialClient(t, path)
	req := abi.CtlReq{Family: syscall.AF_INET, Type: syscall.SOCK_STREAM}
	copy(req.Engine[:], "kernel")
	n := 0
	for ; n < int(cl.a.L.MaxSocks); n++ {
		if rep, _ := cl.birth(abi.MsgSocket, req); rep.Result < 0 {
			fmt.Printf("RESULT %d %s\n", n, errName(syscall.Errno(-rep.Result)))
			break
		}
	}
	if n == int(cl.a.L.MaxSocks) {
		fmt.Printf("RESULT %d none\n", n)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}
