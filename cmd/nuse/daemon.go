package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nuse-project/nuse/daemon"
	"github.com/nuse-project/nuse/internal/shmem"
	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/netdev"
)

func init() {
	register("daemon", "run the NUSE daemon (nused)", runDaemon)
}

// prefixList is a repeatable/comma-separated list of address prefixes.
type prefixList []netip.Prefix

func (p *prefixList) String() string { return fmt.Sprint(*p) }
func (p *prefixList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		pr, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("%q is not an address/prefix like 10.77.0.2/16", f)
		}
		*p = append(*p, pr)
	}
	return nil
}

type addrList []netip.Addr

func (p *addrList) String() string { return fmt.Sprint(*p) }
func (p *addrList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("%q is not an address", f)
		}
		*p = append(*p, a)
	}
	return nil
}

type kvList []string

func (p *kvList) String() string     { return strings.Join(*p, ",") }
func (p *kvList) Set(v string) error { *p = append(*p, v); return nil }

// defaultUCSpin: a uc proxy pump spinning beside a program and its peer
// that spin too only steals their CPU on a small machine (measured on 2
// vCPUs: 108 us round trips without spinning, 400 us with 200 us of spin),
// so it spins only where there are cores to spare.
func defaultUCSpin() time.Duration {
	if runtime.NumCPU() <= 4 {
		return 0
	}
	return 100 * time.Microsecond
}

// autoProcs says whether --procs 0 means --workers: on a small machine
// a thread of its own for gVisor's TCP processors costs a cross-thread
// wake-up per segment and competes with the programs for the few CPUs
// (measured on 2 vCPUs: redis GET through the daemon at 1.3-1.7x the
// requests/s with one thread, the daemon's CPU per request down by about
// 40%). $GOMAXPROCS, if set, is the user's choice.
func autoProcs() bool {
	return runtime.NumCPU() <= 4 && os.Getenv("GOMAXPROCS") == ""
}

// engineList is the --engine help: every built-in engine with its summary.
func engineList() string {
	var b strings.Builder
	for _, r := range stack.Registered() {
		fmt.Fprintf(&b, "\n    %-8s %s", r.Name, r.Summary)
	}
	return b.String()
}

