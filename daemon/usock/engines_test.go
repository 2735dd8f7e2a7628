package usock

import (
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/shim/abi"
	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/kernel"
)

// A daemon running two engines: sockets go to the default one (kernel
// here, over the test's loopback), and stats say which engine carries each
// socket and what each engine carried.
func TestStatsNameEachSocketsEngine(t *testing.T) {
	keng, err := kernel.New(kernel.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the server's: cleanups run last-in first-out, so
	// the engine closes only once the server has stopped using it.
	t.Cleanup(func() { keng.Close() })
	srv, path := startServerWith(t, 64<<10, func(cfg *Config) {
		cfg.Engines = map[string]stack.Engine{"gvisor": cfg.Engine, "kernel": keng}
		cfg.Engine = keng
	})
	cl := dialClient(t, path)
	ls := cl.listen(syscall.AF_INET, netip.AddrPortFrom(lo4, 0))
	res, out := cl.cmd(ls, abi.OpGetsockname, 0, 0, nil, nil)
	if res != 0 {
		t.Fatalf("getsockname: %v", syscall.Errno(-res))
	}
	ap, err := parseSockaddr(out.Addr[:out.AddrLen], syscall.AF_INET)
	if err != nil || ap.Port() == 0 {
		t.Fatalf("listener address %v, %v", ap, err)
	}
	cs := cl.socket(syscall.AF_INET)
	if err := cl.connect(cs, ap); err != nil {
		t.Fatal(err)
	}
	as, _ := cl.accept(ls)
	if err := cl.send(cs, []byte("through the kernel")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := cl.recv(as, buf); err != nil || string(buf[:n]) != "through the kernel" {
		t.Fatalf("recv %q, %v", buf[:n], err)
	}
	st := srv.Stats()
	if st.Engine != "kernel" || len(st.Sessions) != 1 {
		t.Fatalf("stats: engine %q, %d sessions", st.Engine, len(st.Sessions))
	}
	for _, so := range st.Sessions[0].Sockets {
		if so.Engine != "kernel" {
			t.Errorf("socket %d on engine %q, want kernel", so.Slot, so.Engine)
		}
	}
	byName := map[string]EngineStats{}
	for _, e := range st.Engines {
		byName[e.Name] = e
	}
	if k := byName["kernel"]; !k.Default || k.Sockets != 3 || k.TxBytes != 18 || k.RxBytes != 18 {
		t.Errorf("kernel engine totals %+v: want default, 3 sockets, 18 bytes each way", k)
	}
	if g, ok := byName["gvisor"]; !ok || g.Default || g.Sockets != 0 || g.TxBytes != 0 {
		t.Errorf("gvisor engine totals %+v, present %v: want an idle engine", g, ok)
	}
	// Its own TCP counters: gvisor has them (idle: none opened), the
	// kernel engine none of its own.
	if g := byName["gvisor"]; g.TCP == nil || g.TCP.ActiveOpens != 0 {
		t.Errorf("gvisor's TCP counters %+v: want present, no connection opened", g.TCP)
	}
	if k := byName["kernel"]; k.TCP != nil {
		t.Errorf("the kernel engine shows TCP counters %+v", k.TCP)
	}
	// Closed sockets stay counted for their engine.
	cl.closeSock(cs)
	cl.closeSock(as)
	cl.closeSock(ls)
	cl.close()
	for i := 0; i < 500; i++ {
		if st = srv.Stats(); len(st.Sessions) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, e := range st.Engines {
		if e.Name == "kernel" && (e.Sockets != 0 || e.TxBytes != 18) {
			t.Errorf("kernel totals after the session ended: %+v", e)
		}
	}
	if got := srv.StatsFor(12345); len(got.Engines) != 2 || got.Engines[1].TxBytes != 0 {
		t.Errorf("another user sees engine totals %+v: want zeros", got.Engines)
	}
}

// Issue 12: the shim names the engine of each socket (its rule's); ""
// is the default, a name the daemon does not run gets ENOPROTOOPT and
// costs nothing, and an accepted socket is on its listener's engine.
func TestSocketOnNamedEngine(t *testing.T) {
	keng, err := kernel.New(kernel.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the server's: cleanups run last-in first-out, so
	// the engine closes only once the server has stopped using it.
	t.Cleanup(func() { keng.Close() })
	srv, path := startServerWith(t, 64<<10, func(cfg *Config) {
		cfg.Engines = map[string]stack.Engine{cfg.Engine.Name(): cfg.Engine, "kernel": keng}
	})
	def := srv.Stats().Engine
	cl := dialClient(t, path)
	named := func(engine string) (*testSock, int32) {
		req := abi.CtlReq{Family: syscall.AF_INET, Type: syscall.SOCK_STREAM}
		copy(req.Engine[:], engine)
		rep, fd := cl.birth(abi.MsgSocket, req)
		return &testSock{slot: rep.Sock, gen: rep.Gen, fd: fd, family: syscall.AF_INET}, rep.Result
	}
	for _, absent := range []string{"shm", "nosuch-engine_1"} {
		if absent == def { // NUSE_TEST_ENGINE=shm
			continue
		}
		if _, res := named(absent); res != -int32(syscall.ENOPROTOOPT) {
			t.Errorf("engine %q: result %d, want -ENOPROTOOPT", absent, res)
		}
	}
	ls, res := named("kernel")
	if res != 0 {
		t.Fatalf("socket on kernel: %v", syscall.Errno(-res))
	}
	if res, _ := cl.cmd(ls, abi.OpBind, 0, 0, sockaddr(syscall.AF_INET, netip.AddrPortFrom(lo4, 0)), nil); res != 0 {
		t.Fatalf("bind: %v", syscall.Errno(-res))
	}
	if res, _ := cl.cmd(ls, abi.OpListen, 4, 0, nil, nil); res != 0 {
		t.Fatalf("listen: %v", syscall.Errno(-res))
	}
	_, out := cl.cmd(ls, abi.OpGetsockname, 0, 0, nil, nil)
	ap, _ := parseSockaddr(out.Addr[:out.AddrLen], syscall.AF_INET)
	cs, _ := named("kernel")
	if err := cl.connect(cs, ap); err != nil {
		t.Fatalf("connect on kernel to %v: %v", ap, err)
	}
	as, _ := cl.accept(ls)
	ds, res := named("")
	if res != 0 {
		t.Fatalf("socket on the default engine: %v", syscall.Errno(-res))
	}
	gs, res := named(def)
	if res != 0 {
		t.Fatalf("socket on %s by name: %v", def, syscall.Errno(-res))
	}
	want := map[uint32]string{ls.slot: "kernel", cs.slot: "kernel", as.slot: "kernel", ds.slot: def, gs.slot: def}
	st := srv.Stats()
	if len(st.Sessions) != 1 || len(st.Sessions[0].Sockets) != len(want) {
		t.Fatalf("stats: %+v, want one session with %d sockets", st.Sessions, len(want))
	}
	for _, so := range st.Sessions[0].Sockets {
		if so.Engine != want[so.Slot] {
			t.Errorf("socket %d on engine %q, want %q", so.Slot, so.Engine, want[so.Slot])
		}
	}
}
