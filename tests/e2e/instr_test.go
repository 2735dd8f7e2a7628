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
// namespace is gone afterwards.
func TestInstrScript(t *testing.T) {
	out := []byte(runScript(t, []string{"valgrind", "callgrind_control", "redis-server", "redis-benchmark"}, nil, "nuse-instr",
		"scripts/bench/instr.sh", "-n", "300", "-r", "2"))
	reps := regexp.MustCompile(`rep \d+: (\d+) instructions/request`).FindAllSubmatch(out, -1)
	med := regexp.MustCompile(`median: (\d+) instructions/request`).FindSubmatch(out)
	if len(reps) != 2 || med == nil {
		t.Fatalf("want two repetitions and a median in the output")
	}
	for _, m := range append(reps, med) {
		// A GET through the daemon takes tens of thousands of
		// instructions; far outside that, the count measured something
		// else (nothing ran, or a spin loop was counted).
		n, _ := strconv.Atoi(string(m[1]))
		if n < 5_000 || n > 5_000_000 {
			t.Errorf("implausible figure %d instructions/request", n)
		}
	}
}
