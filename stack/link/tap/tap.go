// Package tap is the TAP netdev: a kernel TAP device whose kernel side gets
// the host addresses (so the kernel's routing and netfilter see NUSE's
// packets) and whose fd becomes a gVisor link endpoint. It registers the
// netdev kinds "tap" and "none" (no device: a stack-internal engine).
//
// Spec: "tap" or "tap:ARGS", ARGS a comma-separated list: a bare word is
// the device name (default nuse0), "rxcsum=off" makes netstack verify
// checksums of received packets.
package tap

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"

	"github.com/nuse-project/nuse/stack/netdev"
)

// Defaults.
const (
	DefaultName = "nuse0"
	// DefaultMTU is large because the TAP is a virtual link and netstack is
	// bound by segments per second: at 65000 bulk TCP runs several times
	// faster than at 1500 (see the testbed notes).
	DefaultMTU = 65000
)

// ErrNeedRoot is returned when the process lacks CAP_NET_ADMIN.
var ErrNeedRoot = errors.New("the TAP netdev needs root (CAP_NET_ADMIN); run as root or use --netdev none")

func init() {
	netdev.Register("tap", Open)
	netdev.Register("none", func(cfg netdev.Config) (*netdev.Device, error) {
		cfg.Logf("netdev none: no device; only traffic inside the stack is possible")
		return &netdev.Device{Kind: "none", Name: "none", Close: func() error { return nil }}, nil
	})
}

type options struct {
	name   string
	rxCsum bool
}

func parseArg(arg, name string) (options, error) {
	o := options{name: name, rxCsum: true}
	if o.name == "" {
		o.name = DefaultName
	}
	for _, f := range strings.Split(arg, ",") {
		if f == "" {
			continue
		}
		k, v, kv := strings.Cut(f, "=")
		if !kv {
			o.name = f
			continue
		}
		switch k {
		case "name":
			o.name = v
		case "rxcsum":
			switch v {
			case "on", "1", "true":
				o.rxCsum = true
			case "off", "0", "false":
				o.rxCsum = false
			default:
				return o, fmt.Errorf("tap: rxcsum=%q: want on or off", v)
			}
		default:
			return o, fmt.Errorf("tap: unknown option %q (known: NAME, name=, rxcsum=on|off)", k)
		}
	}
	if len(o.name) >= unix.IFNAMSIZ || strings.ContainsAny(o.name, "/ %") {
		return o, fmt.Errorf("tap: bad device name %q", o.name)
	}
	return o, nil
}

// hasNetAdmin says whether CAP_NET_ADMIN is in the effective set, so that a
// missing privilege gets a clear message instead of an ioctl's EPERM.
func hasNetAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true // can't tell: let the kernel decide
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || caps&(1<<unix.CAP_NET_ADMIN) != 0
		}
	}
	return true
}

// randomMAC returns a random unicast, locally administered MAC address.
func randomMAC() (net.HardwareAddr, error) {
	m := make(net.HardwareAddr, 6)
	if _, err := rand.Read(m); err != nil {
		return nil, err
	}
	m[0] = (m[0] | 0x02) &^ 0x01
	return m, nil
}

