package tap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/internal/testlog"
	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/gvisor"
	"github.com/nuse-project/nuse/stack/netdev"
)

func TestParseArg(t *testing.T) {
	for _, c := range []struct {
		arg, name, want string
		rx              bool
		bad             bool
	}{
		{"", "", "nuse0", true, false},
		{"", "nuse3", "nuse3", true, false},
		{"nuse1", "nuse3", "nuse1", true, false},
		{"name=x1,rxcsum=off", "", "x1", false, false},
		{"rxcsum=maybe", "", "", true, true},
		{"bogus=1", "", "", true, true},
		{"averyveryverylongname", "", "", true, true},
	} {
		o, err := parseArg(c.arg, c.name)
		if (err != nil) != c.bad {
			t.Errorf("%q: err %v", c.arg, err)
			continue
		}
		if !c.bad && (o.name != c.want || o.rxCsum != c.rx) {
			t.Errorf("%q: got %+v", c.arg, o)
		}
	}
}

func TestKindsRegistered(t *testing.T) {
	kinds := strings.Join(netdev.Kinds(), ",")
	if !strings.Contains(kinds, "tap") || !strings.Contains(kinds, "none") {
		t.Fatalf("kinds %s", kinds)
	}
	dev, err := netdev.Open("none", netdev.Config{})
	if err != nil || dev.Link != nil {
		t.Fatalf("none: %v %+v", err, dev)
	}
	// An engine on "none" is stack-internal: it still serves its own
	// addresses and loopback.
	e, err := gvisor.New(gvisor.Config{Netdev: dev, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTAP creates a namespace and runs TestTAPChild in it.
func TestTAP(t *testing.T) {
	if childNetnsSet() {
		t.Skip("parent only")
	}
	inNetns(t, "TestTAPChild", 1, 120*time.Second)
}

func childNetnsSet() bool { return os.Getenv(envChild) != "" }

func openTAPEngine(t *testing.T, name string) (*gvisor.Engine, *netdev.Device) {
	t.Helper()
	dev, err := netdev.Open("tap:"+name, netdev.Config{
		MTU:       DefaultMTU,
		HostAddrs: HostPrefixes,
		Logf:      testlog.Logf(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := gvisor.New(gvisor.Config{Netdev: dev, Loopback: true})
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, dev
}

func TestTAPChild(t *testing.T) {
	childNetns(t)
	e, dev := openTAPEngine(t, "nuse0")

	t.Run("errors", func(t *testing.T) {
		if _, err := netdev.Open("tap:nuse0", netdev.Config{}); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("second open of nuse0: %v", err)
		}
		// A device of another kind with the name (this kernel has veth
		// but not dummy).
		d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nusebusy"}, PeerName: "nusebusy1"}
		if err := netlink.LinkAdd(d); err != nil {
			t.Fatal(err)
		}
		defer netlink.LinkDel(d)
		if _, err := netdev.Open("tap:nusebusy", netdev.Config{}); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("open over a dummy device: %v", err)
		}
	})

	t.Run("ping4", func(t *testing.T) { ping(t, "10.77.0.2") })
	t.Run("ping6", func(t *testing.T) { ping(t, "fd77::2") })

	data := make([]byte, 4<<20)
	mrand.New(mrand.NewSource(1)).Read(data)
	sum := sha256.Sum256(data)

	t.Run("kernel-to-stack", func(t *testing.T) {
		for _, c := range []struct {
			fam          int
			listen, dial string
		}{
			{syscall.AF_INET, "10.77.0.2:8080", "10.77.0.2:8080"},
			{syscall.AF_INET6, "[::]:8081", "[fd77::2]:8081"},
		} {
			ln, err := e.Socket(c.fam)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := ln.Bind(netip.MustParseAddrPort(c.listen)); err != nil {
				t.Fatal(err)
			}
			if err := ln.Listen(8); err != nil {
				t.Fatal(err)
			}
			srvErr := make(chan error, 1)
			go func() { srvErr <- hashServer(ln) }()
			conn, err := net.DialTimeout("tcp", c.dial, 5*time.Second)
			if err != nil {
				t.Fatalf("kernel dial %s: %v", c.dial, err)
			}
			conn.SetDeadline(time.Now().Add(testTimeout))
			if _, err := conn.Write(data); err != nil {
				t.Fatal(err)
			}
			conn.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(conn)
			conn.Close()
			if err != nil {
				t.Fatal(err)
			}
			if err := <-srvErr; err != nil {
				t.Fatalf("stack server: %v", err)
			}
			if !bytes.Equal(got, sum[:]) {
				t.Fatalf("%s: the stack server saw different data", c.dial)
			}
		}
	})

	t.Run("stack-to-kernel", func(t *testing.T) {
		for _, c := range []struct {
			fam          int
			listen, dial string
		}{
			{syscall.AF_INET, "10.77.0.1:9090", "10.77.0.1:9090"},
			{syscall.AF_INET6, "[fd77::1]:9091", "[fd77::1]:9091"},
		} {
			kl, err := net.Listen("tcp", c.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer kl.Close()
			type res struct {
				peer string
				sum  []byte
				err  error
			}
			resc := make(chan res, 1)
			go func() {
				kl.(*net.TCPListener).SetDeadline(time.Now().Add(testTimeout))
				conn, err := kl.Accept()
				if err != nil {
					resc <- res{err: err}
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(testTimeout))
				h := sha256.New()
				_, err = io.Copy(h, conn)
				s := h.Sum(nil)
				if err == nil {
					_, err = conn.Write(s)
				}
				resc <- res{conn.RemoteAddr().String(), s, err}
			}()
			so, err := e.Socket(c.fam)
			if err != nil {
				t.Fatal(err)
			}
			defer so.Close()
			w := watch(so)
			if err := so.Connect(netip.MustParseAddrPort(c.dial)); err != nil && err != syscall.EINPROGRESS {
				t.Fatal(err)
			}
			if err := w.wait(so, stack.EventOut|stack.EventErr); err != nil {
				t.Fatal(err)
			}
			if err := so.ConnectResult(); err != nil {
				t.Fatalf("connect %s: %v", c.dial, err)
			}
			if err := writeSock(so, w, data); err != nil {
				t.Fatal(err)
			}
			if err := so.Shutdown(syscall.SHUT_WR); err != nil {
				t.Fatal(err)
			}
			back := make([]byte, 64)
			n, err := readSock(so, w, back, false)
			if err != nil {
				t.Fatal(err)
			}
			r := <-resc
			if r.err != nil {
				t.Fatalf("kernel server: %v", r.err)
			}
			if !bytes.Equal(r.sum, sum[:]) || !bytes.Equal(back[:n], sum[:]) {
				t.Fatalf("%s: data corrupted on the way (kernel saw %x)", c.dial, r.sum)
			}
			la, _ := so.LocalAddr()
			if host, _, _ := net.SplitHostPort(r.peer); netip.MustParseAddr(host) != la.Addr() {
				t.Errorf("kernel sees peer %s, the stack socket says it is %s", r.peer, la)
			}
		}
	})

	t.Run("refused", func(t *testing.T) {
		so, _ := e.Socket(syscall.AF_INET)
		defer so.Close()
		w := watch(so)
		if err := so.Connect(netip.MustParseAddrPort("10.77.0.1:9")); err != nil && err != syscall.EINPROGRESS {
			t.Fatal(err)
		}
		if err := w.wait(so, stack.EventErr|stack.EventHup); err != nil {
			t.Fatal(err)
		}
		if err := so.ConnectResult(); err != syscall.ECONNREFUSED {
			t.Fatalf("connect to a closed kernel port: %v, want ECONNREFUSED", err)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		// Nobody answers ARP for .99 on the TAP: after netstack's neighbour
		// probes give up, connect fails with EHOSTUNREACH, as on Linux.
		so, _ := e.Socket(syscall.AF_INET)
		defer so.Close()
		w := watch(so)
		t0 := time.Now()
		if err := so.Connect(netip.MustParseAddrPort("10.77.0.99:80")); err != nil && err != syscall.EINPROGRESS {
			t.Fatal(err)
		}
		if err := w.wait(so, stack.EventErr|stack.EventHup); err != nil {
			t.Fatal(err)
		}
		if err := so.ConnectResult(); err != syscall.EHOSTUNREACH {
			t.Fatalf("connect to a silent neighbour: %v, want EHOSTUNREACH", err)
		}
		t.Logf("EHOSTUNREACH after %v", time.Since(t0).Round(time.Millisecond))
	})

	var nic gvisor.NICStats
	for _, n := range e.Stats() {
		if n.Name == "nuse0" {
			nic = n
		}
	}
	t.Logf("nuse0 counters: %+v", nic)
	if nic.RxBytes < 8<<20 || nic.TxBytes < 8<<20 {
		t.Errorf("NIC counters do not show the transfers: %+v", nic)
	}

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName("nuse0"); err == nil {
		t.Fatal("nuse0 still exists after Close")
	}
}

// hashServer accepts one connection, reads it to EOF and answers with the
// sha256 of what it read.
func hashServer(ln stack.Socket) error {
	w := watch(ln)
	if err := w.wait(ln, stack.EventIn); err != nil {
		return err
	}
	so, _, err := ln.Accept()
	if err != nil {
		return err
	}
	defer so.Close()
	sw := watch(so)
	h := sha256.New()
	buf := make([]byte, 200<<10)
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		n, eof, err := so.Read(buf[:1+mrand.Intn(len(buf))])
		if err == syscall.EAGAIN {
			if err := sw.wait(so, stack.EventIn|stack.EventErr|stack.EventHup); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		h.Write(buf[:n])
		if eof {
			return writeSock(so, sw, h.Sum(nil))
		}
	}
	return errors.New("hash server timed out")
}

// ping sends three ICMP echo requests from the kernel and wants three
// replies (raw socket: the test runs as root).
func ping(t *testing.T, dst string) {
	a := netip.MustParseAddr(dst)
	var fd int
	var err error
	var sa unix.Sockaddr
	if a.Is4() {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		sa = &unix.SockaddrInet4{Addr: a.As4()}
	} else {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		sa = &unix.SockaddrInet6{Addr: a.As16()}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
	id := uint16(mrand.Intn(65536))
	replies := 0
	for seq := uint16(1); seq <= 3; seq++ {
		msg := make([]byte, 8+32)
		msg[0] = 8 // echo request
		if a.Is6() {
			msg[0] = 128 // the kernel fills in the ICMPv6 checksum
		}
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], seq)
		copy(msg[8:], "nuse ping payload 0123456789abcd")
		if a.Is4() {
			binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
		}
		t0 := time.Now()
		if err := unix.Sendto(fd, msg, 0, sa); err != nil {
			t.Fatalf("send echo: %v", err)
		}
		buf := make([]byte, 1500)
		for time.Since(t0) < 3*time.Second {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				break
			}
			p := buf[:n]
			if a.Is4() {
				p = p[int(p[0]&0xf)*4:]
			}
			want := byte(0)
			if a.Is6() {
				want = 129
			}
			if len(p) >= 8 && p[0] == want && binary.BigEndian.Uint16(p[4:]) == id && binary.BigEndian.Uint16(p[6:]) == seq {
				replies++
				t.Logf("reply from %s seq %d in %v", dst, seq, time.Since(t0))
				break
			}
		}
	}
	if replies != 3 {
		t.Fatalf("ping %s: %d of 3 replies", dst, replies)
	}
}

func inetChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// TestNoPrivilege runs TestNoPrivilegeChild as root without capabilities
// and checks that it gets the clear message rather than a raw EPERM.
func TestNoPrivilege(t *testing.T) {
	if os.Getenv("NUSE_TAP_NOPRIV") != "" {
		t.Skip("parent only")
	}
	needRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("SKIPPED: setpriv (util-linux) is needed to drop capabilities")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", "--bounding-set=-all", "--inh-caps=-all", os.Args[0], "-test.run=^TestNoPrivilegeChild$", "-test.v")
	cmd.Env = append(os.Environ(), "NUSE_TAP_NOPRIV=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNoPrivilegeChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestNoPrivilegeChild(t *testing.T) {
	if os.Getenv("NUSE_TAP_NOPRIV") == "" {
		t.Skip("runs only under TestNoPrivilege")
	}
	_, err := netdev.Open("tap:nusenopriv", netdev.Config{})
	if !errors.Is(err, ErrNeedRoot) {
		t.Fatalf("open without CAP_NET_ADMIN: %v, want ErrNeedRoot", err)
	}
	t.Logf("message: %v", err)
}