func runDaemon(args []string) int {
	fs := flag.NewFlagSet("nuse daemon", flag.ContinueOnError)
	var cfg daemon.Config
	var stackAddrs, hostAddrs prefixList
	var gws addrList
	var tcp, sets kvList
	var also string
	fs.StringVar(&cfg.Sock, "sock", defaultSock(), "control socket path")
	fs.StringVar(&cfg.Engine, "engine", daemon.DefaultEngine, "the default transport engine, which NUSE sockets use: "+engineList())
	fs.StringVar(&also, "engines", "", "further engines to run beside --engine, comma-separated (each shows in nuse stats)")
	fs.Var(&sets, "set", "an engine's setting ENGINE.KEY=VALUE, repeatable (nuse engines lists each engine's keys)")
	fs.StringVar(&cfg.Netdev, "netdev", "tap", "netdev: tap[:NAME], kmod, uc:ARGS or none ("+strings.Join(netdev.Kinds(), ", ")+" available)")
	fs.StringVar(&cfg.DevName, "dev", "nuse0", "name of the device (TAP, kmod)")
	mtu := fs.Uint("mtu", 65000, "link MTU (a virtual link: large is fast)")
	fs.Var(&stackAddrs, "addr", "the stack's addresses (default 10.77.0.2/16,fd77::2/64)")
	fs.Var(&hostAddrs, "host-addr", "addresses of the kernel's side of the device (default 10.77.0.1/16,fd77::1/64)")
	fs.Var(&gws, "gateway", "default gateways of the stack (default 10.77.0.1,fd77::1)")
	fs.BoolVar(&cfg.Loopback, "loopback", true, "the stack also owns 127.0.0.1/8 and ::1, for rules that claim loopback")
	fs.Var(&tcp, "tcp", "gvisor engine's TCP setting key=value, repeatable, same as --set gvisor.key=value (sack, rack, cc, moderate-rcvbuf, sndbuf, rcvbuf, nodelay, ...)")
	maxSocks := fs.Uint("max-sockets", abi.DefaultSocks, "NUSE sockets per process")
	ring := fs.Uint("ring", abi.DefaultRing, "bytes per direction of each socket's ring (power of two)")
	fs.DurationVar(&cfg.Spin, "spin", 50*time.Microsecond, "how long the daemon spins for work before it sleeps")
	fs.DurationVar(&cfg.SpinMax, "spin-max", 2*time.Millisecond, "how far the daemon's spin may grow while work keeps coming just after it fell asleep (past --spin it yields the CPU to runnable programs each turn); at most --spin: a fixed spin")
	fs.DurationVar(&cfg.UCSpin, "uc-spin", defaultUCSpin(), "how long the pump of a uc proxy QP (uc/proxy) spins for work before it sleeps")
	fs.IntVar(&cfg.Workers, "workers", 1, "goroutines that serve the sessions, each spinning over its own (a session is a program and the processes it forks); with cores to spare, one per busy program (README: More workers for more cores)")
	procs := fs.Int("procs", 0, "threads that run the daemon's Go code at once (GOMAXPROCS, at least --workers); 0 is automatic: --workers (one more with the kernel engine) on machines of up to 4 CPUs (the engine's goroutines then run on the workers' threads, which saves a thread wake-up per segment), else Go's default (one per CPU, or $GOMAXPROCS)")
	fs.DurationVar(&cfg.ShimSpin, "shim-spin", 20*time.Microsecond, "how long application threads spin before they sleep")
	fs.DurationVar(&cfg.Linger, "linger", 30*time.Second, "how long a closed socket may take to send what is left in its ring")
	quiet := fs.Bool("q", false, "log only errors")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the daemon to this file (go tool pprof; its samples are labeled per worker and program: -tags)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "nuse daemon: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *procs < 0 {
		fmt.Fprintf(os.Stderr, "nuse daemon: --procs %d: want 0 or more\n", *procs)
		return 2
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--spin", cfg.Spin}, {"--spin-max", cfg.SpinMax}, {"--shim-spin", cfg.ShimSpin}, {"--uc-spin", cfg.UCSpin}, {"--linger", cfg.Linger}} {
		if d.v < 0 {
			fmt.Fprintf(os.Stderr, "nuse daemon: %s %v: want 0 or more\n", d.flag, d.v)
			return 2
		}
	}
	cfg.MTU = uint32(*mtu)
	cfg.MaxSocks = uint32(*maxSocks)
	cfg.RingSize = uint32(*ring)
	cfg.StackAddrs, cfg.HostAddrs, cfg.Gateways = stackAddrs, hostAddrs, gws
	if len(cfg.HostAddrs) == 0 {
		cfg.HostAddrs = []netip.Prefix{netip.MustParsePrefix("10.77.0.1/16"), netip.MustParsePrefix("fd77::1/64")}
	}
	for _, n := range strings.Split(also, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.Engines = append(cfg.Engines, n)
		}
	}
	for _, n := range append([]string{cfg.Engine}, cfg.Engines...) {
		if _, err := stack.Lookup(n); err != nil {
			fmt.Fprintf(os.Stderr, "nuse daemon: --engine: %v\n", err)
			return 2
		}
	}
	if *procs == 0 && autoProcs() {
		*procs = cfg.Workers
		// The kernel engine's readiness waiter sits in epoll_wait, a
		// system call that keeps its thread's right to run Go code
		// until Go's monitor takes it back: it gets a thread of its own
		// (measured: redis GET through the kernel engine 0.31x the
		// kernel's req/s on one thread, 0.39x on two).
		if slices.Contains(append([]string{cfg.Engine}, cfg.Engines...), "kernel") {
			*procs++
		}
		cfg.UCProcs = runtime.GOMAXPROCS(0) // Go's own, for the uc pumps
	}
	if *procs > 0 {
		// Before the engines start: gVisor sizes its TCP processors by it.
		// With one, gVisor's TCP processors run on the worker's thread
		// when it yields, where with a thread to spare every segment that
		// gVisor queues wakes that thread (tens of microseconds of CPU
		// on small VMs).
		runtime.GOMAXPROCS(max(*procs, cfg.Workers))
	}
	cfg.Settings = map[string]map[string]string{}
	set := func(engine, kv, flag string) bool {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fmt.Fprintf(os.Stderr, "nuse daemon: %s %s: want KEY=VALUE\n", flag, kv)
			return false
		}
		if cfg.Settings[engine] == nil {
			cfg.Settings[engine] = map[string]string{}
		}
		cfg.Settings[engine][k] = v
		return true
	}
	for _, kv := range tcp {
		if !set("gvisor", kv, "--tcp") {
			return 2
		}
	}
	for _, s := range sets {
		eng, kv, ok := strings.Cut(s, ".")
		if !ok || !set(eng, kv, "--set") {
			if !ok {
				fmt.Fprintf(os.Stderr, "nuse daemon: --set %s: want ENGINE.KEY=VALUE\n", s)
			}
			return 2
		}
	}
	lg := log.New(os.Stderr, "nused: ", log.LstdFlags|log.Lmicroseconds)
	cfg.Logf = lg.Printf
	if shmem.Forced() {
		// Even with -q: memory use and speed suffer badly (internal/shmem).
		lg.Printf("warning: %s is \"force\": the sockets' rings get 2 MiB huge pages whatever NUSE asks, up to 4 MiB of memory per socket, and slow (any other setting lets NUSE opt out)", shmem.THPSetting)
	}
	if *quiet {
		cfg.Logf = func(string, ...any) {}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nuse daemon:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "nuse daemon:", err)
			return 1
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
		cfg.ProfileLabels = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "nuse daemon:", err)
		return 1
	}
	return 0
}
