// Package daemon is nused: it opens the netdev, starts the transport
// engine, and serves preloaded processes through the user-socket engine.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nuse-project/nuse/daemon/arena"
	"github.com/nuse-project/nuse/daemon/usock"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack/gvisor"
	"github.com/nuse-project/nuse/stack/netdev"
	"github.com/nuse-project/nuse/uc/proxy"
)

// Config is the daemon's configuration.
type Config struct {
	Sock       string         // control socket path
	Engine     string         // transport engine: "gvisor" (the default and, so far, the only one)
	Netdev     string         // "tap", "tap:NAME", "kmod", "uc:...", "none"
	DevName    string         // device name (nuse0)
	MTU        uint32         // link MTU
	StackAddrs []netip.Prefix // the stack's addresses
	HostAddrs  []netip.Prefix // the kernel side's addresses (TAP, kmod)
	Gateways   []netip.Addr   // default routes of the stack
	Loopback   bool           // the stack owns 127.0.0.1/8 and ::1 too
	TCP        gvisor.TCPConfig
	MaxSocks   uint32
	RingSize   uint32
	Spin       time.Duration
	Workers    int
	UCSpin     time.Duration // how long a uc proxy QP's pump spins before it sleeps
	ShimSpin   time.Duration
	Linger     time.Duration
	Logf       func(format string, args ...any)
}

// Engines are the transport engines the daemon can run (--engine).
var Engines = []string{"gvisor"}

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if cfg.Engine != "" && cfg.Engine != "gvisor" {
		return fmt.Errorf("unknown engine %q (available: %s)", cfg.Engine, strings.Join(Engines, ", "))
	}
	layout, err := arena.NewLayout(cfg.MaxSocks, cfg.RingSize)
	if err != nil {
		return err
	}
	dev, err := openNetdev(cfg, logf)
	if err != nil {
		return err
	}
	eng, err := gvisor.New(gvisor.Config{
		Netdev: dev, StackAddrs: cfg.StackAddrs, Gateways: cfg.Gateways,
		Loopback: cfg.Loopback, TCP: cfg.TCP,
	})
	if err != nil {
		if dev != nil && dev.Close != nil {
			_ = dev.Close()
		}
		return fmt.Errorf("starting the gVisor engine: %w", err)
	}
	defer eng.Close()
	srv := usock.NewServer(usock.Config{
		Engine: eng, Layout: layout, Spin: cfg.Spin, Workers: cfg.Workers, ShimSpin: cfg.ShimSpin, Linger: cfg.Linger,
		Logf: logf, NetStats: func() []usock.NICStats { return nicStats(eng) },
		UCStats: ucStats,
		Handlers: map[uint16]usock.Handler{abi.MsgUC: func(c *net.UnixConn, cred *unix.Ucred, seq uint32, body []byte) {
			proxy.Serve(c, cred, seq, body, proxy.ServerConfig{Spin: cfg.UCSpin, Logf: logf})
		}},
	})
	if err := srv.Listen(cfg.Sock); err != nil {
		return err
	}
	where := "no netdev: traffic stays inside the stack"
	if dev != nil {
		where = fmt.Sprintf("netdev %s (%s)", dev.Name, dev.Kind)
	}
	logf("nused ready on %s: engine gvisor, %s, stack addresses %v, loopback %v", cfg.Sock, where, addrsOr(cfg.StackAddrs), cfg.Loopback)
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

func nicStats(eng *gvisor.Engine) []usock.NICStats {
	var out []usock.NICStats
	for _, n := range eng.Stats() {
		out = append(out, usock.NICStats{Name: n.Name, RxPackets: n.RxPackets, RxBytes: n.RxBytes,
			TxPackets: n.TxPackets, TxBytes: n.TxBytes, RxMalformed: n.RxMalformed, TxDropped: n.TxDropped})
	}
	return out
}

func ucStats() []usock.UCStats {
	var out []usock.UCStats
	for _, i := range proxy.Sessions() {
		out = append(out, usock.UCStats{Pid: i.Pid, Device: i.Device, QPs: i.QPs, Posted: i.Posted, Completed: i.Completed, Since: i.Since})
	}
	return out
}
