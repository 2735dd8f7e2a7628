package e2e

import (
	"regexp"
	"strconv"
	"testing"
)

// TestInstrScript runs scripts/bench/instr.sh at a tiny count: the daemon
// under callgrind, redis-benchmark through NUSE, two repetitions. It checks
// that each repetition and the median come out as positive instruction
// counts of a plausible size (no timing is judged), and that the script's
// namespace is gone afterwards. With -k 0 (a connection per request) the
// figure must come out above the keep-alive one: a connection's setup and
// teardown cost several GETs' worth.
func TestInstrScript(t *testing.T) {
	run := func(args ...string) int {
		out := []byte(runScript(t, []string{"valgrind", "callgrind_control", "redis-server", "redis-benchmark"}, nil, "nuse-instr",
			"scripts/bench/instr.sh", append([]string{"-n", "300", "-r", "2"}, args...)...))
		reps := regexp.MustCompile(`rep \d+: (\d+) instructions/request`).FindAllSubmatch(out, -1)
		med := regexp.MustCompile(`median: (\d+) instructions/request`).FindSubmatch(out)
		if len(reps) != 2 || med == nil {
			t.Fatalf("instr.sh %q: want two repetitions and a median in the output", args)
		}
		for _, m := range append(reps, med) {
			// A GET through the daemon takes tens of thousands of
			// instructions; far outside that, the count measured something
			// else (nothing ran, or a spin loop was counted).
			n, _ := strconv.Atoi(string(m[1]))
			if n < 5_000 || n > 5_000_000 {
				t.Errorf("instr.sh %q: implausible figure %d instructions/request", args, n)
			}
		}
		n, _ := strconv.Atoi(string(med[1]))
		return n
	}
	keep := run()
	conn := run("-k", "0")
	t.Logf("instructions per GET: %d kept alive, %d with a connection each", keep, conn)
	if conn <= keep {
		t.Errorf("a connection per request (%d instructions) should cost more than a kept-alive GET (%d)", conn, keep)
	}
}
