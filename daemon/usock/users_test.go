package usock

// Linux's rules between users, with a real second user: the test binary
// runs itself as uid 65534 (nobody) as the client of a daemon served here.

import (
	"bufio"
	"bytes"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nuse-project/nuse/shim/abi"
)

const envUserChild = "NUSE_USOCK_USER_CHILD" // the control socket, in the child

const nobody = 65534

// TestOtherUsers: a second user may neither join a root SO_REUSEPORT
// group (and receive part of its connections) nor bind a privileged port,
// and sees only its own sessions in stats; root may do both.
func TestOtherUsers(t *testing.T) {
	if os.Getenv(envUserChild) != "" {
		t.Skip("parent only")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: needs root to run a client as another user")
	}
	// A directory the other user can reach, with a copy of this binary
	// (go test's build directory is private to root).
	dir, err := os.MkdirTemp("", "nuse-users-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "usock.test")
	copyFile(t, self, bin)

	path := filepath.Join(dir, "nused.sock")
	srv := startServerAt(t, 64<<10, path, func(c *Config) {
		c.Limits.MaxSocketsPerUID = 16
		c.Limits.MaxSessionsPerUID = 2
	})
	base := snapshot()
	root := dialClient(t, path)
	group := root.socket(syscall.AF_INET)
	if res, _ := root.cmd(group, abi.OpSetsockopt, solSocket, soReusePort, nil, []byte{1, 0, 0, 0}); res != 0 {
		t.Fatalf("SO_REUSEPORT: %v", syscall.Errno(-res))
	}
	if res, _ := root.cmd(group, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:7201")), nil); res != 0 {
		t.Fatalf("root bind: %v", syscall.Errno(-res))
	}
	if res, _ := root.cmd(group, abi.OpListen, 8, 0, nil, nil); res != 0 {
		t.Fatalf("root listen: %v", syscall.Errno(-res))
	}
	// Root may bind a privileged port.
	priv := root.socket(syscall.AF_INET)
	if res, _ := root.cmd(priv, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:81")), nil); res != 0 {
		t.Errorf("root bind to port 81: %v", syscall.Errno(-res))
	}

	cmd := exec.Command(bin, "-test.run=^TestOtherUsersChild$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), envUserChild+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the other user's client failed: %v\n%s", err, out)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "RESULT "), "="); ok && strings.HasPrefix(sc.Text(), "RESULT ") {
			got[k] = v
		}
	}
	want := map[string]string{
		"join-root-group":          errName(syscall.EADDRINUSE),
		"join-root-group-wildcard": errName(syscall.EADDRINUSE),
		"own-group-first":          "ok",
		"own-group-second":         "ok",
		"privileged-port":          errName(syscall.EACCES),
		"unprivileged-port":        "ok",
		"stats-own-sessions":       "1",
		"stats-others":             "1",
		"stats-root-visible":       "false",
		"sockets-until-refused":    "16 " + errName(syscall.EMFILE),
		"third-session":            "refused: uid 65534 has 2 sessions, the limit per user",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if t.Failed() {
		t.Logf("the child said:\n%s", out)
	}
	// The other user's sessions ended with its process; with root's gone
	// too, the daemon holds what it held before either came.
	root.close()
	waitSessions(t, srv, 0)
	backToBaseline(t, base, 4)
}

// TestOtherUsersChild is the other user's side of TestOtherUsers.
func TestOtherUsersChild(t *testing.T) {
	path := os.Getenv(envUserChild)
	if path == "" {
		t.Skip("child only")
	}
	cl := dialClient(t, path)
	report := func(k string, res int32) {
		v := "ok"
		if res < 0 {
			v = errName(syscall.Errno(-res))
		}
		println("RESULT " + k + "=" + v) // stderr, unbuffered: CombinedOutput keeps it
	}
	bindReuse := func(ap string) int32 {
		s := cl.socket(syscall.AF_INET)
		if res, _ := cl.cmd(s, abi.OpSetsockopt, solSocket, soReusePort, nil, []byte{1, 0, 0, 0}); res != 0 {
			return res
		}
		res, _ := cl.cmd(s, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.MustParseAddrPort(ap)), nil)
		return res
	}
	report("join-root-group", bindReuse("127.0.0.1:7201"))
	report("join-root-group-wildcard", bindReuse("0.0.0.0:7201"))
	report("own-group-first", bindReuse("127.0.0.1:7202"))
	report("own-group-second", bindReuse("127.0.0.1:7202"))
	s := cl.socket(syscall.AF_INET)
	res, _ := cl.cmd(s, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:80")), nil)
	report("privileged-port", res)
	s = cl.socket(syscall.AF_INET)
	res, _ = cl.cmd(s, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:7203")), nil)
	report("unprivileged-port", res)

	st := parseStats(t, statsQuery(t, path))
	println("RESULT stats-own-sessions=" + strconv.Itoa(len(st.Sessions)))
	println("RESULT stats-others=" + strconv.Itoa(st.Others))
	rootVisible := false
	for _, s := range append(st.Sessions, st.Ended...) {
		if s.Uid != uint32(os.Getuid()) {
			rootVisible = true
		}
	}
	println("RESULT stats-root-visible=" + strconv.FormatBool(rootVisible))

	// The per-user caps (16 sockets, 2 sessions in the parent's config).
	n := 6 // opened above
	for ; n < 100; n++ {
		rep, fd := cl.birth(abi.MsgSocket, abi.CtlReq{Family: syscall.AF_INET, Type: syscall.SOCK_STREAM})
		if rep.Result < 0 {
			println("RESULT sockets-until-refused=" + strconv.Itoa(n) + " " + errName(syscall.Errno(-rep.Result)))
			break
		}
		_ = fd
	}
	dialClient(t, path)
	c := dialRaw(t, path)
	writeHello(t, c)
	println("RESULT third-session=refused: " + readError(t, c))
}

func errName(e syscall.Errno) string { return strconv.Itoa(int(e)) + " " + e.Error() }

func copyFile(t *testing.T, from, to string) {
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
