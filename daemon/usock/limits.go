package usock

// The limits on what a client can make the daemon hold, and the checks on
// what a client hands it (fds) and asks of it (ports): DESIGN.md decision 5,
// a hostile local process loses its own session and nothing else.

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/stack"
)

// use returns uid's counters, creating them. Called with srv.mu held.
func (srv *Server) use(uid uint32) *uidUse {
	u := srv.perUID[uid]
	if u == nil {
		u = &uidUse{}
		srv.perUID[uid] = u
	}
	return u
}

// unuse applies f to uid's counters and forgets a uid that holds nothing.
// Called with srv.mu held.
func (srv *Server) unuse(uid uint32, f func(*uidUse)) {
	u := srv.use(uid)
	f(u)
	if u.pending == 0 && u.sessions == 0 && u.socks.Load() == 0 {
		delete(srv.perUID, uid)
	}
}

// takePending counts a control connection that has not said what it is
// yet; it returns why it is refused, or "".
func (srv *Server) takePending(uid uint32) string {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	lim := srv.cfg.Limits
	u := srv.use(uid)
	switch {
	case srv.pending >= lim.MaxPending:
		return fmt.Sprintf("the daemon has %d connections waiting for a first message, its limit", lim.MaxPending)
	case uid != 0 && u.pending >= lim.MaxPendingPerUID:
		return fmt.Sprintf("uid %d has %d connections waiting for a first message, the limit per user", uid, lim.MaxPendingPerUID)
	case !srv.takeFDs(1): // the last check: it counts the connection
		return "the daemon is short of file descriptors"
	}
	srv.pending++
	u.pending++
	return ""
}

func (srv *Server) dropPending(uid uint32) {
	srv.mu.Lock()
	srv.clientFDs.Add(-1)
	srv.pending--
	srv.unuse(uid, func(u *uidUse) { u.pending-- })
	srv.mu.Unlock()
}

// fdsFit reports whether the daemon may open n more file descriptors for
// clients and still keep its reserve: what it held when it started, plus
// what clients hold (held, srv.clientFDs), against RLIMIT_NOFILE.
func (srv *Server) fdsFit(held int64, n int) bool {
	return srv.fdLimit <= 0 || srv.baseFDs+int(held)+n <= srv.fdLimit-srv.cfg.Limits.FDReserve
}

// takeFDs counts n more fds held for clients if they fit (fdsFit),
// atomically: two sessions cannot both take the last ones.
func (srv *Server) takeFDs(n int) bool {
	for {
		held := srv.clientFDs.Load()
		if !srv.fdsFit(held, n) {
			return false
		}
		if srv.clientFDs.CompareAndSwap(held, held+int64(n)) {
			return true
		}
	}
}

// chargeEngine counts what a new socket of eng holds of the daemon's fds
// beyond its socketpair end (stack.FDsPerSocket: the kernel engine's real
// socket). It returns the count to give back at release, or false: the
// daemon is short of fds. Called with s.mu held.
func (s *Session) chargeEngine(eng stack.Engine) (int, bool) {
	n := stack.FDsPerSocket(eng)
	if n > 0 && !s.srv.takeFDs(n) {
		s.logf("the daemon is short of file descriptors; %s socket refused", eng.Name())
		return 0, false
	}
	return n, true
}

// openFDs counts this process's open file descriptors.
func openFDs() int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	return len(names) - 1 // the directory itself
}

func fdLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 0
	}
	return int(rl.Cur)
}

// checkPair checks an fd a client passed as the daemon's end of a socket's
// socketpair: an AF_UNIX stream socket, not one this daemon already holds
// for another socket (every pass of the same fd would otherwise cost the
// daemon a descriptor). It returns the socket's inode.
func (srv *Server) checkPair(fd int) (uint64, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return 0, syscall.ENOTSOCK
	}
	dom, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err1 != nil || err2 != nil || dom != unix.AF_UNIX || typ != unix.SOCK_STREAM {
		return 0, syscall.EINVAL
	}
	srv.pmu.Lock()
	defer srv.pmu.Unlock()
	if _, dup := srv.pairs[st.Ino]; dup {
		return 0, syscall.EEXIST
	}
	srv.pairs[st.Ino] = struct{}{}
	return st.Ino, 0
}

func (srv *Server) forgetPair(ino uint64) {
	srv.pmu.Lock()
	delete(srv.pairs, ino)
	srv.pmu.Unlock()
}

// ---- ports: Linux's rules on who may bind what ----

// portUse is one socket bound with SO_REUSEPORT.
type portUse struct {
	addr netip.Addr
	uid  uint32
	so   *sock
}

// bindAllowed applies Linux's permission rules to a bind of so (owned by
// session s) to ap: a port below net.ipv4.ip_unprivileged_port_start needs
// CAP_NET_BIND_SERVICE, and an SO_REUSEPORT group is joined only by sockets
// of the same effective uid (others get EADDRINUSE, as in Linux's
// inet_csk_bind_conflict). bind runs the engine's bind while the port
// table is locked, so two users cannot race into one group.
func (s *Session) bindAllowed(so *sock, ap netip.AddrPort, reuse bool, bind func() error) error {
	srv := s.srv
	port := ap.Port()
	if port != 0 && port < srv.unprivPort && !hasCap(s.Pid, capNetBindService) {
		return syscall.EACCES
	}
	if !reuse || port == 0 {
		return bind()
	}
	srv.pmu.Lock()
	defer srv.pmu.Unlock()
	for _, u := range srv.ports[port] {
		if u.uid != s.Uid && overlaps(u.addr, ap.Addr()) {
			return syscall.EADDRINUSE
		}
	}
	if err := bind(); err != nil {
		return err
	}
	srv.ports[port] = append(srv.ports[port], portUse{addr: ap.Addr(), uid: s.Uid, so: so})
	so.reusePort = port
	return nil
}

// unbind forgets so's SO_REUSEPORT bind, if it has one.
func (srv *Server) unbind(so *sock) {
	if so.reusePort == 0 {
		return
	}
	srv.pmu.Lock()
	us := srv.ports[so.reusePort]
	for i, u := range us {
		if u.so == so {
			us = append(us[:i], us[i+1:]...)
			break
		}
	}
	if len(us) == 0 {
		delete(srv.ports, so.reusePort)
	} else {
		srv.ports[so.reusePort] = us
	}
	srv.pmu.Unlock()
	so.reusePort = 0
}

// overlaps says whether binds to a and b can receive the same connection:
// equal addresses, or a wildcard on either side (:: covers IPv4 too).
func overlaps(a, b netip.Addr) bool {
	return a.IsUnspecified() || b.IsUnspecified() || a.Unmap() == b.Unmap()
}

const capNetBindService = 10

// hasCap reads whether process pid has capability c in its effective set.
// It is read at each privileged bind, not at session start: programs drop
// privileges after binding.
func hasCap(pid int32, c uint) bool {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<c) != 0
		}
	}
	return false
}

// unprivilegedPortStart is the lowest port anyone may bind (Linux's
// sysctl; 1024 where it cannot be read).
func unprivilegedPortStart() uint16 {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 65536 {
		return 1024
	}
	if n == 65536 {
		return 65535
	}
	return uint16(n)
}
