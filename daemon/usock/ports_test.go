package usock

import (
	"net/netip"
	"syscall"
	"testing"

	"github.com/nuse-project/nuse/shim/abi"
)

// MsgPortFree says whether an engine holds a port (the shim asks about the
// kernel's pick for a bind to port 0), and refuses nonsense.
func TestPortFree(t *testing.T) {
	_, path := startServer(t, 64<<10)
	cl := dialClient(t, path)
	defer cl.close()
	ls := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 7360))
	for _, c := range []struct {
		family int32
		port   uint32
		want   int32
	}{
		{syscall.AF_INET, 7360, -int32(syscall.EADDRINUSE)},
		{syscall.AF_INET, 7361, 0},
		{syscall.AF_INET, 0, -int32(syscall.EINVAL)},
		{syscall.AF_INET, 70000, -int32(syscall.EINVAL)},
		{syscall.AF_UNIX, 7361, -int32(syscall.EINVAL)},
	} {
		if rep := cl.ctl(abi.MsgPortFree, abi.CtlReq{Family: c.family, Sock: c.port}, -1); rep.Result != c.want {
			t.Errorf("port %d (family %d): %d, want %d", c.port, c.family, rep.Result, c.want)
		}
	}
	cl.closeSock(ls)
}
