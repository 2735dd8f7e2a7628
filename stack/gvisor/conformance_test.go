package gvisor

import (
	"testing"

	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/enginetest"
)

// The conformance suite, on a stack-internal engine with a loopback NIC.
func TestConformance(t *testing.T) {
	enginetest.Run(t, newConformanceEngine, enginetest.Deviation("listen-backlog-idle",
		"netstack answers SYNs beyond backlog-1 half-open ones with SYN cookies and, when the accept "+
			"queue is full as the handshake's last ACK comes, drops that ACK: the client is established, "+
			"the listener never sees the connection until the client sends data (Linux drops the SYN "+
			"instead, and the client retries)"))
}

func newConformanceEngine(t testing.TB) stack.Engine {
	e, err := New(Config{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// The engine benchmarks of the suite: go test -bench Engine ./stack/ENGINE/
func BenchmarkEngine(b *testing.B) { enginetest.Bench(b, newConformanceEngine) }
