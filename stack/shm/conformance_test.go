package shm

import (
	"testing"

	"github.com/nuse-project/nuse/stack"
	"github.com/nuse-project/nuse/stack/enginetest"
)

// The conformance suite: both ends are sockets of the engine under test.
func TestConformance(t *testing.T) { enginetest.Run(t, newConformanceEngine) }

func newConformanceEngine(t testing.TB) stack.Engine { return mustNew(t, Config{}) }

func mustNew(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// The engine benchmarks of the suite: go test -bench Engine ./stack/shm/
func BenchmarkEngine(b *testing.B) { enginetest.Bench(b, newConformanceEngine) }