// Open creates the TAP device, configures its kernel side and returns the
// netstack link endpoint over it. Close removes the device.
func Open(cfg netdev.Config) (*netdev.Device, error) {
	o, err := parseArg(cfg.Arg, cfg.Name)
	if err != nil {
		return nil, err
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, fmt.Errorf("tap %s: no /dev/net/tun (%v): the kernel needs the tun driver (CONFIG_TUN), or use --netdev none", o.name, err)
	}
	if !hasNetAdmin() {
		return nil, fmt.Errorf("tap %s: %w", o.name, ErrNeedRoot)
	}
	if _, err := netlink.LinkByName(o.name); err == nil {
		return nil, fmt.Errorf("tap %s: a network device of that name already exists (another nused? remove it with `ip link del %s` or pick another name with --netdev tap:NAME)", o.name, o.name)
	}

	la := netlink.NewLinkAttrs()
	la.Name = o.name
	tt := &netlink.Tuntap{
		LinkAttrs: la,
		Mode:      netlink.TUNTAP_MODE_TAP,
		// No packet-info header, no vnet header (netstack's fdbased would
		// take the virtio header for packet data on a non-socket fd), and
		// exclusive: never attach to someone else's device.
		Flags:      netlink.TUNTAP_NO_PI | netlink.TUNTAP_TUN_EXCL,
		NonPersist: true, // the device dies with its fd, even if we crash
		Queues:     1,
	}
	if err := netlink.LinkAdd(tt); err != nil {
		switch {
		case strings.Contains(err.Error(), "not permitted"):
			return nil, fmt.Errorf("tap %s: %w", o.name, ErrNeedRoot)
		case strings.Contains(err.Error(), "busy"), strings.Contains(err.Error(), "exists"):
			return nil, fmt.Errorf("tap %s: device name in use: %v", o.name, err)
		}
		return nil, fmt.Errorf("tap %s: creating the device: %v", o.name, err)
	}
	file := tt.Fds[0]
	var link netlink.Link = tt
	cleanup := func() {
		file.Close()
		// NonPersist devices vanish with the fd; delete in case it stayed.
		if l, err := netlink.LinkByName(o.name); err == nil && l.Attrs().Index == link.Attrs().Index {
			netlink.LinkDel(l)
		}
	}
	fail := func(format string, args ...any) (*netdev.Device, error) {
		cleanup()
		return nil, fmt.Errorf("tap %s: "+format, append([]any{o.name}, args...)...)
	}
	if l, err := netlink.LinkByName(o.name); err == nil {
		link = l
	} else {
		return fail("looking up the new device: %v", err)
	}
	if err := netlink.LinkSetMTU(link, int(mtu)); err != nil {
		return fail("setting MTU %d: %v", mtu, err)
	}
	for _, p := range cfg.HostAddrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			// The link is point-to-point with netstack, which does not
			// defend addresses: skip DAD so the address works at once.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, a); err != nil {
			return fail("adding host address %s: %v", p, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fail("bringing the device up: %v", err)
	}
	mac, err := randomMAC()
	if err != nil {
		return fail("random MAC: %v", err)
	}
	// fdbased sends, our reader reads (rx.go); give them a dup so that
	// os.File's poller registration does not interfere, and keep the
	// original open to hold the device.
	fd, err := unix.Dup(int(file.Fd()))
	if err != nil {
		return fail("dup: %v", err)
	}
	ep, err := fdbased.New(&fdbased.Options{
		FDs:            []int{fd},
		MTU:            mtu,
		EthernetHeader: true,
		Address:        tcpip.LinkAddress(mac),
		// Packets the kernel writes to a TAP without offloads carry full
		// checksums (it computes them in software when the device does not
		// offer checksum offload, which a TAP without TUNSETOFFLOAD does not),
		// so verifying them again only costs time. The TX side stays
		// computed: the kernel verifies what we send.
		RXChecksumOffload:  o.rxCsum,
		PacketDispatchMode: fdbased.Readv,
	})
	if err != nil {
		unix.Close(fd)
		return fail("link endpoint: %v", err)
	}
	// fdbased made fd non-blocking; the reader is ours (rx.go).
	rx := newEndpoint(ep, fd, tcpip.LinkAddress(mac))
	var hostAddrs []string
	for _, p := range cfg.HostAddrs {
		hostAddrs = append(hostAddrs, p.String())
	}
	logf("netdev tap: %s up, MTU %d, stack MAC %s, host addresses %s, rx checksum offload %v", o.name, mtu, mac, strings.Join(hostAddrs, " "), o.rxCsum)
	var once sync.Once
	var closeErr error
	return &netdev.Device{
		Kind:   "tap",
		Name:   o.name,
		Link:   rx,
		Poll:   rx.poll,
		Polled: rx.polled,
		Close: func() error {
			once.Do(func() {
				// The NIC is detached by now (the engine removed it), so
				// fdbased no longer reads fd.
				unix.Close(fd)
				cleanup()
				if _, err := netlink.LinkByName(o.name); err == nil {
					closeErr = fmt.Errorf("tap %s: device still present after close", o.name)
				}
			})
			return closeErr
		},
	}, nil
}

// HostPrefixes is a convenience for callers: the default kernel-side
// addresses matching the gVisor engine's default stack addresses.
var HostPrefixes = []netip.Prefix{
	netip.MustParsePrefix("10.77.0.1/16"),
	netip.MustParsePrefix("fd77::1/64"),
}
