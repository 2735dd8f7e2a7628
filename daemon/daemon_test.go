package daemon

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nuse-project/nuse/daemon/ctlclient"
)

func TestEngineChoice(t *testing.T) {
	ctx := context.Background()
	if err := Run(ctx, Config{Engine: "nope"}); err == nil || !strings.Contains(err.Error(), `unknown engine "nope" (built in: gvisor, kernel`) {
		t.Fatalf("unknown engine: %v", err)
	}
	if err := Run(ctx, Config{Engine: "kernel", Engines: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), `unknown engine "nope"`) {
		t.Fatalf("unknown extra engine: %v", err)
	}
	err := Run(ctx, Config{Engine: "kernel", Settings: map[string]map[string]string{"gvisor": {"sack": "off"}}})
	if err == nil || !strings.Contains(err.Error(), `settings for engine "gvisor", which this daemon does not run (it runs kernel)`) {
		t.Fatalf("settings of an engine not run: %v", err)
	}
	err = Run(ctx, Config{Engine: "kernel", MaxSocks: 64, RingSize: 64 << 10, Settings: map[string]map[string]string{"kernel": {"sack": "off"}}})
	if err == nil || !strings.Contains(err.Error(), `engine kernel: unknown setting "sack"`) {
		t.Fatalf("unknown setting: %v", err)
	}
}

// A daemon with two engines serves, says so, and shuts down cleanly.
func TestRunTwoEngines(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nused.sock")
	ctx, cancel := context.WithCancel(context.Background())
	var logs strings.Builder
	logged := make(chan string, 64)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Sock: sock, Engine: "kernel", Engines: []string{"gvisor", "kernel"}, Netdev: "none", Loopback: true,
			MaxSocks: 64, RingSize: 64 << 10, Spin: time.Microsecond, Workers: 1,
			Logf: func(f string, a ...any) {
				select {
				case logged <- f:
				default:
				}
			}})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !ctlclient.Ping(sock) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("the daemon did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := ctlclient.Stats(sock)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(logged)
	for l := range logged {
		logs.WriteString(l + "\n")
	}
	if st.Engine != "kernel" || len(st.Engines) != 2 || st.Engines[0].Name != "gvisor" || !st.Engines[1].Default {
		t.Fatalf("stats engines: %q %+v", st.Engine, st.Engines)
	}
	if !strings.Contains(logs.String(), "nused ready on %s: engine %s%s") {
		t.Fatalf("no ready line:\n%s", logs.String())
	}
}

// TestProcsWhile: GOMAXPROCS is raised for the first caller in, kept for
// nested ones, put back when the last leaves, and never lowered.
func TestProcsWhile(t *testing.T) {
	orig := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(orig)
	var p procsWhile
	p.enter(3)
	p.enter(3)
	if g := runtime.GOMAXPROCS(0); g != 3 {
		t.Fatalf("inside: GOMAXPROCS %d, want 3", g)
	}
	p.leave()
	if g := runtime.GOMAXPROCS(0); g != 3 {
		t.Fatalf("one still inside: GOMAXPROCS %d, want 3", g)
	}
	p.leave()
	if g := runtime.GOMAXPROCS(0); g != 1 {
		t.Fatalf("all out: GOMAXPROCS %d, want 1", g)
	}
	runtime.GOMAXPROCS(4)
	p.enter(2) // lower than now: unchanged
	if g := runtime.GOMAXPROCS(0); g != 4 {
		t.Fatalf("GOMAXPROCS %d, want 4", g)
	}
	p.leave()
	if g := runtime.GOMAXPROCS(0); g != 4 {
		t.Fatalf("after: GOMAXPROCS %d, want 4", g)
	}
	p.enter(0) // 0: unchanged
	p.leave()
	if g := runtime.GOMAXPROCS(0); g != 4 {
		t.Fatalf("want 0: GOMAXPROCS %d", g)
	}
}
