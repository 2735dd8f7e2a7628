package usock

import (
	"errors"
	"net/netip"
	"syscall"

	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
)

// portFree answers abi.MsgPortFree: the kernel picked req.Sock for a
// program's bind to port 0 on the wildcard (the shim lets the kernel pick,
// as Linux does at bind, before listen or connect decide where the socket
// goes). The engines' own connections take ports from the same range and
// linger in TIME_WAIT there, so the kernel may pick one an engine holds:
// the listen would then fail with EADDRINUSE in NUSE. The shim asks, and
// picks again if an engine holds it.
func (srv *Server) portFree(req *abi.CtlReq, rep *abi.CtlReply) {
	family := int(req.Family)
	if (family != syscall.AF_INET && family != syscall.AF_INET6) || req.Sock == 0 || req.Sock > 65535 {
		rep.Result = -int32(syscall.EINVAL)
		return
	}
	any := netip.IPv4Unspecified()
	if family == syscall.AF_INET6 {
		any = netip.IPv6Unspecified()
	}
	ap := netip.AddrPortFrom(any, uint16(req.Sock))
	engines := []stack.Engine{srv.cfg.Engine}
	for _, e := range srv.cfg.Engines {
		if e != srv.cfg.Engine {
			engines = append(engines, e)
		}
	}
	for _, e := range engines {
		if !srv.takeFDs(1) {
			rep.Result = -int32(syscall.ENFILE)
			return
		}
		es, err := e.Socket(family)
		if err != nil {
			srv.clientFDs.Add(-1)
			continue
		}
		err = es.Bind(ap)
		es.Close()
		srv.clientFDs.Add(-1)
		if errors.Is(err, syscall.EADDRINUSE) {
			rep.Result = -int32(syscall.EADDRINUSE)
			return
		}
	}
}
