package e2e

import (
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestABDaemonsScript runs scripts/bench/ab-daemons.sh small (one round of
// 20,000 GETs, enough for the server to cost whole CPU ticks): the kernel,
// this build on gvisor and on the kernel engine. It checks each path's
// mean and its rate with a core per party, and that every party's CPU per
// request was measured (the daemon's for the NUSE paths only): numbers
// present and positive, no timing judged.
func TestABDaemonsScript(t *testing.T) {
	bin := filepath.Join(repo, "bin")
	out := runScript(t, []string{"redis-server", "redis-benchmark"}, nil, "nuse-ab",
		"scripts/bench/ab-daemons.sh", "-w", "redis", "-r", "1", "-n", "20000", "g="+bin, "k="+bin+":--engine kernel")
	mean := regexp.MustCompile(`(?m)^  (\S+) +(\d+) req/s  NUSE/kernel ([0-9.]+)x  daemon CPU/request ([0-9.]+) us$`)
	core := regexp.MustCompile(`(?m)^  (\S+) +(\d+) req/s  NUSE/kernel ([0-9.]+)x  \(daemon ([0-9.]+), server ([0-9.]+), client ([0-9.]+) us/request\)$`)
	means, cores := mean.FindAllStringSubmatch(out, -1), core.FindAllStringSubmatch(out, -1)
	if len(means) != 3 || len(cores) != 3 {
		t.Fatalf("want three means and three core-per-party lines (kernel, g, k): %d, %d", len(means), len(cores))
	}
	num := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("not a number: %q", s)
		}
		return v
	}
	for i, want := range []string{"kernel", "g", "k"} {
		m, c := means[i], cores[i]
		if m[1] != want || c[1] != want {
			t.Fatalf("line %d is %q / %q, want %s", i, m[1], c[1], want)
		}
		if num(m[2]) <= 0 || num(c[2]) <= 0 {
			t.Errorf("%s: no rate (%s, %s)", want, m[2], c[2])
		}
		if num(c[5]) <= 0 || num(c[6]) <= 0 {
			t.Errorf("%s: server %s, client %s us/request: a party's CPU was not measured", want, c[5], c[6])
		}
		if daemon := num(c[4]); (want == "kernel") != (daemon == 0) {
			t.Errorf("%s: daemon %v us/request", want, daemon)
		}
	}
}
