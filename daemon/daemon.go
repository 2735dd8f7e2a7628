// Package daemon is nused: it opens the netdev, starts the transport
// engines (from stack's registry), and serves preloaded processes through
// the user-socket engine.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/daemon/arena"
	"github.com/nuse-project/nuse/daemon/usock"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/gvisor"
	"github.com/nuse-project/nuse/stack/netdev"
	"github.com/nuse-project/nuse/uc/proxy"
)

// Config is the daemon's configuration.
type Config struct {
	Sock string // control socket path
	// Engine is the default transport engine (DefaultEngine if empty):
	// the one every NUSE socket uses until rules can name another.
	Engine string
	// Engines are further engines to run beside the default (the daemon
	// runs them all at once; `nuse stats` shows each).
	Engines []string
	// Settings are each engine's key=value settings, by engine name
	// (`--set ENGINE.KEY=VALUE`; `--tcp KEY=VALUE` is gvisor's).
	Settings   map[string]map[string]string
	Netdev     string         // "tap", "tap:NAME", "kmod", "uc:...", "none"
	DevName    string         // device name (nuse0)
	MTU        uint32         // link MTU
	StackAddrs []netip.Prefix // the stack's addresses
	HostAddrs  []netip.Prefix // the kernel side's addresses (TAP, kmod)
	Gateways   []netip.Addr   // default routes of the stack
	Loopback   bool           // the stack owns 127.0.0.1/8 and ::1 too
	MaxSocks   uint32
	RingSize   uint32
	Spin       time.Duration
	SpinMax    time.Duration // how far the workers' spin may grow (usock.Config)
	Workers    int
	UCSpin     time.Duration // how long a uc proxy QP's pump spins before it sleeps
	// UCProcs is GOMAXPROCS while uc proxy sessions run (0: unchanged).
	// A daemon cut to a thread per worker (--procs) gives its QP pumps
	// threads of their own again: a pump that waits for a free thread
	// adds its wait to every verb's latency.
	UCProcs  int
	ShimSpin time.Duration
	Linger   time.Duration
	Logf     func(format string, args ...any)
	// ProfileLabels: a CPU profile runs; label its samples per worker and
	// session (usock.Config).
	ProfileLabels bool
}

// DefaultEngine is the engine a daemon runs when none is named.
const DefaultEngine = "gvisor"

