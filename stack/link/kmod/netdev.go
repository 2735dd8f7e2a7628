package kmod

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/nuse-project/nuse/stack/netdev"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func init() {
	netdev.Register("kmod", openNetdev)
}

// openNetdev opens the "kmod" netdev kind: "kmod[:ARGS]", ARGS a
// comma-separated list: a bare word names the device (default Config.Name,
// else nuse%d), "tso=off" turns off TCP segmentation offload towards the
// stack (on by default: 64 KiB slots), "slots=N" sizes the rings.
// Config.MTU sizes the link; Config.HostAddrs go on the kernel's side,
// which is then brought up.
func openNetdev(cfg netdev.Config) (*netdev.Device, error) {
	o, err := parseArg(cfg)
	if err != nil {
		return nil, err
	}
	e, err := Open(o)
	if err != nil {
		return nil, err
	}
	if err := ConfigureHost(e.Name(), cfg); err != nil {
		e.Close()
		return nil, err
	}
	cfg.Logf("kmod: %s (ifindex %d, mtu %d, tso %v) over %s, host addresses %v", e.Name(), e.Ifindex(), e.MTU(), o.TSO, DevPath, cfg.HostAddrs)
	return &netdev.Device{Kind: "kmod", Name: e.Name(), Link: e, Close: func() error { e.Close(); e.Wait(); return nil }}, nil
}

// parseArg turns the netdev config and its "kmod:ARGS" into Options.
func parseArg(cfg netdev.Config) (Options, error) {
	o := Options{Name: cfg.Name, MTU: cfg.MTU, TSO: true}
	for _, a := range strings.Split(cfg.Arg, ",") {
		k, v, hasV := strings.Cut(a, "=")
		switch {
		case a == "":
		case k == "tso" && (!hasV || v == "on"):
			o.TSO = true
		case k == "tso" && v == "off":
			o.TSO = false
		case k == "slots" && hasV:
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n < MinSlots || n > MaxSlots || n&(n-1) != 0 {
				return o, fmt.Errorf("kmod: %q: slots must be a power of two in [%d, %d]", a, MinSlots, MaxSlots)
			}
			o.K2USlots, o.U2KSlots = uint32(n), uint32(n)
		case !hasV && a != "tso" && !strings.ContainsAny(a, "/ :"):
			o.Name = a
		default:
			return o, fmt.Errorf("kmod: unknown argument %q (NAME, tso=on|off, slots=N)", a)
		}
	}
	if o.TSO || o.MTU > 16384 {
		// 64 KiB slots (room for a TSO segment), 256 of them: 16 MiB a ring.
		o.SlotSize = MaxSlotSize
		if o.K2USlots == 0 {
			o.K2USlots, o.U2KSlots = 256, 256
		}
	}
	return o, nil
}

// ConfigureHost puts cfg.HostAddrs on the kernel side of the device and
// brings it up.
func ConfigureHost(name string, cfg netdev.Config) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("kmod: %s: %w", name, err)
	}
	for _, p := range cfg.HostAddrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			// Point to point with netstack, which does not answer DAD.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(l, a); err != nil {
			return fmt.Errorf("kmod: add %v to %s: %w", p, name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("kmod: set %s up: %w", name, err)
	}
	return nil
}
