// Package netdev opens the device through which a packet engine's traffic
// leaves the daemon: a TAP device (the default), the NUSE kernel module, or
// an RDMA UC channel. Each kind registers an Opener; the daemon's --netdev
// flag names one, as "kind" or "kind:arg" (e.g. "tap:nuse1", "kmod",
// "uc:peer=10.0.0.2:7471").
package netdev

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Config is what the daemon tells an opener.
type Config struct {
	// Arg is the text after "kind:" in the --netdev value, or "".
	Arg string
	// Name is the device name to use where the kind has one (e.g. nuse0).
	Name string
	// MTU of the link.
	MTU uint32
	// HostAddrs are the addresses to put on the kernel's side of the device
	// (TAP, kmod); kinds without a kernel side ignore them.
	HostAddrs []netip.Prefix
	// Logf reports what the opener did.
	Logf func(format string, args ...any)
}

// Device is an opened netdev.
type Device struct {
	// Kind and Name say what it is ("tap", "nuse0").
	Kind, Name string
	// Link is the gVisor link endpoint to attach to a NIC.
	Link stack.LinkEndpoint
	// Close releases the device (the endpoint must be detached first).
	Close func() error
	// Poll, if set, delivers the frames waiting on the device without
	// blocking (stack.Poller) and says whether there were any.
	Poll func() bool
	// Polled, if set, is stack.Poller's Polled: whether a worker calls
	// Poll every pass now.
	Polled func(on bool)
}

// Opener opens a device of one kind.
type Opener func(cfg Config) (*Device, error)

var (
	mu      sync.Mutex
	openers = map[string]Opener{}
)

// Register makes a kind available to Open. It panics on a duplicate kind.
func Register(kind string, o Opener) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := openers[kind]; dup {
		panic("netdev: kind registered twice: " + kind)
	}
	openers[kind] = o
}

// Kinds lists the registered kinds.
func Kinds() []string {
	mu.Lock()
	defer mu.Unlock()
	var ks []string
	for k := range openers {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Open opens the device that spec ("kind" or "kind:arg") names.
func Open(spec string, cfg Config) (*Device, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	mu.Lock()
	o := openers[kind]
	mu.Unlock()
	if o == nil {
		return nil, fmt.Errorf("netdev %q: unknown kind %q (known: %s)", spec, kind, strings.Join(Kinds(), ", "))
	}
	cfg.Arg = arg
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return o(cfg)
}