// engineNames is the default engine first, then the others, each once.
func (cfg Config) engineNames() []string {
	def := cfg.Engine
	if def == "" {
		def = DefaultEngine
	}
	names := []string{def}
	for _, n := range cfg.Engines {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	names := cfg.engineNames()
	for _, n := range names {
		if _, err := stack.Lookup(n); err != nil {
			return err
		}
	}
	for n := range cfg.Settings {
		if !slices.Contains(names, n) {
			return fmt.Errorf("settings for engine %q, which this daemon does not run (it runs %s)", n, strings.Join(names, ", "))
		}
	}
	layout, err := arena.NewLayout(cfg.MaxSocks, cfg.RingSize)
	if err != nil {
		return err
	}
	// The netdev goes to the first engine that asks for it.
	var dev *netdev.Device
	var devOwner string
	engines := map[string]stack.Engine{}
	defer func() {
		for _, e := range engines {
			e.Close()
		}
	}()
	for _, n := range names {
		env := stack.Env{
			Settings: cfg.Settings[n], StackAddrs: cfg.StackAddrs, Gateways: cfg.Gateways, Loopback: cfg.Loopback,
			Logf: func(f string, a ...any) { logf("engine "+n+": "+f, a...) },
		}
		env.Netdev = func() (*netdev.Device, error) {
			if devOwner != "" {
				return nil, fmt.Errorf("the netdev is taken by engine %s", devOwner)
			}
			devOwner = n
			d, err := openNetdev(cfg, logf)
			dev = d
			return d, err
		}
		e, err := stack.Start(n, env)
		if err != nil {
			return err
		}
		engines[n] = e
	}
	def := engines[names[0]]
	srv := usock.NewServer(usock.Config{
		Engine: def, Engines: engines, Layout: layout, Spin: cfg.Spin, SpinMax: cfg.SpinMax, Workers: cfg.Workers, ShimSpin: cfg.ShimSpin, Linger: cfg.Linger,
		ProfileLabels: cfg.ProfileLabels, Logf: logf, NetStats: func() []usock.NICStats { return nicStats(engines) },
		UCStats: ucStats,
		Handlers: map[uint16]usock.Handler{abi.MsgUC: func(c *net.UnixConn, cred *unix.Ucred, seq uint32, body []byte) {
			ucProcs.enter(cfg.UCProcs)
			defer ucProcs.leave()
			proxy.Serve(c, cred, seq, body, proxy.ServerConfig{Spin: cfg.UCSpin, Logf: logf})
		}},
	})
	if err := srv.Listen(cfg.Sock); err != nil {
		return err
	}
	where := "no netdev"
	if dev != nil {
		where = fmt.Sprintf("netdev %s (%s, engine %s)", dev.Name, dev.Kind, devOwner)
	}
	also := ""
	if len(names) > 1 {
		also = " (also running " + strings.Join(names[1:], ", ") + ")"
	}
	logf("nused ready on %s: engine %s%s, %s, stack addresses %v, loopback %v, %d worker(s) on %d thread(s) (--procs)", cfg.Sock, names[0], also, where, addrsOr(cfg.StackAddrs), cfg.Loopback, max(cfg.Workers, 1), runtime.GOMAXPROCS(0))
	<-ctx.Done()
	logf("shutting down")
	srv.Close()
	_ = os.Remove(cfg.Sock)
	return nil
}

func addrsOr(p []netip.Prefix) any {
	if len(p) == 0 {
		return gvisor.DefaultStackAddrs
	}
	return p
}

// openNetdev opens the configured device, falling back where a user would
// want it: no root → no TAP (stack-internal only); no /dev/nuse → TAP.
func openNetdev(cfg Config, logf func(string, ...any)) (*netdev.Device, error) {
	spec := cfg.Netdev
	if spec == "" {
		spec = "tap"
	}
	ncfg := netdev.Config{Name: cfg.DevName, MTU: cfg.MTU, HostAddrs: cfg.HostAddrs, Logf: logf}
	kind, _, _ := strings.Cut(spec, ":")
	if kind == "none" {
		return nil, nil
	}
	if (kind == "tap" || kind == "kmod") && os.Geteuid() != 0 {
		logf("not root: running without a %s netdev; NUSE traffic stays inside the stack (loopback and NUSE-to-NUSE only)", kind)
		return nil, nil
	}
	dev, err := netdev.Open(spec, ncfg)
	if err == nil {
		return dev, nil
	}
	if kind == "kmod" && errors.Is(err, os.ErrNotExist) {
		logf("%v; using a TAP device instead", err)
		return netdev.Open("tap", ncfg)
	}
	return nil, err
}

// procsWhile raises GOMAXPROCS while some callers are inside, and puts
// it back when the last one leaves.
type procsWhile struct {
	mu    sync.Mutex
	n     int
	saved int // GOMAXPROCS before the raise, 0 if not raised
}

var ucProcs procsWhile

func (p *procsWhile) enter(want int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.n == 1 && want > runtime.GOMAXPROCS(0) {
		p.saved = runtime.GOMAXPROCS(want)
	}
}

func (p *procsWhile) leave() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n--
	if p.n == 0 && p.saved > 0 {
		runtime.GOMAXPROCS(p.saved)
		p.saved = 0
	}
}

// nicStats gathers the interface counters of the engines that have NICs.
func nicStats(engines map[string]stack.Engine) []usock.NICStats {
	var out []usock.NICStats
	for _, name := range slices.Sorted(maps.Keys(engines)) {
		g, ok := engines[name].(*gvisor.Engine)
		if !ok {
			continue
		}
		for _, n := range nicsOf(g) {
			if len(engines) > 1 {
				n.Name = name + ":" + n.Name // gvisor:lo is not the kernel's lo
			}
			out = append(out, n)
		}
	}
	return out
}

func nicsOf(eng *gvisor.Engine) []usock.NICStats {
	var out []usock.NICStats
	for _, n := range eng.Stats() {
		out = append(out, usock.NICStats{Name: n.Name, RxPackets: n.RxPackets, RxBytes: n.RxBytes,
			TxPackets: n.TxPackets, TxBytes: n.TxBytes, RxMalformed: n.RxMalformed, TxDropped: n.TxDropped,
			AcksHeld: n.DelayedACK.Held, AcksReplaced: n.DelayedACK.Replaced, AcksExpired: n.DelayedACK.Expired, AcksFlushed: n.DelayedACK.Flushed, AcksLate: n.DelayedACK.Late})
	}
	return out
}

func ucStats() []usock.UCStats {
	var out []usock.UCStats
	for _, i := range proxy.Sessions() {
		out = append(out, usock.UCStats{Pid: i.Pid, Device: i.Device, QPs: i.QPs, Posted: i.Posted, Completed: i.Completed,
			Direct: i.Direct, Answered: i.Answered, Since: i.Since})
	}
	return out
}
