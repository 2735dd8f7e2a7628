package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/nuse-project/nuse/daemon/usock"
	"github.com/nuse-project/nuse/stack"
)

func TestPrintStatsShowsEngines(t *testing.T) {
	st := &usock.Stats{Engine: "kernel", TxBytes: 2048, RxBytes: 10,
		Engines: []usock.EngineStats{{Name: "gvisor"}, {Name: "kernel", Default: true, Sockets: 1, TxBytes: 2048, RxBytes: 10}},
		Sessions: []usock.SessionStats{{ID: 1, Pid: 42, Comm: "redis", Sockets: []usock.SockStats{
			{Slot: 0, Engine: "kernel", Family: "tcp4", State: "established", Local: "127.0.0.1:1", Remote: "127.0.0.1:2", TxBytes: 2048, RxBytes: 10},
			{Slot: 1, Engine: "kernel", Family: "tcp4", State: "relayed", Local: "127.0.0.1:1", Remote: "127.0.0.1:3"},
		}}},
		Relays: []usock.RelayStats{{Uid: 7, Engine: "kernel", Family: "tcp4", Local: "127.0.0.1:1", Remote: "127.0.0.1:3", TxBytes: 3 << 20}}}
	var b bytes.Buffer
	printStats(&b, st)
	out := b.String()
	for _, want := range []string{"2.0 KiB sent, 10 B received through NUSE sockets; by engine:", "kernel (default)  1", "gvisor            0", "ENGINE", "kernel   established", "kernel   relayed",
		"relayed sockets (handed to another program or process; bytes since):", "7    tcp4   kernel  127.0.0.1:1  127.0.0.1:3  3.00 MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// An engine with TCP counters of its own gets a row of them.
	b.Reset()
	printStats(&b, &usock.Stats{Engine: "gvisor", Engines: []usock.EngineStats{{Name: "gvisor", Default: true,
		TCP: &stack.TCPStats{Established: 3, ActiveOpens: 40, PassiveOpens: 41, ListenDrops: 5, ResetsSent: 6, ResetsReceived: 7, SegsOut: 800, SegsIn: 801, Retransmits: 9, TailProbes: 10, Timeouts: 11, Spurious: 12}}}})
	for _, want := range []string{"engine TCP counters", "ESTABLISHED  OPENS ACTIVE/PASSIVE  LISTEN DROPS  RESETS OUT/IN  SEGS OUT/IN  RETRANS  TLP  RTO  SPURIOUS",
		"gvisor  3            40/41                 5             6/7            800/801      9        10   11   12"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	// One engine: the one-line summary as before.
	b.Reset()
	printStats(&b, &usock.Stats{Engine: "gvisor", Engines: []usock.EngineStats{{Name: "gvisor", Default: true}}})
	if !strings.HasPrefix(b.String(), "engine gvisor: 0 B sent, 0 B received through NUSE sockets") {
		t.Errorf("single engine:\n%s", b.String())
	}
}

func TestEngineListNamesEveryEngine(t *testing.T) {
	l := engineList()
	for _, n := range []string{"gvisor", "kernel"} {
		if !strings.Contains(l, "\n    "+n+" ") {
			t.Errorf("--engine help lacks %s:\n%s", n, l)
		}
	}
}
