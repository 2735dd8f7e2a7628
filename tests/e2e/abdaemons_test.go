package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestABDaemonsScript runs scripts/bench/ab-daemons.sh small (one round of
// 20,000 GETs, enough for the server to cost whole CPU ticks): the kernel,
// this build on gvisor and on the kernel engine. It checks each path's
// mean and its rate with a core per party, and that every party's CPU per
// request was measured (the daemon's for the NUSE paths only); and with
// -p (profile labels), the daemon's CPU per request split by program
// (redis-server's and redis-benchmark's turns) with its rate with a core
// per worker: numbers present and positive, no timing judged; and that
// AB_PROFILES kept the profiles.
func TestABDaemonsScript(t *testing.T) {
	bin := filepath.Join(repo, "bin")
	profiles := t.TempDir()
	out := runScript(t, []string{"redis-server", "redis-benchmark", "go"}, []string{"AB_PROFILES=" + profiles}, "nuse-ab",
		"scripts/bench/ab-daemons.sh", "-w", "redis", "-r", "1", "-n", "20000", "-p", "g="+bin, "k="+bin+":--engine kernel")
	// AB_PROFILES keeps each variant's CPU profile (a gzipped protobuf).
	for _, v := range []string{"g", "k"} {
		b, err := os.ReadFile(filepath.Join(profiles, v+".pprof"))
		if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("AB_PROFILES: %s.pprof missing or not a profile (%d bytes, %v)", v, len(b), err)
		}
	}
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
	split := regexp.MustCompile(`(?m)^  (\S+) +redis-(server|benchmark) ([0-9.]+), redis-(server|benchmark) ([0-9.]+), the workers' loops ([0-9.]+), the rest ([0-9.]+) us/request \(of ([0-9.]+)\)$`)
	perWorker := regexp.MustCompile(`(?m)^  (\S+) +with a core per worker \(the busiest ([0-9.]+), server ([0-9.]+), client ([0-9.]+) us/request; the rest on other cores\): (\d+) req/s, NUSE/kernel ([0-9.]+)x$`)
	splits, workers := split.FindAllStringSubmatch(out, -1), perWorker.FindAllStringSubmatch(out, -1)
	if len(splits) != 2 || len(workers) != 2 {
		t.Fatalf("want the daemon's CPU by program and with a core per worker for g and k: %d, %d lines", len(splits), len(workers))
	}
	for i, want := range []string{"g", "k"} {
		sp, w := splits[i], workers[i]
		if sp[1] != want || w[1] != want || sp[2] == sp[4] {
			t.Fatalf("lines %q / %q: want %s, and both programs", sp[0], w[0], want)
		}
		if num(sp[3]) <= 0 || num(sp[5]) <= 0 {
			t.Errorf("%s: a program's turns cost nothing: %s", want, sp[0])
		}
		// the parts are shares of the whole (rounded to 0.1 each)
		if sum, whole := num(sp[3])+num(sp[5])+num(sp[6])+num(sp[7]), num(sp[8]); sum < whole-0.3 || sum > whole+0.3 || whole != num(means[i+1][4]) {
			t.Errorf("%s: the parts add up to %.1f, not %v (the mean: %s)", want, sum, whole, means[i+1][4])
		}
		if num(w[2]) <= 0 || num(w[5]) <= 0 {
			t.Errorf("%s: %s", want, w[0])
		}
	}
}

// TestABDaemonsMemcached runs the memcached workload of ab-daemons.sh
// small (one round, memcslap's 8 connections, 16,000 sets): the kernel
// and this build each give a rate (from memcslap's "Time total"), and
// the daemon's CPU per request is measured for the NUSE path only.
func TestABDaemonsMemcached(t *testing.T) {
	bin := filepath.Join(repo, "bin")
	out := runScript(t, []string{"memcached", "memcslap"}, nil, "nuse-ab",
		"scripts/bench/ab-daemons.sh", "-w", "memcached", "-r", "1", "-n", "16000", "g="+bin)
	mean := regexp.MustCompile(`(?m)^  (\S+) +(\d+) req/s  NUSE/kernel ([0-9.]+)x  daemon CPU/request ([0-9.]+) us$`)
	means := mean.FindAllStringSubmatch(out, -1)
	if len(means) != 2 || means[0][1] != "kernel" || means[1][1] != "g" {
		t.Fatalf("want the means of kernel and g: %q", means)
	}
	for _, m := range means {
		rate, _ := strconv.ParseFloat(m[2], 64)
		cpu, _ := strconv.ParseFloat(m[4], 64)
		if rate <= 0 {
			t.Errorf("%s: no rate: %s", m[1], m[0])
		}
		if (m[1] == "kernel") != (cpu == 0) {
			t.Errorf("%s: daemon %v us/request", m[1], cpu)
		}
	}
}
